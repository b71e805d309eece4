use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::broker::small_map::FEW;

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
