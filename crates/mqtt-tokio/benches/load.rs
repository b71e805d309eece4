//! Load over loopback sockets: our client against rumqttc, our broker against mosquitto and
//! rumqttd, with the same load for all, each broker a process of its own.
//!
//! ```sh
//! cargo bench -p mqtt-tokio --bench load                       # everything, one run
//! cargo bench -p mqtt-tokio --bench load -- client --runs 3    # medians of three runs
//! cargo bench -p mqtt-tokio --bench load -- broker --quick     # a tenth of the messages
//! cargo bench -p mqtt-tokio --bench load -- memory --connections 2000
//! ```
//!
//! Scenarios (any of `client`, `broker`, `memory`; none means all):
//! - `client`: 100,000 PUBLISHes of 64 B from our tokio `Client` and from rumqttc's
//!   `AsyncClient` (both 3.1.1, 100 in flight), against mosquitto and our broker. QoS 0 ends
//!   with a QoS 1 publish whose PUBACK proves the broker read everything before it; QoS 1 ends
//!   with the last PUBACK.
//! - `broker`: 64 B messages relayed 1 to 1 (QoS 0 and 1), 10 to 1 (QoS 1) and 1 to 10 (QoS 0
//!   and 1). The load clients are the same for every broker: our sans-I/O `ClientConnection`
//!   over a tokio `TcpStream`, one task each, in this process. Publishers keep at most 1,000
//!   messages per subscriber in transit (published, not yet received), so no broker is pushed
//!   into dropping or unbounded queueing and latency means the same for all. The payload starts
//!   with the send time; subscribers record the end-to-end latency in a histogram. Every message
//!   is counted: a lost one shows in the table.
//! - `memory`: 10,000 idle 3.1.1 connections (CONNECT and CONNACK done, keep alive one hour),
//!   opened in batches of 50; the broker's resident memory (VmRSS) before and after, per
//!   connection.
//!
//! Our broker runs as this same binary re-executed with `MQTT_LOAD_BROKER_PORT` set, on a
//! multi-thread tokio runtime with 2 workers (`MQTT_LOAD_BROKER_THREADS=1`: a current-thread
//! runtime instead).
//! mosquitto (`/usr/sbin/mosquitto`) and rumqttd (`~/.cargo/bin/rumqttd`, from
//! `cargo install rumqttd`) are skipped with a note when missing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use mqtt_proto::connection::{ClientConfig, ClientConnection, ClientEvent};
use mqtt_proto::packet::{
    ByteString, Publish, QoS, SubscribeProperties, Subscription, TopicFilter, TopicName, Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Set in the child process that runs our broker.
const BROKER_ENV: &str = "MQTT_LOAD_BROKER_PORT";
/// Set once the file descriptor limit has been raised, so the re-exec happens once.
const RAISED_ENV: &str = "MQTT_LOAD_NOFILE_RAISED";
const PAYLOAD: usize = 64;
/// In-flight QoS 1 window, the same for every client and broker.
const INFLIGHT: u16 = 100;
/// Messages per subscriber that publishers let be in transit.
const IN_TRANSIT: u64 = 1000;
/// A run with no progress for this long has lost messages.
const STALL: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    if let Ok(port) = std::env::var(BROKER_ENV) {
        return run_our_broker(port.parse()?);
    }
    let args = Args::parse()?;
    if args.memory && raise_nofile_and_reexec(args.connections)? {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

#[derive(Debug, Clone)]
struct Args {
    client: bool,
    broker: bool,
    memory: bool,
    messages: u64,
    connections: usize,
    runs: usize,
    /// Only relays whose name contains this.
    relay: Option<String>,
    /// Only these brokers.
    brokers: Option<String>,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut args = Args {
            client: false,
            broker: false,
            memory: false,
            messages: 100_000,
            connections: 10_000,
            runs: 1,
            relay: None,
            brokers: None,
        };
        let mut quick = false;
        let mut iter = std::env::args().skip(1);
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "client" => args.client = true,
                "broker" | "relay" => args.broker = true,
                "memory" => args.memory = true,
                "--quick" => quick = true,
                "--messages" => args.messages = number(iter.next())?,
                "--connections" => args.connections = number(iter.next())?,
                "--runs" => args.runs = number::<usize>(iter.next())?.max(1),
                "--relay" => args.relay = iter.next(),
                "--brokers" => args.brokers = iter.next(),
                // What cargo passes to every bench binary.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other:?}; use client, broker, memory, --quick, \
                     --messages N, --connections N, --runs N, --relay NAME, \
                     --brokers ours,mosquitto,rumqttd"
                ),
            }
        }
        if !(args.client || args.broker || args.memory) {
            (args.client, args.broker, args.memory) = (true, true, true);
        }
        if quick {
            args.messages /= 10;
            args.connections /= 10;
        }
        Ok(args)
    }

    fn wants(&self, broker: BrokerKind) -> bool {
        self.brokers
            .as_ref()
            .is_none_or(|list| list.split(',').any(|b| b == broker.name()))
    }

    fn wants_relay(&self, relay: &Relay) -> bool {
        self.relay
            .as_ref()
            .is_none_or(|name| relay.name.contains(name.as_str()))
    }
}

