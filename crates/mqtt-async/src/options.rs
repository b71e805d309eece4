//! How a [`Client`](crate::Client) connects.

use std::time::Duration;

use bytes::Bytes;
use mqtt_proto::backoff::BackoffConfig;
use mqtt_proto::connection::ClientConfig;
use mqtt_proto::packet::{ByteString, Version, Will};

use crate::Error;
use crate::tls::TlsOptions;

/// Where and how to connect, and how the client behaves.
///
/// ```
/// use mqtt_async::{ClientOptions, Version};
/// let options = ClientOptions::new("127.0.0.1", 1883).version(Version::V5).client_id("sensor-1");
/// let from_url = ClientOptions::from_url("mqtts://broker.example:8883").unwrap();
/// assert_eq!(from_url.port(), 8883);
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) config: ClientConfig,
    pub(crate) reconnect: Option<BackoffConfig>,
    pub(crate) queue_capacity: usize,
    pub(crate) max_offline: usize,
}

impl ClientOptions {
    /// Options for a plain TCP connection to `host:port`: MQTT 5.0, an empty client identifier
    /// (the server assigns one), clean start, 60 s keep alive, automatic reconnect, and a Receive
    /// Maximum of 100 (5.0: at most that many QoS 1/2 messages in flight towards us, which is
    /// how a full subscription queue slows the broker down; set another in
    /// [`config_mut`](Self::config_mut)).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
            config: ClientConfig::new(Version::V5, ""),
            reconnect: Some(BackoffConfig::default()),
            queue_capacity: 1024,
            max_offline: 10_000,
        }
    }

    /// Options from a URL: `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]`
    /// (TLS with the system's roots, default port 8883).
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidUrl(url.to_owned());
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let (tls, default_port) = match scheme {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            _ => return Err(invalid()),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                (host, port.parse().map_err(|_| invalid())?)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid());
        }
        let mut options = Self::new(host, port);
        if tls {
            options.tls = Some(TlsOptions::default());
        }
        Ok(options)
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The protocol version (default 5.0).
    pub fn version(mut self, version: Version) -> Self {
        self.config.version = version;
        self
    }

    /// The client identifier (default empty: the server assigns one).
    pub fn client_id(mut self, id: impl Into<ByteString>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// Start a new session (true, the default) or resume the server's.
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.config.clean_start = clean;
        self
    }

    /// How long the server keeps the session after a disconnect (5.0; 3.1.1 keeps it while
    /// `clean_start` is false). Needed for messages to wait for a reconnect.
    pub fn session_expiry(mut self, interval: Duration) -> Self {
        self.config.properties.session_expiry_interval =
            Some(u32::try_from(interval.as_secs()).unwrap_or(u32::MAX));
        self
    }

    /// The keep alive (default 60 s; zero turns it off).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.config.keep_alive = u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX);
        self
    }

    /// User name and password.
    pub fn credentials(
        mut self,
        username: impl Into<ByteString>,
        password: impl Into<Bytes>,
    ) -> Self {
        self.config.username = Some(username.into());
        self.config.password = Some(password.into());
        self
    }

    /// The will message.
    pub fn will(mut self, will: Will) -> Self {
        self.config.will = Some(will);
        self
    }

    /// Connect with TLS.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Reconnect automatically with this backoff (the default), or not at all with `None`.
    pub fn reconnect(mut self, backoff: Option<BackoffConfig>) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Each subscription's queue capacity (default 1,024). When a queue is full the client stops
    /// reading from the network until there is room, so QoS 1/2 messages are never dropped.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The most publishes kept while disconnected (default 10,000).
    pub fn max_offline(mut self, max: usize) -> Self {
        self.max_offline = max;
        self
    }

    /// The protocol core's configuration, for everything else (receive maximum, topic aliases,
    /// maximum packet size, connect properties, in-flight window, …).
    pub fn config_mut(&mut self) -> &mut ClientConfig {
        &mut self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = ClientOptions::from_url("mqtt://localhost").unwrap();
        assert_eq!(
            (o.host(), o.port(), o.tls.is_some()),
            ("localhost", 1883, false)
        );
        let o = ClientOptions::from_url("mqtts://h:9000/x").unwrap();
        assert_eq!((o.host(), o.port(), o.tls.is_some()), ("h", 9000, true));
        let o = ClientOptions::from_url("mqtt://[::1]:1884").unwrap();
        assert_eq!((o.host(), o.port()), ("::1", 1884));
        assert!(ClientOptions::from_url("http://h").is_err());
        assert!(ClientOptions::from_url("mqtt://").is_err());
        assert!(ClientOptions::from_url("mqtt://h:notaport").is_err());
    }
}
