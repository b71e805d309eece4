use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::packet::PublishProperties;
use crate::topic::{self, valid_name};

/// A message on `topic` whose payload is `payload`.
fn message(topic: &str, payload: &str) -> Publish {
    Publish::new(valid_name(topic), payload.to_owned())
}

/// A store with one message on each topic, its payload the topic.
fn store_of(topics: &[&str]) -> RetainedStore {
    let mut store = RetainedStore::new();
    for topic in topics {
        assert!(store.insert(message(topic, topic), None).is_none());
    }
    store
}

/// The topics of the messages `filter` visits at `now`, sorted.
fn matched_at(store: &RetainedStore, filter: &str, now: Instant) -> Vec<String> {
    let mut topics = Vec::new();
    store.for_each_match(filter, now, |retained| {
        topics.push(retained.publish.topic.to_string());
    });
    topics.sort_unstable();
    topics
}

fn matched(store: &RetainedStore, filter: &str) -> Vec<String> {
    matched_at(store, filter, Instant::now())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn mqtt_4_7_1_2_multi_level_wildcard_matches_parent_and_children() {
    let store = store_of(&[
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "news",
    ]);
    assert_eq!(
        matched(&store, "sport/tennis/player1/#"),
        [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon"
        ]
    );
    assert_eq!(matched(&store, "sport/#").len(), 5);
    assert_eq!(matched(&store, "#").len(), 6);
    assert_eq!(matched(&store, "news/#"), ["news"]);
    assert_eq!(matched(&store, "weather/#"), Vec::<String>::new());
}

#[test]
fn mqtt_4_7_1_3_single_level_wildcard_matches_one_level() {
    let store = store_of(&[
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player2",
        "sport/tennis/player1/ranking",
        "/finance",
    ]);
    assert_eq!(
        matched(&store, "sport/tennis/+"),
        ["sport/tennis/player1", "sport/tennis/player2"]
    );
    // `sport/+` does not match `sport`, but does match `sport/`.
    assert_eq!(matched(&store, "sport/+"), ["sport/", "sport/tennis"]);
    assert_eq!(matched(&store, "+"), ["sport"]);
    assert_eq!(
        matched(&store, "+/+"),
        ["/finance", "sport/", "sport/tennis"]
    );
    assert_eq!(matched(&store, "/+"), ["/finance"]);
    assert_eq!(
        matched(&store, "+/tennis/#"),
        [
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2"
        ]
    );
}

#[test]
fn mqtt_4_7_2_1_leading_wildcards_do_not_match_dollar_topics() {
    let store = store_of(&[
        "$SYS",
        "$SYS/broker/uptime",
        "$SYS/monitor/Clients",
        "a",
        "a/$SYS",
    ]);
    assert_eq!(matched(&store, "#"), ["a", "a/$SYS"]);
    assert_eq!(matched(&store, "+"), ["a"]);
    assert_eq!(matched(&store, "+/monitor/Clients"), Vec::<String>::new());
    assert_eq!(
        matched(&store, "$SYS/#"),
        ["$SYS", "$SYS/broker/uptime", "$SYS/monitor/Clients"]
    );
    assert_eq!(matched(&store, "$SYS/monitor/+"), ["$SYS/monitor/Clients"]);
    assert_eq!(matched(&store, "$SYS"), ["$SYS"]);
    // Only a leading `$` counts.
    assert_eq!(matched(&store, "a/+"), ["a/$SYS"]);
    assert_eq!(matched(&store, "a/#"), ["a", "a/$SYS"]);
}

#[test]
fn empty_levels_are_levels() {
    let store = store_of(&["/a", "a//b", "a/", "/", "a", "a/b"]);
    assert_eq!(matched(&store, "/a"), ["/a"]);
    assert_eq!(matched(&store, "a//b"), ["a//b"]);
    assert_eq!(matched(&store, "a/+/b"), ["a//b"]);
    assert_eq!(matched(&store, "a/+"), ["a/", "a/b"]);
    assert_eq!(matched(&store, "+/+"), ["/", "/a", "a/", "a/b"]);
    assert_eq!(matched(&store, "/#"), ["/", "/a"]);
    assert_eq!(matched(&store, "/"), ["/"]);
    assert_eq!(matched(&store, "+"), ["a"]);
}

#[test]
fn insert_replaces_and_get_reads() {
    let mut store = RetainedStore::new();
    assert!(store.is_empty());
    assert!(store.insert(message("a/b", "one"), None).is_none());
    assert!(store.insert(message("a", "two"), None).is_none());
    let replaced = store.insert(message("a/b", "three"), None);
    assert_eq!(replaced.map(|r| r.publish.payload), Some("one".into()));
    assert_eq!(store.len(), 2);
    assert!(store.contains("a/b") && store.contains("a"));
    assert!(!store.contains("a/b/c") && !store.contains("b") && !store.contains("a/"));
    let payload = store.get("a/b").map(|r| r.publish.payload.clone());
    assert_eq!(payload, Some("three".into()));
    assert_eq!(store.node_count(), 2);
    assert_eq!(store.bytes(), 3 + 5 + 1 + 3 + 2 * MESSAGE_OVERHEAD);
}

#[test]
fn bytes_count_topic_payload_properties_and_overhead() {
    let mut store = RetainedStore::new();
    let mut publish = message("t/x", "12345");
    publish.properties = PublishProperties {
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    }
    .into();
    // Content Type: identifier, two-byte length, ten bytes.
    let properties = 1 + 2 + 10;
    store.insert(publish, None);
    assert_eq!(store.bytes(), 3 + 5 + properties + MESSAGE_OVERHEAD);
    store.insert(message("t/x", "1"), None);
    assert_eq!(store.bytes(), 3 + 1 + MESSAGE_OVERHEAD);
    store.insert(message("t", "1"), None);
    assert!(store.remove("t/x").is_some());
    assert_eq!(store.bytes(), 1 + 1 + MESSAGE_OVERHEAD);
    assert!(store.remove("t").is_some());
    assert_eq!(store.bytes(), 0);
}

#[test]
fn remove_frees_every_node() {
    let topics = [
        "a/b/c",
        "a/b",
        "a",
        "a/x/c",
        "/",
        "//",
        "$SYS/a",
        "a/b/c/d/e/f",
        "b",
    ];
    let mut store = store_of(&topics);
    assert_eq!(store.len(), topics.len());
    // Remove in an order unrelated to insertion, checking nothing else is disturbed.
    for (step, topic) in topics.iter().enumerate().rev() {
        let removed = store.remove(topic).map(|r| r.publish.payload);
        assert_eq!(removed, Some(topic.to_string().into()));
        assert!(store.remove(topic).is_none());
        for other in topics.iter().take(step) {
            assert!(store.contains(other), "{other}");
        }
    }
    assert!(store.is_empty());
    assert_eq!(store.bytes(), 0);
    assert_eq!(store.node_count(), 0);
    assert!(store.root.children.is_unallocated());
}

#[test]
fn remove_of_a_missing_topic_changes_nothing() {
    let mut store = store_of(&["a/b"]);
    for missing in ["a/b/c", "a", "b", "a/", "a/c"] {
        assert!(store.remove(missing).is_none(), "{missing}");
    }
    assert_eq!(store.len(), 1);
    assert_eq!(store.node_count(), 2);
    assert!(store.remove("a/b").is_some());
    assert_eq!(store.node_count(), 0);
}

#[test]
fn pruning_stops_at_a_node_still_in_use() {
    let mut store = store_of(&["a/b/c/d", "a/b", "a/x"]);
    assert_eq!(store.node_count(), 5);
    store.remove("a/b/c/d");
    assert_eq!(store.node_count(), 3);
    store.remove("a/b");
    assert_eq!(store.node_count(), 2);
    assert_eq!(matched(&store, "#"), ["a/x"]);
}

#[test]
fn wide_levels_match_and_prune() {
    // More children than a node keeps in a vector: its map becomes a hash table and back.
    let topics: Vec<String> = (0..100).map(|i| format!("w/{i}/v")).collect();
    let mut store = RetainedStore::new();
    for topic in &topics {
        store.insert(message(topic, "x"), None);
    }
    assert_eq!(matched(&store, "w/42/v"), ["w/42/v"]);
    assert_eq!(matched(&store, "w/+/v").len(), 100);
    assert_eq!(matched(&store, "w/#").len(), 100);
    assert_eq!(matched(&store, "+/7/+"), ["w/7/v"]);
    for topic in &topics {
        assert!(store.remove(topic).is_some());
    }
    assert_eq!(store.node_count(), 0);
}

#[test]
fn mqtt_3_3_2_5_expired_messages_are_never_visited_and_purge_removes_them() {
    let start = Instant::now();
    let mut store = RetainedStore::new();
    store.insert(message("a/short", "s"), Some(start + secs(5)));
    store.insert(message("a/long", "l"), Some(start + secs(50)));
    store.insert(message("a/forever", "f"), None);
    assert_eq!(store.next_expiry(), Some(start + secs(5)));
    assert_eq!(matched_at(&store, "a/#", start + secs(4)).len(), 3);
    // The deadline itself is too late, whether or not the message was purged yet.
    let at_deadline = start + secs(5);
    assert_eq!(
        matched_at(&store, "a/short", at_deadline),
        Vec::<String>::new()
    );
    assert_eq!(
        matched_at(&store, "a/+", at_deadline),
        ["a/forever", "a/long"]
    );
    assert_eq!(store.len(), 3);
    assert_eq!(store.purge_expired(start + secs(4)), 0);
    assert_eq!(store.purge_expired(at_deadline), 1);
    assert!(!store.contains("a/short"));
    assert_eq!(store.len(), 2);
    assert_eq!(store.purge_expired(start + secs(1000)), 1);
    assert_eq!(matched_at(&store, "#", start + secs(1000)), ["a/forever"]);
    assert_eq!(store.next_expiry(), None);
    store.remove("a/forever");
    assert_eq!(store.node_count(), 0);
    assert_eq!(store.bytes(), 0);
}

#[test]
fn a_replaced_message_keeps_only_its_own_deadline() {
    let start = Instant::now();
    let mut store = RetainedStore::new();
    store.insert(message("t", "1"), Some(start + secs(1)));
    store.insert(message("t", "2"), Some(start + secs(10)));
    // The first deadline passes: its entry is stale and skipped.
    assert_eq!(store.purge_expired(start + secs(5)), 0);
    assert_eq!(matched_at(&store, "t", start + secs(5)), ["t"]);
    assert_eq!(store.purge_expired(start + secs(10)), 1);
    assert!(store.is_empty());

    // Replaced by a message that never expires, or removed: never purged.
    store.insert(message("t", "3"), Some(start + secs(20)));
    store.insert(message("t", "4"), None);
    store.insert(message("u", "5"), Some(start + secs(20)));
    store.remove("u");
    assert_eq!(store.purge_expired(start + secs(100)), 0);
    assert_eq!(matched_at(&store, "#", start + secs(100)), ["t"]);
    assert!(store.deadlines.is_empty());
}

#[test]
fn stale_deadlines_do_not_pile_up() {
    let start = Instant::now();
    let mut store = RetainedStore::new();
    store.insert(message("other", "o"), Some(start + secs(1_000_000)));
    for round in 0..10_000 {
        // Republished with a later deadline each time: one live entry, the rest stale.
        store.insert(message("t", "x"), Some(start + secs(100 + round)));
        assert!(store.deadlines.len() <= 2 * 3 + STALE_DEADLINES);
        // Deleted and stored again within one clock reading: two entries that both look
        // live until the rebuild keeps one.
        store.remove("u");
        store.insert(message("u", "x"), Some(start + secs(7)));
        assert!(store.deadlines.len() <= 2 * 3 + STALE_DEADLINES);
    }
    assert_eq!(store.purge_expired(start + secs(7)), 1);
    assert_eq!(store.purge_expired(start + secs(100_000)), 1);
    assert_eq!(store.len(), 1);
    store.remove("other");
    assert!(store.deadlines.len() <= STALE_DEADLINES);
}

#[test]
fn nodes_stay_small() {
    assert_eq!(size_of::<Node>(), 32);
    assert_eq!(size_of::<(Box<str>, Node)>(), 48);
    assert_eq!(size_of::<Retained>(), 96);
}

#[test]
fn deep_topics_do_not_overflow_the_stack() {
    let deep = "/".repeat(topic::MAX_TOPIC_LEN);
    let mut store = RetainedStore::new();
    store.insert(message(&deep, "deep"), None);
    store.insert(message(&deep[1..], "less deep"), None);
    assert_eq!(matched(&store, &deep).len(), 1);
    assert_eq!(matched(&store, "#").len(), 2);
    assert_eq!(matched(&store, &format!("{}#", &deep[2..])).len(), 2);
    assert!(store.remove(&deep).is_some());
    assert!(store.remove(&deep[1..]).is_some());
    assert_eq!(store.node_count(), 0);
    // And dropping a whole deep store.
    store.insert(message(&deep, "deep"), None);
    drop(store);
}

#[derive(Debug, Clone)]
enum Op {
    /// A message on the topic, expiring after so many seconds if any.
    Insert(String, Option<u64>),
    Remove(String),
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "$sys", "$"])
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |topic| !topic.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => level(), 1 => Just("+")];
    (prop::collection::vec(level, 0..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |filter| !filter.is_empty())
}

