//! How a [`Client`](crate::Client) connects.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
#[cfg(feature = "tls")]
use futures_rustls::TlsConnector;
use mqtt_proto::backoff::BackoffConfig;
use mqtt_proto::connection::ClientConfig;
use mqtt_proto::packet::{ByteString, Version, Will};

use crate::runtime::{BoxFuture, BoxTransport};
#[cfg(feature = "tls")]
use crate::tls::{ClientTlsConfig, TlsOptions};
use crate::{Error, SessionStore};

/// The default write timeout: see [`ClientOptions::write_timeout`].
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to connect, and how the client behaves.
///
/// ```
/// use mqtt_async::{ClientOptions, Version};
/// let options = ClientOptions::new("127.0.0.1", 1883).version(Version::V5).client_id("sensor-1");
/// let from_url = ClientOptions::from_url("mqtt://broker.example:1884").unwrap();
/// assert_eq!(from_url.port(), 1884);
/// # #[cfg(all(feature = "tls", feature = "ws"))] {
/// let websocket = ClientOptions::from_url("wss://user:secret@broker.example/mqtt").unwrap();
/// assert_eq!((websocket.port(), websocket.websocket_path()), (443, Some("/mqtt")));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) host: String,
    pub(crate) port: u16,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<TlsOptions>,
    /// MQTT over WebSocket, with this path.
    #[cfg(feature = "ws")]
    pub(crate) websocket: Option<String>,
    /// A Unix domain socket instead of `host:port`.
    pub(crate) unix: Option<PathBuf>,
    /// `tls` built, once, and shared with clones of these options.
    #[cfg(feature = "tls")]
    pub(crate) tls_config: ClientTlsConfig,
    pub(crate) config: ClientConfig,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) reconnect: Option<BackoffConfig>,
    pub(crate) queue_capacity: usize,
    pub(crate) max_offline: usize,
    pub(crate) session_store: Option<SessionStore>,
    /// Opens the transport instead of TCP or a Unix socket.
    pub(crate) transport: Option<Connector>,
}

