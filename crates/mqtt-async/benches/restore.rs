//! How long a persistent broker takes to start from a large store: 100,000 persistent sessions
//! holding 1,000,000 queued QoS 1 messages of 64 B.
//!
//! ```sh
//! cargo bench -p mqtt-async --bench restore             # 3 runs
//! cargo bench -p mqtt-async --bench restore -- --runs 5
//! ```
//!
//! 1. **Write** the store as the broker would, driving the sans-I/O core directly: `restore`
//!    from nothing (persistence on); `SESSION_BATCH` clients at a time connect (5.0, Clean
//!    Start 0, a Session Expiry Interval of an hour), subscribe at QoS 1 to `q/{i}` and close;
//!    then one 3.1.1 publisher sends `PER_SESSION` messages to each topic, round robin,
//!    `PUBLISH_BATCH` PUBLISHes per read. Every batch the core seals (`poll_store`) is
//!    committed into a `FileStore` at once, without fsync, and reported stored, so that the
//!    output it holds is released and drained; one `sync` at the end. The core is then dropped,
//!    and the store closed.
//! 2. **Restore** twice, timing each step as `BrokerBuilder::build` does it:
//!    `FileStore::open` (which replays the part of fjall's journal not yet in its tables),
//!    `load` of every record into memory, and `Broker::restore` of them into a new core. The
//!    restored report must count every session, subscription and message. The first start is
//!    a broker's after it wrote the store (it replays more journal); the second, one after a
//!    start that changed nothing.
//!
//! Each of the `--runs` runs writes a store anew; the table shows medians. The page cache is
//! warm: the store was just written (dropping the caches would need root and would slow
//! everyone on the machine); a cold start adds the time to read what `du` shows from the disk.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use mqtt_async::broker::{FileStore, Store};
use mqtt_proto::broker::{Broker, BrokerConfig, ConnectionId};
use mqtt_proto::codec;
use mqtt_proto::packet::{
    Connect, Packet, PacketId, Publish, QoS, Subscribe, SubscribeProperties, Subscription,
    TopicFilter, Version,
};

const SESSIONS: usize = 100_000;
const PER_SESSION: usize = 10;
const PAYLOAD: usize = 64;
/// Sessions connected at once while writing (our default `max_connections` is 10,000).
const SESSION_BATCH: usize = 1_000;
/// PUBLISH packets per read of the publisher while writing.
const PUBLISH_BATCH: usize = 1_000;

fn main() {
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a number after --runs");
            }
            // What cargo passes to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other:?}; use --runs N"),
        }
    }
    // Per run: the first start after the store was written, and a second start.
    let mut starts: [Vec<Restored>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=runs {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let dir = temp.path().join("store");
        write_store(&dir);
        for (start, times) in starts.iter_mut().enumerate() {
            let restored = restore(&dir);
            println!(
                "run {run} of {runs}, start {}: {}",
                start + 1,
                restored.line()
            );
            times.push(restored);
        }
    }
    println!();
    println!(
        "Startup from {SESSIONS} persistent sessions (5.0, each with one subscription) holding \
         {} queued QoS 1 messages of {PAYLOAD} B, warm page cache; medians of {runs} run(s), \
         each on a store written anew:",
        SESSIONS * PER_SESSION,
    );
    println!();
    println!(
        "| start | journal MB | tables MB | records | MB of keys and values | FileStore::open s | load s | Broker::restore s | total s | RSS after MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, times) in ["first, after writing", "second"].iter().zip(&starts) {
        let median = |pick: &dyn Fn(&Restored) -> f64| {
            let mut values: Vec<f64> = times.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let seconds = |pick: fn(&Restored) -> Duration| median(&|r| pick(r).as_secs_f64());
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            median(&|r| r.journal as f64 / 1e6),
            median(&|r| r.tables as f64 / 1e6),
            median(&|r| r.records as f64),
            median(&|r| r.bytes as f64 / 1e6),
            seconds(|r| r.open),
            seconds(|r| r.load),
            seconds(|r| r.restore),
            seconds(Restored::total),
            median(&|r| r.rss as f64 / 1e6),
        );
    }
}

