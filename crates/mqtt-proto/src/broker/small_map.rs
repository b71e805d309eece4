//! [`SmallMap`]: the map of the subscription tree's and the retained store's nodes.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// A map that stays a vector while small.
///
/// Most nodes have one to a few children and most filters one subscriber, where a hash table's
/// minimum of four buckets would waste most of its memory, and comparing a few keys costs no more
/// than hashing one. Large maps switch to a hash table so that a node with thousands of children
/// or subscribers keeps constant-time lookups. The retained store's nodes use it too.
pub(super) enum SmallMap<K, T, S> {
    /// At most [`FEW`] entries, allocated exactly.
    Few(Vec<(K, T)>),
    // Boxed: the common small map then costs no more than a vector (24 bytes instead of 48
    // with a `RandomState`), for one more allocation in the rare large one.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<K, T, S>>),
}

/// The most entries a [`SmallMap`] keeps in a vector.
pub(super) const FEW: usize = 8;

impl<K: Eq + Hash, T, S: BuildHasher + Default> SmallMap<K, T, S> {
    pub(super) fn new() -> Self {
        Self::Few(Vec::new())
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::Few(entries) => entries.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn get<Q: ?Sized + Eq + Hash>(&self, key: &Q) -> Option<&T>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Few(entries) => entries
                .iter()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, value)| value),
            Self::Many(map) => map.get(key),
        }
    }

    pub(super) fn get_mut<Q: ?Sized + Eq + Hash>(&mut self, key: &Q) -> Option<&mut T>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Few(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, value)| value),
            Self::Many(map) => map.get_mut(key),
        }
    }

    /// The value at `key`, inserting `make()` first if missing; `make` builds the owned key only
    /// when needed. Never `None` (see [`Node::child_or_insert`]).
    pub(super) fn get_or_insert_with<Q: ?Sized + Eq + Hash>(
        &mut self,
        key: &Q,
        make: impl FnOnce() -> (K, T),
    ) -> Option<&mut T>
    where
        K: Borrow<Q>,
    {
        if self.get(key).is_none() {
            let (owned, value) = make();
            self.insert(owned, value);
        }
        self.get_mut(key)
    }

    pub(super) fn insert(&mut self, key: K, value: T) -> Option<T> {
        match self {
            Self::Few(entries) => {
                if let Some((_, old)) = entries.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if entries.len() < FEW {
                    entries.reserve_exact(1);
                    entries.push((key, value));
                } else {
                    let mut map = HashMap::with_capacity_and_hasher(2 * FEW, S::default());
                    map.extend(entries.drain(..));
                    map.insert(key, value);
                    *self = Self::Many(Box::new(map));
                }
                None
            }
            Self::Many(map) => map.insert(key, value),
        }
    }

    /// Removes `key`, giving memory back: hash tables keep their peak capacity otherwise, and
    /// churn through one busy node must not pin it forever.
    pub(super) fn remove<Q: ?Sized + Eq + Hash>(&mut self, key: &Q) -> Option<T>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Few(entries) => {
                let index = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = entries.swap_remove(index);
                entries.shrink_to_fit();
                Some(value)
            }
            Self::Many(map) => {
                let value = map.remove(key)?;
                // Half of `FEW`, so that a map hovering around the limit does not flip back and
                // forth; halving once three quarters are free keeps removal amortized constant.
                if map.len() <= FEW / 2 {
                    *self = Self::Few(map.drain().collect());
                } else if map.capacity() > 4 * map.len() {
                    map.shrink_to(2 * map.len());
                }
                Some(value)
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &T)> {
        let (few, many) = match self {
            Self::Few(entries) => (Some(entries.iter().map(|(k, v)| (k, v))), None),
            Self::Many(map) => (None, Some(map.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Empties the map, moving the values into `out`.
    pub(super) fn drain_into(&mut self, out: &mut Vec<T>) {
        match std::mem::replace(self, Self::new()) {
            Self::Few(entries) => out.extend(entries.into_iter().map(|(_, value)| value)),
            Self::Many(map) => out.extend(map.into_values()),
        }
    }

    /// Whether the map holds no memory of its own.
    #[cfg(test)]
    pub(super) fn is_unallocated(&self) -> bool {
        matches!(self, Self::Few(entries) if entries.capacity() == 0)
    }
}

/// Vectors keep their peak capacity; halving once three quarters are free gives memory back
/// while keeping removal amortized constant time.
pub(super) fn shrink_vec<T>(vec: &mut Vec<T>) {
    if vec.capacity() > 4 * vec.len() {
        vec.shrink_to(2 * vec.len());
    }
}
