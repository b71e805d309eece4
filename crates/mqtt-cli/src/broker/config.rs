//! The broker's TOML configuration file (`mqtt broker --config FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use mqtt_tokio::broker::{BridgeOptions, BridgeTopic, BrokerConfig, Direction};
use mqtt_tokio::{BackoffConfig, QoS, Version};
use serde::Deserialize;

use crate::client_args::ConnectArgs;

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
  sys_interval = 10               # seconds between $SYS/broker/... updates (default 10; 0: off;
                                  # --sys-interval)
  metrics = "127.0.0.1:9100"      # Prometheus metrics at http://ADDR/metrics (default: none;
                                  # --metrics)
  idle_after = 2                  # seconds with nothing to read, write or deliver after which a
                                  # plain TCP connection waits without a task of its own, in one
                                  # epoll set (default 2; 0: never)

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
  shared_subscriptions = true

  [[bridge]]                      # a bridge to another broker (repeatable): this broker
                                  # connects to it as a client and forwards messages
  name = "cloud"                  # required: for the log, and its local session $bridge/cloud
  address = "mqtts://edge:secret@cloud.example:8883"  # required: an mqtt://, mqtts://, ws://,
                                  # wss:// or unix:// URL, with user:password@ if any
  username = "edge"               # replaces the URL's user name
  password = "secret"             # replaces the URL's password
  client_id = "edge-7"            # at the remote broker (default: HOSTNAME.NAME)
  version = "5"                   # "5" (default) or "3.1.1"
  clean_start = false             # default false: resume the session at the remote broker
  session_expiry = 86400          # seconds it keeps the session meanwhile (default 86400;
                                  # 5 only: with 3.1.1 it is kept while clean_start = false)
  keep_alive = 60                 # seconds (default 60; 0 turns it off)
  try_private = true              # 3.1.1: tell the remote broker this is a bridge, as mosquitto
                                  # does (default true); false for a broker that refuses it
  max_inflight = 100              # QoS 1/2 publishes in flight to the remote broker (default 100)
  tls = { cafile = "cloud-ca.pem",            # trust this CA (turns TLS on; without it,
          cert = "edge.pem", key = "edge.key" }   # mqtts:// and wss:// trust the system's);
                                              # a client certificate chain and its key
  topics = [                      # required, one or more; each:
    { filter = "sensors/#", direction = "out", qos = 1, remote_prefix = "site-7/" },
    { filter = "commands/#", direction = "in", local_prefix = "cloud/" },
  ]                               # direction: "out" (from here, the default), "in" or "both";
                                  # qos: the highest forwarded (default 2); local_prefix and
                                  # remote_prefix (default ""): local sensors/t goes out as
                                  # site-7/sensors/t, remote commands/x comes in as
                                  # cloud/commands/x"#;

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
    /// Seconds between `$SYS` updates (0: none).
    pub(crate) sys_interval: Option<u64>,
    /// Where to serve Prometheus metrics.
    pub(crate) metrics: Option<SocketAddr>,
    /// Seconds before an idle plain TCP connection parks (0: never).
    pub(crate) idle_after: Option<u64>,
    /// How it syncs it.
    #[serde(default)]
    pub(crate) persistence: Persistence,
    /// Listeners.
    #[serde(default, rename = "listener")]
    pub(crate) listeners: Vec<ListenerConfig>,
    /// Limits.
    #[serde(default)]
    pub(crate) limits: Limits,
    /// Bridges to other brokers.
    #[serde(default, rename = "bridge")]
    pub(crate) bridges: Vec<BridgeConfig>,
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

