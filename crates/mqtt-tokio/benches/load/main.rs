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
//! cargo bench -p mqtt-tokio --bench load -- queued --quick     # a tenth of the sessions
//! cargo bench -p mqtt-tokio --bench load -- persist --runs 3   # ours on disk, mosquitto too
//! cargo bench -p mqtt-tokio --bench load -- websocket --runs 3 # ours over ws and over TCP
//! cargo bench -p mqtt-tokio --bench load -- bridge --runs 3    # through a bridge
//! ```
//!
//! # Our broker runs its defaults
//!
//! The defaults are the product: our broker runs `BrokerConfig::default()`, nothing raised, so
//! a limit that loses or slows messages out of the box shows here. In particular it has, as a
//! user gets it, an in-flight window of 100 towards 3.1.1 subscribers (`max_inflight_v311`),
//! 1,000 messages queued per connection behind that window (`max_queued`), a Receive Maximum of
//! 100 for publishers and at most 10,000 connections, which every scenario stays within. The one
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
//! Any of `client`, `broker`, `memory`, `queued`, `persist`, `websocket`, `bridge`; none means
//! all.
//! - `client`: 100,000 PUBLISHes of 64 B from our tokio `Client` and from rumqttc's
//!   `AsyncClient` (both 3.1.1, 100 in flight), against mosquitto and our broker. QoS 0 ends
//!   with a QoS 1 publish whose PUBACK proves the broker read everything before it; QoS 1 ends
//!   with the last PUBACK.
//! - `client-pinned`: issue 23's setup. The broker (mosquitto, rumqttd, ours) confined to CPU 0
//!   with `taskset -c 0`, the client to CPU 1 in a child process of its own; 100,000 PUBLISHes
//!   of 64 B, 3.1.1, 20 in flight for QoS 1; ours driven by 256 tasks each awaiting `publish`
//!   (QoS 0) or 20 (QoS 1), and ours driven by one task that keeps up to 1,000
//!   `Client::start_publish` handles unresolved ("ours-pipelined"); rumqttc's `AsyncClient`
//!   with its event loop in one task. The rate, the client process's CPU time per message
//!   (schedstat), and ours / rumqttc.
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
//! - `queued`: 10,000 persistent 3.1.1 sessions (Clean Session 0, `--sessions N`, `--quick` a
//!   tenth), each subscribed at QoS 1 to its own topic `q/{i}` and disconnected (in batches of
//!   50, closed after subscribing: within our `max_connections`), then one 3.1.1 publisher
//!   sends 100 QoS 1 messages of 64 B to each topic (1,000,000), 100 in flight (what ours and
//!   mosquitto allow a 5.0 publisher). The broker's VmRSS before and after all PUBACKs, per queued
//!   message, and for ours its own accounting (`Stats::queued_bytes`, asked of the child over a
//!   pipe). Then 100 of the sessions reconnect and must each receive exactly their 100
//!   messages; losses are counted as in the relays. See `queued.rs`.
//! - `persist`: the relays `10→1 QoS 1 3.1.1 CS0` and `10→1 QoS 1 5.0 expiry`: 10 publishers
//!   × 10,000 QoS 1 messages of 64 B (`--messages` scales) into one **persistent** subscriber
//!   session (3.1.1 Clean Session 0; 5.0 Clean Start 0 with a Session Expiry Interval of an
//!   hour), otherwise as the relays above, on ours in memory, with a data directory and
//!   `SyncPolicy::Always` (its default policy), and with `SyncPolicy::Periodic(1 s)`, and on
//!   mosquitto in memory and with `persistence true` (default `autosave_interval`, 1800 s:
//!   it writes nothing during the run). Each run a fresh broker and an empty data directory
//!   in a temporary directory made by this process (`MQTT_LOAD_DATA_DIR` and
//!   `MQTT_LOAD_SYNC=always|periodic` tell our child). Besides the relay's numbers: bytes
//!   written to storage (`/proc/PID/io`), the data directory's size, and for ours what its
//!   store did: commits, ops and time per commit, counted by a wrapper around the same
//!   `FileStore` that `data_dir` opens. rumqttd has no persistence and is left out. See
//!   `persist.rs`.
//! - `websocket`: the relays `1→1 QoS 0` and `1→1 QoS 1` on every broker, each serving
//!   MQTT over WebSocket beside TCP (ours at `/mqtt` with its defaults; mosquitto with a
//!   second `listener` of `protocol websockets`; rumqttd with a `[ws.1]` listener configured as
//!   its 3.1.1 one), once with the load clients over TCP and once over WebSocket (our
//!   `mqtt_tokio::ws::connect`, the transport our `Client` uses for `ws://` URLs), each on a
//!   fresh broker process: the rates, ws / TCP per broker, and ours / theirs over ws.
//! - `bridge`: the relays `1→1 QoS 0` and `1→1 QoS 1` with the publisher on an edge broker
//!   (ours with its defaults and `BrokerBuilder::bridge`, or mosquitto with a `connection`
//!   section) that bridges `load/#` out at QoS 2, with a persistent session, to a remote broker
//!   (ours or mosquitto) where the subscriber is; a probe waits for the bridge before the clock
//!   starts, and the CPU time is the edge's. Ours / mosquitto's bridge per remote broker.

