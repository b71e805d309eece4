//! The `persist` scenario: the fan-in relays of `PERSIST_RELAYS` into a persistent session, on
//! each broker in each of its ways to keep state (`TARGETS`), and what went to disk; and the
//! store our broker's child uses to count its commits.
//!
//! Each run starts a fresh broker process with an empty data directory. Besides the relay's
//! numbers (`RelayResult`) it records the bytes the broker caused to be written to storage
//! (`/proc/PID/io` `write_bytes`, from before the first publish to the last delivery), what the
//! data directory occupies afterwards (allocated blocks, the broker still running; mosquitto,
//! which writes nothing during the relay, is first told to save with SIGUSR1), and
//! for ours what its store did (`StoreCounts`, asked of the child before and after).
//!
//! # What limited `sync always` towards a 3.1.1 subscriber, and what changed
//!
//! When this scenario was written, every commit carried about 94 messages (the 3.1.1 in-flight
//! window of 100) and the rate followed the fsync time (57,000 to 130,000 msg/s): the core held
//! every connection's output while any change waited to be durable, so each refill of the
//! subscriber's window waited for a commit. The core now holds only what tells of a pending
//! change (a message whose record is not durable yet, an acknowledgement); messages refilling a
//! window from the queue are on disk already and go at once. The same relay then carried about
//! 200 messages a commit and ran at 281,000 msg/s (one run; BENCHMARKS.md).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mqtt_tokio::broker::store::StoreOp;
use mqtt_tokio::broker::{FileStore, Store, StoreError};

use crate::brokers::{BrokerKind, BrokerProcess, Persistence};
use crate::relay::{Relay, RelayResult, relay};

/// Every broker and mode of the `persist` scenario, in the order of its table. rumqttd has no
/// persistence and is left out.
pub(crate) const TARGETS: [(BrokerKind, Persistence); 5] = [
    (BrokerKind::Ours, Persistence::Memory),
    (BrokerKind::Ours, Persistence::Always),
    (BrokerKind::Ours, Persistence::Periodic),
    (BrokerKind::Mosquitto, Persistence::Memory),
    (BrokerKind::Mosquitto, Persistence::Autosave),
];

/// Time given to mosquitto to write its database when told to.
const SAVE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Default)]
pub(crate) struct PersistResult {
    pub(crate) relay: RelayResult,
    /// Bytes the broker caused to be written to storage during the relay.
    pub(crate) written: Option<u64>,
    /// What the data directory occupies after the relay (mosquitto: after a forced save).
    pub(crate) on_disk: Option<u64>,
    /// Ours with a data directory: what its store did during the relay.
    pub(crate) store: Option<StoreCounts>,
}

impl PersistResult {
    pub(crate) fn line(&self) -> String {
        let mut line = self.relay.line();
        line += &format!(
            "; written {}, on disk {}",
            size(self.written.map(|b| b as f64)),
            size(self.on_disk.map(|b| b as f64))
        );
        if let Some(store) = &self.store {
            line += &format!(
                "; {} commits of {:.0} ops ({:.0} messages) on average, {:.0} µs each, \
                 p99 {} µs, store thread busy {:.0} %",
                store.commits,
                store.ops_per_commit(),
                self.messages_per_commit().unwrap_or(0.0),
                store.commit_mean_us(),
                store.commit_p99_us,
                self.store_busy().unwrap_or(0.0) * 100.0
            );
        }
        line
    }

    /// Deliveries per commit.
    pub(crate) fn messages_per_commit(&self) -> Option<f64> {
        let store = self.store.as_ref().filter(|s| s.commits > 0)?;
        Some(self.relay.delivered as f64 / store.commits as f64)
    }

    /// The share of the relay's time the store's thread spent in commits and syncs.
    pub(crate) fn store_busy(&self) -> Option<f64> {
        let store = self.store.as_ref()?;
        let elapsed_ns = self.relay.delivered as f64 / self.relay.rate.max(1e-9) * 1e9;
        Some((store.commit_ns + store.sync_ns) as f64 / elapsed_ns)
    }
}

