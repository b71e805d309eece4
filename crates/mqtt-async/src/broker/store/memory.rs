//! A store in memory, for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{Store, StoreError, StoreOp, check_ops};

/// A store in a [`BTreeMap`], for tests: nothing reaches a disk.
///
/// Clones share the data, so a test can "restart" a broker by giving the next one a clone, and
/// [`power_cut`](MemoryStore::power_cut) forgets what was committed since the last sync, as a
/// power cut would with a real disk.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Contents>>,
}

#[derive(Debug, Default)]
struct Contents {
    /// What a reader sees: every commit so far.
    current: BTreeMap<Bytes, Bytes>,
    /// What survives a power cut: every commit up to the last sync.
    durable: BTreeMap<Bytes, Bytes>,
    /// The commits since the last sync, to replay onto `durable` at the next.
    unsynced: Vec<StoreOp>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A copy of everything committed so far, in key order.
    pub fn contents(&self) -> BTreeMap<Bytes, Bytes> {
        self.lock().current.clone()
    }

    /// Forgets every commit since the last sync (or synced commit).
    pub fn power_cut(&self) {
        let mut contents = self.lock();
        contents.current = contents.durable.clone();
        contents.unsynced.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Contents> {
        // A test that panicked while holding the lock left whole maps behind: each op is applied
        // under the lock in one step.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn apply(map: &mut BTreeMap<Bytes, Bytes>, op: &StoreOp) {
    match op {
        StoreOp::Put { key, value } => {
            map.insert(key.clone(), value.clone());
        }
        StoreOp::Delete { key } => {
            map.remove(key);
        }
    }
}

impl Store for MemoryStore {
    fn load(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for (key, value) in &self.lock().current {
            visit(key, value);
        }
        Ok(())
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        check_ops(ops)?;
        let mut contents = self.lock();
        for op in ops {
            apply(&mut contents.current, op);
        }
        contents.unsynced.extend_from_slice(ops);
        drop(contents);
        if sync { self.sync() } else { Ok(()) }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let contents = &mut *self.lock();
        for op in contents.unsynced.drain(..) {
            apply(&mut contents.durable, &op);
        }
        Ok(())
    }
}