fn number<T: std::str::FromStr>(arg: Option<String>) -> anyhow::Result<T> {
    arg.and_then(|a| a.parse().ok())
        .context("expected a number after the option")
}

/// 10,000 connections need that many descriptors here and in the broker (which inherits the
/// limit). Raises the soft limit to the hard one through the shell (no `unsafe` for setrlimit)
/// and runs this binary again; returns whether it did.
fn raise_nofile_and_reexec(connections: usize) -> anyhow::Result<bool> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: Option<usize> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|s| s.parse().ok());
    let needed = connections + 500;
    if soft.is_none_or(|soft| soft >= needed) || std::env::var_os(RAISED_ENV).is_some() {
        return Ok(false);
    }
    let exe = std::env::current_exe()?;
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(RAISED_ENV, "1")
        .status()?;
    std::process::exit(status.code().unwrap_or(1));
}

// ---------------------------------------------------------------------------------------------
// Brokers under test

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BrokerKind {
    Ours,
    Mosquitto,
    Rumqttd,
}

impl BrokerKind {
    fn name(self) -> &'static str {
        match self {
            BrokerKind::Ours => "ours",
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Rumqttd => "rumqttd",
        }
    }
}

/// A broker process on a loopback port; killed on drop.
struct BrokerProcess {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
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

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts a broker; `None` (with a note) when it is not installed.
    async fn start(kind: BrokerKind) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut command = match kind {
            BrokerKind::Ours => {
                let mut command = tokio::process::Command::new(std::env::current_exe()?);
                command.env(BROKER_ENV, port.to_string());
                command
            }
            BrokerKind::Mosquitto => {
                let Some(exe) = installed(&["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]) else {
                    println!("note: mosquitto is not installed; skipped");
                    return Ok(None);
                };
                let conf = dir.path().join("mosquitto.conf");
                std::fs::write(&conf, mosquitto_conf(port))?;
                let mut command = tokio::process::Command::new(exe);
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
                let conf = dir.path().join("rumqttd.toml");
                std::fs::write(&conf, rumqttd_conf(port))?;
                let mut command = tokio::process::Command::new(exe);
                command.arg("-q").arg("-c").arg(conf);
                command
            }
        };
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| kind.name())?;
        let broker = BrokerProcess {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(broker.addr()).await.is_err() {
            if Instant::now() > deadline {
                bail!("{} did not listen on port {port}", kind.name());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(broker))
    }

    /// CPU time the broker used so far (user and system).
    fn cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.pid().context("broker exited")?;
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

    /// Resident memory in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
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

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
fn clock_ticks() -> u64 {
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

fn installed(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// mosquitto with its QoS 1 drops switched off (`max_queued_messages 0`: no limit) and the same
/// in-flight window as the others (100); otherwise its defaults (Nagle stays on: faster here).
fn mosquitto_conf(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         max_queued_messages 0\n\
         max_inflight_messages {INFLIGHT}\n\
         max_connections -1\n\
         persistence false\n\
         log_type none\n"
    )
}

/// rumqttd's own sample configuration, with room for 20,000 connections, no delay between
/// accepts, the same in-flight window (100), and 1 GiB of log per filter before anything is
/// dropped.
fn rumqttd_conf(port: u16) -> String {
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
         dynamic_filters = true\n"
    )
}

/// The child process: our broker on `port`, its limits raised so that nothing is dropped.
fn run_our_broker(port: u16) -> anyhow::Result<()> {
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
    runtime.block_on(async move {
        let mut config = mqtt_tokio::broker::BrokerConfig::default();
        config.max_connections = 1_000_000;
        config.max_session_queue = 1_000_000;
        config.connection.max_queued = 1_000_000;
        config.connection.receive_maximum = INFLIGHT;
        config.connection.max_inflight_v311 = INFLIGHT;
        let broker = mqtt_tokio::Broker::builder()
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .config(config)
            .build()
            .await?;
        broker.serve().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal load client: the sans-I/O core over a tokio TcpStream, in one task.

struct Raw {
    stream: TcpStream,
    conn: ClientConnection,
    out: BytesMut,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr, id: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut config = ClientConfig::new(Version::V3_1_1, id.to_owned());
        config.keep_alive = 600;
        config.max_inflight = INFLIGHT;
        config.max_queued = 1_000_000;
        let conn = ClientConnection::new(config, None, Instant::now());
        let mut raw = Raw {
            stream,
            conn,
            out: BytesMut::with_capacity(64 * 1024),
            buf: vec![0; 64 * 1024],
        };
        raw.flush().await?;
        loop {
            raw.read().await?;
            while let Some(event) = raw.conn.poll_event() {
                match event {
                    ClientEvent::Connected { .. } => return Ok(raw),
                    ClientEvent::Disconnected(why) => bail!("refused: {why:?}"),
                    _ => {}
                }
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        self.conn.subscribe(
            Instant::now(),
            vec![Subscription::new(TopicFilter::new(filter)?, qos)],
            SubscribeProperties::default(),
        )?;
        self.flush().await?;
        loop {
            self.read().await?;
            while let Some(event) = self.conn.poll_event() {
                if let ClientEvent::Subscribed(_) = event {
                    return Ok(());
                }
            }
        }
    }

    /// Writes everything the core has to send.
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.out.clear();
        if self.conn.poll_transmit(Instant::now(), &mut self.out) {
            self.stream.write_all(&self.out).await?;
        }
        Ok(())
    }

    async fn read(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            bail!("connection closed by the broker");
        }
        self.conn.handle_bytes(Instant::now(), &self.buf[..n]);
        Ok(())
    }

    /// Reads what is there without waiting.
    fn try_read(&mut self) -> anyhow::Result<()> {
        loop {
            match self.stream.try_read(&mut self.buf) {
                Ok(0) => bail!("connection closed by the broker"),
                Ok(n) => self.conn.handle_bytes(Instant::now(), &self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The clock payload timestamps are relative to (publishers and subscribers share a process).
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn stamped_payload() -> Bytes {
    let mut payload = [0u8; PAYLOAD];
    let nanos = epoch().elapsed().as_nanos() as u64;
    payload[..8].copy_from_slice(&nanos.to_be_bytes());
    Bytes::copy_from_slice(&payload)
}

fn latency_us(payload: &[u8]) -> u64 {
    let sent = payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let now = epoch().elapsed().as_nanos() as u64;
    now.saturating_sub(sent) / 1000
}

// ---------------------------------------------------------------------------------------------
// Broker relay

#[derive(Debug, Clone, Copy)]
struct Relay {
    name: &'static str,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
}

const RELAYS: [Relay; 5] = [
    Relay {
        name: "relay 1→1 QoS 0",
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtMostOnce,
    },
    Relay {
        name: "relay 1→1 QoS 1",
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
    },
    Relay {
        name: "relay 10→1 QoS 1",
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
    },
    Relay {
        name: "relay 1→10 QoS 0",
        publishers: 1,
        subscribers: 10,
        qos: QoS::AtMostOnce,
    },
    Relay {
        name: "relay 1→10 QoS 1",
        publishers: 1,
        subscribers: 10,
        qos: QoS::AtLeastOnce,
    },
];

/// What publishers and subscribers of one run share.
struct Progress {
    published: AtomicU64,
    delivered: AtomicU64,
    wake: Notify,
    subscribers: u64,
}

impl Progress {
    /// How many more messages publishers may send now.
    fn room(&self) -> u64 {
        let published = self.published.load(Ordering::Acquire);
        let delivered = self.delivered.load(Ordering::Acquire);
        let in_transit = (published * self.subscribers).saturating_sub(delivered);
        (IN_TRANSIT * self.subscribers).saturating_sub(in_transit) / self.subscribers
    }
}

#[derive(Debug, Clone, Copy)]
struct RelayResult {
    /// Deliveries per second, all subscribers together.
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    lost: u64,
    /// Broker CPU time per delivered message: less sensitive to what else runs on the machine
    /// than the rate.
    cpu_ns: f64,
}

async fn relay(broker: &BrokerProcess, relay: Relay, messages: u64) -> anyhow::Result<RelayResult> {
    let addr = broker.addr();
    let per_publisher = messages / relay.publishers as u64;
    let total = per_publisher * relay.publishers as u64;
    let progress = Arc::new(Progress {
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        wake: Notify::new(),
        subscribers: relay.subscribers as u64,
    });
    let filter = if relay.publishers > 1 {
        "load/in/+"
    } else {
        "load/topic"
    };
    let mut subscribers = tokio::task::JoinSet::new();
    for i in 0..relay.subscribers {
        let mut raw = Raw::connect(addr, &format!("load-sub-{i}")).await?;
        raw.subscribe(filter, relay.qos).await?;
        let progress = progress.clone();
        subscribers.spawn(subscribe_loop(raw, total, progress));
    }
    let mut publishers = tokio::task::JoinSet::new();
    let mut raws = Vec::new();
    for i in 0..relay.publishers {
        raws.push(Raw::connect(addr, &format!("load-pub-{i}")).await?);
    }
    let cpu_before = broker.cpu()?;
    let start = Instant::now();
    for (i, raw) in raws.into_iter().enumerate() {
        let topic = if relay.publishers > 1 {
            TopicName::new(format!("load/in/{i}"))?
        } else {
            TopicName::new("load/topic")?
        };
        publishers.spawn(publish_loop(
            raw,
            topic,
            relay.qos,
            per_publisher,
            progress.clone(),
        ));
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = 0;
    let mut end = start;
    while let Some(done) = subscribers.join_next().await {
        let (count, last, h) = done??;
        received += count;
        end = end.max(last);
        histogram.add(h)?;
    }
    let cpu = broker.cpu()?.saturating_sub(cpu_before);
    let expected = total * relay.subscribers as u64;
    let elapsed = end.duration_since(start).as_secs_f64();
    Ok(RelayResult {
        rate: received as f64 / elapsed,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        lost: expected - received,
        cpu_ns: cpu.as_nanos() as f64 / received.max(1) as f64,
    })
}

async fn publish_loop(
    mut raw: Raw,
    topic: TopicName,
    qos: QoS,
    count: u64,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let mut sent = 0;
    let mut acked = 0;
    while sent < count || (qos != QoS::AtMostOnce && acked < count) {
        let wake = progress.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        // Acknowledgements first: they open the window for what the flush below sends.
        raw.try_read()?;
        let room = progress.room().min(count - sent).min(64);
        for _ in 0..room {
            let mut publish = Publish::new(topic.clone(), stamped_payload());
            publish.qos = qos;
            raw.conn.publish(Instant::now(), publish)?;
            progress.published.fetch_add(1, Ordering::AcqRel);
        }
        sent += room;
        raw.flush().await?;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Published(_) => acked += 1,
                ClientEvent::Disconnected(why) => bail!("publisher disconnected: {why:?}"),
                _ => {}
            }
        }
        let finished = sent == count && (qos == QoS::AtMostOnce || acked == count);
        if (room == 0 || sent == count) && !finished {
            // Nothing to send now: wait for deliveries (room) or acknowledgements.
            tokio::select! {
                _ = &mut wake => {}
                read = raw.read() => read?,
                _ = tokio::time::sleep(STALL) => bail!(
                    "publisher stalled at {sent}/{count}, {acked} acked, {} delivered",
                    progress.delivered.load(Ordering::Acquire)
                ),
            }
        }
    }
    Ok(())
}

async fn subscribe_loop(
    mut raw: Raw,
    expected: u64,
    progress: Arc<Progress>,
) -> anyhow::Result<(u64, Instant, Histogram<u64>)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = 0;
    let mut last = Instant::now();
    while received < expected {
        match tokio::time::timeout(STALL, raw.read()).await {
            Ok(read) => read?,
            // Lost messages: report what arrived.
            Err(_) => break,
        }
        let before = received;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Message(message) => {
                    let _ = histogram.record(latency_us(&message.publish.payload).max(1));
                    received += 1;
                }
                ClientEvent::Disconnected(why) => bail!("subscriber disconnected: {why:?}"),
                _ => {}
            }
        }
        if received > before {
            last = Instant::now();
            progress
                .delivered
                .fetch_add(received - before, Ordering::AcqRel);
            progress.wake.notify_waiters();
        }
        // Acknowledgements.
        raw.flush().await?;
    }
    Ok((received, last, histogram))
}

// ---------------------------------------------------------------------------------------------
// Client throughput: ours against rumqttc

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ClientKind {
    Ours,
    Rumqttc,
}

/// Concurrent `publish` calls on our client (each awaits its completion).
const OUR_PUBLISHERS: usize = 256;

async fn client_ours(addr: SocketAddr, qos: QoS, count: u64) -> anyhow::Result<f64> {
    let mut options =
        mqtt_tokio::ClientOptions::new(addr.ip().to_string(), addr.port()).version(Version::V3_1_1);
    options = options
        .client_id("load-ours")
        .keep_alive(Duration::from_secs(600));
    options.config_mut().max_inflight = INFLIGHT;
    options.config_mut().max_queued = 1_000_000;
    let client = mqtt_tokio::Client::connect(options).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    for worker in 0..OUR_PUBLISHERS as u64 {
        let client = client.clone();
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut n = worker;
            while n < count {
                client
                    .publish(ByteString::from_static("load/client"), payload.clone(), qos)
                    .await?;
                n += OUR_PUBLISHERS as u64;
            }
            Ok::<_, mqtt_tokio::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    if qos == QoS::AtMostOnce {
        client
            .publish("load/client", payload, QoS::AtLeastOnce)
            .await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    client.disconnect().await?;
    Ok(count as f64 / elapsed)
}

async fn client_rumqttc(addr: SocketAddr, qos: QoS, count: u64) -> anyhow::Result<f64> {
    let mut options = rumqttc::MqttOptions::new("load-rumqttc", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(600));
    options.set_inflight(INFLIGHT);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10_000);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let rqos = match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    };
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        let payload = Bytes::from(vec![7u8; PAYLOAD]);
        for _ in 0..count {
            client
                .publish_bytes("load/client", rqos, false, payload.clone())
                .await?;
        }
        if rqos == rumqttc::QoS::AtMostOnce {
            client
                .publish_bytes("load/client", rumqttc::QoS::AtLeastOnce, false, payload)
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(client)
    });
    // QoS 0 waits for the one PUBACK at the end.
    let acks_expected = if rqos == rumqttc::QoS::AtMostOnce {
        1
    } else {
        count
    };
    let mut acks = 0;
    while acks < acks_expected {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await? {
            acks += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let client = publisher.await??;
    client.disconnect().await?;
    // Let the DISCONNECT out.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    Ok(count as f64 / elapsed)
}

// ---------------------------------------------------------------------------------------------
// Memory per idle connection

/// Connections opened at once: more overflows the brokers' listen backlogs (a lost SYN costs
/// a one-second retransmission).
const BATCH: usize = 50;

async fn memory(broker: &BrokerProcess, connections: usize) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = broker.rss()?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(connections);
    let addr = broker.addr();
    let mut next = 0;
    while next < connections {
        let batch = (connections - next).min(BATCH);
        let mut tasks = tokio::task::JoinSet::new();
        for i in next..next + batch {
            tasks.spawn(idle_connection(addr, i));
        }
        while let Some(done) = tasks.join_next().await {
            open.push(done??);
        }
        next += batch;
    }
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = broker.rss()?;
    println!(
        "  ({connections} connections opened in {:.1} s; RSS {:.1} → {:.1} MB)",
        opening.as_secs_f64(),
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    drop(open);
    Ok((after.saturating_sub(before)) as f64 / connections as f64)
}

async fn idle_connection(addr: SocketAddr, i: usize) -> anyhow::Result<TcpStream> {
    let mut config = ClientConfig::new(Version::V3_1_1, format!("idle-{i:05}"));
    config.keep_alive = 3600;
    let mut conn = ClientConnection::new(config, None, Instant::now());
    let mut connect = BytesMut::new();
    conn.poll_transmit(Instant::now(), &mut connect);
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&connect).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut connack))
        .await
        .context("CONNACK timed out")??;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        bail!("connection {i} refused: {connack:?}");
    }
    Ok(stream)
}

// ---------------------------------------------------------------------------------------------
// The run and its table

/// Every measured value of one run, by (scenario, column).
type Values = BTreeMap<(String, String), f64>;

async fn run(args: Args) -> anyhow::Result<()> {
    let mut runs: Vec<Values> = Vec::new();
    for run in 0..args.runs {
        if args.runs > 1 {
            println!("== run {} of {}", run + 1, args.runs);
        }
        runs.push(run_once(&args).await?);
    }
    print_table(&args, &runs);
    Ok(())
}

async fn run_once(args: &Args) -> anyhow::Result<Values> {
    let mut values = Values::new();
    let mut put = |scenario: &str, column: &str, value: f64| {
        println!("  {scenario:<28} {column:<22} {value:>12.1}");
        values.insert((scenario.to_owned(), column.to_owned()), value);
    };
    if args.client {
        for kind in [BrokerKind::Mosquitto, BrokerKind::Ours] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                for client in [ClientKind::Ours, ClientKind::Rumqttc] {
                    if !args.wants(kind) {
                        continue;
                    }
                    // A fresh broker each time: nothing left over from the previous client.
                    let Some(broker) = BrokerProcess::start(kind).await? else {
                        continue;
                    };
                    let rate = match client {
                        ClientKind::Ours => client_ours(broker.addr(), qos, args.messages).await,
                        ClientKind::Rumqttc => {
                            client_rumqttc(broker.addr(), qos, args.messages).await
                        }
                    }
                    .with_context(|| format!("client {client:?} {qos:?} on {}", kind.name()))?;
                    let scenario = format!("client QoS {} → {}", qos as u8, kind.name());
                    let column = match client {
                        ClientKind::Ours => "ours msg/s",
                        ClientKind::Rumqttc => "rumqttc msg/s",
                    };
                    put(&scenario, column, rate);
                }
            }
        }
    }
    if args.broker {
        for relay_case in RELAYS.iter().filter(|r| args.wants_relay(r)) {
            for kind in [BrokerKind::Ours, BrokerKind::Mosquitto, BrokerKind::Rumqttd] {
                if !args.wants(kind) {
                    continue;
                }
                let Some(broker) = BrokerProcess::start(kind).await? else {
                    continue;
                };
                let result = relay(&broker, *relay_case, args.messages)
                    .await
                    .with_context(|| format!("{} on {}", relay_case.name, kind.name()))?;
                put(
                    relay_case.name,
                    &format!("{} msg/s", kind.name()),
                    result.rate,
                );
                put(
                    relay_case.name,
                    &format!("{} p99 µs", kind.name()),
                    result.p99_us as f64,
                );
                put(
                    relay_case.name,
                    &format!("{} p50 µs", kind.name()),
                    result.p50_us as f64,
                );
                put(
                    relay_case.name,
                    &format!("{} lost", kind.name()),
                    result.lost as f64,
                );
                put(
                    relay_case.name,
                    &format!("{} CPU ns/msg", kind.name()),
                    result.cpu_ns,
                );
            }
        }
    }
    if args.memory {
        for kind in [BrokerKind::Ours, BrokerKind::Mosquitto, BrokerKind::Rumqttd] {
            if !args.wants(kind) {
                continue;
            }
            let Some(broker) = BrokerProcess::start(kind).await? else {
                continue;
            };
            let per_connection = memory(&broker, args.connections)
                .await
                .with_context(|| format!("memory on {}", kind.name()))?;
            put(
                "memory B/idle connection",
                &format!("{} B", kind.name()),
                per_connection,
            );
        }
    }
    Ok(values)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn print_table(args: &Args, runs: &[Values]) {
    let value = |scenario: &str, column: &str| {
        median(
            runs.iter()
                .filter_map(|v| v.get(&(scenario.to_owned(), column.to_owned())).copied())
                .collect(),
        )
    };
    let cell = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    };
    println!();
    println!(
        "Medians of {} run(s); {} messages of {PAYLOAD} B, {} idle connections; 3.1.1, {INFLIGHT} in flight.",
        runs.len(),
        args.messages,
        args.connections
    );
    if args.client {
        println!();
        println!("| client, msg/s | ours | rumqttc | ours / rumqttc |");
        println!("|---|---|---|---|");
        for broker in ["mosquitto", "ours"] {
            for qos in [0, 1] {
                let scenario = format!("client QoS {qos} → {broker}");
                let ours = value(&scenario, "ours msg/s");
                let theirs = value(&scenario, "rumqttc msg/s");
                println!(
                    "| QoS {qos} to {broker} | {} | {} | {} |",
                    cell(ours),
                    cell(theirs),
                    ratio(ours, theirs)
                );
            }
        }
    }
    if args.broker {
        println!();
        println!(
            "| relay | ours msg/s (p99 µs) | mosquitto msg/s (p99 µs) | rumqttd msg/s (p99 µs) | ours / mosquitto | ours / rumqttd | lost (ours, mosq., rumqttd) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for relay_case in RELAYS.iter().filter(|r| args.wants_relay(r)) {
            let rate = |b: &str| value(relay_case.name, &format!("{b} msg/s"));
            let p99 = |b: &str| value(relay_case.name, &format!("{b} p99 µs"));
            let lost = |b: &str| cell(value(relay_case.name, &format!("{b} lost")));
            let both = |b: &str| format!("{} ({})", cell(rate(b)), cell(p99(b)));
            println!(
                "| {} | {} | {} | {} | {} | {} | {}, {}, {} |",
                relay_case.name,
                both("ours"),
                both("mosquitto"),
                both("rumqttd"),
                ratio(rate("ours"), rate("mosquitto")),
                ratio(rate("ours"), rate("rumqttd")),
                lost("ours"),
                lost("mosquitto"),
                lost("rumqttd"),
            );
        }
    }
    if args.broker {
        println!();
        println!(
            "| relay, broker CPU ns per delivered message | ours | mosquitto | rumqttd | mosquitto / ours | rumqttd / ours |"
        );
        println!("|---|---|---|---|---|---|");
        for relay_case in RELAYS.iter().filter(|r| args.wants_relay(r)) {
            let cpu = |b: &str| value(relay_case.name, &format!("{b} CPU ns/msg"));
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                relay_case.name,
                cell(cpu("ours")),
                cell(cpu("mosquitto")),
                cell(cpu("rumqttd")),
                ratio(cpu("mosquitto"), cpu("ours")),
                ratio(cpu("rumqttd"), cpu("ours")),
            );
        }
    }
    if args.memory {
        let scenario = "memory B/idle connection";
        let ours = value(scenario, "ours B");
        let mosquitto = value(scenario, "mosquitto B");
        let rumqttd = value(scenario, "rumqttd B");
        println!();
        println!(
            "| memory per idle connection | ours | mosquitto | rumqttd | ours / mosquitto | ours / rumqttd |"
        );
        println!("|---|---|---|---|---|---|");
        println!(
            "| bytes (VmRSS delta / connections) | {} | {} | {} | {} | {} |",
            cell(ours),
            cell(mosquitto),
            cell(rumqttd),
            ratio(ours, mosquitto),
            ratio(ours, rumqttd)
        );
    }
}
