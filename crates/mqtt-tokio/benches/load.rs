//! Load over loopback sockets: our client against rumqttc, our broker against mosquitto and
//! rumqttd, with the same load for all, each broker a process of its own.
//!
//! ```sh
//! cargo bench -p mqtt-tokio --bench load                       # everything, one run
//! cargo bench -p mqtt-tokio --bench load -- client --runs 3    # medians of three runs
//! cargo bench -p mqtt-tokio --bench load -- broker --quick     # a tenth of the messages
//! cargo bench -p mqtt-tokio --bench load -- broker --relay 10→1 --runs 3
//! cargo bench -p mqtt-tokio --bench load -- broker --relay 10→1 --our-inflight-v311 100
//! cargo bench -p mqtt-tokio --bench load -- memory --connections 2000
//! ```
//!
//! # Our broker runs its defaults
//!
//! The defaults are the product: our broker runs `BrokerConfig::default()`, nothing raised, so
//! a limit that loses or slows messages out of the box shows here. In particular it has, as a
//! user gets it, an in-flight window of 20 towards 3.1.1 subscribers (`max_inflight_v311`), 1,000
//! messages queued per connection behind that window (`max_queued`), a Receive Maximum of 100 for
//! publishers and at most 10,000 connections, which every scenario stays within. The one
//! exception is an experiment switch, `--our-inflight-v311 N`, to measure which default to pick:
//! it sets `connection.max_inflight_v311` alone (through `MQTT_LOAD_OUR_INFLIGHT_V311` in the
//! child) and every line and table it touches says "NON-DEFAULT".
//!
//! Our broker is this same binary re-executed with `MQTT_LOAD_BROKER_PORT` set, on a
//! multi-thread tokio runtime with 2 workers (`MQTT_LOAD_BROKER_THREADS=1`: a current-thread
//! runtime instead). The peers are configured explicitly, so that neither drops what it
//! acknowledged and both have the load clients' in-flight window of 100 (see `mosquitto_conf`
//! and `rumqttd_conf`): mosquitto (`/usr/sbin/mosquitto`) with `max_queued_messages 0` and
//! `max_inflight_messages 100` (its defaults, 1,000 and 20, silently drop QoS 1 messages it
//! has PUBACKed once 1,000 wait for one client), rumqttd (`~/.cargo/bin/rumqttd`, from `cargo install rumqttd`)
//! with its sample configuration, a 5.0 listener beside the 3.1.1 one, and
//! `max_inflight_count = 100`. A broker that is not installed is skipped with a note.
//!
//! # Scenarios
//!
//! Any of `client`, `broker`, `memory`; none means all.
//! - `client`: 100,000 PUBLISHes of 64 B from our tokio `Client` and from rumqttc's
//!   `AsyncClient` (both 3.1.1, 100 in flight), against mosquitto and our broker. QoS 0 ends
//!   with a QoS 1 publish whose PUBACK proves the broker read everything before it; QoS 1 ends
//!   with the last PUBACK.
//! - `broker`: relays of 64 B messages, each on a fresh broker process:
//!
//!   | relay | version | publishers → subscribers | QoS | messages per publisher |
//!   |---|---|---|---|---|
//!   | `1→1 QoS 0` | 3.1.1 | 1 → 1 | 0 | 100,000 |
//!   | `1→1 QoS 1` | 3.1.1 | 1 → 1 | 1 | 100,000 |
//!   | `10→1 QoS 1 3.1.1` | 3.1.1 | 10 → 1 (filter `load/in/+`) | 1 | 20,000 |
//!   | `10→1 QoS 1 5.0` | 5.0 | 10 → 1 (filter `load/in/+`) | 1 | 20,000 |
//!   | `1→10 QoS 0` | 3.1.1 | 1 → 10 | 0 | 100,000 |
//!   | `1→10 QoS 1` | 3.1.1 | 1 → 10 | 1 | 100,000 |
//!
//!   `--messages N` scales the last column by N / 100,000, `--quick` by a tenth. The load
//!   clients are the same for every broker: our sans-I/O `ClientConnection` over a tokio
//!   `TcpStream`, one task each, in this process, with 100 QoS 1 publishes in flight and no
//!   Receive Maximum announced (5.0). Each publisher keeps at most 200 of its own messages in
//!   transit: published and not yet delivered to every subscriber. Publisher `i` publishes on
//!   `load/in/{i}` (fan-in) or `load/topic`, and the payload carries the send time, the
//!   publisher and a sequence number, so a subscriber attributes each delivery and records its
//!   end-to-end latency. The window counts deliveries, as a client waiting for its messages
//!   would: a lost message holds its place in it for good, so losses throttle the load, and a
//!   publisher with 200 of its messages lost stops (then the run ends after 5 s).
//!
//!   A run ends when every message arrived at every subscriber and every QoS 1 publish was
//!   acknowledged, or when nothing at all happened (no publish sent, no acknowledgement, no
//!   delivery) for 5 s: a run that lost messages always ends so, its subscribers waiting for
//!   what never comes. A broker withholding PUBACKs for a while only slows the publishers.
//!   Each missing (subscriber, message) pair is then counted as **lost** (acknowledged with a
//!   PUBACK, or sent at QoS 0, and never delivered: for QoS 1 the broker broke its promise),
//!   **unacked** (sent, neither acknowledged nor delivered when the run ended), **refused**
//!   (PUBACK with an error reason code) or **unsent** (the publisher never got room for it).
//!   Losses are reported for every run, never fatal; a broker that fails a run (closes a
//!   connection, refuses a client) is reported as failed and the bench goes on.
//!
//!   Per relay and broker: deliveries per second (first publish to last delivery), p50 and p99
//!   latency, broker CPU time per delivery (the run time of its threads, from schedstat), and
//!   the rates of ours divided by mosquitto's and rumqttd's in the same run; with `--runs N`,
//!   the medians, and the losses of every run.
//! - `memory`: 10,000 idle 3.1.1 connections (CONNECT and CONNACK done, keep alive one hour),
//!   opened in batches of 50: exactly our default `max_connections`. The broker's resident
//!   memory (VmRSS) before and after, per connection.

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
use tokio::sync::{Notify, watch};

