//! How a [`Client`](crate::Client) connects.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_rustls::TlsConnector;
use mqtt_proto::backoff::BackoffConfig;
use mqtt_proto::connection::ClientConfig;
use mqtt_proto::packet::{ByteString, Version, Will};

use crate::tls::{ClientTlsConfig, TlsOptions};
use crate::{Error, SessionStore};

/// The default write timeout: see [`ClientOptions::write_timeout`].
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// `tls` built, once, and shared with clones of these options.
    pub(crate) tls_config: ClientTlsConfig,
    pub(crate) config: ClientConfig,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) reconnect: Option<BackoffConfig>,
    pub(crate) queue_capacity: usize,
    pub(crate) max_offline: usize,
    pub(crate) session_store: Option<SessionStore>,
}

impl ClientOptions {
    /// Options for a plain TCP connection to `host:port`: MQTT 5.0, an empty client identifier
    /// (the server assigns one), clean start, 60 s keep alive, automatic reconnect, a Receive
    /// Maximum of 100 (5.0: at most that many QoS 1/2 messages in flight towards us, which is
    /// how a full subscription queue slows the broker down; set another in
    /// [`config_mut`](Self::config_mut)), a 30 s [connect timeout](Self::connect_timeout) and
    /// a 60 s [write timeout](Self::write_timeout).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
            tls_config: ClientTlsConfig::default(),
            config: ClientConfig::new(Version::V5, ""),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            reconnect: Some(BackoffConfig::default()),
            queue_capacity: 1024,
            max_offline: 10_000,
            session_store: None,
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
        // Clones made before keep the configuration they built; these options build their own.
        self.tls_config = ClientTlsConfig::default();
        self
    }

    /// How long connecting may take (default 30 s): resolving the host name, opening the TCP
    /// connection (each of the host's addresses is tried with an equal share of what is left,
    /// so one that drops packets does not use it all), the TLS handshake and waiting for
    /// CONNACK, together. Past it, the attempt fails with [`Error::Timeout`] saying which step
    /// was waiting; the first [`Client::connect`](crate::Client::connect) returns that error,
    /// later attempts report it as a
    /// [`ConnectionEvent`](crate::ConnectionEvent) and reconnect. The same as
    /// [`ClientConfig::connect_timeout`] in [`config_mut`](Self::config_mut).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long a write may make no progress at all (default 60 s; zero turns the bound off).
    /// A write that progresses, however slowly, is never cut; one that sends nothing for this
    /// long (the server stopped reading, or the network stopped carrying packets, which TCP
    /// itself reports only after about 15 minutes of retransmissions) drops the connection:
    /// the QoS 0 publishes in that write fail with [`Error::Timeout`], QoS 1 and 2 ones are
    /// sent again after the reconnect (without reconnect, they fail with it too), and the event
    /// stream shows
    /// [`ConnectionEvent::TimedOut`](crate::ConnectionEvent::TimedOut).
    ///
    /// Why 60 s: a server may stop reading a publisher on purpose, to slow it down while its
    /// subscribers catch up (our broker does so for at most 30 s at a stretch, its
    /// `congestion_timeout`); that is backpressure, not failure, and the default leaves it
    /// twice that. While a write is stuck the keep alive cannot run, so the bound should not be
    /// much longer than the keep alive (60 s by default) either.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = (!timeout.is_zero()).then_some(timeout);
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

    /// Keep the session in the file at `path`, so that what the broker has not acknowledged
    /// survives the process: after a crash (even `kill -9`) or a power loss, the next
    /// [`Client::connect`](crate::Client::connect) with these options resends the QoS 1 and 2
    /// publishes that were not acknowledged, with DUP set and their packet identifiers, and
    /// never delivers a QoS 2 message twice. Off by default: nothing is written.
    ///
    /// - At connect the session is read from the file, if there is one, and resumed as on a
    ///   reconnect (Clean Start 0). It must be this client's: a file that holds another client
    ///   identifier's session, or a damaged one, is [`Error::SessionStore`] (remove it to start
    ///   afresh). Give the client a fixed identifier and a
    ///   [session expiry](Self::session_expiry) (3.1.1: `clean_start(false)`) so that the broker
    ///   keeps its side of the session too; one file per client identifier.
    /// - While the client runs, the file is brought up to date before anything is written to
    ///   the network after the session changed: no QoS 1/2 PUBLISH leaves before the file holds
    ///   it, no PUBREL before its stage, no PUBREC or PUBCOMP before the QoS 2 messages received
    ///   and awaiting release; and a publish completes only once the file no longer holds it, so
    ///   a publish that completed is never resent. The file is replaced whole (a temporary
    ///   file, fsync, rename, fsync of the directory), by a thread of its own, once per turn of
    ///   the client's loop, which covers everything of that turn: a burst of publishes shares
    ///   writes. One write took about 0.5 ms on the ext4 disk of a small VM (much more while
    ///   other programs kept the disk busy). A publish awaited before the next costs two writes
    ///   (it enters the file, then leaves it): 1.2 ms per publish against our broker on
    ///   loopback, against 0.05 ms without a store. Concurrent publishes share them: 0.1 to
    ///   0.4 ms each with the default in-flight window of 10, 0.02 to 0.04 ms with a window of
    ///   100 ([`ClientConfig::max_inflight`] in [`config_mut`](Self::config_mut)).
    /// - Not in the file: publishes made while the client was disconnected (they wait in the
    ///   client's [offline queue](Self::max_offline) and go into the session at the reconnect),
    ///   and publishes still on their way to the client's task when the process died. Their
    ///   futures never completed either.
    /// - If the file cannot be written (a full disk), the client stops: everything waiting
    ///   fails with [`Error::SessionStore`].
    pub fn session_store(mut self, path: impl Into<PathBuf>) -> Self {
        self.session_store = Some(SessionStore::new(path));
        self
    }

    /// The TLS connector (`None` for plain TCP), built the first time; see [`ClientTlsConfig`].
    pub(crate) async fn tls_connector(&self) -> Result<Option<TlsConnector>, Error> {
        match &self.tls {
            Some(tls) => Ok(Some(self.tls_config.connector(tls).await?)),
            None => Ok(None),
        }
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

    #[test]
    fn tls_config_is_built_once_and_shared_by_clones() {
        let options = ClientOptions::from_url("mqtts://localhost").unwrap();
        let clone = options.clone();
        futures_lite::future::block_on(options.tls_connector()).unwrap();
        let built = options.tls_config.get().expect("built").clone();
        futures_lite::future::block_on(clone.tls_connector()).unwrap();
        let again = clone.tls_config.get().expect("built").clone();
        assert!(std::sync::Arc::ptr_eq(&built, &again));
        // New TLS options start over.
        let other = options.tls(TlsOptions::default());
        assert!(other.tls_config.get().is_none());
    }
}
