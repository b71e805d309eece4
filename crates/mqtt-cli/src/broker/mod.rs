//! `mqtt broker`: our broker on TCP, TLS, WebSocket and Unix socket listeners, configured by flags and a TOML file,
//! with structured logs of connections and refusals.

mod config;
mod metrics;

use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mqtt_tokio::broker::{AclFile, PasswordFile};
use mqtt_tokio::{Broker, DisconnectReason, PeerAddr, PeerEvent};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use config::FileConfig;

/// Options of `mqtt broker`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = config::SCHEMA)]
pub(crate) struct Args {
    /// Listen on this address (an IP, or IP:PORT); repeatable. Without --bind, --port or
    /// listeners in the config file: 127.0.0.1:1883.
    #[arg(short = 'b', long = "bind", value_name = "ADDR", value_parser = parse_bind)]
    bind: Vec<Bind>,
    /// The port of --bind addresses given without one (default 1883; 0: the kernel picks one,
    /// and the log says which). Alone, it listens on 127.0.0.1:PORT.
    #[arg(short = 'p', long = "port")]
    port: Option<u16>,
    /// A TOML configuration file: listeners (with TLS), password file, ACL file, anonymous
    /// access, limits, bridges to other brokers. See the schema below (--help). --bind and
    /// --port add to its listeners.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Keep sessions, subscriptions, queued and retained messages in this directory (created
    /// if missing): a restart, or a crash, loses nothing that was acknowledged. Overrides the
    /// config file's `data_dir`. Without either, the broker keeps everything in memory.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Also serve MQTT over WebSocket (path /mqtt) on this port, at the addresses of --bind
    /// (default 127.0.0.1). For TLS (wss) or another path, use a `[[listener]]` in the config
    /// file.
    #[arg(long = "ws-port", value_name = "PORT")]
    ws_port: Option<u16>,
    /// Also listen on a Unix domain socket at this path (replacing a socket file a broker
    /// that did not stop cleanly left there; removed when the broker stops).
    #[arg(long = "unix", value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Publish the broker's counters under $SYS/broker/... (retained) every this many seconds
    /// (default 10; 0 turns them off). Overrides the config file's `sys_interval`.
    #[arg(long = "sys-interval", value_name = "SECONDS")]
    sys_interval: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (for example 127.0.0.1:9100; port 0:
    /// the kernel picks one, and the log says which). Overrides the config file's `metrics`.
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

/// A `--bind` value: an address with or without a port.
#[derive(Debug, Clone, Copy)]
struct Bind {
    ip: IpAddr,
    port: Option<u16>,
}

fn parse_bind(s: &str) -> Result<Bind, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(Bind {
            ip: addr.ip(),
            port: Some(addr.port()),
        });
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| Bind { ip, port: None })
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// The default port.
const MQTT_PORT: u16 = 1883;

/// Structured logs to stderr; `RUST_LOG` filters them (default: `info`).
fn init_logging() {
    // The store's engine tells of its own recovery at info: not the operator's business.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Runs `mqtt broker` until Ctrl-C (or SIGTERM).
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    init_logging();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mut builder = Broker::builder().config(file.limits.broker_config()?);

    // What each listener serves, in order, for the log: `listening on` lines give the
    // addresses (TCP listeners' in the order of `local_addrs`), Unix sockets their path.
    let mut described: Vec<(String, Option<PathBuf>)> = Vec::new();
    let mut addresses = Vec::new();
    for listener in &file.listeners {
        builder = builder.listener(listener.listener());
        described.push((listener.describe(), listener.unix.clone()));
        match (&listener.bind, &listener.unix) {
            (Some(addr), _) => addresses.push(addr.to_string()),
            (_, Some(path)) => addresses.push(format!("unix:{}", path.display())),
            _ => {}
        }
    }
    let port = args.port.unwrap_or(MQTT_PORT);
    let mut binds = args.bind.clone();
    if binds.is_empty()
        && (args.port.is_some()
            || args.ws_port.is_some()
            || (addresses.is_empty() && args.unix.is_none()))
    {
        binds.push(Bind {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
        });
    }
    for bind in &binds {
        let addr = SocketAddr::new(bind.ip, bind.port.unwrap_or(port));
        builder = builder.bind(addr);
        described.push(("MQTT".into(), None));
        addresses.push(addr.to_string());
    }
    if let Some(ws_port) = args.ws_port {
        for bind in &binds {
            let addr = SocketAddr::new(bind.ip, ws_port);
            builder = builder.bind_ws(addr);
            described.push(("MQTT over WebSocket at /mqtt".into(), None));
            addresses.push(addr.to_string());
        }
    }
    if let Some(path) = &args.unix {
        builder = builder.bind_unix(path);
        described.push(("MQTT".into(), Some(path.clone())));
        addresses.push(format!("unix:{}", path.display()));
    }

    let allow_anonymous = file.allow_anonymous.unwrap_or(file.password_file.is_none());
    match &file.password_file {
        Some(path) => {
            let passwords = PasswordFile::load(path)?.allow_anonymous(allow_anonymous);
            info!(
                "password file {}: {} user(s), anonymous access {}",
                path.display(),
                passwords.len(),
                if allow_anonymous { "on" } else { "off" }
            );
            builder = builder.authenticator(passwords);
        }
        None if !allow_anonymous => {
            anyhow::bail!("allow_anonymous = false needs a password_file: nobody could connect")
        }
        None => {}
    }
    if let Some(path) = &file.acl_file {
        builder = builder.authorizer(AclFile::load(path)?);
        info!("ACL file {}", path.display());
    }
    if let Some(seconds) = args.sys_interval.or(file.sys_interval) {
        builder = builder.sys_interval(std::time::Duration::from_secs(seconds));
    }
    if let Some(seconds) = file.idle_after {
        builder = builder.idle_after(std::time::Duration::from_secs(seconds));
    }
    if let Some(dir) = args.data_dir.as_ref().or(file.data_dir.as_ref()) {
        let policy = file.persistence.policy()?;
        builder = builder.data_dir(dir).sync_policy(policy);
    }
    for (n, bridge) in file.bridges.iter().enumerate() {
        bridge.check_files().with_context(|| {
            let path = args.config.as_deref().unwrap_or(Path::new(""));
            format!("{}: {}", path.display(), bridge.label(n))
        })?;
        builder = builder.bridge(bridge.options()?);
    }
    let counts = std::sync::Arc::new(metrics::EventCounts::default());
    let counted = counts.clone();
    builder = builder.on_event(move |event| {
        counted.note(event);
        log_event(event);
    });

    let stop = crate::shutdown_signal()?;
    let broker = builder
        .build()
        .await
        .with_context(|| format!("cannot start the broker on {}", addresses.join(", ")))?;
    if let Some((dir, report)) = broker.restored() {
        info!(
            "data dir {}: restored {} session(s), {} subscription(s), {} queued message(s), {} \
             retained message(s); {} session(s) expired while stopped",
            dir.display(),
            report.sessions,
            report.subscriptions,
            report.messages,
            report.retained,
            report.expired_sessions,
        );
        for skipped in &report.skipped {
            warn!(
                "data dir {}: skipped a damaged record: {skipped}",
                dir.display()
            );
        }
    }
    let mut tcp = broker.local_addrs().into_iter();
    for (what, unix) in described {
        match unix {
            Some(path) => info!("{what} listening on unix:{}", path.display()),
            None => {
                if let Some(addr) = tcp.next() {
                    info!("{what} listening on {addr}");
                }
            }
        }
    }
    for bridge in &file.bridges {
        info!("bridge {} to {}", bridge.name, bridge.describe());
    }
    let handle = broker.spawn();
    if let Some(addr) = args.metrics.or(file.metrics) {
        metrics::serve(addr, handle.clone(), counts)?;
    }
    let reloads = reload_on_hangup(handle.clone(), file, args.config.clone(), allow_anonymous)?;
    stop.await;
    reloads.abort();
    info!("shutting down");
    handle.stop().await;
    info!("stopped");
    Ok(())
}

/// On SIGHUP, reads the password file, the ACL file and the TLS files again (those the broker
/// started with), and logs what changed; a file that does not load leaves what is in use, with
/// an error in the log. Connected clients are judged by a new ACL from their next PUBLISH or
/// SUBSCRIBE on; a new password file applies to clients that connect next.
fn reload_on_hangup(
    handle: mqtt_tokio::BrokerHandle,
    file: config::FileConfig,
    config_path: Option<PathBuf>,
    allow_anonymous: bool,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                info!("SIGHUP: reloading");
                reload(&handle, &file, allow_anonymous).await;
                if let Some(path) = &config_path {
                    reload_limits(&handle, path).await;
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (handle, file, config_path, allow_anonymous);
        Ok(tokio::spawn(async {}))
    }
}

async fn reload(
    handle: &mqtt_tokio::BrokerHandle,
    file: &config::FileConfig,
    allow_anonymous: bool,
) {
    if let Some(path) = &file.password_file {
        match PasswordFile::load(path) {
            Ok(passwords) => {
                let users = passwords.len();
                if handle
                    .set_authenticator(passwords.allow_anonymous(allow_anonymous))
                    .await
                {
                    info!("password file {} reloaded: {users} user(s)", path.display());
                } else {
                    warn!(
                        "password file {} not reloaded: the broker is stopping",
                        path.display()
                    );
                }
            }
            Err(error) => warn!(
                "password file {} not reloaded, the one in use stays: {error}",
                path.display()
            ),
        }
    }
    if let Some(path) = &file.acl_file {
        match AclFile::load(path) {
            Ok(acl) => {
                handle.set_authorizer(acl).await;
                info!("ACL file {} reloaded", path.display());
            }
            Err(error) => warn!(
                "ACL file {} not reloaded, the rules in use stay: {error}",
                path.display()
            ),
        }
    }
    if file.listeners.iter().any(|l| l.tls.is_some()) {
        match handle.reload_tls().await {
            Ok(n) => info!("TLS certificates reloaded for {n} listener(s)"),
            Err(error) => warn!("TLS not reloaded, the certificates in use stay: {error}"),
        }
    }
}

/// Reads the config file's `[limits]` again and applies those that can change while the
/// broker runs; the others are logged as needing a restart.
async fn reload_limits(handle: &mqtt_tokio::BrokerHandle, path: &Path) {
    let config = config::FileConfig::load(path).and_then(|file| file.limits.broker_config());
    match config {
        Ok(config) => {
            let (changed, fixed) = handle.set_limits(config).await;
            for change in changed {
                info!("limit changed: {change}");
            }
            for name in fixed {
                warn!("limit {name} changed in the config file: it takes a restart to apply");
            }
        }
        Err(error) => warn!("config file not reloaded, the limits in use stay: {error:#}"),
    }
}

/// One log line per connect, disconnect and refusal, and per bridge connection and outage.
fn log_event(event: &PeerEvent) {
    match event {
        // A bridge's own session on this broker: its bridge's lines say what happens.
        PeerEvent::Connected {
            peer: PeerAddr::Internal,
            ..
        }
        | PeerEvent::Disconnected {
            peer: PeerAddr::Internal,
            ..
        } => {}
        PeerEvent::Connected {
            peer,
            client_id,
            username,
            session_present,
        } => info!(
            %peer,
            client_id = &**client_id,
            username = username.as_deref().unwrap_or(""),
            session_present,
            "client connected"
        ),
        PeerEvent::Disconnected {
            peer,
            client_id,
            username,
            reason: DisconnectReason::Refused { reason_code, .. },
        } => warn!(
            %peer,
            client_id = client_id.as_deref().unwrap_or(""),
            username = username.as_deref().unwrap_or(""),
            "connection refused: {reason_code}"
        ),
        PeerEvent::Disconnected {
            peer,
            client_id: Some(client_id),
            reason,
            ..
        } => info!(%peer, client_id = &**client_id, %reason, "client disconnected"),
        // Never sent CONNECT (a port scan, a health check, a TLS client on a plain port).
        PeerEvent::Disconnected {
            peer,
            client_id: None,
            reason,
            ..
        } => info!(%peer, %reason, "connection closed before CONNECT"),
        PeerEvent::TlsFailed { peer, error } => warn!(%peer, "TLS handshake failed: {error}"),
        PeerEvent::WebSocketFailed { peer, error } => warn!(%peer, "{error}"),
        PeerEvent::MessagesDropped {
            client_id,
            reason,
            count,
        } => warn!(
            %client_id,
            "dropped {count} message(s) for the disconnected session: {reason} \
             (limits.max_session_queue, max_session_queue_bytes, max_total_queued_bytes)"
        ),
        PeerEvent::StoreFailed { error } => warn!(
            "cannot store the broker's state ({error}): not acknowledging what depends on it, \
             closing those connections, trying again"
        ),
        PeerEvent::AcceptFailed { listener, error } => match listener {
            Some(addr) => warn!(%addr, "cannot accept connections, backing off: {error}"),
            None => warn!("cannot accept connections, backing off: {error}"),
        },
        PeerEvent::BridgeConnected { name } => info!("bridge {name} connected"),
        PeerEvent::BridgeDisconnected { name, error } => {
            // A lost connection's error starts with the word the line has already said.
            let error = error.strip_prefix("disconnected: ").unwrap_or(error);
            warn!("bridge {name} disconnected: {error}; retrying")
        }
        PeerEvent::Rejected { peer } => {
            warn!(%peer, "connection rejected: too many connections (limits.max_connections)")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_with_and_without_ports() {
        let bind = parse_bind("0.0.0.0").unwrap();
        assert_eq!((bind.ip.to_string(), bind.port), ("0.0.0.0".into(), None));
        let bind = parse_bind("127.0.0.1:1884").unwrap();
        assert_eq!(bind.port, Some(1884));
        let bind = parse_bind("[::1]").unwrap();
        assert_eq!((bind.ip.to_string(), bind.port), ("::1".into(), None));
        assert_eq!(parse_bind("[::1]:8883").unwrap().port, Some(8883));
        assert!(parse_bind("localhost").is_err());
    }
}