/// Set in the child process that runs our broker.
const BROKER_ENV: &str = "MQTT_LOAD_BROKER_PORT";
/// The experiment switch `--our-inflight-v311`, passed to the child.
const INFLIGHT_V311_ENV: &str = "MQTT_LOAD_OUR_INFLIGHT_V311";
/// Set once the file descriptor limit has been raised, so the re-exec happens once.
const RAISED_ENV: &str = "MQTT_LOAD_NOFILE_RAISED";
const PAYLOAD: usize = 64;
/// The in-flight QoS 1 window of the load clients and of mosquitto and rumqttd (ours keeps its
/// defaults).
const INFLIGHT: u16 = 100;
/// Messages of its own a publisher lets be in transit: published, not yet delivered to every
/// subscriber.
const IN_TRANSIT: u64 = 200;
/// A run with no progress at all for this long ends, and what is missing is counted.
const STALL: Duration = Duration::from_secs(5);
/// `--messages` at which every relay sends its full count.
const FULL_MESSAGES: u64 = 100_000;

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
    /// The experiment switch: our broker's `connection.max_inflight_v311`, else its default.
    our_inflight_v311: Option<u16>,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut args = Args {
            client: false,
            broker: false,
            memory: false,
            messages: FULL_MESSAGES,
            connections: 10_000,
            runs: 1,
            relay: None,
            brokers: None,
            our_inflight_v311: None,
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
                "--our-inflight-v311" => args.our_inflight_v311 = Some(number(iter.next())?),
                // What cargo passes to every bench binary.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other:?}; use client, broker, memory, --quick, \
                     --messages N, --connections N, --runs N, --relay NAME, \
                     --brokers ours,mosquitto,rumqttd, --our-inflight-v311 N"
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

    /// How our broker is configured, for every line that shows its numbers.
    fn our_config(&self) -> String {
        match self.our_inflight_v311 {
            None => "BrokerConfig::default()".to_owned(),
            Some(n) => format!(
                "BrokerConfig::default() with NON-DEFAULT connection.max_inflight_v311 = {n} \
                 (default {})",
                mqtt_tokio::broker::BrokerConfig::default()
                    .connection
                    .max_inflight_v311
            ),
        }
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
    /// rumqttd serves 5.0 on a listener of its own; the others take both versions on `port`.
    port_v5: u16,
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

    fn addr_for(&self, version: Version) -> SocketAddr {
        match version {
            Version::V5 => SocketAddr::from(([127, 0, 0, 1], self.port_v5)),
            _ => self.addr(),
        }
    }

    /// Starts a broker; `None` (with a note) when it is not installed. `our_inflight_v311` is
    /// the experiment switch, for our broker only.
    async fn start(
        kind: BrokerKind,
        our_inflight_v311: Option<u16>,
    ) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut port_v5 = port;
        let mut command = match kind {
            BrokerKind::Ours => {
                let mut command = tokio::process::Command::new(std::env::current_exe()?);
                command.env(BROKER_ENV, port.to_string());
                command.env_remove(INFLIGHT_V311_ENV);
                if let Some(n) = our_inflight_v311 {
                    command.env(INFLIGHT_V311_ENV, n.to_string());
                }
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
                port_v5 = free_port()?;
                let conf = dir.path().join("rumqttd.toml");
                std::fs::write(&conf, rumqttd_conf(port, port_v5))?;
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
            port_v5,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [broker.addr(), broker.addr_for(Version::V5)] {
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
    fn cpu(&self) -> anyhow::Result<Duration> {
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

/// The time every thread of `pid` has run, in nanoseconds: the first field of each thread's
/// schedstat. `None` when the kernel has no schedstat.
fn schedstat_ns(pid: u32) -> Option<u64> {
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

/// mosquitto, configured so that it loses nothing it acknowledged: by default it keeps at most
/// 1,000 messages queued per client (`max_queued_messages`) and silently drops QoS 1 messages
/// beyond that, after PUBACKing them to their publisher, and it keeps only 20 in flight
/// (`max_inflight_messages`). `max_queued_messages 0` lifts the queue limit; the window is the
/// load clients' 100. Otherwise its defaults (Nagle stays on: faster here).
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
/// accepts, the same in-flight window (100), 1 GiB of log per filter before anything is
/// dropped, and its 5.0 listener on `port_v5`.
fn rumqttd_conf(port: u16, port_v5: u16) -> String {
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
         dynamic_filters = true\n"
    )
}

/// The child process: our broker on `port` with its defaults. The one override is the
/// experiment switch `--our-inflight-v311`, which the parent announces as non-default.
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
    let mut config = mqtt_tokio::broker::BrokerConfig::default();
    if let Ok(n) = std::env::var(INFLIGHT_V311_ENV) {
        config.connection.max_inflight_v311 = n.parse().context(INFLIGHT_V311_ENV)?;
    }
    runtime.block_on(async move {
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
    /// Connects and waits for CONNACK (at most `STALL`).
    async fn connect(addr: SocketAddr, id: &str, version: Version) -> anyhow::Result<Self> {
        tokio::time::timeout(STALL, Self::connect_now(addr, id, version))
            .await
            .with_context(|| format!("{id}: no CONNACK"))?
    }

    async fn connect_now(addr: SocketAddr, id: &str, version: Version) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut config = ClientConfig::new(version, id.to_owned());
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
                    ClientEvent::Disconnected(why) => bail!("{id} refused: {why:?}"),
                    _ => {}
                }
            }
        }
    }

    /// Subscribes and waits for SUBACK (at most `STALL`).
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        self.conn.subscribe(
            Instant::now(),
            vec![Subscription::new(TopicFilter::new(filter)?, qos)],
            SubscribeProperties::default(),
        )?;
        self.flush().await?;
        let suback = async {
            loop {
                self.read().await?;
                while let Some(event) = self.conn.poll_event() {
                    if let ClientEvent::Subscribed(_) = event {
                        return Ok(());
                    }
                }
            }
        };
        tokio::time::timeout(STALL, suback)
            .await
            .context("no SUBACK")?
    }

    /// Writes everything the core has to send.
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.out.clear();
        if self.conn.poll_transmit(Instant::now(), &mut self.out) {
            self.stream.write_all(&self.out).await?;
        }
        Ok(())
    }

    /// Reads once; cancel safe (the bytes are handled after the only await).
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

fn nanos_since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What a relay payload carries: its send time, its publisher and its place in that publisher's
/// sequence.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    sent_ns: u64,
    publisher: usize,
    seq: u64,
}

impl Stamp {
    /// A payload of `PAYLOAD` bytes sent now.
    fn payload(publisher: usize, seq: u64) -> Bytes {
        let mut payload = [0u8; PAYLOAD];
        payload[..8].copy_from_slice(&nanos_since_epoch().to_be_bytes());
        payload[8..12].copy_from_slice(&(publisher as u32).to_be_bytes());
        payload[12..20].copy_from_slice(&seq.to_be_bytes());
        Bytes::copy_from_slice(&payload)
    }

    fn read(payload: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| {
            payload
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let publisher = payload
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)?;
        Some(Stamp {
            sent_ns: u64_at(0)?,
            publisher: publisher as usize,
            seq: u64_at(12)?,
        })
    }

    fn latency_us(&self) -> u64 {
        nanos_since_epoch().saturating_sub(self.sent_ns) / 1000
    }
}

// ---------------------------------------------------------------------------------------------
// Broker relay

#[derive(Debug, Clone, Copy)]
struct Relay {
    name: &'static str,
    version: Version,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    /// Messages per publisher at `--messages 100000`.
    per_publisher: u64,
}

impl Relay {
    /// Publisher `i`'s topic: fan-in gives each publisher its own, which tells the subscriber
    /// whose a message is.
    fn topic(&self, i: usize) -> anyhow::Result<TopicName> {
        Ok(if self.publishers > 1 {
            TopicName::new(format!("load/in/{i}"))?
        } else {
            TopicName::new("load/topic")?
        })
    }

    fn filter(&self) -> &'static str {
        if self.publishers > 1 {
            "load/in/+"
        } else {
            "load/topic"
        }
    }
}