/// Bytes in a unit that shows them: `17.0 MB`, `4 kB`.
pub(crate) fn size(bytes: Option<f64>) -> String {
    match bytes {
        None => "–".to_owned(),
        Some(b) if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        Some(b) if b >= 1e3 => format!("{:.0} kB", b / 1e3),
        Some(b) => format!("{b:.0} B"),
    }
}

/// One relay on `broker`, with what went to disk.
pub(crate) async fn persist(
    broker: &mut BrokerProcess,
    persistence: Persistence,
    case: Relay,
    messages: u64,
) -> anyhow::Result<PersistResult> {
    let store_before = broker.our_stats().await?.map(|s| s.store);
    let written_before = broker.write_bytes();
    let relay = relay(broker, case, messages).await?;
    let written = broker
        .write_bytes()
        .zip(written_before)
        .map(|(after, before)| after.saturating_sub(before));
    let store_after = broker.our_stats().await?.map(|s| s.store);
    if persistence == Persistence::Autosave {
        // It wrote nothing during the relay: what it writes at an autosave, to show that it can.
        broker.signal("USR1").await?;
        tokio::time::sleep(SAVE_WAIT).await;
    }
    let store = match (store_after, store_before) {
        (Some(after), Some(before)) if after.commits > 0 => Some(after.since(&before)),
        _ => None,
    };
    Ok(PersistResult {
        relay,
        written,
        on_disk: broker.data_dir().map(dir_size),
        store,
    })
}

/// What the files under `dir` occupy on disk, as `du` counts (fjall's journal is a sparse file
/// of 64 MiB: its length says nothing).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| allocated(&m)),
            Err(_) => 0,
        })
        .sum()
}

/// What our broker's store did, as the child reports it: counters since it started, and
/// distributions over its whole life (the few commits of connecting and subscribing before a
/// relay barely move them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StoreCounts {
    /// Calls of `commit`: one per group of batches the store's thread found waiting.
    pub(crate) commits: u64,
    pub(crate) puts: u64,
    pub(crate) deletes: u64,
    /// Bytes of keys and values committed.
    pub(crate) op_bytes: u64,
    /// Time spent in `commit` (with `SyncPolicy::Always`, fsync included).
    pub(crate) commit_ns: u64,
    /// Calls of `sync` (`SyncPolicy::Periodic`) and time spent in them.
    pub(crate) syncs: u64,
    pub(crate) sync_ns: u64,
    pub(crate) commit_p50_us: u64,
    pub(crate) commit_p99_us: u64,
    pub(crate) ops_p50: u64,
    pub(crate) ops_max: u64,
}

impl StoreCounts {
    /// The counters of `self` minus those of `before`; the distributions of `self`.
    pub(crate) fn since(&self, before: &StoreCounts) -> StoreCounts {
        StoreCounts {
            commits: self.commits - before.commits,
            puts: self.puts - before.puts,
            deletes: self.deletes - before.deletes,
            op_bytes: self.op_bytes - before.op_bytes,
            commit_ns: self.commit_ns - before.commit_ns,
            syncs: self.syncs - before.syncs,
            sync_ns: self.sync_ns - before.sync_ns,
            ..*self
        }
    }

    pub(crate) fn ops_per_commit(&self) -> f64 {
        (self.puts + self.deletes) as f64 / self.commits.max(1) as f64
    }

    pub(crate) fn commit_mean_us(&self) -> f64 {
        self.commit_ns as f64 / self.commits.max(1) as f64 / 1e3
    }

    /// The fields as ` key=value` pairs, for the child's answer line.
    pub(crate) fn line(&self) -> String {
        self.fields()
            .iter()
            .map(|(key, value)| format!(" {key}={value}"))
            .collect()
    }

