//! The broker's subscription tree: which subscriptions a published topic reaches.
//!
//! A trie keyed by topic level. Each node holds its literal children, an optional `+` child, the
//! subscriptions whose filter ends at the node and those whose filter continues with a final `#`.
//! Matching a topic walks the literal and `+` branches level by level, so its cost grows with the
//! topic's depth and the number of wildcard branches actually present, not with the number of
//! subscriptions.
//!
//! Filters and topic names may be tens of thousands of levels deep (65,535 bytes of `/`), so every
//! walk, including dropping a branch, is a loop rather than a recursion.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

use crate::topic;

/// Identifies a client session to the tree; the broker assigns it.
pub(crate) type ClientKey = u32;

/// Client keys are chosen by the broker, not by peers, so they need no DoS-resistant hashing;
/// a fixed hasher makes the visit order depend only on the operations performed, so a recorded
/// trace replays exactly.
type ClientMap<V> = SmallMap<ClientKey, V, BuildHasherDefault<DefaultHasher>>;

/// Every subscription of every client, ordinary and shared, indexed for matching topic names.
///
/// Each subscription is identified by its filter (as subscribed, `$share/{group}/` included) and
/// its client, and carries a `V` (the broker's subscription options). Shared subscriptions with the
/// same group name and filter form one group, which receives each message once, at one member
/// chosen round robin.
pub(crate) struct SubscriptionTree<V> {
    root: Node<V>,
    len: usize,
}

/// One topic level. Filter levels are stored as subscribed; a literal `+` or `#` level cannot
/// occur in a valid filter, so `+` always means the wildcard.
struct Node<V> {
    /// Levels are chosen by peers, hence a randomly seeded hasher once the map is large.
    children: SmallMap<Box<str>, Node<V>, RandomState>,
    /// Boxed: most nodes have no `+` child, and an inline node would make every node recursive in
    /// size.
    plus: Option<Box<Node<V>>>,
    /// Subscriptions whose filter ends at this level. Boxed so that the many interior nodes
    /// without subscriptions pay one pointer for it.
    here: Option<Box<Subscribers<V>>>,
    /// Subscriptions whose filter is this level followed by `#`: kept here rather than in a child
    /// node because `#` also matches this level itself and never has children.
    hash: Option<Box<Subscribers<V>>>,
}

/// The subscriptions of one filter (one node, `#` or not).
struct Subscribers<V> {
    clients: ClientMap<V>,
    /// Usually one or two groups per filter, so a vector scan beats a map; matching visits every
    /// group anyway.
    groups: Vec<SharedGroup<V>>,
}

/// The members of one shared subscription group on one filter.
struct SharedGroup<V> {
    name: Box<str>,
    /// In rotation order; new members join at the end.
    members: Vec<(ClientKey, V)>,
    /// Index of the member whose turn is next; always below `members.len()` unless empty.
    next: usize,
}