const RELAYS: [Relay; 6] = [
    Relay {
        name: "1→1 QoS 0",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtMostOnce,
        per_publisher: 100_000,
    },
    Relay {
        name: "1→1 QoS 1",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 100_000,
    },
    Relay {
        name: "10→1 QoS 1 3.1.1",
        version: Version::V3_1_1,
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 20_000,
    },
    Relay {
        name: "10→1 QoS 1 5.0",
        version: Version::V5,
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 20_000,
    },
    Relay {
        name: "1→10 QoS 0",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 10,
        qos: QoS::AtMostOnce,
        per_publisher: 100_000,
    },
    Relay {
        name: "1→10 QoS 1",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 10,
        qos: QoS::AtLeastOnce,
        per_publisher: 100_000,
    },
];

/// What the publishers and subscribers of one run share.
struct Shared {
    publishers: usize,
    subscribers: usize,
    /// Per publisher: messages handed to its connection.
    published: Vec<AtomicU64>,
    /// Per (subscriber, publisher), at `subscriber * publishers + publisher`: the publisher's
    /// messages the subscriber received, each counted once.
    received: Vec<AtomicU64>,
    /// When anything last happened (a publish sent, an acknowledgement, a delivery), in
    /// nanoseconds since `epoch()`.
    progress_at: AtomicU64,
    /// Deliveries wake publishers waiting for room.
    wake: Notify,
    /// Set when nothing happened for `STALL`: everyone stops and reports.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn new(publishers: usize, subscribers: usize) -> Self {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Shared {
            publishers,
            subscribers,
            published: counters(publishers),
            received: counters(publishers * subscribers),
            progress_at: AtomicU64::new(nanos_since_epoch()),
            wake: Notify::new(),
            stop: watch::Sender::new(false),
        }
    }

    /// How many more messages `publisher` may send now.
    fn room(&self, publisher: usize) -> u64 {
        let published = self.published[publisher].load(Ordering::Acquire);
        let delivered = (0..self.subscribers)
            .map(|s| self.received[s * self.publishers + publisher].load(Ordering::Acquire))
            .min()
            .unwrap_or(published);
        IN_TRANSIT.saturating_sub(published.saturating_sub(delivered))
    }

    fn progressed(&self) {
        self.progress_at
            .store(nanos_since_epoch(), Ordering::Release);
    }

    fn idle(&self) -> Duration {
        Duration::from_nanos(
            nanos_since_epoch().saturating_sub(self.progress_at.load(Ordering::Acquire)),
        )
    }

    fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Resolves once the run is stopped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[derive(Debug, Clone, Default)]