/// One `[[bridge]]`: the remote broker, how to reach it, and the topic rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeConfig {
    /// For the log, and the bridge's local session (`$bridge/NAME`).
    pub(crate) name: String,
    /// The remote broker's URL.
    pub(crate) address: String,
    /// The client identifier at the remote broker (default: `HOSTNAME.NAME`).
    pub(crate) client_id: Option<String>,
    /// Replaces the URL's user name.
    pub(crate) username: Option<String>,
    /// Replaces the URL's password.
    pub(crate) password: Option<String>,
    /// TLS towards the remote broker.
    pub(crate) tls: Option<BridgeTlsConfig>,
    /// The protocol version (default 5).
    #[serde(default)]
    pub(crate) version: BridgeVersion,
    /// Start a new session at the remote broker (default: resume it).
    #[serde(default)]
    pub(crate) clean_start: bool,
    /// Seconds the remote broker keeps the session (5 only; default 86400).
    pub(crate) session_expiry: Option<u32>,
    /// Seconds (default 60).
    pub(crate) keep_alive: Option<u16>,
    /// 3.1.1: the bridge bit of the protocol level (default true).
    pub(crate) try_private: Option<bool>,
    /// QoS 1/2 publishes in flight to the remote broker (default: the library's, 100).
    pub(crate) max_inflight: Option<u16>,
    /// The topic rules.
    pub(crate) topics: Vec<BridgeTopicConfig>,
}

/// A bridge's `tls` table (the names of the listeners' table and of `mqtt publish --cafile`,
/// `--cert`, `--key`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeTlsConfig {
    /// The CA that signs the remote broker's certificate (PEM).
    pub(crate) cafile: Option<PathBuf>,
    /// A client certificate chain (PEM), with `key`.
    pub(crate) cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub(crate) key: Option<PathBuf>,
}

/// A bridge's `version`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum BridgeVersion {
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V3_1_1,
    /// MQTT 5.0.
    #[default]
    #[serde(rename = "5")]
    V5,
}

/// One of a bridge's `topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeTopicConfig {
    /// The topic filter, under the prefixes.
    pub(crate) filter: String,
    /// Which way (default out, as mosquitto's).
    #[serde(default)]
    pub(crate) direction: BridgeDirection,
    /// The highest QoS forwarded (default 2).
    pub(crate) qos: Option<u8>,
    /// The prefix of the topics here.
    #[serde(default)]
    pub(crate) local_prefix: String,
    /// The prefix of the topics at the remote broker.
    #[serde(default)]
    pub(crate) remote_prefix: String,
}

/// A topic rule's `direction`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BridgeDirection {
    /// From this broker to the remote one.
    #[default]
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

/// The default `session_expiry`: a day of outage before the remote broker drops what waits.
const BRIDGE_SESSION_EXPIRY: u32 = 86_400;

/// The default `keep_alive`.
const BRIDGE_KEEP_ALIVE: u16 = 60;

impl BridgeConfig {
    /// How errors name it: by name, or by its place in the file when the name is unusable.
    pub(crate) fn label(&self, index: usize) -> String {
        bridge_label(index, Some(&self.name))
    }