mod brokers;
mod client;
mod memory;
mod persist;
mod queued;
mod relay;
mod report;
mod throughput;

use std::time::Duration;

use anyhow::{Context, bail};
use mqtt_proto::packet::QoS;

use brokers::{BROKERS, BrokerKind, BrokerProcess, Persistence, run_our_broker};
use memory::memory;
use persist::{TARGETS, persist};
use queued::queued;
use relay::{PERSIST_RELAYS, RELAYS, Relay, relay, relay_bridged, relay_over};
use report::{Run, print_table};
use throughput::{ClientKind, client_ours, client_rumqttc};

/// Set in the child process that runs our broker.
const BROKER_ENV: &str = "MQTT_LOAD_BROKER_PORT";
/// The experiment switch `--our-inflight-v311`, passed to the child.
const INFLIGHT_V311_ENV: &str = "MQTT_LOAD_OUR_INFLIGHT_V311";
/// Set once the file descriptor limit has been raised, so the re-exec happens once.
const RAISED_ENV: &str = "MQTT_LOAD_NOFILE_RAISED";
/// Our broker's `max_connections` for the child, set when `--connections` asks for more than
/// its default (10,000).
const MAX_CONNECTIONS_ENV: &str = "MQTT_LOAD_MAX_CONNECTIONS";
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
    if let Ok(spec) = std::env::var(throughput::CLIENT_RUN_ENV) {
        return throughput::run_child(&spec);
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
    queued: bool,
    persist: bool,
    websocket: bool,
    bridge: bool,
    client_pinned: bool,
    messages: u64,
    connections: usize,
    /// Persistent sessions of the `queued` scenario.
    sessions: usize,
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
            queued: false,
            persist: false,
            websocket: false,
            bridge: false,
            client_pinned: false,
            messages: FULL_MESSAGES,
            connections: 10_000,
            sessions: 10_000,
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
                "queued" => args.queued = true,
                "persist" => args.persist = true,
                "websocket" | "ws" => args.websocket = true,
                "bridge" => args.bridge = true,
                "client-pinned" => args.client_pinned = true,
                "--quick" => quick = true,
                "--messages" => args.messages = number(iter.next())?,
                "--connections" => args.connections = number(iter.next())?,
                "--sessions" => args.sessions = number(iter.next())?,
                "--runs" => args.runs = number::<usize>(iter.next())?.max(1),
                "--relay" => args.relay = iter.next(),
                "--brokers" => args.brokers = iter.next(),
                "--our-inflight-v311" => args.our_inflight_v311 = Some(number(iter.next())?),
                // What cargo passes to every bench binary.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other:?}; use client, client-pinned, broker, memory, queued, persist, websocket, bridge, \
                     --quick, \
                     --messages N, --connections N, --sessions N, --runs N, --relay NAME, \
                     --brokers ours,mosquitto,rumqttd, --our-inflight-v311 N"
                ),
            }
        }
        if !(args.client
            || args.broker
            || args.memory
            || args.queued
            || args.persist
            || args.websocket
            || args.bridge
            || args.client_pinned)
        {
            (args.client, args.broker, args.memory) = (true, true, true);
            (args.queued, args.persist, args.websocket) = (true, true, true);
            args.bridge = true;
            args.client_pinned = true;
        }
        if quick {
            args.messages /= 10;
            args.connections /= 10;
            args.sessions /= 10;
        }
        args.sessions = args.sessions.max(1);
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
/// limit). Raises the limit through the shell (no `unsafe` for setrlimit): to what is needed
/// where allowed (root may raise the hard limit), else the soft limit to the hard one; and runs
/// this binary again, telling our broker (`MQTT_LOAD_MAX_CONNECTIONS`) to take more than its
/// default 10,000 connections when asked to; returns whether it did.
fn raise_nofile_and_reexec(connections: usize) -> anyhow::Result<bool> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: Option<usize> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|s| s.parse().ok());
    let needed = connections + 500;
    let more_than_default = connections > 10_000;
    if std::env::var_os(RAISED_ENV).is_some() {
        if let Some(soft) = soft.filter(|&soft| soft < needed) {
            bail!(
                "{connections} connections need {needed} file descriptors, and the limit is \
                 {soft}, which this process may not raise (`ulimit -Hn`; in a container, the \
                 hard limit is the container's)"
            );
        }
        return Ok(false);
    }
    if soft.is_none_or(|soft| soft >= needed) && !more_than_default {
        return Ok(false);
    }
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!(
            "{{ ulimit -n {needed} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; }} && exec \"$0\" \"$@\""
        ))
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(RAISED_ENV, "1");
    if more_than_default {
        command.env(MAX_CONNECTIONS_ENV, connections.to_string());
    }
    let status = command.status()?;
    std::process::exit(status.code().unwrap_or(1));
}

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

