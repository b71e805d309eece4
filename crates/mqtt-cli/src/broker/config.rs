//! The broker's TOML configuration file (`mqtt broker --config FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use mqtt_tokio::QoS;
use mqtt_tokio::broker::BrokerConfig;
use serde::Deserialize;

/// The schema, as `--help` shows it (kept next to the types it describes).
pub(crate) const SCHEMA: &str = r#"CONFIGURATION FILE (--config FILE, TOML; every key is optional, unknown keys are errors;
relative paths are relative to the file's directory):

  allow_anonymous = true          # clients without a user name may connect (default: true
                                  # without a password_file, false with one)
  password_file = "passwd"        # mosquitto_passwd format ($7$ or $6$ hashes)
  acl_file = "acl"                # mosquitto ACL format (topic / user / pattern lines)
  data_dir = "data"               # keep sessions, subscriptions, queued and retained messages
                                  # here: a restart or a crash (kill -9) loses nothing that was
                                  # acknowledged (default: in memory only; --data-dir)

  [persistence]                   # with data_dir
  sync = "always"                 # "always": fsync before acknowledging (default); "periodic":
  sync_interval = 1               # fsync every sync_interval seconds, faster, and a power cut
                                  # loses what was acknowledged within the last interval

  [[listener]]                    # one table per listener (repeatable)
  bind = "127.0.0.1:1883"         # address:port (port 0: the kernel picks one)

  [[listener]]
  bind = "0.0.0.0:8883"
  tls = { cert = "server.pem", key = "server.key" }   # PEM certificate chain and key

  [[listener]]                    # client certificates (mutual TLS)
  bind = "0.0.0.0:8884"
  tls = { cert = "server.pem", key = "server.key",
          cafile = "devices-ca.pem",          # CA that signs client certificates
          require_certificate = true,         # refuse clients without one
          use_identity_as_username = true }   # its CN (or first SAN) is the user name for
                                              # the ACL; no password is checked

  [[listener]]
  bind = "0.0.0.0:8080"
  websocket = true                # MQTT over WebSocket (with tls: wss); --ws-port
  path = "/mqtt"                  # the WebSocket path (default /mqtt)

  [[listener]]
  unix = "/run/mqtt.sock"         # a Unix domain socket instead of bind (--unix)

  [limits]
  max_connections = 10000         # simultaneous connections
  max_sessions = 1000000          # sessions, connected or not
  max_packet_size = 268435455     # bytes, from clients (announced in 5.0 when lower)
  max_incoming_bytes = 268435456  # bytes all partly received packets over 16 KiB may hold;
                                  # a connection whose packet does not fit waits, unread
  receive_maximum = 100           # QoS 1/2 publishes a 5.0 client may have in flight (and
                                  # acknowledgements held back before a 3.1.1 one is not read)
  max_inflight = 100              # QoS 1/2 publishes in flight towards a 3.1.1 client
  max_queued_messages = 1000      # a connected client's queue is full at this many messages
  max_queued_bytes = 4194304      # ... or at this many bytes: the publishers feeding it are
                                  # held back (acknowledgements withheld), nothing is dropped
  congestion_timeout = 30         # seconds a full queue may hold publishers back before its
                                  # client is disconnected (0x97; the session keeps messages)
  max_session_queue = 100000      # messages kept for a disconnected session; beyond it (or
  max_session_queue_bytes = 67108864  # these bytes) new ones are dropped, counted and logged
  max_total_queued_bytes = 3221225472 # bytes of messages kept for all sessions together
  max_session_expiry = 86400      # seconds a session may outlive its connection
  max_retained = 100000           # retained messages
  max_keep_alive = 300            # seconds (default: accept the client's)
  topic_alias_maximum = 16        # topic aliases a 5.0 client may use
  connect_timeout = 10            # seconds to wait for CONNECT
  max_qos = 2                     # highest QoS accepted and granted
  retain_available = true
  shared_subscriptions = true"#;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Whether clients without a user name may connect.
    pub(crate) allow_anonymous: Option<bool>,
    /// A mosquitto_passwd file.
    pub(crate) password_file: Option<PathBuf>,
    /// A mosquitto ACL file.
    pub(crate) acl_file: Option<PathBuf>,
    /// Where the broker keeps its state.
    pub(crate) data_dir: Option<PathBuf>,
    /// How it syncs it.
    #[serde(default)]
    pub(crate) persistence: Persistence,
    /// Listeners.
    #[serde(default, rename = "listener")]
    pub(crate) listeners: Vec<ListenerConfig>,
    /// Limits.
    #[serde(default)]
    pub(crate) limits: Limits,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerConfig {
    /// Where to listen: a TCP address...
    pub(crate) bind: Option<SocketAddr>,
    /// ...or a Unix domain socket.
    pub(crate) unix: Option<PathBuf>,
    /// TLS on this listener.
    pub(crate) tls: Option<TlsConfig>,
    /// MQTT over WebSocket.
    #[serde(default)]
    pub(crate) websocket: bool,
    /// The WebSocket path.
    pub(crate) path: Option<String>,
}