struct RelayResult {
    /// Deliveries per second, all subscribers together, from the first publish to the last
    /// delivery.
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    /// Broker CPU time per delivery: less sensitive to what else runs on the machine than the
    /// rate.
    cpu_ns: f64,
    /// (subscriber, message) pairs delivered, each counted once.
    delivered: u64,
    /// Acknowledged (QoS 1) or sent (QoS 0), never delivered.
    lost: u64,
    /// Sent, neither acknowledged nor delivered when the run ended.
    unacked: u64,
    /// Refused by a PUBACK with an error reason code.
    refused: u64,
    /// Never sent: the publisher had no room for them when the run ended.
    unsent: u64,
    /// Deliveries of a message the subscriber already had.
    duplicates: u64,
    /// The run ended because nothing happened for `STALL`.
    stalled: bool,
    /// Which messages were lost, per (publisher, subscriber): for whoever hunts the bug.
    where_lost: Vec<String>,
}

impl RelayResult {
    fn line(&self) -> String {
        let mut line = format!(
            "{:>9.0} msg/s  p50 {:>6} µs  p99 {:>6} µs  CPU {:>5.0} ns/msg  lost {}",
            self.rate, self.p50_us, self.p99_us, self.cpu_ns, self.lost
        );
        for (what, n) in [
            ("unacked", self.unacked),
            ("refused", self.refused),
            ("unsent", self.unsent),
            ("duplicates", self.duplicates),
        ] {
            if n > 0 {
                line += &format!(", {what} {n}");
            }
        }
        if self.stalled {
            line += &format!(" (ended after {} s without progress)", STALL.as_secs());
        }
        line
    }
}

