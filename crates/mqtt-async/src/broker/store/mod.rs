//! Durable storage under the broker: a small [`Store`] trait and its implementations.
//!
//! The broker core (sans I/O) describes what must survive a crash as batches of key-value
//! changes, [`StoreOp`]s, one batch per turn of its router, in its own versioned encoding: the
//! store sees opaque keys and values. The core holds the PUBACK/PUBREC of the messages in a
//! batch until the driver reports the batch durable, so one fsync covers a whole turn (group
//! commit). At start the driver [`load`](Store::load)s everything and hands it to the core.
//!
//! - [`FileStore`]: the default, a directory holding an embedded `fjall` database (a
//!   log-structured merge tree with a write-ahead journal) and a `VERSION` file.
//! - [`MemoryStore`]: a map in memory, for tests; it can simulate a power cut.
//! - [`FailingStore`]: wraps another store and fails its commits on demand (a full disk), so
//!   tests can check that nothing is acknowledged that was not stored.
//!
//! A store blocks: `commit` with `sync` waits for the disk. The driver runs it on a thread of its
//! own, never on the executor, and keeps routing while a commit is under way, so that the next
//! turn's batch grows while the disk works (the bigger the batch, the cheaper each message).
//!
//! # What the core can rely on
//!
//! - Keys are 1 to [`MAX_KEY_LEN`] bytes, values up to [`MAX_VALUE_LEN`]; the whole key space
//!   is the core's (a store keeps its own records apart). [`load`](Store::load) visits keys in
//!   bytewise order, so a prefix (`s/`, `q/`, …) comes out as one run, and a big-endian number
//!   after it sorts numerically.
//! - A batch has no size limit beyond memory: the file store writes it as one record of its
//!   journal, a value of some MiB included. Commits are applied in order, each whole or not at
//!   all after a crash, and [`StoreOp`]s are idempotent: a batch whose commit failed may or may
//!   not be there, and is committed again as it was.
//! - On the CI machine a synced commit of [`FileStore`] takes a median 0.1 to 0.8 ms for up to
//!   100 small ops and 2 to 3 ms for 1,000; the 99th percentile reaches 4 to 8 ms and 6 to
//!   19 ms when the disk is slow (the fsync dominates). An unsynced commit takes microseconds
//!   per op. A rewrite of the `COMMITTED` file adds three fsyncs to one synced commit a second.
//!
//! # Why fjall
//!
//! Measured on this project's CI machine (2 cores, ext4 on a virtual disk whose fsync takes
//! between 0.1 ms and 4 ms depending on the moment) with redb 5.0, fjall 3.1 and SQLite 3 through
//! rusqlite 0.43 (bundled, WAL, `synchronous=FULL`). A batch puts N keys of 24 bytes with values
//! of 100 bytes, spread over 100 sessions; every other batch also deletes the previous batch's
//! keys (acknowledged messages leaving the queue), so a batch averages 1.5 N ops. Each batch is
//! atomic and fsynced. Ops per second (batches per second), medians of five interleaved runs of
//! 4 seconds; the floor is a plain file, appended to and fdatasynced per batch:
//!
//! | N | floor | redb | fjall | SQLite |
//! |---:|---:|---:|---:|---:|
//! | 1 | 8,597 (5,732) | 3,801 (2,534) | 7,918 (5,279) | 9,239 (6,160) |
//! | 10 | 34,697 (2,313) | 20,736 (1,382) | 71,214 (4,748) | 59,347 (3,956) |
//! | 100 | 550,914 (3,673) | 73,554 (490) | 211,055 (1,407) | 87,985 (587) |
//! | 1,000 | 2,094,796 (1,397) | 311,733 (208) | 396,536 (264) | 236,259 (158) |
//!
//! With a sync once a second instead (commits only handed to the operating system), medians of
//! three runs: N = 100 gives 233,078 ops/s with redb, 373,715 with fjall, 83,498 with SQLite;
//! N = 1,000 gives 553,578, 407,868 and 262,254.
//!
//! The target, 100,000 QoS 1 messages a second fsynced before their acks at about two ops per
//! message, needs 200,000 ops/s: fjall gets there from batches of about 100 ops, redb and SQLite
//! only near 1,000 (then with 4–6 ms per commit). A B-tree writes a 4 KiB page for each leaf a
//! batch touches (redb copies them, SQLite's WAL logs them); fjall appends the batch to its
//! journal, like the floor.
//!
//! Loading 1,000,000 keys with 100-byte values (118 MiB) after reopening: redb 0.2 s warm, 2.6 s
//! with a cold page cache, 272 MiB on disk; fjall 1.3–1.4 s warm, 1.4–2.9 s cold (most of it
//! replaying its journal), 119 MiB; SQLite 0.14 s warm, 0.4 s cold, 144 MiB. [`FileStore`] adds
//! nothing measurable to fjall's numbers.
//!
//! A writer killed with SIGKILL mid-stream, twelve times for each engine: all three reopened with
//! every batch they had reported committed and no partial batch. Four bytes flipped in a data
//! file, at its middle and at random places: fjall refused to open or load (a checksum mismatch)
//! whenever the bytes were in use; redb returned a wrong value without an error in 4 of 7 tries
//! (it verifies its checksums only when repairing after a crash or when asked to, a full scan),
//! SQLite in 4 of 7 (it keeps no checksums) and reported a malformed database once. None
//! panicked. fjall has one gap, found while writing the tests (its issue 311): damage to the
//! framing of a journal entry makes it drop the rest of the journal as it does a torn write.
//! [`FileStore`] closes it with commit numbers (see there).
//!
//! fjall is pure Rust (no C build), MIT OR Apache-2.0, and adds about 20 small crates to the
//! build; redb adds none, and SQLite needs a C compiler. fjall wins on the first criterion,
//! fsynced group commits, and on detecting corruption; its load time is acceptable.