    /// Fails, naming the key, when a TLS file cannot be opened: better at startup than as a
    /// warning at every attempt to connect.
    pub(crate) fn check_files(&self) -> anyhow::Result<()> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        for (key, path) in [
            ("cafile", &tls.cafile),
            ("cert", &tls.cert),
            ("key", &tls.key),
        ] {
            if let Some(path) = path {
                std::fs::File::open(path)
                    .with_context(|| format!("tls.{key} {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The library's bridge; every error says which key is wrong.
    pub(crate) fn options(&self) -> anyhow::Result<BridgeOptions> {
        anyhow::ensure!(
            valid_bridge_name(&self.name),
            "name {:?} must be non-empty, without '/', '+' or '#'",
            self.name
        );
        let tls = self.tls.as_ref();
        if let Some(tls) = tls {
            match (&tls.cert, &tls.key) {
                (Some(_), None) => anyhow::bail!("tls: `cert` needs `key`"),
                (None, Some(_)) => anyhow::bail!("tls: `key` needs `cert`"),
                _ => {}
            }
            anyhow::ensure!(
                tls.cafile.is_some() || tls.cert.is_some(),
                "tls: give `cafile`, or `cert` and `key` (mqtts:// and wss:// alone trust the \
                 system's CAs)"
            );
        }
        let version = match self.version {
            BridgeVersion::V5 => Version::V5,
            BridgeVersion::V3_1_1 => Version::V3_1_1,
        };
        // What `mqtt publish` makes of its connection flags: the URL, TLS files, version...
        let connect = ConnectArgs {
            host: String::new(),
            port: None,
            url: Some(self.address.clone()),
            id: self.client_id.clone().filter(|id| !id.is_empty()),
            keepalive: self.keep_alive.unwrap_or(BRIDGE_KEEP_ALIVE),
            no_clean: !self.clean_start,
            // ...credentials apart: each key replaces its own part of the URL's.
            username: None,
            password: None,
            version,
            cafile: tls.and_then(|tls| tls.cafile.clone()),
            cert: tls.and_then(|tls| tls.cert.clone()),
            key: tls.and_then(|tls| tls.key.clone()),
            tls_server_name: None,
            help: None,
        };
        // ...but a bridge reconnects, with the client's backoff, after its first connection.
        let mut remote = connect
            .options()
            .context("address")?
            .reconnect(Some(BackoffConfig::default()));
        match (version, self.session_expiry) {
            (Version::V3_1_1, Some(_)) => anyhow::bail!(
                "`session_expiry` is for version 5: with 3.1.1 the remote broker keeps the \
                 session while clean_start = false"
            ),
            (Version::V3_1_1, None) => {}
            (_, expiry) => {
                let secs = expiry.unwrap_or(BRIDGE_SESSION_EXPIRY);
                remote = remote.session_expiry(Duration::from_secs(secs.into()));
            }
        }
        let config = remote.config_mut();
        if let Some(username) = &self.username {
            config.username = Some(username.clone().into());
        }
        if let Some(password) = &self.password {
            config.password = Some(password.clone().into());
        }
        anyhow::ensure!(
            version == Version::V5 || config.password.is_none() || config.username.is_some(),
            "with 3.1.1 a password needs a user name (`username`, or user:password@ in `address`)"
        );
        if let Some(max) = self.max_inflight {
            anyhow::ensure!(max > 0, "max_inflight must be positive");
            config.max_inflight = max;
        }
        anyhow::ensure!(
            !self.topics.is_empty(),
            "`topics` is empty: a bridge needs at least one {{ filter = \"...\" }}"
        );
        let mut bridge = BridgeOptions::new(self.name.clone(), remote)
            .try_private(self.try_private.unwrap_or(true));
        for (n, topic) in self.topics.iter().enumerate() {
            bridge = bridge.topic(topic.topic().with_context(|| format!("topic {}", n + 1))?);
        }
        Ok(bridge)
    }

    /// Where it connects, for the log: its address without the user name and password.
    pub(crate) fn describe(&self) -> String {
        let Some((scheme, rest)) = self.address.split_once("://") else {
            return self.address.clone();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest.get(..authority_end).and_then(|a| a.rfind('@')) {
            Some(at) => format!("{scheme}://{}", rest.get(at + 1..).unwrap_or_default()),
            None => self.address.clone(),
        }
    }
}

impl BridgeTopicConfig {
    /// The library's rule, its QoS, prefixes and filters checked.
    fn topic(&self) -> anyhow::Result<BridgeTopic> {
        let qos = self.qos.unwrap_or(2);
        let qos = crate::client_args::parse_qos(&qos.to_string()).map_err(anyhow::Error::msg)?;
        let direction = match self.direction {
            BridgeDirection::Out => Direction::Out,
            BridgeDirection::In => Direction::In,
            BridgeDirection::Both => Direction::Both,
        };
        for (key, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            anyhow::ensure!(
                !prefix.contains(['+', '#']),
                "{key} {prefix:?} holds a wildcard"
            );
        }
        let topic = BridgeTopic::new(self.filter.clone(), direction)
            .qos(qos)
            .local_prefix(self.local_prefix.clone())
            .remote_prefix(self.remote_prefix.clone());
        crate::client_args::check_filter(&topic.local_filter())?;
        crate::client_args::check_filter(&topic.remote_filter())?;
        Ok(topic)
    }
}

fn valid_bridge_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '+', '#'])
}

/// `bridge NAME`, or `bridge N` (counting from 1) without a usable name.
fn bridge_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) if valid_bridge_name(name) => format!("bridge {name}"),
        _ => format!("bridge {}", index + 1),
    }
}