/// Sorted sequence numbers as ranges, `0–199, 1200, 1300–1310`; the first few only.
fn ranges(seqs: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in seqs {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == seq => *end = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    let mut text: Vec<String> = ranges
        .iter()
        .take(8)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect();
    if ranges.len() > 8 {
        text.push(format!("… {} ranges in all", ranges.len()));
    }
    text.join(", ")
}

/// A publisher's view of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Pending,
    Acked,
    Refused,
}

struct PublisherReport {
    /// Messages handed to the connection: sequence numbers `0..sent`.
    sent: u64,
    /// Per sequence number (QoS 1).
    acks: Vec<Ack>,
    /// Kept open until the run ends.
    _raw: Raw,
}

struct SubscriberReport {
    /// Per publisher, per sequence number: delivered.
    received: Vec<Vec<bool>>,
    delivered: u64,
    duplicates: u64,
    last: Instant,
    histogram: Histogram<u64>,
    _raw: Raw,
}

async fn relay(broker: &BrokerProcess, relay: Relay, messages: u64) -> anyhow::Result<RelayResult> {
    let addr = broker.addr_for(relay.version);
    let per_publisher = (relay.per_publisher * messages / FULL_MESSAGES).max(1);
    let shared = Arc::new(Shared::new(relay.publishers, relay.subscribers));
    let topics = (0..relay.publishers)
        .map(|i| relay.topic(i))
        .collect::<anyhow::Result<Arc<[TopicName]>>>()?;
    let mut subscribers = tokio::task::JoinSet::new();
    for i in 0..relay.subscribers {
        let mut raw = Raw::connect(addr, &format!("load-sub-{i}"), relay.version).await?;
        raw.subscribe(relay.filter(), relay.qos).await?;
        subscribers.spawn(subscribe_loop(
            raw,
            i,
            per_publisher,
            topics.clone(),
            shared.clone(),
        ));
    }
    let mut raws = Vec::new();
    for i in 0..relay.publishers {
        raws.push(Raw::connect(addr, &format!("load-pub-{i}"), relay.version).await?);
    }
    let cpu_before = broker.cpu()?;
    let start = Instant::now();
    shared.progressed();
    let mut publishers = tokio::task::JoinSet::new();
    for (i, raw) in raws.into_iter().enumerate() {
        publishers.spawn(publish_loop(
            raw,
            i,
            topics[i].clone(),
            relay.qos,
            per_publisher,
            shared.clone(),
        ));
    }
    // Ends the run when nothing happens: only then may a message be missing.
    let watchdog = tokio::spawn({
        let shared = shared.clone();
        async move {
            while shared.idle() < STALL {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            shared.stop.send_replace(true);
        }
    });
    let mut failure = None;
    let mut sent = Vec::new();
    while let Some(done) = publishers.join_next().await {
        match done.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(report) => sent.push(report),
            Err(e) => {
                shared.stop.send_replace(true);
                failure.get_or_insert(e.context("publisher"));
            }
        }
    }
    let mut received = Vec::new();
    while let Some(done) = subscribers.join_next().await {
        match done.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(report) => received.push(report),
            Err(e) => {
                shared.stop.send_replace(true);
                failure.get_or_insert(e.context("subscriber"));
            }
        }
    }
    let stalled = shared.is_stopped();
    watchdog.abort();
    let cpu = broker.cpu()?.saturating_sub(cpu_before);
    if let Some(e) = failure {
        return Err(e);
    }
    sent.sort_by_key(|(i, _)| *i);
    received.sort_by_key(|(i, _)| *i);
    let mut result = RelayResult {
        stalled,
        ..RelayResult::default()
    };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut end = start;
    for (s, subscriber) in &received {
        result.delivered += subscriber.delivered;
        result.duplicates += subscriber.duplicates;
        end = end.max(subscriber.last);
        histogram.add(&subscriber.histogram)?;
        for ((p, publisher), received) in sent.iter().zip(&subscriber.received) {
            let mut lost = Vec::new();
            for (seq, _) in received.iter().enumerate().filter(|(_, got)| !**got) {
                let seq = seq as u64;
                let missing = if seq >= publisher.sent {
                    &mut result.unsent
                } else if relay.qos == QoS::AtMostOnce || publisher.acks[seq as usize] == Ack::Acked
                {
                    lost.push(seq);
                    &mut result.lost
                } else if publisher.acks[seq as usize] == Ack::Refused {
                    &mut result.refused
                } else {
                    &mut result.unacked
                };
                *missing += 1;
            }
            if !lost.is_empty() {
                result.where_lost.push(format!(
                    "{} of publisher {p} to subscriber {s} ({})",
                    lost.len(),
                    ranges(&lost)
                ));
            }
        }
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    result.rate = if elapsed > 0.0 {
        result.delivered as f64 / elapsed
    } else {
        0.0
    };
    result.p50_us = histogram.value_at_quantile(0.5);
    result.p99_us = histogram.value_at_quantile(0.99);
    result.cpu_ns = cpu.as_nanos() as f64 / result.delivered.max(1) as f64;
    Ok(result)
}