    /// Sets the field `key`; false when there is none.
    pub(crate) fn set(&mut self, key: &str, value: u64) -> bool {
        let field = match key {
            "commits" => &mut self.commits,
            "puts" => &mut self.puts,
            "deletes" => &mut self.deletes,
            "op_bytes" => &mut self.op_bytes,
            "commit_ns" => &mut self.commit_ns,
            "syncs" => &mut self.syncs,
            "sync_ns" => &mut self.sync_ns,
            "commit_p50_us" => &mut self.commit_p50_us,
            "commit_p99_us" => &mut self.commit_p99_us,
            "ops_p50" => &mut self.ops_p50,
            "ops_max" => &mut self.ops_max,
            _ => return false,
        };
        *field = value;
        true
    }

    fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("commits", self.commits),
            ("puts", self.puts),
            ("deletes", self.deletes),
            ("op_bytes", self.op_bytes),
            ("commit_ns", self.commit_ns),
            ("syncs", self.syncs),
            ("sync_ns", self.sync_ns),
            ("commit_p50_us", self.commit_p50_us),
            ("commit_p99_us", self.commit_p99_us),
            ("ops_p50", self.ops_p50),
            ("ops_max", self.ops_max),
        ]
    }
}

/// Our broker's store in the child: the `FileStore` that `BrokerBuilder::data_dir` opens,
/// counting what it is asked to do. A lock and two clock readings per commit, next to a
/// commit's tens of microseconds to milliseconds.
pub(crate) struct CountingStore {
    inner: FileStore,
    counter: Arc<StoreCounter>,
}

/// Shared between the store's thread and the child's stats thread.
pub(crate) struct StoreCounter(Mutex<Counting>);

struct Counting {
    counts: StoreCounts,
    /// Commit times in µs, ops per commit.
    commit_us: Histogram<u64>,
    ops: Histogram<u64>,
}

impl CountingStore {
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        let counting = Counting {
            counts: StoreCounts::default(),
            commit_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            ops: Histogram::new_with_bounds(1, 100_000_000, 3)?,
        };
        Ok(CountingStore {
            inner: FileStore::open(dir)?,
            counter: Arc::new(StoreCounter(Mutex::new(counting))),
        })
    }

    pub(crate) fn counter(&self) -> Arc<StoreCounter> {
        self.counter.clone()
    }
}

impl StoreCounter {
    fn update(&self, f: impl FnOnce(&mut Counting)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn snapshot(&self) -> StoreCounts {
        let counting = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        StoreCounts {
            commit_p50_us: counting.commit_us.value_at_quantile(0.5),
            commit_p99_us: counting.commit_us.value_at_quantile(0.99),
            ops_p50: counting.ops.value_at_quantile(0.5),
            ops_max: counting.ops.max(),
            ..counting.counts
        }
    }
}

impl Store for CountingStore {
    fn load(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        self.inner.load(visit)
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        let start = Instant::now();
        let result = self.inner.commit(ops, sync);
        let ns = start.elapsed().as_nanos() as u64;
        self.counter.update(|c| {
            c.counts.commits += 1;
            c.counts.commit_ns += ns;
            for op in ops {
                match op {
                    StoreOp::Put { key, value } => {
                        c.counts.puts += 1;
                        c.counts.op_bytes += (key.len() + value.len()) as u64;
                    }
                    StoreOp::Delete { key } => {
                        c.counts.deletes += 1;
                        c.counts.op_bytes += key.len() as u64;
                    }
                }
            }
            let _ = c.commit_us.record((ns / 1000).max(1));
            let _ = c.ops.record((ops.len() as u64).max(1));
        });
        result
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let start = Instant::now();
        let result = self.inner.sync();
        let ns = start.elapsed().as_nanos() as u64;
        self.counter.update(|c| {
            c.counts.syncs += 1;
            c.counts.sync_ns += ns;
        });
        result
    }
}

#[cfg(unix)]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(metadata) * 512
}

#[cfg(not(unix))]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    metadata.len()
}