impl<V> SubscriptionTree<V> {
    /// An empty tree.
    pub(crate) fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// The number of subscriptions, each shared group member counting as one.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no subscriptions at all.
    #[allow(dead_code)] // the router counts with `len`; kept as `len`'s natural companion
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Subscribes `client` to `filter` (a valid topic filter, possibly `$share/{group}/{filter}`)
    /// with `value`, returning the value this replaces if the client already had that exact
    /// subscription.
    ///
    /// A replaced shared member keeps its place in the group's rotation. Cost: one map lookup per
    /// level, plus a scan of the group's members for a shared subscription.
    pub(crate) fn insert(&mut self, filter: &str, client: ClientKey, value: V) -> Option<V> {
        let (group, filter) = split_shared(filter);
        let (path, hash) = split_hash(filter);
        let Some(node) =
            levels(path).try_fold(&mut self.root, |node, level| node.child_or_insert(level))
        else {
            return None; // Never: see `child_or_insert`.
        };
        let subscribers = node.slot_mut(hash).get_or_insert_with(Box::default);
        let replaced = match group {
            None => subscribers.clients.insert(client, value),
            Some(group) => subscribers.insert_shared(group, client, value),
        };
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Unsubscribes `client` from `filter`, returning the subscription's value, or `None` if there
    /// was no such subscription.
    ///
    /// Nodes left holding nothing are freed, so memory follows the live subscriptions however many
    /// come and go.
    pub(crate) fn remove(&mut self, filter: &str, client: ClientKey) -> Option<V> {
        let (group, filter) = split_shared(filter);
        let (path, hash) = split_hash(filter);
        let node = levels(path).try_fold(&mut self.root, |node, level| node.child_mut(level))?;
        let slot = node.slot_mut(hash);
        let subscribers = slot.as_deref_mut()?;
        let removed = match group {
            None => subscribers.clients.remove(&client),
            Some(group) => subscribers.remove_shared(group, client),
        }?;
        if subscribers.is_empty() {
            *slot = None;
        }
        self.len -= 1;
        if let Some(path) = path
            && node.is_empty()
        {
            self.prune(path);
        }
        Some(removed)
    }

    /// The value of `client`'s subscription to `filter` (as given to [`Self::insert`]).
    #[allow(dead_code)] // the router keeps each session's own subscription list; tests use it
    pub(crate) fn get(&self, filter: &str, client: ClientKey) -> Option<&V> {
        let (group, filter) = split_shared(filter);
        let (path, hash) = split_hash(filter);
        let node = levels(path).try_fold(&self.root, |node, level| node.child(level))?;
        let subscribers = node.slot(hash)?;
        match group {
            None => subscribers.clients.get(&client),
            Some(group) => subscribers
                .group(group)?
                .members
                .iter()
                .find(|(member, _)| *member == client)
                .map(|(_, value)| value),
        }
    }

    /// Calls `visit` for every subscription that receives a message published to the topic name
    /// `topic`: each ordinary subscription whose filter matches, and one member of each shared
    /// group whose filter matches.
    ///
    /// The member is the next one in the group's rotation for which `available` returns true; if
    /// none is, it is the next one in rotation regardless, so that the message waits in someone's
    /// queue rather than being lost. Either way the rotation moves past it. A client with several
    /// matching subscriptions is visited once for each: merging them (MQTT-3.3.4-2) is the
    /// caller's business.
    ///
    /// Cost: proportional to the topic's depth times the `+` branches present along it, plus the
    /// visits; it does not allocate unless the topic reaches a `+` and a literal child at the same
    /// level.
    pub(crate) fn for_each_match(
        &mut self,
        topic: &str,
        mut available: impl FnMut(ClientKey) -> bool,
        mut visit: impl FnMut(ClientKey, &V),
    ) {
        // Filters starting with a wildcard do not match names starting with `$` (MQTT-4.7.2-1).
        let mut wildcards = !topic.starts_with('$');
        // The walk follows one branch in `current` and parks the others, so the common case of
        // no competing `+` branch never touches `parked`.
        let mut current = Some((&mut self.root, Some(topic)));
        let mut parked = Vec::new();
        while let Some((node, rest)) = current.take().or_else(|| parked.pop()) {
            let Node {
                children,
                plus,
                here,
                hash,
            } = node;
            let Some(rest) = rest else {
                // The topic ends here, which `#` matches too: `sport/#` matches `sport`.
                deliver(here, &mut available, &mut visit);
                deliver(hash, &mut available, &mut visit);
                continue;
            };
            let (level, rest) = split_level(rest);
            current = children.get_mut(level).map(|child| (child, rest));
            if wildcards {
                deliver(hash, &mut available, &mut visit);
                if let Some(plus) = plus.as_deref_mut() {
                    if current.is_none() {
                        current = Some((plus, rest));
                    } else {
                        parked.push((plus, rest));
                    }
                }
            }
            // Only the root's wildcards are subject to the `$` rule.
            wildcards = true;
        }
    }

    /// Frees the nodes along `path` (a filter without its trailing `#`) that hold nothing but
    /// the way to its last node, which has just become empty.
    fn prune(&mut self, path: &str) {
        // The deepest node on the path that stays: the root, or one that holds anything besides
        // the path's next node. Everything below it on the path goes.
        let mut keep = 0;
        let mut node = &self.root;
        for (depth, level) in path.split('/').enumerate() {
            if depth > 0 && !node.is_only_a_link() {
                keep = depth;
            }
            match node.child(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        let mut path_levels = path.split('/');
        let parent = path_levels
            .by_ref()
            .take(keep)
            .try_fold(&mut self.root, |node, level| node.child_mut(level));
        if let (Some(parent), Some(level)) = (parent, path_levels.next()) {
            parent.detach(level);
        }
    }

    /// The number of nodes besides the root, to check that removals free them.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            pending.extend(node.children.iter().map(|(_, child)| child));
            pending.extend(node.plus.as_deref());
            count += 1;
        }
        count - 1
    }
}

impl<V> Default for SubscriptionTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Node<V> {
    fn child(&self, level: &str) -> Option<&Self> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    /// The child at `level`, created if missing. Never `None`: the option only stands in for
    /// the unwrap that the no-panic rule forbids after inserting.
    fn child_or_insert(&mut self, level: &str) -> Option<&mut Self> {
        if level == "+" {
            Some(self.plus.get_or_insert_with(Box::default))
        } else {
            self.children
                .get_or_insert_with(level, || (level.into(), Self::default()))
        }
    }