/// A listener's `tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// The certificate chain (PEM).
    pub(crate) cert: PathBuf,
    /// The private key (PEM).
    pub(crate) key: PathBuf,
    /// The CA that signs client certificates (PEM).
    pub(crate) cafile: Option<PathBuf>,
    /// Clients must present a certificate.
    #[serde(default)]
    pub(crate) require_certificate: bool,
    /// The certificate's name is the user name.
    #[serde(default)]
    pub(crate) use_identity_as_username: bool,
}

impl ListenerConfig {
    /// Checks the combination: one of `bind` and `unix`, `path` only with `websocket`.
    fn check(&self) -> anyhow::Result<()> {
        match (&self.bind, &self.unix) {
            (Some(_), Some(_)) => anyhow::bail!("a listener has `bind` or `unix`, not both"),
            (None, None) => {
                anyhow::bail!("a listener needs `bind` (address:port) or `unix` (a path)")
            }
            _ => {}
        }
        if self.path.is_some() && !self.websocket {
            anyhow::bail!("`path` is the WebSocket path: it needs `websocket = true`");
        }
        if let Some(tls) = &self.tls {
            if tls.require_certificate && tls.cafile.is_none() {
                anyhow::bail!(
                    "`require_certificate` needs `cafile`, the CA of client certificates"
                );
            }
            if tls.use_identity_as_username && !tls.require_certificate {
                anyhow::bail!("`use_identity_as_username` needs `require_certificate = true`");
            }
        }
        Ok(())
    }

    /// The library's listener.
    pub(crate) fn listener(&self) -> mqtt_tokio::broker::ListenerConfig {
        use mqtt_tokio::broker::ListenerConfig as Listener;
        let mut listener = match (&self.bind, &self.unix) {
            (_, Some(path)) => Listener::unix(path),
            (Some(addr), None) => Listener::tcp(*addr),
            (None, None) => unreachable!("checked when loaded"),
        };
        if let Some(tls) = &self.tls {
            let mut server = mqtt_tokio::ServerTls::new(&tls.cert, &tls.key)
                .require_certificate(tls.require_certificate)
                .use_identity_as_username(tls.use_identity_as_username);
            if let Some(ca) = &tls.cafile {
                server = server.client_ca(ca);
            }
            listener = listener.tls(server);
        }
        if self.websocket {
            listener = match &self.path {
                Some(path) => listener.websocket_path(path.clone()),
                None => listener.websocket(),
            };
        }
        listener
    }

    /// What it serves, for the log: "MQTT", "MQTT over TLS", "MQTT over WebSocket at /mqtt", ...
    pub(crate) fn describe(&self) -> String {
        let mut what = String::from("MQTT");
        if self.websocket {
            let path = self.path.as_deref().unwrap_or("/mqtt");
            what.push_str(&format!(" over WebSocket at {path}"));
            if self.tls.is_some() {
                what.push_str(" (wss)");
            }
        } else if self.tls.is_some() {
            what.push_str(" over TLS");
        }
        if self.tls.as_ref().is_some_and(|t| t.require_certificate) {
            what.push_str(", client certificates required");
        }
        what
    }
}

/// `[persistence]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Persistence {
    /// `always` or `periodic`.
    pub(crate) sync: Option<SyncMode>,
    /// Seconds between syncs, for `periodic` (default 1).
    pub(crate) sync_interval: Option<u64>,
}

/// `[persistence] sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SyncMode {
    /// fsync before acknowledging.
    Always,
    /// fsync every `sync_interval` seconds.
    Periodic,
}