async fn run_once(args: &Args) -> anyhow::Result<Run> {
    let mut run = Run::default();
    let values = &mut run.values;
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
    if args.client_pinned {
        for kind in [BrokerKind::Mosquitto, BrokerKind::Rumqttd, BrokerKind::Ours] {
            if !args.wants(kind) {
                continue;
            }
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let scenario = format!("pinned QoS {} → {}", qos as u8, kind.name());
                let mut rates = Vec::new();
                for name in ["ours", "ours-pipelined", "rumqttc", "core"] {
                    let Some(broker) = BrokerProcess::start_pinned(kind, 0).await? else {
                        continue;
                    };
                    let broker_cpu = broker.cpu()?;
                    let (rate, cpu) =
                        throughput::client_pinned(name, broker.addr(), qos, args.messages)
                            .await
                            .with_context(|| format!("pinned {name} {qos:?} on {}", kind.name()))?;
                    // How busy the broker's core was while the client published: near 100 %,
                    // the broker, not the client, sets the rate.
                    let broker_busy =
                        (broker.cpu()? - broker_cpu).as_secs_f64() / (args.messages as f64 / rate);
                    put(&scenario, &format!("{name} msg/s"), rate);
                    put(&scenario, &format!("{name} client ns/msg"), cpu);
                    put(
                        &scenario,
                        &format!("{name} broker busy %"),
                        broker_busy * 100.0,
                    );
                    rates.push(rate);
                }
                if let [ours, pipelined, theirs, ..] = rates[..] {
                    put(&scenario, "ours / rumqttc", ours / theirs);
                    put(&scenario, "ours pipelined / rumqttc", pipelined / theirs);
                }
            }
        }
    }
    let relays = &mut run.relays;
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
    if args.persist {
        run_persist(args, &mut run.persist).await?;
    }
    if args.websocket {
        run_websocket(args, &mut put).await?;
    }
    if args.bridge {
        run_bridge(args, &mut put).await?;
    }
    if args.memory {
        if let Ok(n) = std::env::var(MAX_CONNECTIONS_ENV) {
            // The one limit raised, and only so that more connections than it can be opened.
            println!(
                "note: our broker's max_connections is {n} [NON-DEFAULT: its default, 10,000, \
                 is below --connections]"
            );
        }
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
    if args.queued {
        for kind in BROKERS.into_iter().filter(|&b| args.wants(b)) {
            let outcome = async {
                let Some(mut broker) = BrokerProcess::start(kind, args.our_inflight_v311).await?
                else {
                    return Ok(None);
                };
                queued(&mut broker, args.sessions).await.map(Some)
            }
            .await;
            let outcome = match outcome {
                Ok(None) => continue,
                Ok(Some(result)) => Ok(result),
                // Reported, and the bench goes on with the next broker.
                Err(e) => Err(format!("{e:#}")),
            };
            match &outcome {
                Ok(result) => {
                    println!("  queued     {:<10} {}", kind.name(), result.line());
                    for lost in &result.where_lost {
                        println!("    lost {lost}");
                    }
                }
                Err(e) => println!("  queued     {:<10} FAILED: {e}", kind.name()),
            }
            run.queued.insert(kind, outcome);
        }
    }
    Ok(run)
}