async fn publish_loop(
    mut raw: Raw,
    index: usize,
    topic: TopicName,
    qos: QoS,
    count: u64,
    shared: Arc<Shared>,
) -> anyhow::Result<(usize, PublisherReport)> {
    let mut stop = shared.stop.subscribe();
    let mut acks = vec![Ack::Pending; count as usize];
    // Packet identifier → sequence number of the message in flight with it.
    let mut ids = vec![0u64; usize::from(u16::MAX) + 1];
    let mut sent = 0;
    let mut completed = 0;
    loop {
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        // Acknowledgements first: they open the window for what the flush below sends.
        raw.try_read()?;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Published(outcome) => {
                    let seq = ids[usize::from(outcome.packet_id.get())];
                    acks[seq as usize] = if outcome.reason_code.is_error() {
                        Ack::Refused
                    } else {
                        Ack::Acked
                    };
                    completed += 1;
                    shared.progressed();
                }
                ClientEvent::Disconnected(why) => bail!("publisher {index} disconnected: {why:?}"),
                _ => {}
            }
        }
        let room = shared.room(index).min(count - sent).min(64);
        for _ in 0..room {
            let mut publish = Publish::new(topic.clone(), Stamp::payload(index, sent));
            publish.qos = qos;
            if let Some(id) = raw.conn.publish(Instant::now(), publish)? {
                ids[usize::from(id.get())] = sent;
            }
            sent += 1;
            shared.published[index].fetch_add(1, Ordering::AcqRel);
        }
        if room > 0 {
            shared.progressed();
        }
        // A broker that stops reading must not keep the run from ending.
        tokio::select! {
            flushed = raw.flush() => flushed?,
            _ = stopped(&mut stop) => break,
        }
        let finished = sent == count && (qos == QoS::AtMostOnce || completed == count);
        if finished || shared.is_stopped() {
            break;
        }
        if room == 0 || sent == count {
            // Nothing to send now: wait for deliveries (room) or acknowledgements.
            tokio::select! {
                _ = &mut wake => {}
                read = raw.read() => read?,
                _ = stopped(&mut stop) => break,
            }
        }
    }
    let report = PublisherReport {
        sent,
        acks,
        _raw: raw,
    };
    Ok((index, report))
}