/// Opens a transport of the application's own: see [`ClientOptions::transport`].
#[derive(Clone)]
pub(crate) struct Connector(
    pub(crate) Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<BoxTransport>> + Send + Sync>,
);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
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
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "ws")]
            websocket: None,
            unix: None,
            #[cfg(feature = "tls")]
            tls_config: ClientTlsConfig::default(),
            config: ClientConfig::new(Version::V5, ""),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            reconnect: Some(BackoffConfig::default()),
            queue_capacity: 1024,
            max_offline: 10_000,
            session_store: None,
            transport: None,
        }
    }

    /// Options from a URL: `scheme://[user[:password]@]host[:port][/path]`, or
    /// `unix:///path/to/socket`.
    ///
    /// | scheme | transport | default port |
    /// |---|---|---|
    /// | `mqtt` (or `tcp`) | TCP | 1883 |
    /// | `mqtts` (or `ssl`) | TLS with the system's roots (feature `tls`) | 8883 |
    /// | `ws` | WebSocket; the path is the WebSocket path (default `/mqtt`; feature `ws`) | 80 |
    /// | `wss` | WebSocket over TLS, likewise (features `tls` and `ws`) | 443 |
    /// | `unix` | a Unix domain socket at the URL's path | |
    ///
    /// A scheme whose feature is left out is [`Error::Tls`] or [`Error::WebSocket`].
    ///
    /// A user name and password in the URL become the [credentials](Self::credentials)
    /// (percent-encoded characters decoded). IPv6 addresses go in brackets: `mqtt://[::1]:1883`.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidUrl(url.to_owned());
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        if scheme == "unix" {
            if !rest.starts_with('/') || rest.len() < 2 {
                return Err(invalid());
            }
            let path = percent_encoding::percent_decode_str(rest)
                .decode_utf8()
                .map_err(|_| invalid())?;
            return Ok(Self::unix(path.as_ref()));
        }
        let (tls, websocket, default_port) = match scheme {
            "mqtt" | "tcp" => (false, false, 1883),
            "mqtts" | "ssl" => (true, false, 8883),
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            _ => return Err(invalid()),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // An IPv6 address: `[addr]` or `[addr]:port`.
            Some(bracketed) => {
                let (host, rest) = bracketed.split_once(']').ok_or_else(invalid)?;
                match rest {
                    "" => (host, default_port),
                    _ => {
                        let port = rest.strip_prefix(':').ok_or_else(invalid)?;
                        (host, port.parse().map_err(|_| invalid())?)
                    }
                }
            }
            None => match hostport.split_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| invalid())?),
                None => (hostport, default_port),
            },
        };
        if host.is_empty() || host.contains(['[', ']', '@', '/']) {
            return Err(invalid());
        }
        let mut options = Self::new(host, port);
        if tls {
            #[cfg(feature = "tls")]
            {
                options.tls = Some(TlsOptions::default());
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::Tls(format!(
                "{url}: built without TLS (the `tls` feature)"
            )));
        }
        if websocket {
            #[cfg(feature = "ws")]
            {
                let path = if path.is_empty() {
                    crate::ws::DEFAULT_PATH
                } else {
                    path
                };
                options.websocket = Some(path.to_owned());
            }
            #[cfg(not(feature = "ws"))]
            {
                let _ = path;
                return Err(Error::WebSocket(format!(
                    "{url}: built without WebSocket (the `ws` feature)"
                )));
            }
        }
        if let Some(userinfo) = userinfo {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| invalid())
            };
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (decode(user)?, Some(decode(password)?)),
                None => (decode(userinfo)?, None),
            };
            options.config.username = Some(user.into());
            options.config.password = password.map(Bytes::from);
        }
        Ok(options)
    }

    /// Options for a connection over the Unix domain socket at `path` (on Unix; elsewhere
    /// connecting fails with [`std::io::ErrorKind::Unsupported`]), otherwise as
    /// [`ClientOptions::new`].
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut options = Self::new(path.to_string_lossy(), 0);
        options.unix = Some(path);
        options
    }

    /// Speak MQTT over WebSocket, asking the server for `path` (`/mqtt` is what most brokers
    /// serve), over TCP or, with [`tls`](Self::tls), over TLS (`wss`).
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn websocket(mut self, path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        self.websocket = Some(path);
        self
    }

    /// Open each connection with `connect` instead of TCP or a Unix socket: any byte stream (an
    /// in-memory pipe to a broker in the same process, a proxy, a serial line). WebSocket, when
    /// set, still runs over it (TLS does not: the stream is used as it is); the connect timeout
    /// covers it. This is how a broker's bridges reach the broker they belong to.
    pub fn transport(
        mut self,
        connect: impl Fn() -> BoxFuture<'static, std::io::Result<BoxTransport>> + Send + Sync + 'static,
    ) -> Self {
        self.transport = Some(Connector(Arc::new(connect)));
        self
    }

    /// The WebSocket path, when the client speaks MQTT over WebSocket.
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn websocket_path(&self) -> Option<&str> {
        self.websocket.as_deref()
    }

    /// The Unix domain socket, when the client connects over one.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.unix.as_deref()
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
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
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
    #[cfg(feature = "tls")]
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
    #[cfg(not(feature = "tls"))]
    fn tls_urls_need_the_tls_feature() {
        assert!(matches!(
            ClientOptions::from_url("mqtts://h"),
            Err(Error::Tls(_))
        ));
        assert_eq!(ClientOptions::from_url("mqtt://h").unwrap().port(), 1883);
    }

    #[test]
    #[cfg(not(feature = "ws"))]
    fn websocket_urls_need_the_ws_feature() {
        assert!(matches!(
            ClientOptions::from_url("ws://h"),
            Err(Error::WebSocket(_))
        ));
    }

    #[test]
    #[cfg(feature = "tls")]
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
    #[cfg(all(feature = "tls", feature = "ws"))]
    fn websocket_unix_and_credentials_in_urls() {
        let o = ClientOptions::from_url("ws://h").unwrap();
        assert_eq!((o.host(), o.port(), o.tls.is_some()), ("h", 80, false));
        assert_eq!(o.websocket_path(), Some("/mqtt"));
        let o = ClientOptions::from_url("wss://h:8443/broker/ws").unwrap();
        assert_eq!((o.host(), o.port(), o.tls.is_some()), ("h", 8443, true));
        assert_eq!(o.websocket_path(), Some("/broker/ws"));
        let o = ClientOptions::from_url("wss://[::1]/").unwrap();
        assert_eq!(
            (o.host(), o.port(), o.websocket_path()),
            ("::1", 443, Some("/"))
        );
        // Plain MQTT has no path.
        let o = ClientOptions::from_url("mqtt://h/ignored").unwrap();
        assert_eq!(o.websocket_path(), None);

        let o = ClientOptions::from_url("mqtts://alice:p%40ss%3Aw0rd@h:1").unwrap();
        assert_eq!((o.host(), o.port()), ("h", 1));
        assert_eq!(o.config.username.as_deref(), Some("alice"));
        assert_eq!(o.config.password.as_deref(), Some(&b"p@ss:w0rd"[..]));
        let o = ClientOptions::from_url("ws://bob@h").unwrap();
        assert_eq!(o.config.username.as_deref(), Some("bob"));
        assert_eq!(o.config.password, None);

        let o = ClientOptions::from_url("unix:///run/mqtt%20broker.sock").unwrap();
        assert_eq!(
            o.unix_path(),
            Some(std::path::Path::new("/run/mqtt broker.sock"))
        );
        assert!(ClientOptions::from_url("unix://relative").is_err());
        assert!(ClientOptions::from_url("ws://[::1:80").is_err());
        assert!(ClientOptions::from_url("ws://@").is_err());
    }

    #[test]
    #[cfg(feature = "tls")]
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