/// The `[[bridge]]` table byte `offset` of `text` falls in, labelled for an error message: the
/// last bridge whose header comes before it, unless another table's header comes in between.
/// `None` when the file does not even parse as TOML tables.
fn bridge_at(text: &str, offset: usize) -> Option<String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        bridge: Vec<toml::Spanned<toml::Table>>,
    }
    let raw: Raw = toml::from_str(text).ok()?;
    // A table's span is its `[[bridge]]` header.
    let (index, bridge) = raw
        .bridge
        .iter()
        .enumerate()
        .rfind(|(_, bridge)| bridge.span().start <= offset)?;
    let between = text.get(bridge.span().end.min(offset)..offset)?;
    if between
        .lines()
        .skip(1)
        .any(|line| line.trim_start().starts_with('['))
    {
        return None;
    }
    let name = bridge.get_ref().get("name").and_then(|name| name.as_str());
    Some(bridge_label(index, name))
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
            let mut message = error.message().to_owned();
            let Some(span) = error.span() else {
                return anyhow::anyhow!("{}: {message}", path.display());
            };
            if let Some(bridge) = bridge_at(&text, span.start) {
                message = format!("{bridge}: {message}");
            }
            let line = line_of(&text, span.start);
            anyhow::anyhow!("{}, line {line}: {message}", path.display())
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
        let mut names = std::collections::HashMap::new();
        for (n, bridge) in config.bridges.iter_mut().enumerate() {
            if let Some(tls) = &mut bridge.tls {
                tls.cafile.as_mut().map(resolve);
                tls.cert.as_mut().map(resolve);
                tls.key.as_mut().map(resolve);
            }
            bridge
                .options()
                .with_context(|| format!("{}: {}", path.display(), bridge.label(n)))?;
            // Two bridges of one name would share a local session.
            if let Some(first) = names.insert(bridge.name.clone(), n) {
                anyhow::bail!(
                    "{}: bridge {}: the name {} is taken by bridge {}",
                    path.display(),
                    n + 1,
                    bridge.name,
                    first + 1
                );
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
            idle_after = 0
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
        assert_eq!(config.idle_after, Some(0));
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

    #[test]
    fn bridges_parse_into_the_library_options() {
        let config = parse(
            r#"
            [[bridge]]
            name = "cloud"
            address = "mqtts://url-user:url-secret@cloud.example:8883"
            password = "secret"
            client_id = "edge-7"
            keep_alive = 30
            max_inflight = 20
            tls = { cafile = "ca.pem", cert = "edge.pem", key = "/etc/edge.key" }
            topics = [
                { filter = "sensors/#", direction = "out", qos = 1, remote_prefix = "site-7/" },
                { filter = "commands/#", direction = "in", qos = 0, local_prefix = "cloud/" },
                { filter = "sync", direction = "both", local_prefix = "a/", remote_prefix = "b/" },
            ]

            [limits]
            max_qos = 2

            [[bridge]]
            name = "legacy"
            address = "mqtt://127.0.0.1:1884"
            username = "bridge"
            version = "3.1.1"
            clean_start = true
            try_private = false
            topics = [{ filter = "up/#" }]
            "#,
        )
        .unwrap();
        let [cloud, legacy] = &config.bridges[..] else {
            panic!("two bridges");
        };
        assert_eq!(cloud.describe(), "mqtts://cloud.example:8883");
        let tls = cloud.tls.as_ref().unwrap();
        assert!(tls.cafile.as_ref().unwrap().is_absolute());
        assert!(tls.cert.as_ref().unwrap().ends_with("edge.pem"));
        assert_eq!(tls.key.as_deref(), Some(Path::new("/etc/edge.key")));
        assert_eq!(cloud.version, BridgeVersion::V5);
        assert_eq!(cloud.try_private, None);

        let topics: Vec<_> = cloud.topics.iter().map(|t| t.topic().unwrap()).collect();
        assert_eq!(
            topics,
            [
                BridgeTopic::new("sensors/#", Direction::Out)
                    .qos(QoS::AtLeastOnce)
                    .remote_prefix("site-7/"),
                BridgeTopic::new("commands/#", Direction::In)
                    .qos(QoS::AtMostOnce)
                    .local_prefix("cloud/"),
                BridgeTopic::new("sync", Direction::Both)
                    .local_prefix("a/")
                    .remote_prefix("b/"),
            ]
        );
        let options = cloud.options().unwrap();
        assert_eq!(options.name(), "cloud");
        let text = format!("{options:?}");
        for needle in [
            "host: \"cloud.example\"",
            "port: 8883",
            "version: V5",
            "client_id: \"edge-7\"",
            "clean_start: false",
            "keep_alive: 30",
            // The URL's user name stays, its password is replaced.
            "username: Some(\"url-user\")",
            "password: Some(b\"secret\")",
            "session_expiry_interval: Some(86400)",
            "max_inflight: 20",
            "ca.pem",
            "edge.pem",
            "try_private: true",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }

        assert_eq!(legacy.version, BridgeVersion::V3_1_1);
        assert_eq!(
            legacy.topics[0].topic().unwrap(),
            BridgeTopic::new("up/#", Direction::Out)
        );
        let text = format!("{:?}", legacy.options().unwrap());
        for needle in [
            "version: V3_1_1",
            // Left empty: the library makes it HOSTNAME.legacy.
            "client_id: \"\"",
            "clean_start: true",
            "keep_alive: 60",
            "username: Some(\"bridge\")",
            "session_expiry_interval: None",
            "try_private: false",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn bad_bridges_are_one_line_errors_naming_the_bridge() {
        let ok =
            "[[bridge]]\nname = \"ok\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\" }]\n";
        for (bad, why) in [
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\" }]\nclean_session = true\n",
                "line 9: bridge cloud: unknown field `clean_session`",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = [\n  { filter = \"t\", direction = \"sideways\" },\n]\n",
                "line 9: bridge cloud: unknown variant `sideways`",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = [{ fliter = \"t\" }]\n",
                "line 8: bridge cloud: unknown field `fliter`",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\nversion = \"4\"\ntopics = [{ filter = \"t\" }]\n",
                "line 8: bridge cloud: unknown variant `4`, expected `3.1.1` or `5`",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\ntopics = [{ filter = \"t\" }]\n",
                "line 5: bridge cloud: missing field `address`",
            ),
            (
                "[[bridge]]\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\" }]\n",
                "line 5: bridge 2: missing field `name`",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\", qos = 3 }]\n",
                "broker.toml: bridge cloud: topic 1: QoS must be 0, 1 or 2, not \"3\"",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"http://h\"\ntopics = [{ filter = \"t\" }]\n",
                "broker.toml: bridge cloud: address: invalid URL: http://h",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = []\n",
                "broker.toml: bridge cloud: `topics` is empty",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t/#/x\" }]\n",
                "broker.toml: bridge cloud: topic 1: invalid topic filter \"t/#/x\"",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\", local_prefix = \"a/+/\" }]\n",
                "broker.toml: bridge cloud: topic 1: local_prefix \"a/+/\" holds a wildcard",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\nversion = \"3.1.1\"\nsession_expiry = 60\ntopics = [{ filter = \"t\" }]\n",
                "broker.toml: bridge cloud: `session_expiry` is for version 5",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\ntls = { cert = \"c.pem\" }\ntopics = [{ filter = \"t\" }]\n",
                "broker.toml: bridge cloud: tls: `cert` needs `key`",
            ),
            (
                "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://h\"\nversion = \"3.1.1\"\npassword = \"p\"\ntopics = [{ filter = \"t\" }]\n",
                "broker.toml: bridge cloud: with 3.1.1 a password needs a user name",
            ),
            (
                "[[bridge]]\nname = \"a/b\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\" }]\n",
                "broker.toml: bridge 2: name \"a/b\" must be",
            ),
            (
                "[[bridge]]\nname = \"ok\"\naddress = \"mqtt://h\"\ntopics = [{ filter = \"t\" }]\n",
                "broker.toml: bridge 2: the name ok is taken by bridge 1",
            ),
            // A typo after the bridges is not blamed on them.
            (
                "[limits]\nmax_conections = 5\n",
                "broker.toml, line 6: unknown field `max_conections`",
            ),
        ] {
            let text = format!("{ok}{bad}");
            let error = format!("{:#}", parse(&text).unwrap_err());
            assert!(error.contains(why), "{text}: {error}");
            assert!(!error.contains('\n'), "{text}: {error}");
        }
    }
}
