//! The broker's retained messages: at most one per topic name, found by topic filter.
//!
//! A trie keyed by topic level: the subscription tree ([`super::tree`]) turned around, storing
//! topic names and looking up filters. Matching walks only the branches a filter can reach: one
//! child lookup per literal level, every child at a `+`, the whole subtree at a `#`. A SUBSCRIBE
//! therefore costs what it matches, however many messages are stored.
//!
//! Expiry is a min-heap of deadlines with lazy deletion: replacing or removing a message leaves
//! its entry behind, to be skipped when it comes up, or dropped in bulk once stale entries
//! outnumber live ones. Purging costs time in proportion to what has expired; a message past its
//! deadline is never visited, purged or not.
//!
//! Memory: with 100,000 messages of 64 bytes on topics `retained/{i/1000}/{i%1000}/state`, the
//! broker bench measures 337 requested heap bytes per message (278 with the `HashMap` by topic
//! this replaced): 64 for the payload, 22 for the topic, 96 for the boxed message, and for each
//! of the two nodes of its own a child map entry (48 bytes in its parent's vector, or about 100
//! in a 1,000-wide hash table at half load) and a few for the level name. The allocator's
//! rounding comes on top. [`MESSAGE_OVERHEAD`] stands for everything but the topic and payload.
//!
//! Topic names may be tens of thousands of levels deep (65,535 bytes of `/`), so every walk,
//! including dropping a branch, is a loop rather than a recursion.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::hash_map::RandomState;
use std::time::Instant;

use super::small_map::SmallMap;
use super::tree::split_level;
use crate::packet::Publish;
use crate::topic::TopicName;

/// The bytes [`RetainedStore::bytes`] counts for a stored message besides its topic, payload and
/// properties: the store's own memory for it (nodes, level names, the boxed message), as measured
/// for typical topics (about 250 bytes, see the module documentation). An estimate for budgets:
/// it does not follow the shape of each topic, an expiry entry (48 bytes) or allocator rounding.
pub(crate) const MESSAGE_OVERHEAD: usize = 256;

/// The expiry heap is rebuilt once it holds more than two entries per expiring message plus
/// this many: a store with few such messages then does not rebuild at every replacement.
const STALE_DEADLINES: usize = 64;

/// A retained message as stored.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    /// The message as it is sent to new subscribers, before their QoS, identifiers and the
    /// remaining expiry interval are applied.
    pub(crate) publish: Publish,
    /// When it expires (from its Message Expiry Interval), if ever.
    pub(crate) expires_at: Option<Instant>,
}

impl Retained {
    /// Whether the message has not expired at `now`: the deadline itself is too late.
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// What the message counts for in [`RetainedStore::bytes`].
    fn accounted_bytes(&self) -> usize {
        weight(&self.publish)
    }
}

/// What a retained message counts for in [`RetainedStore::bytes`].
pub(crate) fn weight(publish: &Publish) -> usize {
    // An unencodable property set is never sent either; its size then counts as nothing
    // rather than failing the store.
    let properties = publish
        .properties
        .get()
        .map_or(0, |properties| properties.body_len().unwrap_or(0));
    publish.topic.len() + publish.payload.len() + properties + MESSAGE_OVERHEAD
}

/// Every retained message, by topic name, indexed for matching topic filters and for expiry.
pub(crate) struct RetainedStore {
    root: Node,
    len: usize,
    /// Running total of [`Retained::accounted_bytes`].
    bytes: usize,
    /// `(deadline, topic)` of every stored message that expires, soonest first, plus stale
    /// entries of messages since replaced or removed.
    deadlines: BinaryHeap<Reverse<(Instant, TopicName)>>,
    /// How many stored messages expire: the heap's live entries.
    expiring: usize,
}

/// One topic level.
struct Node {
    /// Levels are chosen by peers, hence a randomly seeded hasher once the map is large.
    children: SmallMap<Box<str>, Node, RandomState>,
    /// The message retained for the topic ending here. Boxed: the many interior nodes pay one
    /// pointer for it, not the size of a message.
    message: Option<Box<Retained>>,
}