async fn subscribe_loop(
    mut raw: Raw,
    index: usize,
    per_publisher: u64,
    topics: Arc<[TopicName]>,
    shared: Arc<Shared>,
) -> anyhow::Result<(usize, SubscriberReport)> {
    let mut stop = shared.stop.subscribe();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = vec![vec![false; per_publisher as usize]; topics.len()];
    let expected = per_publisher * topics.len() as u64;
    let mut delivered = 0;
    let mut duplicates = 0;
    let mut last = Instant::now();
    while delivered < expected {
        tokio::select! {
            read = raw.read() => read?,
            _ = stopped(&mut stop) => break,
        }
        let before = delivered;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Message(message) => {
                    let publish = &message.publish;
                    let stamp = Stamp::read(&publish.payload)
                        .filter(|s| topics.get(s.publisher) == Some(&publish.topic))
                        .with_context(|| format!("a foreign message on {:?}", &*publish.topic))?;
                    let Some(seen) = received[stamp.publisher].get_mut(stamp.seq as usize) else {
                        bail!("sequence number {} out of range", stamp.seq);
                    };
                    if *seen {
                        duplicates += 1;
                        continue;
                    }
                    *seen = true;
                    delivered += 1;
                    let _ = histogram.record(stamp.latency_us().max(1));
                    shared.received[index * shared.publishers + stamp.publisher]
                        .fetch_add(1, Ordering::AcqRel);
                }
                ClientEvent::Disconnected(why) => bail!("subscriber {index} disconnected: {why:?}"),
                _ => {}
            }
        }
        if delivered > before {
            last = Instant::now();
            shared.progressed();
            shared.wake.notify_waiters();
        }
        // Acknowledgements.
        tokio::select! {
            flushed = raw.flush() => flushed?,
            _ = stopped(&mut stop) => break,
        }
    }
    let report = SubscriberReport {
        received,
        delivered,
        duplicates,
        last,
        histogram,
        _raw: raw,
    };
    Ok((index, report))
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

/// Every measured client and memory value of one run, by (scenario, column).
type Values = BTreeMap<(String, String), f64>;

/// Each relay's outcome on each broker in one run, by (index in `RELAYS`, broker); a failed
/// run keeps its error.
type RelayRuns = BTreeMap<(usize, BrokerKind), Result<RelayResult, String>>;

const BROKERS: [BrokerKind; 3] = [BrokerKind::Ours, BrokerKind::Mosquitto, BrokerKind::Rumqttd];

async fn run(args: Args) -> anyhow::Result<()> {
    if args.our_inflight_v311.is_some() {
        println!("!! ours runs {}", args.our_config());
    }
    let mut runs = Vec::new();
    for run in 0..args.runs {
        if args.runs > 1 {
            println!("== run {} of {}", run + 1, args.runs);
        }
        runs.push(run_once(&args).await?);
    }
    print_table(&args, &runs);
    Ok(())
}

