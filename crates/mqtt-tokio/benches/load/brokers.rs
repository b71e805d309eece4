//! The brokers under test, each a process of its own on a loopback port, and how each is
//! configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mqtt_proto::packet::Version;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use mqtt_tokio::broker::SyncPolicy;

use crate::persist::{CountingStore, StoreCounter, StoreCounts};
use crate::{BROKER_ENV, INFLIGHT, INFLIGHT_V311_ENV, STALL};

/// Our broker's WebSocket port, for the child.
const WS_PORT_ENV: &str = "MQTT_LOAD_WS_PORT";
/// Our broker's data directory, for the child (the `persist` scenario; unset: in memory).
const DATA_DIR_ENV: &str = "MQTT_LOAD_DATA_DIR";
/// Our broker's sync policy with a data directory, for the child: `always` or `periodic`.
const SYNC_ENV: &str = "MQTT_LOAD_SYNC";
/// Our broker bridges `load/#` out to this address (the `bridge` scenario).
const BRIDGE_ENV: &str = "MQTT_LOAD_BRIDGE_TO";
/// With `BRIDGE_ENV`: the bridge's protocol version, `3.1.1` or `5`.
const BRIDGE_VERSION_ENV: &str = "MQTT_LOAD_BRIDGE_VERSION";
/// Our broker's `idle_after` in milliseconds, for the child (unset: the default; 0: idle
/// connections are never parked), to compare with and without parking.
const IDLE_AFTER_ENV: &str = "MQTT_LOAD_IDLE_AFTER_MS";
/// `SyncPolicy::Periodic`'s interval in the `persist` scenario.
pub(crate) const PERIODIC: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum BrokerKind {
    Ours,
    Mosquitto,
    Rumqttd,
}

impl BrokerKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            BrokerKind::Ours => "ours",
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Rumqttd => "rumqttd",
        }
    }
}

/// Where a broker keeps its state. Only the `persist` scenario uses anything but `Memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Persistence {
    /// Nothing on disk: every broker's default.
    Memory,
    /// Ours with a data directory and `SyncPolicy::Always` (its default policy): each commit
    /// fsynced before the acknowledgements it holds go out.
    Always,
    /// Ours with a data directory and `SyncPolicy::Periodic(PERIODIC)`: commits written at
    /// once, fsynced once per interval, acknowledgements not held for the fsync.
    Periodic,
    /// mosquitto with `persistence true`, a `persistence_location` and its default
    /// `autosave_interval` (1800 s): it writes its whole state to `mosquitto.db` at each
    /// autosave and when it shuts down cleanly, and nothing in between.
    Autosave,
}

impl Persistence {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Persistence::Memory => "in memory",
            Persistence::Always => "sync always",
            Persistence::Periodic => "sync periodic 1 s",
            Persistence::Autosave => "persistence true",
        }
    }

    /// Whether `kind` has this mode.
    pub(crate) fn fits(self, kind: BrokerKind) -> bool {
        match self {
            Persistence::Memory => true,
            Persistence::Always | Persistence::Periodic => kind == BrokerKind::Ours,
            Persistence::Autosave => kind == BrokerKind::Mosquitto,
        }
    }
}

/// Every broker, in the order of the tables.
pub(crate) const BROKERS: [BrokerKind; 3] =
    [BrokerKind::Ours, BrokerKind::Mosquitto, BrokerKind::Rumqttd];

/// A broker process on a loopback port; killed on drop.
pub(crate) struct BrokerProcess {
    child: tokio::process::Child,
    port: u16,
    /// rumqttd serves 5.0 on a listener of its own; the others take both versions on `port`.
    port_v5: u16,
    /// Its WebSocket listener (path `/mqtt`, 3.1.1 for rumqttd), beside the TCP one.
    ws_port: Option<u16>,
    /// Ours only: where to ask for its counters.
    stats: Option<StatsPipe>,
    /// The data directory, with persistence on: inside `_dir`.
    data_dir: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// Our broker's counters, asked for on the child's stdin and answered on its stdout: what the
/// broker accounts itself, which no broker tells over the wire.
struct StatsPipe {
    ask: tokio::process::ChildStdin,
    answers: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

/// Some of our broker's counters ([`mqtt_proto::broker::Stats`]), as the child reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OurStats {
    /// What the messages kept for sessions weigh by the broker's own accounting.
    pub(crate) queued_bytes: u64,
    /// Messages for disconnected sessions dropped: queue full, or over the broker-wide budget.
    pub(crate) dropped: u64,
    /// What its store did so far (zero in memory).
    pub(crate) store: StoreCounts,
}

impl OurStats {
    /// The child's answer line.
    fn line(stats: &mqtt_proto::broker::Stats, store: Option<&StoreCounter>) -> String {
        let mut line = format!(
            "queued_bytes={} dropped={}",
            stats.queued_bytes,
            stats.dropped.queue_full + stats.dropped.memory_budget
        );
        if let Some(store) = store {
            line += &store.snapshot().line();
        }
        line
    }

