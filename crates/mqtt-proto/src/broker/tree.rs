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

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasherDefault, DefaultHasher};

use super::small_map::{SmallMap, shrink_vec};
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

#[cfg(test)]
mod tests;