/// The 1 → 1 relays over WebSocket on every broker, and over TCP for the ratio.
async fn run_websocket(args: &Args, put: &mut impl FnMut(&str, &str, f64)) -> anyhow::Result<()> {
    for relay_case in RELAYS.iter().take(2) {
        if !args.wants_relay(relay_case) {
            continue;
        }
        let scenario = format!("websocket {}", relay_case.name);
        let mut ws_rates = Vec::new();
        for kind in BROKERS.into_iter().filter(|&b| args.wants(b)) {
            let mut rates = [None, None];
            for (slot, websocket) in [false, true].into_iter().enumerate() {
                let Some(broker) = BrokerProcess::start(kind, args.our_inflight_v311).await? else {
                    continue;
                };
                let transport = if websocket { "ws" } else { "tcp" };
                match relay_over(&broker, *relay_case, args.messages, websocket).await {
                    Ok(result) => {
                        println!(
                            "  {:<18} {:<10} {transport:<4} {}",
                            relay_case.name,
                            kind.name(),
                            result.line()
                        );
                        for lost in &result.where_lost {
                            println!("    lost {lost}");
                        }
                        rates[slot] = Some(result.rate);
                    }
                    Err(e) => println!(
                        "  {:<18} {:<10} {transport:<4} FAILED: {e:#}",
                        relay_case.name,
                        kind.name()
                    ),
                }
            }
            if let [Some(tcp), Some(ws)] = rates {
                put(&scenario, &format!("{} ws msg/s", kind.name()), ws);
                put(&scenario, &format!("{} ws / tcp", kind.name()), ws / tcp);
                ws_rates.push((kind, ws));
            }
        }
        let ours = ws_rates
            .iter()
            .find(|(k, _)| *k == BrokerKind::Ours)
            .map(|r| r.1);
        for (kind, rate) in &ws_rates {
            if let Some(ours) = ours.filter(|_| *kind != BrokerKind::Ours) {
                put(
                    &scenario,
                    &format!("ours / {} ws", kind.name()),
                    ours / rate,
                );
            }
        }
    }
    Ok(())
}