impl RetainedStore {
    /// An empty store.
    pub(crate) fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
            bytes: 0,
            deadlines: BinaryHeap::new(),
            expiring: 0,
        }
    }

    /// The number of messages stored, expired ones not yet purged included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no message is stored.
    #[allow(dead_code)] // the broker counts with `len`; kept as `len`'s natural companion
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The accounted size of everything stored: per message its topic, payload and encoded
    /// properties plus [`MESSAGE_OVERHEAD`]. Kept as a running total, for a byte budget.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The message stored for `topic`, expired or not.
    pub(crate) fn get(&self, topic: &str) -> Option<&Retained> {
        let node = topic
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))?;
        node.message.as_deref()
    }

    /// Whether a message is stored for `topic`, expired or not.
    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.get(topic).is_some()
    }

    /// Stores `publish` as the retained message of its topic, expiring at `expires_at`, and
    /// returns the message it replaces.
    ///
    /// The message is stored as given: detaching it from a read buffer is the caller's business.
    /// Cost: one map lookup per level, plus a heap push if it expires.
    pub(crate) fn insert(
        &mut self,
        publish: Publish,
        expires_at: Option<Instant>,
    ) -> Option<Retained> {
        let Some(node) = publish
            .topic
            .as_str()
            .split('/')
            .try_fold(&mut self.root, |node, level| node.child_or_insert(level))
        else {
            return None; // Never: see `child_or_insert`.
        };
        let retained = Retained {
            publish,
            expires_at,
        };
        self.bytes += retained.accounted_bytes();
        if expires_at.is_some() {
            self.expiring += 1;
        }
        // Replacing in place reuses the box: a topic republished over and over allocates once.
        let replaced = match node.message.as_deref_mut() {
            Some(old) => Some(std::mem::replace(old, retained)),
            None => {
                node.message = Some(Box::new(retained));
                None
            }
        };
        match &replaced {
            Some(old) => {
                self.bytes -= old.accounted_bytes();
                if old.expires_at.is_some() {
                    self.expiring -= 1;
                }
            }
            None => self.len += 1,
        }
        // A replaced message with the same deadline left an entry that serves the new one.
        let has_entry = replaced
            .as_ref()
            .is_some_and(|old| old.expires_at == expires_at);
        if let (Some(at), false) = (expires_at, has_entry)
            && let Some(stored) = node.message.as_deref()
        {
            self.deadlines
                .push(Reverse((at, stored.publish.topic.clone())));
            self.drop_stale_deadlines();
        }
        replaced
    }

    /// Removes the message stored for `topic` and returns it.
    ///
    /// Nodes left holding nothing are freed, so memory follows the stored messages however many
    /// topics come and go.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<Retained> {
        let node = topic
            .split('/')
            .try_fold(&mut self.root, |node, level| node.children.get_mut(level))?;
        let removed = *node.message.take()?;
        let now_empty = node.children.is_empty();
        self.len -= 1;
        self.bytes -= removed.accounted_bytes();
        if removed.expires_at.is_some() {
            self.expiring -= 1;
            self.drop_stale_deadlines();
        }
        if now_empty {
            self.prune(topic);
        }
        Some(removed)
    }

    /// Calls `visit` for every message whose topic matches `filter` (a valid topic filter, not a
    /// `$share/` one) and that has not expired at `now`.
    ///
    /// Cost: one lookup per literal level, one step per child at a `+` and per node below a
    /// `#`, plus the visits. It allocates only to hold the branches of a `+` or `#`.
    pub(crate) fn for_each_match(
        &self,
        filter: &str,
        now: Instant,
        mut visit: impl FnMut(&Retained),
    ) {
        let mut visit_live = |node: &Node| {
            if let Some(message) = node.message.as_deref().filter(|m| m.is_live(now)) {
                visit(message);
            }
        };
        // The walk follows one branch in `current` and parks the others, so a filter of
        // literal levels never touches `parked`.
        let mut current = Some((&self.root, Some(filter)));
        let mut parked = Vec::new();
        let mut subtree = Vec::new();
        while let Some((node, rest)) = current.take().or_else(|| parked.pop()) {
            let Some(rest) = rest else {
                visit_live(node);
                continue;
            };
            let at_root = std::ptr::eq(node, &self.root);
            let (level, rest) = split_level(rest);
            match level {
                // `#` matches the level it follows too: `sport/#` matches `sport` (MQTT-4.7.1-2).
                // The root holds no message: topic names have at least one level.
                "#" => {
                    visit_live(node);
                    subtree.extend(node.wildcard_children(at_root));
                    while let Some(node) = subtree.pop() {
                        visit_live(node);
                        subtree.extend(node.children.iter().map(|(_, child)| child));
                    }
                }
                "+" => parked.extend(node.wildcard_children(at_root).map(|child| (child, rest))),
                _ => current = node.children.get(level).map(|child| (child, rest)),
            }
        }
    }

    /// Removes every message expired at `now` and returns how many there were.
    ///
    /// Cost: proportional to the expired messages and stale entries passed, each a heap pop and
    /// a removal; nothing else is looked at.
    pub(crate) fn purge_expired(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some(Reverse((at, _))) = self.deadlines.peek()
            && *at <= now
        {
            let Some(Reverse((at, topic))) = self.deadlines.pop() else {
                break;
            };
            // A replaced or removed message left its entry behind: the deadline is the
            // message's own only if it still matches.
            if self
                .get(&topic)
                .is_some_and(|message| message.expires_at == Some(at))
            {
                self.remove(&topic);
                purged += 1;
            }
        }
        purged
    }

    /// No later than the earliest deadline of a stored message, if any expires. It may be the
    /// deadline of a message since replaced or removed: purging then finds nothing to do.
    #[allow(dead_code)] // for an expiry timer still to come; tests use it
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Drops the entries of replaced and removed messages once they outnumber the live ones, so
    /// that the heap follows the expiring messages rather than the history of publishes. Each
    /// stale entry became stale since the last rebuild, by one replacement or removal, and they
    /// are at least half the heap: spread over those, a rebuild costs a heap operation each.
    fn drop_stale_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.expiring + STALE_DEADLINES {
            return;
        }
        let mut entries = std::mem::take(&mut self.deadlines).into_vec();
        entries.retain(|Reverse((at, topic))| {
            self.get(topic)
                .is_some_and(|message| message.expires_at == Some(*at))
        });
        // A message removed and stored again with the same deadline (same clock reading, same
        // interval) has two live entries: keep one, so the heap ends with one per message.
        entries.sort_unstable();
        entries.dedup();
        entries.shrink_to_fit();
        self.deadlines = BinaryHeap::from(entries);
    }

    /// Frees the nodes along `topic` that hold nothing but the way to its last node, which has
    /// just become empty.
    fn prune(&mut self, topic: &str) {
        // The deepest node on the path that stays: the root, or one that holds anything besides
        // the path's next node. Everything below it on the path goes.
        let mut keep = 0;
        let mut node = &self.root;
        for (depth, level) in topic.split('/').enumerate() {
            if depth > 0 && !node.is_only_a_link() {
                keep = depth;
            }
            match node.children.get(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        let mut levels = topic.split('/');
        let parent = levels
            .by_ref()
            .take(keep)
            .try_fold(&mut self.root, |node, level| node.children.get_mut(level));
        if let (Some(parent), Some(level)) = (parent, levels.next()) {
            parent.children.remove(level);
        }
    }

    /// The number of nodes besides the root, to check that removals free them.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            pending.extend(node.children.iter().map(|(_, child)| child));
            count += 1;
        }
        count - 1
    }
}