    fn parse(line: &str) -> anyhow::Result<Self> {
        let mut stats = OurStats::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair.split_once('=').context("key=value")?;
            let value = value.parse().with_context(|| format!("{key}: {value:?}"))?;
            match key {
                "queued_bytes" => stats.queued_bytes = value,
                "dropped" => stats.dropped = value,
                _ if stats.store.set(key, value) => {}
                _ => bail!("unknown counter {key}"),
            }
        }
        Ok(stats)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl BrokerProcess {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn addr_for(&self, version: Version) -> SocketAddr {
        match version {
            Version::V5 => SocketAddr::from(([127, 0, 0, 1], self.port_v5)),
            _ => self.addr(),
        }
    }

    /// The broker's WebSocket listener.
    pub(crate) fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_port
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Our broker's counters; `None` for the peers.
    pub(crate) async fn our_stats(&mut self) -> anyhow::Result<Option<OurStats>> {
        let Some(pipe) = &mut self.stats else {
            return Ok(None);
        };
        pipe.ask.write_all(b"stats\n").await?;
        let line = tokio::time::timeout(STALL, pipe.answers.next_line())
            .await
            .context("no answer from the broker")??
            .context("the broker closed its stdout")?;
        OurStats::parse(&line).map(Some)
    }

    /// The data directory, with persistence on.
    pub(crate) fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Starts a broker in memory; `None` (with a note) when it is not installed.
    /// `our_inflight_v311` is the experiment switch, for our broker only.
    pub(crate) async fn start(
        kind: BrokerKind,
        our_inflight_v311: Option<u16>,
    ) -> anyhow::Result<Option<Self>> {
        Self::start_with(kind, our_inflight_v311, Persistence::Memory).await
    }

    /// Starts a broker that keeps its state as `persistence` says, in a fresh data directory
    /// inside its temporary directory.
    pub(crate) async fn start_with(
        kind: BrokerKind,
        our_inflight_v311: Option<u16>,
        persistence: Persistence,
    ) -> anyhow::Result<Option<Self>> {
        Self::start_full(kind, our_inflight_v311, persistence, None, None).await
    }

    /// Starts a broker in memory confined to CPU `cpu` (`taskset -c`), for the `client-pinned`
    /// scenario.
    pub(crate) async fn start_pinned(kind: BrokerKind, cpu: u16) -> anyhow::Result<Option<Self>> {
        Self::start_full(kind, None, Persistence::Memory, None, Some(cpu)).await
    }

    /// Starts a broker in memory that bridges `load/#` out, at QoS 2 (messages keep their
    /// QoS), to the broker at `remote`, with a persistent session there, speaking `version`:
    /// ours with its defaults and `BrokerBuilder::bridge`, mosquitto with a `connection`
    /// section.
    pub(crate) async fn start_bridged(
        kind: BrokerKind,
        remote: SocketAddr,
        version: Version,
    ) -> anyhow::Result<Option<Self>> {
        Self::start_full(
            kind,
            None,
            Persistence::Memory,
            Some((remote, version)),
            None,
        )
        .await
    }

    async fn start_full(
        kind: BrokerKind,
        our_inflight_v311: Option<u16>,
        persistence: Persistence,
        bridge_to: Option<(SocketAddr, Version)>,
        pin: Option<u16>,
    ) -> anyhow::Result<Option<Self>> {
        // `taskset -c CPU PROGRAM …` execs the program: the child's pid is the broker's.
        let new_command = |program: &std::ffi::OsStr| match pin {
            Some(cpu) => {
                let mut command = tokio::process::Command::new("taskset");
                command.arg("-c").arg(cpu.to_string()).arg(program);
                command
            }
            None => tokio::process::Command::new(program),
        };
        if bridge_to.is_some() && kind == BrokerKind::Rumqttd {
            bail!("rumqttd is not run as a bridge here");
        }
        if !persistence.fits(kind) {
            bail!("{} has no mode {:?}", kind.name(), persistence);
        }
        // On the disk under test: /tmp here is the root file system (ext4), not a tmpfs.
        let dir = tempfile::tempdir()?;
        let data_dir = (persistence != Persistence::Memory).then(|| dir.path().join("data"));
        if let Some(data_dir) = &data_dir {
            std::fs::create_dir(data_dir)?;
        }
        let port = free_port()?;
        let mut port_v5 = port;
        // Every broker also serves MQTT over WebSocket here (the `websocket` scenario).
        let ws_port = free_port()?;
        let mut command = match kind {
            BrokerKind::Ours => {
                let mut command = new_command(std::env::current_exe()?.as_os_str());
                command.env(BROKER_ENV, port.to_string());
                command.env(WS_PORT_ENV, ws_port.to_string());
                for name in [
                    INFLIGHT_V311_ENV,
                    DATA_DIR_ENV,
                    SYNC_ENV,
                    BRIDGE_ENV,
                    BRIDGE_VERSION_ENV,
                ] {
                    command.env_remove(name);
                }
                if let Some((remote, version)) = bridge_to {
                    command.env(BRIDGE_ENV, remote.to_string());
                    command.env(BRIDGE_VERSION_ENV, version_name(version));
                }
                if let Some(n) = our_inflight_v311 {
                    command.env(INFLIGHT_V311_ENV, n.to_string());
                }
                if let Some(data_dir) = &data_dir {
                    command.env(DATA_DIR_ENV, data_dir);
                    let sync = match persistence {
                        Persistence::Periodic => "periodic",
                        _ => "always",
                    };
                    command.env(SYNC_ENV, sync);
                }
                command
            }
            BrokerKind::Mosquitto => {
                let Some(exe) = installed(&["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]) else {
                    println!("note: mosquitto is not installed; skipped");
                    return Ok(None);
                };
                let conf = dir.path().join("mosquitto.conf");
                let mut text = mosquitto_conf(port, ws_port, data_dir.as_deref());
                if let Some((remote, version)) = bridge_to {
                    text.push_str(&mosquitto_bridge_conf(remote, version));
                }
                std::fs::write(&conf, text)?;
                let mut command = new_command(exe.as_os_str());
                command.arg("-c").arg(conf);
                command
            }
            BrokerKind::Rumqttd => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default();
                let local = home.join(".cargo/bin/rumqttd");
                let Some(exe) = installed(&[local.to_str().unwrap_or_default()]) else {
                    println!("note: rumqttd is not installed (cargo install rumqttd); skipped");
                    return Ok(None);
                };
                port_v5 = free_port()?;
                let conf = dir.path().join("rumqttd.toml");
                std::fs::write(&conf, rumqttd_conf(port, port_v5, ws_port))?;
                let mut command = new_command(exe.as_os_str());
                command.arg("-q").arg("-c").arg(conf);
                command
            }
        };
        let piped = || {
            if kind == BrokerKind::Ours {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            }
        };
        command.stdin(piped()).stdout(piped()).kill_on_drop(true);
        let mut child = command.spawn().with_context(|| kind.name())?;
        let stats = match (child.stdin.take(), child.stdout.take()) {
            (Some(ask), Some(answers)) => Some(StatsPipe {
                ask,
                answers: tokio::io::BufReader::new(answers).lines(),
            }),
            _ => None,
        };
        let broker = BrokerProcess {
            child,
            port,
            port_v5,
            ws_port: Some(ws_port),
            stats,
            data_dir,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ws = broker.ws_addr().into_iter();
        for addr in [broker.addr(), broker.addr_for(Version::V5)]
            .into_iter()
            .chain(ws)
        {
            while TcpStream::connect(addr).await.is_err() {
                if Instant::now() > deadline {
                    bail!("{} did not listen on {addr}", kind.name());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Some(broker))
    }

    /// CPU time the broker used so far: the sum of its threads' run times in nanoseconds
    /// (`/proc/PID/task/*/schedstat`; brokers keep their threads, so none is missing), else
    /// user and system time from `/proc/PID/stat`, in ticks of 10 ms, too coarse for `--quick`.
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.pid().context("broker exited")?;
        if let Some(ns) = schedstat_ns(pid) {
            return Ok(Duration::from_nanos(ns));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which may contain spaces, ends with ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
            .sum();
        Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
    }

    /// Bytes the broker caused to be written to storage so far (`write_bytes` in
    /// `/proc/PID/io`, all its threads): its data directory's files, whenever the kernel
    /// writes them out. `None` without I/O accounting.
    pub(crate) fn write_bytes(&self) -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid()?)).ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Sends the broker a signal (`USR1`: mosquitto saves its state), through `kill`: no
    /// `unsafe` for libc.
    pub(crate) async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("broker exited")?;
        let status = tokio::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{name} {pid}: {status}");
        }
        Ok(())
    }

