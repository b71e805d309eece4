//! Persistence: the broker dies between any two commits of its store and starts again from
//! what the store holds; nothing a publisher saw acknowledged is lost, and QoS 2 is delivered
//! once.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::util::{MemStore, Net, secs};
use crate::broker::Broker;
use crate::connection::{ClientConfig, ClientEvent, ClientState};
use crate::packet::{Publish, QoS, Version};
use crate::topic::valid_name;

const BOTH: [Version; 2] = [Version::V3_1_1, Version::V5];

fn persistent(version: Version, id: &str) -> ClientConfig {
    let mut config = Net::config(version, id);
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(3600);
    config
}

/// What one run saw: the messages the subscriber received (payload, QoS), and the publishes
/// the publisher saw completed.
#[derive(Debug, Default)]
struct Seen {
    received: Vec<(String, QoS)>,
    completed: usize,
}

fn collect(net: &mut Net, sub: usize, publisher: usize, seen: &mut Seen) {
    for event in net.take(sub) {
        if let ClientEvent::Message(m) = event {
            let payload = String::from_utf8_lossy(&m.publish.payload).into_owned();
            seen.received.push((payload, m.publish.qos));
        }
    }
    for event in net.take(publisher) {
        if let ClientEvent::Published(outcome) = event {
            assert!(outcome.reason_code.is_success(), "{outcome:?}");
            seen.completed += 1;
        }
    }
}

const MESSAGES: usize = 12;

/// A persistent subscriber and publisher; the publisher sends `MESSAGES` messages, QoS 1 and 2
/// in turn, some while the subscriber is away. With `crash_after`, the store takes that many
/// more commits once both are set up, then the broker dies and restarts from the store.
/// Returns what was seen, and how many commits the message phase took.
fn run(version: Version, crash_after: Option<usize>) -> (Seen, usize) {
    let mut net = Net::persistent();
    let start = net.now;
    let sub = net.connect(persistent(version, "sub"));
    net.take(sub);
    net.subscribe(sub, "t/#", QoS::ExactlyOnce);
    let publisher = net.connect(persistent(version, "pub"));
    net.take(publisher);
    let store = net.store.as_mut().expect("persisting");
    let setup = store.commits;
    store.crash_after = crash_after.map(|c| setup + c);
    let mut seen = Seen::default();
    let mut sub = sub;
    for n in 0..MESSAGES {
        if n == MESSAGES / 2 {
            // The subscriber goes away for a while: its messages wait in the store.
            net.drop_transport(sub);
        }
        if n == MESSAGES * 3 / 4 {
            sub = net.reconnect(sub);
        }
        let mut publish = Publish::new(valid_name(&format!("t/{n}")), Bytes::from(n.to_string()));
        publish.qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        net.publish_packet(publisher, publish);
        net.advance(secs(1));
        collect(&mut net, sub, publisher, &mut seen);
    }
    let phase = net.store.as_ref().map_or(0, |s| s.commits - setup);
    if net.store.as_ref().is_some_and(|s| s.crashed) {
        net.crash_and_restart(start);
    }
    // Both come back (again), and everything settles.
    for c in [sub, publisher] {
        if net.clients[c].gone || net.clients[c].core.state() != ClientState::Connected {
            net.reconnect(c);
        }
    }
    net.advance(secs(5));
    collect(&mut net, sub, publisher, &mut seen);
    (seen, phase)
}

fn check(version: Version, crash: Option<usize>, seen: &Seen) {
    let mut counts: BTreeMap<usize, (usize, QoS)> = BTreeMap::new();
    for (payload, qos) in &seen.received {
        let n: usize = payload.parse().expect("a number");
        counts.entry(n).or_insert((0, *qos)).0 += 1;
    }
    for n in 0..MESSAGES {
        let (count, qos) = counts.get(&n).copied().unwrap_or((0, QoS::AtMostOnce));
        assert!(
            count >= 1,
            "{version:?}, crash after {crash:?}: message {n} lost"
        );
        if qos == QoS::ExactlyOnce {
            assert_eq!(
                count, 1,
                "{version:?}, crash after {crash:?}: QoS 2 message {n} twice"
            );
        }
    }
    assert_eq!(
        seen.completed, MESSAGES,
        "{version:?}, crash after {crash:?}: every publish completes"
    );
}

#[test]
fn nothing_acknowledged_is_lost_whatever_commit_the_broker_dies_after() {
    for version in BOTH {
        let (seen, commits) = run(version, None);
        check(version, None, &seen);
        assert!(commits > MESSAGES, "{version:?}: {commits} commits");
        for crash in 0..=commits {
            let (seen, _) = run(version, Some(crash));
            check(version, Some(crash), &seen);
        }
    }
}

#[test]
fn clean_sessions_are_never_written() {
    let mut net = Net::persistent();
    let sub = net.join(Version::V5, "sub");
    net.subscribe(sub, "t", QoS::ExactlyOnce);
    let publisher = net.join(Version::V3_1_1, "pub");
    let before = net.store.as_ref().map_or(0, |s| s.commits);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        net.publish(publisher, "t", "m", qos);
    }
    assert_eq!(net.messages(sub).len(), 3);
    let store = net.store.as_ref().expect("persisting");
    assert_eq!(store.commits, before, "nothing written for clean sessions");
    // The only record is the format version.
    assert_eq!(store.records.len(), 1, "{:?}", store.records.keys());
}