/// The 1 → 1 relays through a bridge: publishers on an edge broker (ours or mosquitto) that
/// bridges `load/#` out to a remote broker (ours or mosquitto), subscribers on the remote one.
async fn run_bridge(args: &Args, put: &mut impl FnMut(&str, &str, f64)) -> anyhow::Result<()> {
    let kinds = [BrokerKind::Ours, BrokerKind::Mosquitto];
    for relay_case in RELAYS.iter().take(2) {
        if !args.wants_relay(relay_case) {
            continue;
        }
        let scenario = format!("bridge {}", relay_case.name);
        for remote_kind in kinds.into_iter().filter(|&b| args.wants(b)) {
            let mut rates = Vec::new();
            for edge_kind in kinds.into_iter().filter(|&b| args.wants(b)) {
                let Some(remote) = BrokerProcess::start(remote_kind, None).await? else {
                    continue;
                };
                let bridged =
                    BrokerProcess::start_bridged(edge_kind, remote.addr(), relay_case.version);
                let Some(edge) = bridged.await? else {
                    continue;
                };
                let path = format!("{} → {}", edge_kind.name(), remote_kind.name());
                match relay_bridged(&edge, &remote, *relay_case, args.messages).await {
                    Ok(result) => {
                        println!("  {:<18} {path:<22} {}", relay_case.name, result.line());
                        for lost in &result.where_lost {
                            println!("    lost {lost}");
                        }
                        put(&scenario, &format!("{path} msg/s"), result.rate);
                        rates.push((edge_kind, result.rate));
                    }
                    Err(e) => println!("  {:<18} {path:<22} FAILED: {e:#}", relay_case.name),
                }
            }
            let rate = |kind| rates.iter().find(|(k, _)| *k == kind).map(|r| r.1);
            if let (Some(ours), Some(theirs)) =
                (rate(BrokerKind::Ours), rate(BrokerKind::Mosquitto))
            {
                put(
                    &scenario,
                    &format!("ours / mosquitto bridge → {}", remote_kind.name()),
                    ours / theirs,
                );
            }
        }
    }
    Ok(())
}

async fn run_persist(args: &Args, runs: &mut report::PersistRuns) -> anyhow::Result<()> {
    for (index, case) in PERSIST_RELAYS.iter().enumerate() {
        if !args.wants_relay(case) {
            continue;
        }
        for (kind, persistence) in TARGETS {
            if !args.wants(kind) {
                continue;
            }
            let outcome = async {
                let started =
                    BrokerProcess::start_with(kind, args.our_inflight_v311, persistence).await?;
                let Some(mut broker) = started else {
                    return Ok(None);
                };
                persist(&mut broker, persistence, *case, args.messages)
                    .await
                    .map(Some)
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
                "  {:<22} {:<10} {:<18} {line}{non_default}",
                case.name,
                kind.name(),
                persistence.name()
            );
            if let Ok(result) = &outcome {
                for lost in &result.relay.where_lost {
                    println!("    lost {lost}");
                }
            }
            runs.insert((index, kind, persistence), outcome);
        }
        let rate = |target: (BrokerKind, Persistence)| match runs.get(&(index, target.0, target.1))
        {
            Some(Ok(result)) => Some(result.relay.rate),
            _ => None,
        };
        let mosquitto = rate((BrokerKind::Mosquitto, Persistence::Autosave));
        let ratios: Vec<String> = [
            Persistence::Memory,
            Persistence::Always,
            Persistence::Periodic,
        ]
        .into_iter()
        .filter_map(|mode| {
            let ratio = rate((BrokerKind::Ours, mode))? / mosquitto.filter(|r| *r > 0.0)?;
            Some(format!("{} {ratio:.2}", mode.name()))
        })
        .collect();
        if !ratios.is_empty() {
            println!(
                "  {:<22} ours / mosquitto (persistence true): {}",
                case.name,
                ratios.join(", ")
            );
        }
    }
    Ok(())
}