async fn run_once(args: &Args) -> anyhow::Result<(Values, RelayRuns)> {
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
                    let Some(broker) = BrokerProcess::start(kind, args.our_inflight_v311).await?
                    else {
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
    let mut relays = RelayRuns::new();
    if args.broker {
        for (index, relay_case) in RELAYS.iter().enumerate() {
            if !args.wants_relay(relay_case) {
                continue;
            }
            for kind in BROKERS.into_iter().filter(|&b| args.wants(b)) {
                let outcome = async {
                    let Some(broker) = BrokerProcess::start(kind, args.our_inflight_v311).await?
                    else {
                        return Ok(None);
                    };
                    relay(&broker, *relay_case, args.messages).await.map(Some)
                }
                .await;
                let outcome = match outcome {
                    Ok(None) => continue,
                    Ok(Some(result)) => Ok(result),
                    // Reported, and the bench goes on with the next broker.
                    Err(e) => Err(format!("{e:#}")),
                };
                let line = match &outcome {
                    Ok(result) => result.line(),
                    Err(e) => format!("FAILED: {e}"),
                };
                let non_default = match (kind, args.our_inflight_v311) {
                    (BrokerKind::Ours, Some(n)) => format!("  [NON-DEFAULT max_inflight_v311 {n}]"),
                    _ => String::new(),
                };
                println!(
                    "  {:<18} {:<10} {line}{non_default}",
                    relay_case.name,
                    kind.name()
                );
                if let Ok(result) = &outcome {
                    for lost in &result.where_lost {
                        println!("    lost {lost}");
                    }
                }
                relays.insert((index, kind), outcome);
            }
            let rate = |kind| match relays.get(&(index, kind)) {
                Some(Ok(result)) => Some(result.rate),
                _ => None,
            };
            let ratios: Vec<String> = [BrokerKind::Mosquitto, BrokerKind::Rumqttd]
                .into_iter()
                .filter_map(|theirs| {
                    let ratio = rate(BrokerKind::Ours)? / rate(theirs).filter(|r| *r > 0.0)?;
                    Some(format!("ours / {} {ratio:.2}", theirs.name()))
                })
                .collect();
            if !ratios.is_empty() {
                println!("  {:<18} {}", relay_case.name, ratios.join(", "));
            }
        }
    }
    if args.memory {
        for kind in BROKERS {
            if !args.wants(kind) {
                continue;
            }
            let Some(broker) = BrokerProcess::start(kind, args.our_inflight_v311).await? else {
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
    Ok((values, relays))
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn print_table(args: &Args, runs: &[(Values, RelayRuns)]) {
    let value = |scenario: &str, column: &str| {
        median(
            runs.iter()
                .filter_map(|(v, _)| v.get(&(scenario.to_owned(), column.to_owned())).copied())
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
        "Medians of {} run(s), {PAYLOAD} B payloads; ours runs {}.",
        runs.len(),
        args.our_config()
    );
    if args.client {
        println!();
        println!(
            "{} messages, 3.1.1, {INFLIGHT} in flight from the client.",
            args.messages
        );
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
        print_relay_table(args, runs);
    }
    if args.memory {
        let scenario = "memory B/idle connection";
        let ours = value(scenario, "ours B");
        let mosquitto = value(scenario, "mosquitto B");
        let rumqttd = value(scenario, "rumqttd B");
        println!();
        println!(
            "| memory per idle connection ({}) | ours | mosquitto | rumqttd | ours / mosquitto | ours / rumqttd |",
            args.connections
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

fn print_relay_table(args: &Args, runs: &[(Values, RelayRuns)]) {
    println!();
    println!(
        "Relays: {IN_TRANSIT} messages in transit per publisher, {INFLIGHT} in flight from each \
         load client; `--messages {}` of {FULL_MESSAGES}. mosquitto: max_queued_messages 0, \
         max_inflight_messages {INFLIGHT}; rumqttd: max_inflight_count {INFLIGHT}.",
        args.messages
    );
    println!(
        "lost: PUBACKed (QoS 1) or sent (QoS 0) and never delivered; unacked: neither \
         acknowledged nor delivered when the run ended. One number per run."
    );
    println!();
    println!(
        "| relay | broker | msg/s | ours / broker | p50 µs | p99 µs | CPU ns/msg | lost per run | unacked per run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for (index, relay_case) in RELAYS.iter().enumerate() {
        for kind in BROKERS {
            let outcomes: Vec<Option<&Result<RelayResult, String>>> =
                runs.iter().map(|(_, r)| r.get(&(index, kind))).collect();
            if outcomes.iter().all(Option::is_none) {
                continue;
            }
            let ok = |pick: fn(&RelayResult) -> f64| {
                median(
                    outcomes
                        .iter()
                        .filter_map(|o| o.and_then(|r| r.as_ref().ok()))
                        .map(pick)
                        .collect(),
                )
            };
            let cell = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
            // Ours over theirs, run by run, so that both rates saw the same machine.
            let ratio = median(
                runs.iter()
                    .filter_map(|(_, r)| {
                        let rate = |b| r.get(&(index, b))?.as_ref().ok().map(|x| x.rate);
                        Some(rate(BrokerKind::Ours)? / rate(kind).filter(|x| *x > 0.0)?)
                    })
                    .collect(),
            )
            .filter(|_| kind != BrokerKind::Ours)
            .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
            let per_run = |pick: fn(&RelayResult) -> u64| {
                outcomes
                    .iter()
                    .map(|o| match o {
                        Some(Ok(r)) => pick(r).to_string(),
                        Some(Err(_)) => "failed".to_owned(),
                        None => "–".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let name = match (kind, args.our_inflight_v311) {
                (BrokerKind::Ours, Some(n)) => format!("ours (NON-DEFAULT v3.1.1 window {n})"),
                _ => kind.name().to_owned(),
            };
            println!(
                "| {} | {name} | {} | {ratio} | {} | {} | {} | {} | {} |",
                relay_case.name,
                cell(ok(|r| r.rate)),
                cell(ok(|r| r.p50_us as f64)),
                cell(ok(|r| r.p99_us as f64)),
                cell(ok(|r| r.cpu_ns)),
                per_run(|r| r.lost),
                per_run(|r| r.unacked),
            );
            for (run, outcome) in outcomes.iter().enumerate() {
                let note = match outcome {
                    Some(Err(e)) => format!("failed: {e}"),
                    Some(Ok(r)) if r.refused + r.unsent + r.duplicates > 0 => format!(
                        "refused {}, unsent {}, duplicates {}",
                        r.refused, r.unsent, r.duplicates
                    ),
                    _ => continue,
                };
                notes.push(format!(
                    "{} on {}, run {}: {note}",
                    relay_case.name,
                    kind.name(),
                    run + 1
                ));
            }
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("- {note}");
        }
    }
}
