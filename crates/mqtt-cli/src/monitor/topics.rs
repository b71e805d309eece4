//! The topic tree: message counts and rates per topic level.
//!
//! Time comes in as an argument (`now`), never from a clock, so the tree is tested with made-up
//! instants.

use std::collections::BTreeMap;
use std::time::Instant;

/// How many tree nodes (topic levels) are tracked. A message on a topic beyond the limit is
/// counted on its deepest tracked ancestor, so counts stay consistent up the tree.
pub(crate) const MAX_NODES: usize = 10_000;

/// The rate is the number of messages in this many seconds, divided by them.
pub(crate) const RATE_WINDOW_SECS: u64 = 10;

const WINDOW: usize = RATE_WINDOW_SECS as usize;

/// Messages per one-second bucket over the last [`RATE_WINDOW_SECS`] seconds.
#[derive(Debug, Clone, Default)]
struct Rate {
    buckets: [u32; WINDOW],
    /// The second (since the tree's start) of the newest bucket.
    newest: u64,
}

impl Rate {
    fn record(&mut self, second: u64) {
        if second > self.newest {
            // Clear the buckets of the seconds that passed without a message.
            let passed = (second - self.newest).min(RATE_WINDOW_SECS);
            for s in 1..=passed {
                self.buckets[slot(self.newest + s)] = 0;
            }
            self.newest = second;
        } else if second + RATE_WINDOW_SECS <= self.newest {
            // Older than the window (time is monotonic, so this cannot happen): ignore.
            return;
        }
        let bucket = &mut self.buckets[slot(second)];
        *bucket = bucket.saturating_add(1);
    }

    /// Messages in the window that ends at `second`.
    fn count(&self, second: u64) -> u64 {
        let window_start = (second + 1).saturating_sub(RATE_WINDOW_SECS);
        let kept_start = (self.newest + 1).saturating_sub(RATE_WINDOW_SECS);
        (window_start.max(kept_start)..=self.newest.min(second))
            .map(|s| u64::from(self.buckets[slot(s)]))
            .sum()
    }
}

fn slot(second: u64) -> usize {
    // The remainder is below WINDOW, so it fits.
    (second % RATE_WINDOW_SECS) as usize
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Messages on this topic and below.
    count: u64,
    /// Messages on exactly this topic.
    own: u64,
    rate: Rate,
    children: BTreeMap<Box<str>, usize>,
}

/// One line of the flattened tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopicRow<'a> {
    /// Nesting level: 0 for a first-level topic.
    pub(crate) depth: usize,
    /// This level's name (may be empty: `a//b`).
    pub(crate) name: &'a str,
    /// Whether this level has levels below it.
    pub(crate) has_children: bool,
    /// Messages on this topic and below.
    pub(crate) count: u64,
    /// Messages per second on this topic and below, over the rate window.
    pub(crate) rate: f64,
}

/// Topics seen so far, as a tree of levels, with counts and rates.
#[derive(Debug, Clone)]
pub(crate) struct TopicTree {
    start: Instant,
    /// `nodes[0]` is the root (all topics); it is not a row.
    nodes: Vec<Node>,
    /// Topics that received at least one message.
    topics: usize,
}