    /// Resident memory in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("broker exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")?;
        Ok(kb * 1024)
    }
}

/// The time every thread of `pid` has run, in nanoseconds: the first field of each thread's
/// schedstat. `None` when the kernel has no schedstat.
pub(crate) fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread may end between the listing and the read.
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            *total.get_or_insert(0) += ns;
        }
    }
    total
}

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
pub(crate) fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

pub(crate) fn installed(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// mosquitto, configured so that it loses nothing it acknowledged: by default it keeps at most
/// 1,000 messages queued per client (`max_queued_messages`) and silently drops QoS 1 messages
/// beyond that, after PUBACKing them to their publisher, and it keeps only 20 in flight
/// (`max_inflight_messages`). `max_queued_messages 0` lifts the queue limit; the window is the
/// load clients' 100. Otherwise its defaults (Nagle stays on: faster here). With a
/// `data_dir`, `persistence true` there, at its default `autosave_interval` (1800 s), and
/// `user root`: started as root, mosquitto otherwise runs as the user `mosquitto`, which cannot
/// write in our temporary directory (it logs "Error saving in-memory database ... Permission
/// denied" at each save and keeps nothing). As any other user it stays who it is.
pub(crate) fn mosquitto_conf(port: u16, ws_port: u16, data_dir: Option<&Path>) -> String {
    let persistence = match data_dir {
        // mosquitto joins the location and the file name as they are: the slash is needed.
        Some(dir) => format!(
            "persistence true\npersistence_location {}/\nuser root\n",
            dir.display()
        ),
        None => "persistence false\n".to_owned(),
    };
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         max_queued_messages 0\n\
         max_inflight_messages {INFLIGHT}\n\
         max_connections -1\n\
         {persistence}\
         log_type none\n\
         listener {ws_port} 127.0.0.1\n\
         protocol websockets\n"
    )
}

