//! A store that fails on demand, for tests of what the broker does when the disk is full.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Store, StoreError, StoreOp};

/// Wraps a store and makes its commits and syncs fail while its [`Faults`] say so, with the
/// [`StoreError::Write`] of a full disk.
#[derive(Debug)]
pub struct FailingStore<S> {
    inner: S,
    faults: Faults,
}

/// The switch of a [`FailingStore`]: clones control the same store, from any thread.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Commits and syncs left to fail; `usize::MAX` until healed.
    remaining: usize,
    /// Whether a failing commit is applied before it reports the error (the write went through,
    /// its fsync failed), rather than not at all.
    applied: bool,
}

impl Faults {
    /// Fails the next `count` commits and syncs, applying nothing of their batches.
    pub fn fail_next(&self, count: usize) {
        *self.lock() = FaultState {
            remaining: count,
            applied: false,
        };
    }

    /// Fails the next `count` commits and syncs, but applies their batches first: the case of
    /// a write that went through and an fsync that failed, the worst a caller must expect.
    pub fn fail_next_after_applying(&self, count: usize) {
        *self.lock() = FaultState {
            remaining: count,
            applied: true,
        };
    }

    /// Fails every commit and sync, applying nothing, until [`heal`](Faults::heal).
    pub fn fail_until_healed(&self) {
        self.fail_next(usize::MAX);
    }

    /// Lets commits and syncs through again.
    pub fn heal(&self) {
        self.fail_next(0);
    }

    /// Whether the next commit or sync fails.
    pub fn is_failing(&self) -> bool {
        self.lock().remaining > 0
    }

    /// Takes one failure if one is due: `Some(applied)`.
    fn take(&self) -> Option<bool> {
        let mut state = self.lock();
        if state.remaining == 0 {
            return None;
        }
        if state.remaining != usize::MAX {
            state.remaining -= 1;
        }
        Some(state.applied)
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // The state is two plain fields, whole after any panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S: Store> FailingStore<S> {
    /// Wraps `inner`; nothing fails until the returned [`Faults`] say so.
    pub fn new(inner: S) -> (FailingStore<S>, Faults) {
        let faults = Faults::default();
        let store = FailingStore {
            inner,
            faults: faults.clone(),
        };
        (store, faults)
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn disk_full() -> StoreError {
    StoreError::Write {
        path: PathBuf::from("<failing store>"),
        source: std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device (injected)",
        ),
    }
}

impl<S: Store> Store for FailingStore<S> {
    fn load(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        self.inner.load(visit)
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        match self.faults.take() {
            None => self.inner.commit(ops, sync),
            Some(true) => {
                self.inner.commit(ops, false)?;
                Err(disk_full())
            }
            Some(false) => Err(disk_full()),
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        match self.faults.take() {
            None => self.inner.sync(),
            Some(_) => Err(disk_full()),
        }
    }
}