impl TopicTree {
    /// An empty tree; rates count seconds from `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            nodes: vec![Node::default()],
            topics: 0,
        }
    }

    /// How many distinct topics received messages.
    pub(crate) fn topics(&self) -> usize {
        self.topics
    }

    /// How many rows [`TopicTree::rows`] yields.
    pub(crate) fn row_count(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Messages per second on all topics at `now`.
    pub(crate) fn total_rate(&self, now: Instant) -> f64 {
        self.rate(0, now)
    }

    /// Counts a message on `topic` received at `now`.
    pub(crate) fn record(&mut self, now: Instant, topic: &str) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut index = 0;
        self.bump(index, second);
        for level in topic.split('/') {
            let next = match self.nodes[index].children.get(level) {
                Some(&next) => next,
                None if self.nodes.len() < MAX_NODES => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[index].children.insert(level.into(), next);
                    next
                }
                None => break,
            };
            index = next;
            self.bump(index, second);
        }
        let node = &mut self.nodes[index];
        if node.own == 0 && index != 0 {
            self.topics += 1;
        }
        node.own += 1;
    }

    fn bump(&mut self, index: usize, second: u64) {
        let node = &mut self.nodes[index];
        node.count += 1;
        node.rate.record(second);
    }

    fn rate(&self, index: usize, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.start);
        let second = elapsed.as_secs();
        // Early on the window is not full yet: divide by the time that passed (at least 1 s).
        let span = elapsed.as_secs_f64().clamp(1.0, RATE_WINDOW_SECS as f64);
        // Display only: counts below 2^53 convert exactly.
        self.nodes[index].rate.count(second) as f64 / span
    }

    /// The tree in depth-first order, children sorted by name, with rates at `now`.
    pub(crate) fn rows(&self, now: Instant) -> impl Iterator<Item = TopicRow<'_>> {
        // An explicit stack rather than recursion: topics may be deep.
        let mut stack: Vec<(usize, &str, usize)> = self.children_of(0, 0).collect();
        stack.reverse();
        std::iter::from_fn(move || {
            let (index, name, depth) = stack.pop()?;
            let node = &self.nodes[index];
            let before = stack.len();
            stack.extend(self.children_of(index, depth + 1));
            stack[before..].reverse();
            Some(TopicRow {
                depth,
                name,
                has_children: !node.children.is_empty(),
                count: node.count,
                rate: self.rate(index, now),
            })
        })
    }

    fn children_of(
        &self,
        index: usize,
        depth: usize,
    ) -> impl Iterator<Item = (usize, &str, usize)> + '_ {
        self.nodes[index]
            .children
            .iter()
            .map(move |(name, &child)| (child, &**name, depth))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rows(tree: &TopicTree, now: Instant) -> Vec<(String, u64)> {
        tree.rows(now)
            .map(|row| (format!("{}{}", "  ".repeat(row.depth), row.name), row.count))
            .collect()
    }

    #[test]
    fn counts_add_up_the_tree_in_name_order() {
        let t0 = Instant::now();
        let mut tree = TopicTree::new(t0);
        for topic in ["b/x", "a", "b/y", "b/x", "a/z", "/lead"] {
            tree.record(t0, topic);
        }
        assert_eq!(
            rows(&tree, t0),
            [
                ("".to_owned(), 1),
                ("  lead".to_owned(), 1),
                ("a".to_owned(), 2),
                ("  z".to_owned(), 1),
                ("b".to_owned(), 3),
                ("  x".to_owned(), 2),
                ("  y".to_owned(), 1),
            ]
        );
        assert_eq!(tree.topics(), 5);
        assert_eq!(tree.row_count(), 7);
    }

    #[test]
    fn rates_count_the_last_ten_seconds() {
        let t0 = Instant::now();
        let mut tree = TopicTree::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 20 messages in the first second: 20/s so far (the span is at least one second).
        for _ in 0..20 {
            tree.record(at(0), "a");
        }
        assert_eq!(tree.total_rate(at(0)), 20.0);
        // At 5 s: 20 messages in 5 s.
        assert_eq!(tree.total_rate(at(5)), 4.0);
        // 10 more at 12 s: the first 20 left the window.
        for _ in 0..10 {
            tree.record(at(12), "a");
        }
        assert_eq!(tree.total_rate(at(12)), 1.0);
        let row = tree.rows(at(12)).next().map(|row| (row.count, row.rate));
        assert_eq!(row, Some((30, 1.0)));
        // Long after: nothing in the window.
        assert_eq!(tree.total_rate(at(100)), 0.0);
    }

    #[test]
    fn buckets_are_cleared_when_seconds_pass() {
        let mut rate = Rate::default();
        rate.record(0);
        rate.record(3);
        rate.record(3);
        assert_eq!(rate.count(3), 3);
        assert_eq!(rate.count(9), 3);
        assert_eq!(rate.count(10), 2);
        rate.record(11);
        assert_eq!(rate.count(11), 3);
        rate.record(25);
        assert_eq!(rate.count(25), 1);
    }

    #[test]
    fn the_tree_is_bounded() {
        let t0 = Instant::now();
        let mut tree = TopicTree::new(t0);
        for i in 0..MAX_NODES + 10 {
            tree.record(t0, &format!("t/{i}"));
        }
        assert_eq!(tree.row_count(), MAX_NODES - 1);
        // Every message is still counted, on the deepest level that is tracked.
        let first = tree.rows(t0).next().map(|row| row.count);
        assert_eq!(first, Some((MAX_NODES + 10) as u64));
    }
}