#[test]
fn subscriptions_retained_messages_and_expiry_survive_a_restart() {
    let mut net = Net::persistent();
    let start = net.now;
    let mut config = persistent(Version::V5, "sub");
    config.properties.session_expiry_interval = Some(100);
    let sub = net.connect(config);
    net.take(sub);
    net.subscribe(sub, "r/#", QoS::AtLeastOnce);
    let publisher = net.join(Version::V5, "pub");
    let mut retained = Publish::new(valid_name("r/1"), Bytes::from_static(b"kept"));
    retained.retain = true;
    net.publish_packet(publisher, retained);
    net.take(sub);
    net.drop_transport(sub);
    // Down for 60 s of the session's 100: it comes back with 40 left.
    net.advance(secs(60));
    let report = net.crash_and_restart(start);
    assert_eq!(
        (report.sessions, report.subscriptions, report.retained),
        (1, 1, 1)
    );
    assert_eq!(net.broker.stats().retained, 1);
    // A new subscriber gets the retained message.
    let late = net.join(Version::V5, "late");
    net.subscribe(late, "r/#", QoS::AtLeastOnce);
    assert_eq!(net.messages(late).len(), 1);
    // The session is there for 40 s more, not 100.
    net.advance(secs(39));
    assert_eq!(net.broker.stats().sessions, 2, "sub (restored) and late");
    net.advance(secs(2));
    let report = net.crash_and_restart(start);
    assert_eq!(report.sessions, 0, "expired: {report:?}");
}

#[test]
fn a_will_of_a_session_connected_when_the_broker_died_is_published_after_the_restart() {
    let mut net = Net::persistent();
    let start = net.now;
    let watcher = net.connect(persistent(Version::V5, "watcher"));
    net.take(watcher);
    net.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    let mut config = persistent(Version::V5, "dies");
    config.will = Some(crate::packet::Will::new(
        valid_name("will/dies"),
        "gone",
        QoS::AtLeastOnce,
    ));
    let dies = net.connect(config);
    net.take(dies);
    net.crash_and_restart(start);
    // The watcher's session was restored with its subscription, and the will, published at
    // the restart, waits in it.
    let watcher = net.reconnect(watcher);
    let got = net.messages(watcher);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].topic, "will/dies");
    assert_eq!(&got[0].payload[..], b"gone");
}

#[test]
fn a_store_that_fails_refuses_to_acknowledge_and_recovers() {
    for version in BOTH {
        let mut net = Net::persistent();
        let sub = net.connect(persistent(version, "sub"));
        net.take(sub);
        net.subscribe(sub, "t", QoS::AtLeastOnce);
        let publisher = net.connect(persistent(version, "pub"));
        net.take(publisher);
        net.store.as_mut().expect("persisting").failing = true;
        net.publish(publisher, "t", "during", QoS::AtLeastOnce);
        // Not acknowledged: the publisher's connection was closed instead.
        let events = net.take(publisher);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ClientEvent::Published(_))),
            "{version:?}: {events:?}"
        );
        assert!(net.clients[publisher].gone, "{version:?}: closed");
        // The disk has room again: the publisher resends and everything arrives.
        net.store.as_mut().expect("persisting").failing = false;
        let publisher = net.reconnect(publisher);
        let sub = if net.clients[sub].gone {
            net.reconnect(sub)
        } else {
            sub
        };
        net.pump();
        let published = net
            .take(publisher)
            .into_iter()
            .filter(|e| matches!(e, ClientEvent::Published(o) if o.reason_code.is_success()))
            .count();
        assert_eq!(published, 1, "{version:?}");
        let got = net.messages(sub);
        assert!(!got.is_empty(), "{version:?}: delivered");
    }
}

#[test]
fn a_store_in_an_unknown_format_is_refused() {
    let mut broker = Broker::new(Default::default());
    let now = std::time::Instant::now();
    let records = [(b"V".as_slice(), [99u8].as_slice())];
    let error = broker
        .restore(now, Net::wall(now, now), records)
        .expect_err("format 99");
    assert!(error.to_string().contains("99"), "{error}");
}

#[test]
fn damaged_records_are_skipped_and_reported() {
    let mut store = MemStore::default();
    store
        .records
        .insert(Bytes::from_static(b"V"), Bytes::from_static(&[1]));
    // A session record cut short, and a key of no known kind.
    store.records.insert(
        Bytes::from_static(b"S\x00\x01x"),
        Bytes::from_static(&[5, 0]),
    );
    store
        .records
        .insert(Bytes::from_static(b"Zzz"), Bytes::from_static(b"?"));
    let mut broker = Broker::new(Default::default());
    let now = std::time::Instant::now();
    let report = broker
        .restore(
            now,
            Net::wall(now, now),
            store.records.iter().map(|(k, v)| (&k[..], &v[..])),
        )
        .expect("restores what it can");
    assert_eq!(report.sessions, 0);
    assert_eq!(report.skipped.len(), 2, "{report:?}");
}