use std::path::PathBuf;
use std::time::Duration;

mod failing;
mod file;
mod memory;

#[doc(hidden)]
pub use failing::{FailingStore, Faults};
pub use file::FileStore;
pub use memory::MemoryStore;

/// The longest key a store accepts, in bytes. Keys must not be empty either.
pub const MAX_KEY_LEN: usize = 65_535;

/// The longest value a store accepts, in bytes (4 GiB − 1).
pub const MAX_VALUE_LEN: usize = u32::MAX as usize;

/// One change: the core's encoding, opaque to the store (see the [module docs](self)).
pub use mqtt_proto::broker::StoreOp;

/// Where the broker keeps what must survive a crash.
///
/// Every method blocks until the storage has done its part: call them from a thread of their
/// own. A store is used by one thread at a time (`&mut self`); it only has to be [`Send`].
pub trait Store: Send + 'static {
    /// Visits everything stored, in key order (bytewise, shorter first on a common prefix).
    /// Called once, at start, before any commit.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored data fails its checks, [`StoreError::Io`] when it
    /// cannot be read. What was visited before the error is no less suspect: discard it.
    fn load(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError>;

    /// Applies `ops` atomically, in order (a later op on the same key wins): after a crash, all
    /// of them are there or none. With `sync`, they are durable on return (they survive a power
    /// cut); without, they survive the process being killed and become durable with the next
    /// [`sync`](Store::sync) or synced commit.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the disk is full or refuses to write: the batch may or may not
    /// be applied, so hold its acks and commit it again later. [`StoreError::InvalidOp`] for a
    /// key or value out of bounds, and nothing of the batch is applied.
    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError>;

    /// Makes every commit so far durable (for [`SyncPolicy::Periodic`]).
    ///
    /// # Errors
    /// [`StoreError::Write`] when the disk refuses: what was committed since the last successful
    /// sync may be lost on a power cut, so keep its acks held and call again later.
    fn sync(&mut self) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        (**self).load(visit)
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        (**self).commit(ops, sync)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        (**self).sync()
    }
}

/// When commits reach the disk: what a power cut can cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every commit is fsynced before the acks it holds go out: nothing acknowledged is lost,
    /// even on a power cut. One fsync covers a whole batch, so throughput comes from large
    /// batches (see the measurements in the [module docs](self)).
    #[default]
    Always,
    /// Commits are handed to the operating system at once, so they survive the broker being
    /// killed, and fsynced at this interval. Acks go out before the fsync: a power cut or a
    /// kernel crash can lose what was acknowledged within the last interval.
    Periodic(Duration),
}

impl SyncPolicy {
    /// Whether each commit is fsynced (the `sync` argument of [`Store::commit`]).
    pub fn syncs_each_commit(&self) -> bool {
        matches!(self, SyncPolicy::Always)
    }
}

/// Why a store could not load, commit or sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Writing failed: the disk is full or reported an error. The batch may or may not be
    /// applied. Hold its acks, and commit it again later (the store reopens itself if it has
    /// to); tell the operator if it keeps failing.
    #[error("cannot write to the store in {}: {source}", path.display())]
    Write {
        /// The store's directory.
        path: PathBuf,
        /// What the operating system or the engine said.
        source: std::io::Error,
    },
    /// The stored data fails its checks (a flipped bit, a truncated or foreign file): the
    /// store cannot be trusted. Restore a backup, or move the directory away to start empty.
    #[error("{}: the store is corrupt: {detail}", path.display())]
    Corrupt {
        /// The file or, when the engine does not say which file, the directory.
        path: PathBuf,
        /// What the engine said.
        detail: String,
    },
    /// The directory holds a store in a format this version does not read (written by a newer
    /// version), or something that is not a store: use a matching version or another directory.
    #[error(
        "{}: not a store this version reads ({found}; it reads format {})",
        path.display(),
        file::FORMAT_VERSION
    )]
    UnknownVersion {
        /// The version file, or the directory when it has none.
        path: PathBuf,
        /// What was found instead.
        found: String,
    },
    /// Another process has the store open: stop it, or use another directory.
    #[error("the store in {} is in use by another process", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The store cannot be opened or read (permissions, a missing device): fix the cause and
    /// start again.
    #[error("cannot open or read the store in {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// An op is out of bounds (an empty or too long key, a too long value): a bug in the
    /// caller. Nothing of the batch was applied.
    #[error("invalid store op: {0}")]
    InvalidOp(String),
}

impl StoreError {
    /// Whether trying again later may succeed (a full disk gets space back): the acks stay held
    /// meanwhile. Every other error needs the operator or a fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Write { .. })
    }
}

/// Checks the bounds of every op before any is applied.
fn check_ops(ops: &[StoreOp]) -> Result<(), StoreError> {
    for op in ops {
        let key = op.key();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(StoreError::InvalidOp(format!(
                "a key of {} bytes (1 to {MAX_KEY_LEN} allowed)",
                key.len()
            )));
        }
        if let StoreOp::Put { value, .. } = op
            && value.len() > MAX_VALUE_LEN
        {
            return Err(StoreError::InvalidOp(format!(
                "a value of {} bytes (up to {MAX_VALUE_LEN} allowed)",
                value.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