/// A mosquitto bridge as ours is configured in the `bridge` scenario: `load/#` out at QoS 2, a
/// persistent session (`cleansession false`), `try_private` (its default), and mosquitto's
/// other bridge defaults; its in-flight window towards the remote broker is the broker's
/// `max_inflight_messages` (100 here).
pub(crate) fn mosquitto_bridge_conf(remote: SocketAddr, version: Version) -> String {
    let protocol = match version {
        Version::V5 => "mqttv50",
        _ => "mqttv311",
    };
    format!(
        "connection bench\n\
         address {remote}\n\
         clientid edge.bench\n\
         cleansession false\n\
         bridge_protocol_version {protocol}\n\
         topic load/# out 2\n"
    )
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::V5 => "5",
        _ => "3.1.1",
    }
}

/// rumqttd's own sample configuration, with room for 20,000 connections, no delay between
/// accepts, the same in-flight window (100), 1 GiB of log per filter before anything is
/// dropped, and its 5.0 listener on `port_v5`.
pub(crate) fn rumqttd_conf(port: u16, port_v5: u16, ws_port: u16) -> String {
    format!(
        "id = 0\n\
         [router]\n\
         max_connections = 20010\n\
         max_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\n\
         max_segment_count = 10\n\
         [v4.1]\n\
         name = \"v4-1\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         next_connection_delay_ms = 0\n\
         [v4.1.connections]\n\
         connection_timeout_ms = 60000\n\
         max_payload_size = 20480\n\
         max_inflight_count = {INFLIGHT}\n\
         dynamic_filters = true\n\
         [v5.1]\n\
         name = \"v5-1\"\n\
         listen = \"127.0.0.1:{port_v5}\"\n\
         next_connection_delay_ms = 0\n\
         [v5.1.connections]\n\
         connection_timeout_ms = 60000\n\
         max_payload_size = 20480\n\
         max_inflight_count = {INFLIGHT}\n\
         dynamic_filters = true\n\
         [ws.1]\n\
         name = \"ws-1\"\n\
         listen = \"127.0.0.1:{ws_port}\"\n\
         next_connection_delay_ms = 0\n\
         [ws.1.connections]\n\
         connection_timeout_ms = 60000\n\
         max_payload_size = 20480\n\
         max_inflight_count = {INFLIGHT}\n\
         dynamic_filters = true\n"
    )
}