/// The core and the store while writing.
struct Writer {
    broker: Broker,
    store: FileStore,
    now: Instant,
    out: BytesMut,
    commits: u64,
    ops: u64,
}

impl Writer {
    /// Commits every sealed batch, reports it stored, and drains what that released.
    fn commit(&mut self) {
        while let Some(batch) = self.broker.poll_store() {
            self.store.commit(&batch.ops, false).expect("commit");
            self.broker.handle_stored(batch.id, self.now);
            self.commits += 1;
            self.ops += batch.ops.len() as u64;
        }
        while let Some(connection) = self.broker.poll_ready() {
            self.out.clear();
            self.broker
                .poll_transmit(connection, self.now, &mut self.out);
        }
        while self.broker.poll_event().is_some() {}
    }

    fn send(&mut self, connection: ConnectionId, packet: Packet, version: Version) {
        let mut wire = BytesMut::new();
        codec::encode(&packet, version, &mut wire).expect("encodes");
        self.broker.handle_bytes(connection, self.now, &wire);
    }
}

fn write_store(dir: &Path) {
    let started = Instant::now();
    let now = Instant::now();
    let mut broker = Broker::new(BrokerConfig::default());
    let report = broker
        .restore(now, SystemTime::now(), std::iter::empty())
        .expect("an empty broker restores");
    assert_eq!(report.sessions, 0);
    let mut writer = Writer {
        broker,
        store: FileStore::open(dir).expect("a new store"),
        now,
        out: BytesMut::new(),
        commits: 0,
        ops: 0,
    };
    for first in (0..SESSIONS).step_by(SESSION_BATCH) {
        let mut connections = Vec::with_capacity(SESSION_BATCH);
        for i in first..(first + SESSION_BATCH).min(SESSIONS) {
            let connection = writer.broker.open(now).expect("room for a connection");
            let mut connect = Connect::new(Version::V5, session_id(i));
            connect.clean_start = false;
            connect.properties.session_expiry_interval = Some(3600);
            writer.send(connection, Packet::Connect(Box::new(connect)), Version::V5);
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).expect("nonzero"),
                properties: SubscribeProperties::default(),
                filters: vec![Subscription::new(
                    TopicFilter::new(format!("q/{i}")).expect("a filter"),
                    QoS::AtLeastOnce,
                )],
            };
            writer.send(connection, Packet::Subscribe(subscribe), Version::V5);
            connections.push(connection);
        }
        writer.commit();
        for connection in connections {
            writer.broker.handle_eof(connection, now);
        }
        writer.commit();
    }
    let sessions_written = started.elapsed();
    let publisher = writer.broker.open(now).expect("room for the publisher");
    let connect = Connect::new(Version::V3_1_1, "publisher");
    writer.send(
        publisher,
        Packet::Connect(Box::new(connect)),
        Version::V3_1_1,
    );
    writer.commit();
    let payload = Bytes::from(vec![0x42; PAYLOAD]);
    let mut wire = BytesMut::new();
    let mut packet_id = 0u16;
    let mut in_wire = 0;
    for _round in 0..PER_SESSION {
        for i in 0..SESSIONS {
            let mut publish =
                Publish::new(format!("q/{i}").parse().expect("a topic"), payload.clone());
            publish.qos = QoS::AtLeastOnce;
            packet_id = packet_id.checked_add(1).unwrap_or(1);
            publish.packet_id = PacketId::new(packet_id);
            codec::encode(&Packet::Publish(publish), Version::V3_1_1, &mut wire).expect("encodes");
            in_wire += 1;
            if in_wire == PUBLISH_BATCH {
                writer.broker.handle_bytes(publisher, now, &wire);
                wire.clear();
                in_wire = 0;
                writer.commit();
            }
        }
    }
    writer.broker.handle_bytes(publisher, now, &wire);
    writer.commit();
    writer.store.sync().expect("sync");
    let stats = writer.broker.stats();
    assert_eq!(stats.messages_in, (SESSIONS * PER_SESSION) as u64);
    assert_eq!(stats.dropped.queue_full + stats.dropped.memory_budget, 0);
    assert_eq!(stats.sessions, SESSIONS + 1);
    println!(
        "written in {:.1} s ({:.1} s for the sessions): {} commits of {} ops in all, \
         {:.0} MB of messages queued in the core by its accounting",
        started.elapsed().as_secs_f64(),
        sessions_written.as_secs_f64(),
        writer.commits,
        writer.ops,
        stats.queued_bytes as f64 / 1e6
    );
    // Drops the core, and closes the store (its last fsync and checkpoint).
    drop(writer);
}