impl Persistence {
    /// The store's sync policy.
    pub(crate) fn policy(&self) -> anyhow::Result<mqtt_tokio::broker::SyncPolicy> {
        use mqtt_tokio::broker::SyncPolicy;
        Ok(match self.sync.unwrap_or(SyncMode::Always) {
            SyncMode::Always => {
                anyhow::ensure!(
                    self.sync_interval.is_none(),
                    "persistence.sync_interval goes with sync = \"periodic\""
                );
                SyncPolicy::Always
            }
            SyncMode::Periodic => {
                let secs = self.sync_interval.unwrap_or(1);
                anyhow::ensure!(secs > 0, "persistence.sync_interval must be positive");
                SyncPolicy::Periodic(Duration::from_secs(secs))
            }
        })
    }
}

/// `[limits]`: each one left out keeps the broker's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    max_connections: Option<usize>,
    max_sessions: Option<usize>,
    max_packet_size: Option<u32>,
    max_incoming_bytes: Option<usize>,
    receive_maximum: Option<u16>,
    max_inflight: Option<u16>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    congestion_timeout: Option<u64>,
    max_session_queue: Option<usize>,
    max_session_queue_bytes: Option<usize>,
    max_total_queued_bytes: Option<usize>,
    max_session_expiry: Option<u32>,
    max_retained: Option<usize>,
    max_keep_alive: Option<u16>,
    topic_alias_maximum: Option<u16>,
    connect_timeout: Option<u64>,
    max_qos: Option<u8>,
    retain_available: Option<bool>,
    shared_subscriptions: Option<bool>,
}