fn op() -> impl Strategy<Value = Op> {
    let insert = (topic_name(), prop::option::of(0..4u64))
        .prop_map(|(topic, expiry)| Op::Insert(topic, expiry));
    prop_oneof![3 => insert, 1 => topic_name().prop_map(Op::Remove)]
}

proptest! {
    /// The store visits what `topic::matches` finds in a scan of every live message, each
    /// once; purging removes exactly the expired ones; the accounting follows.
    #[test]
    fn matches_like_a_scan(
        ops in prop::collection::vec(op(), 0..60),
        filters in prop::collection::vec(filter(), 1..10),
        elapsed in 0..5u64,
    ) {
        let start = Instant::now();
        let mut store = RetainedStore::new();
        let mut model: BTreeMap<String, (String, Option<Instant>)> = BTreeMap::new();
        for (serial, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(topic, expiry) => {
                    let expires_at = expiry.map(|s| start + secs(s));
                    let payload = serial.to_string();
                    let replaced = store.insert(message(&topic, &payload), expires_at);
                    let expected = model.insert(topic, (payload, expires_at));
                    prop_assert_eq!(
                        replaced.map(|r| (r.publish.payload, r.expires_at)),
                        expected.map(|(payload, at)| (payload.into(), at))
                    );
                }
                Op::Remove(topic) => {
                    let removed = store.remove(&topic);
                    let expected = model.remove(&topic);
                    prop_assert_eq!(
                        removed.map(|r| r.publish.payload),
                        expected.map(|(payload, _)| payload.into())
                    );
                }
            }
            prop_assert_eq!(store.len(), model.len());
        }

        let now = start + secs(elapsed);
        for purge in [false, true] {
            if purge {
                let expired = model.values().filter(|(_, at)| at.is_some_and(|at| at <= now));
                let expired = expired.count();
                prop_assert_eq!(store.purge_expired(now), expired);
                model.retain(|_, (_, at)| at.is_none_or(|at| at > now));
                prop_assert_eq!(store.len(), model.len());
            }
            for filter in &filters {
                let mut visited = Vec::new();
                store.for_each_match(filter, now, |r| {
                    visited.push((r.publish.topic.to_string(), r.publish.payload.clone()));
                });
                visited.sort_unstable();
                let expected: Vec<_> = model
                    .iter()
                    .filter(|(topic, (_, at))| {
                        topic::matches(filter, topic) && at.is_none_or(|at| at > now)
                    })
                    .map(|(topic, (payload, _))| (topic.clone(), payload.clone().into()))
                    .collect();
                prop_assert_eq!(visited, expected, "filter {}", filter);
            }
        }

        let accounted: usize = model
            .iter()
            .map(|(topic, (payload, _))| topic.len() + payload.len() + MESSAGE_OVERHEAD)
            .sum();
        prop_assert_eq!(store.bytes(), accounted);
        for topic in model.keys() {
            prop_assert!(store.remove(topic).is_some());
        }
        prop_assert!(store.is_empty());
        prop_assert_eq!(store.bytes(), 0);
        prop_assert_eq!(store.node_count(), 0);
    }
}