fn session_id(i: usize) -> String {
    format!("session-{i:06}")
}

struct Restored {
    /// What the store occupied on disk before opening: fjall's journals (replayed at open),
    /// and the rest (its sorted tables).
    journal: u64,
    tables: u64,
    open: Duration,
    load: Duration,
    restore: Duration,
    records: usize,
    /// Keys and values.
    bytes: usize,
    /// This process's resident memory with the restored core.
    rss: u64,
}

impl Restored {
    fn total(&self) -> Duration {
        self.open + self.load + self.restore
    }

    fn line(&self) -> String {
        format!(
            "journal {:.1} MB, tables {:.1} MB; open {:.2} s + load {:.2} s + restore {:.2} s \
             = {:.2} s; then {:.0} MB resident",
            self.journal as f64 / 1e6,
            self.tables as f64 / 1e6,
            self.open.as_secs_f64(),
            self.load.as_secs_f64(),
            self.restore.as_secs_f64(),
            self.total().as_secs_f64(),
            self.rss as f64 / 1e6
        )
    }
}

/// Opens the store, loads it and restores a core from it, as `BrokerBuilder::build` does.
fn restore(dir: &Path) -> Restored {
    let journal = du(dir, &|path| path.extension().is_some_and(|e| e == "jnl"));
    let tables = du(dir, &|_| true) - journal;
    let started = Instant::now();
    let mut store = FileStore::open(dir).expect("the store opens");
    let open = started.elapsed();
    let started = Instant::now();
    let mut records = Vec::new();
    let mut bytes = 0;
    store
        .load(&mut |key, value| {
            bytes += key.len() + value.len();
            records.push((key.to_vec(), value.to_vec()));
        })
        .expect("the store loads");
    let load = started.elapsed();
    let started = Instant::now();
    let mut broker = Broker::new(BrokerConfig::default());
    let report = broker
        .restore(
            Instant::now(),
            SystemTime::now(),
            records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .expect("the store restores");
    let restore = started.elapsed();
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
    assert_eq!(report.sessions, SESSIONS);
    assert_eq!(report.subscriptions, SESSIONS);
    assert_eq!(report.messages, SESSIONS * PER_SESSION);
    assert_eq!(report.expired_sessions, 0);
    let stats = broker.stats();
    assert_eq!(stats.sessions, SESSIONS);
    println!(
        "restored {} sessions, {} subscriptions, {} messages ({:.0} MB queued by the core's \
         accounting)",
        report.sessions,
        report.subscriptions,
        report.messages,
        stats.queued_bytes as f64 / 1e6
    );
    let rss = rss();
    Restored {
        journal,
        tables,
        open,
        load,
        restore,
        records: records.len(),
        bytes,
        rss,
    }
}

/// What the files under `dir` that `pick` takes occupy on disk, as `du` counts (fjall's
/// journals are sparse files of 64 MiB: their length says nothing).
fn du(dir: &Path, pick: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => du(&entry.path(), pick),
            Ok(_) if pick(&entry.path()) => entry.metadata().map_or(0, |m| allocated(&m)),
            Ok(_) => 0,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(unix)]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(metadata) * 512
}

#[cfg(not(unix))]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    metadata.len()
}

/// This process's resident memory (Linux), else 0.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}