/// The child process: our broker on `port` with its defaults. The one override is the
/// experiment switch `--our-inflight-v311`, which the parent announces as non-default. With
/// `MQTT_LOAD_DATA_DIR` it persists there, with `SyncPolicy::Always` or (`MQTT_LOAD_SYNC=
/// periodic`) `Periodic(PERIODIC)`, through a `CountingStore`: the `FileStore` that `data_dir`
/// would open, counting its commits. Each line on stdin asks for its counters, answered with
/// one line on stdout (`OurStats`). `MQTT_LOAD_IDLE_AFTER_MS` sets `idle_after`.
pub(crate) fn run_our_broker(port: u16) -> anyhow::Result<()> {
    let threads: usize = std::env::var("MQTT_LOAD_BROKER_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let mut config = mqtt_tokio::broker::BrokerConfig::default();
    if let Ok(n) = std::env::var(INFLIGHT_V311_ENV) {
        config.connection.max_inflight_v311 = n.parse().context(INFLIGHT_V311_ENV)?;
    }
    if let Ok(n) = std::env::var(crate::MAX_CONNECTIONS_ENV) {
        config.max_connections = n.parse().context(crate::MAX_CONNECTIONS_ENV)?;
    }
    let store = match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) => Some(CountingStore::open(Path::new(&dir))?),
        None => None,
    };
    let counter = store.as_ref().map(CountingStore::counter);
    let policy = match std::env::var(SYNC_ENV).as_deref() {
        Ok("periodic") => SyncPolicy::Periodic(PERIODIC),
        Ok("always") | Err(_) => SyncPolicy::Always,
        Ok(other) => bail!("{SYNC_ENV}={other:?}: always or periodic"),
    };
    runtime.block_on(async move {
        let mut builder = mqtt_tokio::Broker::builder()
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .config(config);
        if let Some(ws) = std::env::var(WS_PORT_ENV).ok().and_then(|p| p.parse().ok()) {
            builder = builder.bind_ws(SocketAddr::from(([127, 0, 0, 1], ws)));
        }
        if let Some(store) = store {
            builder = builder.store(store).sync_policy(policy);
        }
        if let Ok(ms) = std::env::var(IDLE_AFTER_ENV) {
            builder =
                builder.idle_after(Duration::from_millis(ms.parse().context(IDLE_AFTER_ENV)?));
        }
        if let Ok(remote) = std::env::var(BRIDGE_ENV) {
            use mqtt_tokio::broker::{BridgeOptions, BridgeTopic, Direction};
            let version = match std::env::var(BRIDGE_VERSION_ENV).as_deref() {
                Ok("5") => Version::V5,
                _ => Version::V3_1_1,
            };
            let mut options = mqtt_tokio::ClientOptions::from_url(&format!("mqtt://{remote}"))?
                .version(version)
                .client_id("edge.bench")
                .clean_start(false);
            if version == Version::V5 {
                options = options.session_expiry(Duration::from_secs(3600));
            }
            let bridge = BridgeOptions::new("bench", options)
                .topic(BridgeTopic::new("load/#", Direction::Out));
            builder = builder.bridge(bridge);
        }
        let broker = builder.build().await?;
        let handle = broker.handle();
        let runtime = tokio::runtime::Handle::current();
        // A thread of its own: reading stdin blocks.
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(_) = line else { break };
                let Some(stats) = runtime.block_on(handle.stats()) else {
                    break;
                };
                println!("{}", OurStats::line(&stats, counter.as_deref()));
            }
        });
        broker.serve().await;
        Ok(())
    })
}