    /// Removes the child at `level` with everything below it.
    fn detach(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            self.children.remove(level);
        }
    }

    fn slot(&self, hash: bool) -> Option<&Subscribers<V>> {
        if hash {
            self.hash.as_deref()
        } else {
            self.here.as_deref()
        }
    }

    fn slot_mut(&mut self, hash: bool) -> &mut Option<Box<Subscribers<V>>> {
        if hash { &mut self.hash } else { &mut self.here }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_none()
            && self.hash.is_none()
    }

    /// Whether the node holds nothing but one child, and so can go when that child goes.
    fn is_only_a_link(&self) -> bool {
        self.here.is_none()
            && self.hash.is_none()
            && self.children.len() + usize::from(self.plus.is_some()) == 1
    }

    /// Moves the children into `out`, to be dropped by a loop instead of a recursion.
    fn orphan_into(&mut self, out: &mut Vec<Self>) {
        self.children.drain_into(out);
        out.extend(self.plus.take().map(|plus| *plus));
    }
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: SmallMap::new(),
            plus: None,
            here: None,
            hash: None,
        }
    }
}

impl<V> Drop for Node<V> {
    /// Dropping the children as fields would recurse once per level, and a filter of 65,535 `/`
    /// is a chain that deep: enough to overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut doomed = Vec::new();
        self.orphan_into(&mut doomed);
        while let Some(mut node) = doomed.pop() {
            node.orphan_into(&mut doomed);
        }
    }
}

impl<V> Default for Subscribers<V> {
    fn default() -> Self {
        Self {
            clients: ClientMap::new(),
            groups: Vec::new(),
        }
    }
}

impl<V> Subscribers<V> {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty()
    }

    fn group(&self, name: &str) -> Option<&SharedGroup<V>> {
        self.groups.iter().find(|group| &*group.name == name)
    }

    fn insert_shared(&mut self, name: &str, client: ClientKey, value: V) -> Option<V> {
        match self.groups.iter_mut().find(|group| &*group.name == name) {
            Some(group) => group.insert(client, value),
            None => {
                self.groups.push(SharedGroup {
                    name: name.into(),
                    members: vec![(client, value)],
                    next: 0,
                });
                None
            }
        }
    }

    fn remove_shared(&mut self, name: &str, client: ClientKey) -> Option<V> {
        let index = self.groups.iter().position(|group| &*group.name == name)?;
        let group = self.groups.get_mut(index)?;
        let removed = group.remove(client)?;
        if group.members.is_empty() {
            // `remove`, not `swap_remove`: the order of visits stays the order of creation.
            self.groups.remove(index);
            shrink_vec(&mut self.groups);
        }
        Some(removed)
    }
}