impl Default for RetainedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// The child at `level`, created if missing. Never `None`: the option only stands in for
    /// the unwrap that the no-panic rule forbids after inserting.
    fn child_or_insert(&mut self, level: &str) -> Option<&mut Self> {
        self.children
            .get_or_insert_with(level, || (level.into(), Self::default()))
    }

    /// The children a wildcard level reaches: all of them, except that at the root those whose
    /// level starts with `$` are left out: filters starting with a wildcard do not match names
    /// starting with `$` (MQTT-4.7.2-1).
    fn wildcard_children(&self, at_root: bool) -> impl Iterator<Item = &Self> {
        self.children
            .iter()
            .filter(move |(level, _)| !(at_root && level.starts_with('$')))
            .map(|(_, child)| child)
    }

    /// Whether the node holds nothing but one child, and so can go when that child goes.
    fn is_only_a_link(&self) -> bool {
        self.message.is_none() && self.children.len() == 1
    }
}

impl Default for Node {
    fn default() -> Self {
        Self {
            children: SmallMap::new(),
            message: None,
        }
    }
}

impl Drop for Node {
    /// Dropping the children as fields would recurse once per level, and a topic of 65,535 `/`
    /// is a chain that deep: enough to overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut doomed = Vec::new();
        self.children.drain_into(&mut doomed);
        while let Some(mut node) = doomed.pop() {
            node.children.drain_into(&mut doomed);
        }
    }
}

#[cfg(test)]
mod tests;