impl FileConfig {
    /// Reads and checks a file; paths in it become relative to its directory.
    pub(crate) fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text).map_err(|error| {
            // toml's message spans several lines (the offending line, a caret); one is enough.
            let message = error.message().to_owned();
            match error.span().map(|span| line_of(&text, span.start)) {
                Some(line) => anyhow::anyhow!("{}, line {line}: {message}", path.display()),
                None => anyhow::anyhow!("{}: {message}", path.display()),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.password_file.as_mut().map(resolve);
        config.acl_file.as_mut().map(resolve);
        config.data_dir.as_mut().map(resolve);
        for (n, listener) in config.listeners.iter_mut().enumerate() {
            listener
                .check()
                .with_context(|| format!("{}: listener {}", path.display(), n + 1))?;
            listener.unix.as_mut().map(resolve);
            if let Some(tls) = &mut listener.tls {
                resolve(&mut tls.cert);
                resolve(&mut tls.key);
                tls.cafile.as_mut().map(resolve);
            }
        }
        config.limits.broker_config()?;
        config.persistence.policy()?;
        Ok(config)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

impl Limits {
    /// The broker configuration: defaults, with these limits applied.
    pub(crate) fn broker_config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::default();
        let c = &mut config.connection;
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
        if let Some(v) = self.max_packet_size {
            anyhow::ensure!(v > 0, "limits.max_packet_size must be positive");
            c.max_packet_size = v;
        }
        if let Some(v) = self.receive_maximum {
            anyhow::ensure!(v > 0, "limits.receive_maximum must be positive");
            c.receive_maximum = v;
        }
        if let Some(v) = self.max_inflight {
            anyhow::ensure!(v > 0, "limits.max_inflight must be positive");
            c.max_inflight_v311 = v;
        }
        if let Some(v) = self.max_queued_messages {
            anyhow::ensure!(v > 0, "limits.max_queued_messages must be positive");
            c.max_queued = v;
        }
        if let Some(v) = self.max_queued_bytes {
            anyhow::ensure!(v > 0, "limits.max_queued_bytes must be positive");
            c.max_queued_bytes = v;
        }
        if let Some(v) = self.max_keep_alive {
            c.max_keep_alive = Some(v);
        }
        if let Some(v) = self.topic_alias_maximum {
            c.topic_alias_maximum = v;
        }
        if let Some(v) = self.connect_timeout {
            c.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.max_session_queue {
            config.max_session_queue = v;
        }
        if let Some(v) = self.max_session_queue_bytes {
            config.max_session_queue_bytes = v;
        }
        if let Some(v) = self.max_total_queued_bytes {
            config.max_total_queued_bytes = v;
        }
        if let Some(v) = self.max_sessions {
            config.max_sessions = v;
        }
        if let Some(v) = self.congestion_timeout {
            anyhow::ensure!(v > 0, "limits.congestion_timeout must be positive");
            config.congestion_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.max_incoming_bytes {
            anyhow::ensure!(
                v >= 64 * 1024,
                "limits.max_incoming_bytes must be at least 65536"
            );
            config.max_incoming_bytes = v;
        }
        if let Some(v) = self.max_session_expiry {
            config.max_session_expiry = v;
        }
        if let Some(v) = self.max_retained {
            config.max_retained = v;
        }
        if let Some(v) = self.max_qos {
            config.max_qos = match v {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                2 => QoS::ExactlyOnce,
                _ => anyhow::bail!("limits.max_qos must be 0, 1 or 2, not {v}"),
            };
        }
        if let Some(v) = self.retain_available {
            config.retain_available = v;
        }
        if let Some(v) = self.shared_subscriptions {
            config.shared_subscriptions = v;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<FileConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text)?;
        FileConfig::load(&path)
    }

    #[test]
    fn full_file() {
        let config = parse(
            r#"
            allow_anonymous = false
            password_file = "passwd"
            acl_file = "/etc/acl"
            [[listener]]
            bind = "127.0.0.1:0"
            [[listener]]
            bind = "[::1]:8883"
            tls = { cert = "c.pem", key = "k.pem" }
            [limits]
            max_connections = 5
            max_packet_size = 1000
            max_qos = 1
            connect_timeout = 3
            "#,
        )
        .unwrap();
        assert_eq!(config.allow_anonymous, Some(false));
        assert!(config.password_file.unwrap().ends_with("passwd"));
        assert_eq!(config.acl_file.unwrap(), PathBuf::from("/etc/acl"));
        assert_eq!(config.listeners.len(), 2);
        assert!(config.listeners[1].tls.as_ref().unwrap().cert.is_absolute());
        let broker = config.limits.broker_config().unwrap();
        assert_eq!(broker.max_connections, 5);
        assert_eq!(broker.connection.max_packet_size, 1000);
        assert_eq!(broker.max_qos, QoS::AtLeastOnce);
        assert_eq!(broker.connection.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn typos_and_bad_values_are_one_line_errors() {
        let error = parse("[limits]\nmax_conections = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2") && error.contains("max_conections"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
        let error = parse("[[listener]]\nbind = \"nowhere\"\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        let error = parse("[limits]\nmax_qos = 3\n").unwrap_err();
        assert!(error.to_string().contains("max_qos"), "{error}");
    }

    #[test]
    fn websocket_unix_and_client_certificate_listeners() {
        let config = parse(
            r#"
            [[listener]]
            bind = "127.0.0.1:8080"
            websocket = true
            [[listener]]
            bind = "127.0.0.1:8443"
            websocket = true
            path = "/broker"
            tls = { cert = "c.pem", key = "k.pem", cafile = "ca.pem", require_certificate = true, use_identity_as_username = true }
            [[listener]]
            unix = "mqtt.sock"
            "#,
        )
        .unwrap();
        let [ws, wss, unix] = &config.listeners[..] else {
            panic!("three listeners");
        };
        assert_eq!(ws.describe(), "MQTT over WebSocket at /mqtt");
        assert_eq!(
            wss.describe(),
            "MQTT over WebSocket at /broker (wss), client certificates required"
        );
        assert!(
            wss.tls
                .as_ref()
                .unwrap()
                .cafile
                .as_ref()
                .unwrap()
                .is_absolute()
        );
        assert!(unix.unix.as_ref().unwrap().is_absolute());
        assert_eq!(unix.describe(), "MQTT");

        for (bad, why) in [
            ("[[listener]]\nwebsocket = true\n", "needs `bind`"),
            (
                "[[listener]]\nbind = \"127.0.0.1:1\"\nunix = \"s\"\n",
                "not both",
            ),
            (
                "[[listener]]\nbind = \"127.0.0.1:1\"\npath = \"/x\"\n",
                "websocket = true",
            ),
            (
                "[[listener]]\nbind = \"127.0.0.1:1\"\ntls = { cert = \"c\", key = \"k\", require_certificate = true }\n",
                "cafile",
            ),
            (
                "[[listener]]\nbind = \"127.0.0.1:1\"\ntls = { cert = \"c\", key = \"k\", cafile = \"a\", use_identity_as_username = true }\n",
                "require_certificate",
            ),
        ] {
            let error = format!("{:#}", parse(bad).unwrap_err());
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