impl<V> SharedGroup<V> {
    fn insert(&mut self, client: ClientKey, value: V) -> Option<V> {
        match self
            .members
            .iter_mut()
            .find(|(member, _)| *member == client)
        {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                self.members.push((client, value));
                None
            }
        }
    }

    fn remove(&mut self, client: ClientKey) -> Option<V> {
        let index = self
            .members
            .iter()
            .position(|(member, _)| *member == client)?;
        let (_, value) = self.members.remove(index);
        // Keep pointing at the same member, so nobody's turn is skipped or repeated.
        if index < self.next {
            self.next -= 1;
        }
        if self.next >= self.members.len() {
            self.next = 0;
        }
        shrink_vec(&mut self.members);
        Some(value)
    }

    /// The member whose turn it is, preferring available ones, and advances the rotation past
    /// it. `None` only for an empty group.
    fn pick(&mut self, available: &mut impl FnMut(ClientKey) -> bool) -> Option<(ClientKey, &V)> {
        let members = self.members.iter().enumerate();
        let mut rotation = members
            .clone()
            .skip(self.next)
            .chain(members.take(self.next));
        let first = rotation.clone().next()?;
        let (index, (client, value)) = rotation
            .find(|(_, (client, _))| available(*client))
            .unwrap_or(first);
        self.next = if index + 1 < self.members.len() {
            index + 1
        } else {
            0
        };
        Some((*client, value))
    }
}

fn deliver<V>(
    slot: &mut Option<Box<Subscribers<V>>>,
    available: &mut impl FnMut(ClientKey) -> bool,
    visit: &mut impl FnMut(ClientKey, &V),
) {
    let Some(subscribers) = slot.as_deref_mut() else {
        return;
    };
    for (client, value) in subscribers.clients.iter() {
        visit(*client, value);
    }
    for group in &mut subscribers.groups {
        if let Some((client, value)) = group.pick(available) {
            visit(client, value);
        }
    }
}

/// The share name (if any) and the filter that topics are matched against.
fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(filter) {
        Some(shared) => (Some(shared.group), shared.filter),
        None => (None, filter),
    }
}

/// A filter's levels up to a trailing `#` (`None` for `#` alone), and whether there was one.
fn split_hash(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

fn levels(path: Option<&str>) -> impl Iterator<Item = &str> {
    path.into_iter().flat_map(|path| path.split('/'))
}

/// The first level of `topic` and the rest, `None` when it was the last level.
pub(super) fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

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
const FEW: usize = 8;

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

    fn insert(&mut self, key: K, value: T) -> Option<T> {
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
fn shrink_vec<T>(vec: &mut Vec<T>) {
    if vec.capacity() > 4 * vec.len() {
        vec.shrink_to(2 * vec.len());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// The clients visited for `topic`, sorted, with every client available.
    fn matched(tree: &mut SubscriptionTree<&'static str>, topic: &str) -> Vec<ClientKey> {
        let mut clients = Vec::new();
        tree.for_each_match(topic, |_| true, |client, _| clients.push(client));
        clients.sort_unstable();
        clients
    }

    /// A tree where client `i` subscribes to `filters[i]`.
    fn tree_of(filters: &[&'static str]) -> SubscriptionTree<&'static str> {
        let mut tree = SubscriptionTree::new();
        for (client, filter) in (0..).zip(filters) {
            assert_eq!(tree.insert(filter, client, *filter), None);
        }
        tree
    }

    #[test]
    fn mqtt_4_7_1_2_multi_level_wildcard_matches_parent_and_children() {
        let mut tree = tree_of(&["sport/tennis/player1/#", "sport/#", "#", "sport/tennis/#"]);
        assert_eq!(matched(&mut tree, "sport/tennis/player1"), [0, 1, 2, 3]);
        assert_eq!(
            matched(&mut tree, "sport/tennis/player1/ranking"),
            [0, 1, 2, 3]
        );
        assert_eq!(
            matched(&mut tree, "sport/tennis/player1/score/wimbledon"),
            [0, 1, 2, 3]
        );
        assert_eq!(matched(&mut tree, "sport"), [1, 2]);
        assert_eq!(matched(&mut tree, "sport/football"), [1, 2]);
        assert_eq!(matched(&mut tree, "news"), [2]);
    }

    #[test]
    fn mqtt_4_7_1_3_single_level_wildcard_matches_one_level() {
        let mut tree = tree_of(&["sport/tennis/+", "sport/+", "+/+", "/+", "+"]);
        assert_eq!(matched(&mut tree, "sport/tennis/player1"), [0]);
        assert_eq!(matched(&mut tree, "sport/tennis/player2"), [0]);
        assert_eq!(matched(&mut tree, "sport/tennis/player1/ranking"), []);
        // `sport/+` does not match `sport`, but does match `sport/`.
        assert_eq!(matched(&mut tree, "sport"), [4]);
        assert_eq!(matched(&mut tree, "sport/"), [1, 2]);
        assert_eq!(matched(&mut tree, "/finance"), [2, 3]);
    }

    #[test]
    fn mqtt_4_7_2_1_leading_wildcards_do_not_match_dollar_topics() {
        let mut tree = tree_of(&[
            "#",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
            "$share/g/#",
            "+",
        ]);
        assert_eq!(matched(&mut tree, "$SYS/broker/uptime"), [2]);
        assert_eq!(matched(&mut tree, "$SYS/monitor/Clients"), [2, 3]);
        assert_eq!(matched(&mut tree, "$SYS"), [2]);
        // Only a leading `$` counts.
        assert_eq!(matched(&mut tree, "a/$SYS"), [0, 4]);
        assert_eq!(matched(&mut tree, "a"), [0, 4, 5]);
    }

    #[test]
    fn empty_levels_are_levels() {
        let mut tree = tree_of(&["/a", "a//b", "a/+/b", "/", "+/a", "a/#", "/#"]);
        assert_eq!(matched(&mut tree, "/a"), [0, 4, 6]);
        assert_eq!(matched(&mut tree, "a"), [5]);
        assert_eq!(matched(&mut tree, "a//b"), [1, 2, 5]);
        assert_eq!(matched(&mut tree, "a/b"), [5]);
        assert_eq!(matched(&mut tree, "/"), [3, 6]);
        assert_eq!(matched(&mut tree, "a/"), [5]);
    }

    #[test]
    fn overlapping_subscriptions_of_one_client_are_each_visited() {
        let mut tree = SubscriptionTree::new();
        for filter in ["a/b", "a/+", "a/#", "#", "$share/g/a/b"] {
            tree.insert(filter, 7, filter);
        }
        let mut visits = Vec::new();
        tree.for_each_match(
            "a/b",
            |_| true,
            |client, filter| visits.push((client, *filter)),
        );
        visits.sort_unstable();
        assert_eq!(
            visits,
            [
                (7, "#"),
                (7, "$share/g/a/b"),
                (7, "a/#"),
                (7, "a/+"),
                (7, "a/b")
            ]
        );
    }

    #[test]
    fn insert_replaces_and_get_reads() {
        let mut tree = SubscriptionTree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.insert("a/+", 1, 10), None);
        assert_eq!(tree.insert("a/+", 2, 20), None);
        assert_eq!(tree.insert("a/+", 1, 11), Some(10));
        assert_eq!(tree.insert("$share/g/a/+", 1, 12), None);
        assert_eq!(tree.insert("$share/g/a/+", 1, 13), Some(12));
        assert_eq!(tree.len(), 3);
        assert_eq!(tree.get("a/+", 1), Some(&11));
        assert_eq!(tree.get("a/+", 2), Some(&20));
        assert_eq!(tree.get("$share/g/a/+", 1), Some(&13));
        assert_eq!(tree.get("$share/g/a/+", 2), None);
        assert_eq!(tree.get("$share/h/a/+", 1), None);
        assert_eq!(tree.get("a/b", 1), None);
        assert_eq!(tree.get("a/#", 1), None);
    }

    #[test]
    fn remove_frees_every_node() {
        let filters = [
            "a/b/c",
            "a/b",
            "a/+/c",
            "a/#",
            "#",
            "+",
            "/",
            "//#",
            "a/b/c/d/e/f",
            "$share/g/a/b",
            "$share/h/a/b",
            "$share/g/+/#",
        ];
        let mut tree = SubscriptionTree::new();
        for (index, filter) in filters.iter().enumerate() {
            for client in 0..3 {
                tree.insert(filter, client, index);
            }
        }
        assert_eq!(tree.len(), filters.len() * 3);
        // Remove in an order unrelated to insertion, checking nothing else is disturbed.
        for (step, filter) in filters.iter().rev().enumerate() {
            for client in [2, 0, 1] {
                assert_eq!(tree.remove(filter, client), Some(filters.len() - 1 - step));
                assert_eq!(tree.remove(filter, client), None);
            }
            for other in filters.iter().take(filters.len() - 1 - step) {
                assert!(tree.get(other, 1).is_some(), "{other}");
            }
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 0);
        assert!(tree.root.is_empty());
        assert!(tree.root.children.is_unallocated());
    }

    #[test]
    fn remove_of_a_missing_subscription_changes_nothing() {
        let mut tree = tree_of(&["a/b"]);
        assert_eq!(tree.remove("a/b/c", 0), None);
        assert_eq!(tree.remove("a/#", 0), None);
        assert_eq!(tree.remove("a", 0), None);
        assert_eq!(tree.remove("a/b", 1), None);
        assert_eq!(tree.remove("$share/g/a/b", 0), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.node_count(), 2);
        assert_eq!(tree.remove("a/b", 0), Some("a/b"));
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn pruning_stops_at_a_node_still_in_use() {
        let mut tree = tree_of(&["a/b/c/d", "a/b", "a/x"]);
        assert_eq!(tree.node_count(), 5);
        tree.remove("a/b/c/d", 0);
        assert_eq!(tree.node_count(), 3);
        tree.remove("a/b", 1);
        assert_eq!(tree.node_count(), 2);
        assert_eq!(matched(&mut tree, "a/x"), [2]);
    }

    #[test]
    fn churn_does_not_grow_the_tree() {
        let mut tree = SubscriptionTree::new();
        tree.insert("devices/+/status", 0, ());
        for round in 0..1_000u32 {
            let filter = format!("devices/{round}/cmd/#");
            tree.insert(&filter, round, ());
            tree.remove(&filter, round);
        }
        assert_eq!(tree.node_count(), 3);
        let devices = tree.root.children.get("devices");
        assert!(devices.is_some_and(|node| node.children.is_unallocated()));
    }

    #[test]
    fn wide_nodes_switch_to_hash_maps_and_back() {
        let mut tree = SubscriptionTree::new();
        let mut model = BTreeSet::new();
        for client in 0..40 {
            for filter in [format!("w/{client}"), "w/+".to_owned(), "w/#".to_owned()] {
                tree.insert(&filter, client, ());
                model.insert((filter, client));
            }
        }
        let wide = |tree: &SubscriptionTree<()>| {
            let node = tree.root.children.get("w");
            let many_children = node.is_some_and(|node| matches!(node.children, SmallMap::Many(_)));
            let plus = node.and_then(|node| node.plus.as_deref());
            let many_clients = plus
                .and_then(|plus| plus.here.as_deref())
                .is_some_and(|subscribers| matches!(subscribers.clients, SmallMap::Many(_)));
            many_children && many_clients
        };
        assert!(wide(&tree));
        // Remove in an order that is neither insertion order nor its reverse, checking every
        // step against a scan.
        let order: Vec<_> = (0..40).map(|i| (i * 17) % 40).collect();
        for client in order {
            for filter in [format!("w/{client}"), "w/+".to_owned(), "w/#".to_owned()] {
                assert_eq!(tree.remove(&filter, client), Some(()));
                model.remove(&(filter, client));
            }
            for topic in ["w/3", "w/17", "w", "w/x"] {
                let mut visited = Vec::new();
                tree.for_each_match(topic, |_| true, |client, ()| visited.push(client));
                visited.sort_unstable();
                let mut expected: Vec<_> = model
                    .iter()
                    .filter(|(filter, _)| topic::matches(filter, topic))
                    .map(|(_, client)| *client)
                    .collect();
                expected.sort_unstable();
                assert_eq!(visited, expected, "{topic}");
            }
            if model.len() <= 3 * FEW / 2 {
                assert!(!wide(&tree));
            }
        }
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn nodes_stay_small() {
        assert_eq!(size_of::<SmallMap<Box<str>, Node<u64>, RandomState>>(), 24);
        assert_eq!(size_of::<Node<u64>>(), 48);
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        let deep = "/".repeat(crate::topic::MAX_TOPIC_LEN - 1);
        let mut tree = SubscriptionTree::new();
        tree.insert(&deep, 1, "deep");
        tree.insert(&format!("{deep}#"), 2, "deep #");
        assert_eq!(matched(&mut tree, &deep), [1, 2]);
        assert_eq!(tree.remove(&deep, 1), Some("deep"));
        assert_eq!(tree.remove(&format!("{deep}#"), 2), Some("deep #"));
        assert_eq!(tree.node_count(), 0);
        // And dropping a whole deep tree.
        tree.insert(&deep, 1, "deep");
        tree.insert(&format!("{}+", &deep[1..]), 1, "deep +");
        drop(tree);
    }

    /// The clients picked from each shared group over `rounds` messages to `topic`.
    fn picks(
        tree: &mut SubscriptionTree<&'static str>,
        topic: &str,
        rounds: usize,
        mut available: impl FnMut(ClientKey) -> bool,
    ) -> Vec<Vec<(ClientKey, &'static str)>> {
        (0..rounds)
            .map(|_| {
                let mut round = Vec::new();
                tree.for_each_match(topic, &mut available, |client, filter| {
                    round.push((client, *filter));
                });
                round
            })
            .collect()
    }

    #[test]
    fn shared_groups_rotate_round_robin() {
        let mut tree = SubscriptionTree::new();
        for client in [10, 11, 12] {
            tree.insert("$share/g/jobs/+", client, "g");
        }
        let clients: Vec<_> = picks(&mut tree, "jobs/1", 7, |_| true)
            .into_iter()
            .map(|round| {
                round
                    .into_iter()
                    .map(|(client, _)| client)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            clients,
            [[10], [11], [12], [10], [11], [12], [10]].map(Vec::from)
        );
        // Non-matching topics do not advance the rotation.
        assert_eq!(picks(&mut tree, "other", 2, |_| true), [vec![], vec![]]);
        assert_eq!(picks(&mut tree, "jobs/2", 1, |_| true), [vec![(11, "g")]]);
    }

    #[test]
    fn shared_groups_skip_unavailable_members() {
        let mut tree = SubscriptionTree::new();
        for client in [10, 11, 12] {
            tree.insert("$share/g/jobs", client, "g");
        }
        let only_12 = picks(&mut tree, "jobs", 3, |client| client == 12);
        assert_eq!(only_12, [[(12, "g")], [(12, "g")], [(12, "g")]]);
        // After 12 the rotation continues at 10.
        assert_eq!(picks(&mut tree, "jobs", 1, |_| true), [[(10, "g")]]);
        // Nobody available: still delivered, to whoever is next.
        let nobody = picks(&mut tree, "jobs", 4, |_| false);
        assert_eq!(nobody, [[(11, "g")], [(12, "g")], [(10, "g")], [(11, "g")]]);
    }

    #[test]
    fn shared_group_removal_keeps_the_rotation_fair() {
        let mut tree = SubscriptionTree::new();
        for client in [10, 11, 12, 13] {
            tree.insert("$share/g/jobs", client, "g");
        }
        assert_eq!(
            picks(&mut tree, "jobs", 2, |_| true),
            [[(10, "g")], [(11, "g")]]
        );
        // Removing one that already had its turn: 12 is still next.
        tree.remove("$share/g/jobs", 10);
        assert_eq!(picks(&mut tree, "jobs", 1, |_| true), [[(12, "g")]]);
        // Removing the next one: its successor takes the turn.
        tree.remove("$share/g/jobs", 13);
        assert_eq!(picks(&mut tree, "jobs", 1, |_| true), [[(11, "g")]]);
        // Replacing a member's value keeps its place.
        tree.insert("$share/g/jobs", 11, "g2");
        assert_eq!(
            picks(&mut tree, "jobs", 2, |_| true),
            [[(12, "g")], [(11, "g2")]]
        );
        tree.remove("$share/g/jobs", 11);
        tree.remove("$share/g/jobs", 12);
        assert_eq!(picks(&mut tree, "jobs", 1, |_| true), [vec![]]);
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn same_group_name_on_different_filters_is_a_different_group() {
        let mut tree = SubscriptionTree::new();
        tree.insert("$share/g/a/+", 1, "+");
        tree.insert("$share/g/a/+", 2, "+");
        tree.insert("$share/g/a/#", 1, "#");
        tree.insert("$share/g/a/#", 2, "#");
        tree.insert("$share/h/a/+", 3, "h");
        tree.insert("a/+", 4, "plain");
        let mut rounds = picks(&mut tree, "a/b", 2, |_| true);
        for round in &mut rounds {
            round.sort_unstable();
        }
        assert_eq!(
            rounds,
            [
                [(1, "#"), (1, "+"), (3, "h"), (4, "plain")],
                [(2, "#"), (2, "+"), (3, "h"), (4, "plain")]
            ]
        );
        // Only `a/#` matches `a`: the `a/#` group moves on, the `a/+` one does not.
        assert_eq!(picks(&mut tree, "a", 1, |_| true), [[(1, "#")]]);
        let mut round = picks(&mut tree, "a/c", 1, |_| true).concat();
        round.sort_unstable();
        assert_eq!(round, [(1, "+"), (2, "#"), (3, "h"), (4, "plain")]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, ClientKey),
        Remove(String, ClientKey),
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "c", "", "$x"])
    }

    fn topic_name() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![3 => level(), 1 => Just("+")];
        let plain =
            (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
                if hash || levels.is_empty() {
                    levels.push("#");
                }
                levels.join("/")
            });
        let group = prop::sample::select(vec![None, Some("g"), Some("h")]);
        (group, plain).prop_map(|(group, plain)| match group {
            Some(group) => format!("$share/{group}/{plain}"),
            None => plain,
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        (any::<bool>(), filter(), 0..4u32).prop_map(|(insert, filter, client)| {
            if insert {
                Op::Insert(filter, client)
            } else {
                Op::Remove(filter, client)
            }
        })
    }

    proptest! {
        /// The tree agrees with `topic::matches` applied to every subscription in turn, and
        /// each matching shared group yields exactly one of its members.
        #[test]
        fn matches_like_a_scan(
            ops in prop::collection::vec(op(), 0..60),
            topics in prop::collection::vec(topic_name(), 1..10),
        ) {
            let mut tree = SubscriptionTree::new();
            let mut model = BTreeMap::new();
            for (serial, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(filter, client) => {
                        let replaced = tree.insert(&filter, client, (filter.clone(), serial));
                        let expected = model.insert((filter, client), serial);
                        prop_assert_eq!(replaced.map(|(_, serial)| serial), expected);
                    }
                    Op::Remove(filter, client) => {
                        let removed = tree.remove(&filter, client);
                        let expected = model.remove(&(filter, client));
                        prop_assert_eq!(removed.map(|(_, serial)| serial), expected);
                    }
                }
                prop_assert_eq!(tree.len(), model.len());
            }
            for ((filter, client), serial) in &model {
                prop_assert_eq!(tree.get(filter, *client), Some(&(filter.clone(), *serial)));
            }

            for topic in &topics {
                let mut plain = Vec::new();
                let mut shared: BTreeMap<String, Vec<(ClientKey, usize)>> = BTreeMap::new();
                tree.for_each_match(topic, |_| true, |client, (filter, serial)| {
                    if filter.starts_with("$share/") {
                        shared.entry(filter.clone()).or_default().push((client, *serial));
                    } else {
                        plain.push((client, filter.clone(), *serial));
                    }
                });
                plain.sort_unstable();

                let mut expected_plain = Vec::new();
                let mut groups: BTreeMap<String, BTreeSet<(ClientKey, usize)>> = BTreeMap::new();
                for ((filter, client), serial) in &model {
                    match topic::parse_shared(filter) {
                        Some(group) if topic::matches(group.filter, topic) => {
                            groups.entry(filter.clone()).or_default().insert((*client, *serial));
                        }
                        Some(_) => {}
                        None if topic::matches(filter, topic) => {
                            expected_plain.push((*client, filter.clone(), *serial));
                        }
                        None => {}
                    }
                }
                expected_plain.sort_unstable();
                prop_assert_eq!(plain, expected_plain, "topic {}", topic);
                prop_assert_eq!(
                    shared.keys().collect::<Vec<_>>(),
                    groups.keys().collect::<Vec<_>>(),
                    "topic {}", topic
                );
                for (filter, picked) in &shared {
                    prop_assert_eq!(picked.len(), 1, "{} on {}", filter, topic);
                    let members = groups.get(filter);
                    prop_assert!(
                        picked.iter().all(|member| members.is_some_and(|m| m.contains(member))),
                        "{} on {}: {:?} not among {:?}", filter, topic, picked, members
                    );
                }
            }

            for (filter, client) in model.keys() {
                prop_assert!(tree.remove(filter, *client).is_some());
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.node_count(), 0);
        }
    }
}
