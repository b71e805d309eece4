//! Flow control: full queues hold publishers back instead of losing what was acknowledged,
//! drops of disconnected sessions are counted and reported, and large packets share a budget.

use std::collections::HashMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::util::{Net, secs};
use crate::ReasonCode;
use crate::broker::{Broker, BrokerConfig, BrokerEvent, DropReason};
use crate::codec;
use crate::connection::{ClientEvent, ClientState, DisconnectReason};
use crate::packet::{Connect, Packet, PacketId, Publish, QoS, Version};
use crate::topic::valid_name;

const BOTH: [Version; 2] = [Version::V3_1_1, Version::V5];

/// A client whose session outlives its connection by an hour, with a window as small as
/// 3.1.1's (a 5.0 client that announces no Receive Maximum takes 65,535 messages in flight).
fn persistent(version: Version, id: &str) -> crate::connection::ClientConfig {
    let mut config = Net::config(version, id);
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(3600);
    config.properties.receive_maximum = std::num::NonZeroU16::new(20);
    config
}

/// Client `c` publishes `payload` to `topic` at QoS 1 (queued by its core when its window is
/// full), without moving any bytes yet.
fn publish_quietly(net: &mut Net, c: usize, topic: &str, payload: String) {
    let mut publish = Publish::new(valid_name(topic), Bytes::from(payload));
    publish.qos = QoS::AtLeastOnce;
    let now = net.now;
    net.clients[c]
        .core
        .publish(now, publish)
        .expect("room in the client's queue");
}

/// How many of client `c`'s publishes completed, and whether all of them succeeded.
fn completed(net: &mut Net, c: usize) -> usize {
    net.take(c)
        .into_iter()
        .filter(|e| match e {
            ClientEvent::Published(outcome) => {
                assert!(outcome.reason_code.is_success(), "{outcome:?}");
                true
            }
            _ => false,
        })
        .count()
}

/// The payloads client `c` received, per topic, in order.
fn received(net: &mut Net, c: usize, into: &mut HashMap<String, Vec<String>>) {
    for message in net.messages(c) {
        into.entry(message.topic.to_string())
            .or_default()
            .push(String::from_utf8_lossy(&message.payload).into_owned());
    }
}

#[test]
fn fan_in_to_a_subscriber_that_does_not_keep_up_loses_nothing_it_acknowledged() {
    for version in BOTH {
        let mut net = Net::new();
        let max_queued = net.broker.config().connection.max_queued;
        let mut config = Net::config(version, "sub");
        // A window as small as 3.1.1's (a 5.0 client announcing none takes 65,535 in flight).
        config.properties.receive_maximum = std::num::NonZeroU16::new(20);
        let sub = net.connect(config);
        net.take(sub);
        net.subscribe(sub, "in/+", QoS::AtLeastOnce);
        let publishers: Vec<usize> = (0..10)
            .map(|i| net.join(version, &format!("pub-{i}")))
            .collect();
        // The subscriber stops reading: its window fills, then its queue.
        net.clients[sub].stalled = true;
        const EACH: usize = 300;
        for n in 0..EACH {
            for (i, &p) in publishers.iter().enumerate() {
                publish_quietly(&mut net, p, &format!("in/{i}"), n.to_string());
            }
            net.pump();
        }
        let stats = net.broker.stats();
        assert_eq!(stats.dropped, Default::default(), "{version:?}");
        assert!(stats.held_acks > 0, "{version:?}: publishers are held back");
        let queued = net.broker.conns.values().map(|c| c.server.queued()).max();
        // Bounded: the limit, plus what the held-back publishers had in flight.
        let bound = max_queued + publishers.len() * 100;
        assert!(
            queued.is_some_and(|q| q > max_queued && q <= bound),
            "{queued:?}"
        );
        let acknowledged: usize = publishers.iter().map(|&p| completed(&mut net, p)).sum();
        assert!(acknowledged < EACH * publishers.len(), "{version:?}");

        // It reads again: everything arrives, once, in each publisher's order, and every
        // publisher hears back.
        net.clients[sub].stalled = false;
        net.pump();
        let mut got = HashMap::new();
        received(&mut net, sub, &mut got);
        let expected: Vec<String> = (0..EACH).map(|n| n.to_string()).collect();
        for i in 0..publishers.len() {
            assert_eq!(
                got.get(&format!("in/{i}")),
                Some(&expected),
                "{version:?} in/{i}"
            );
        }
        let acknowledged = acknowledged
            + publishers
                .iter()
                .map(|&p| completed(&mut net, p))
                .sum::<usize>();
        assert_eq!(acknowledged, EACH * publishers.len(), "{version:?}");
        let stats = net.broker.stats();
        assert_eq!((stats.held_acks, stats.queued_bytes), (0, 0), "{version:?}");
        assert_eq!(stats.dropped, Default::default());
    }
}

#[test]
fn a_3_1_1_publisher_held_back_is_not_read_until_there_is_room() {
    let mut net = Net::new();
    let sub = net.join(Version::V3_1_1, "sub");
    net.subscribe(sub, "t", QoS::AtLeastOnce);
    let mut config = Net::config(Version::V3_1_1, "pub");
    // More in flight than the broker's Receive Maximum, which a 3.1.1 client cannot learn.
    config.max_inflight = 1000;
    let publisher = net.connect(config);
    net.take(publisher);
    net.clients[sub].stalled = true;
    for n in 0..3000 {
        publish_quietly(&mut net, publisher, "t", n.to_string());
    }
    net.pump();
    assert!(
        net.clients[publisher].paused,
        "the driver is told to stop reading it"
    );
    assert!(
        net.broker_events.iter().any(
            |e| matches!(e, BrokerEvent::PauseReading(c) if *c == net.clients[publisher].conn)
        )
    );
    let limit = usize::from(net.broker.config().connection.receive_maximum);
    // Its messages decoded before the pause are routed too (at most a batch of events).
    let held = net.broker.stats().held_acks;
    assert!((limit..limit + 16).contains(&held), "{held}");
    net.clients[sub].stalled = false;
    net.pump();
    assert!(!net.clients[publisher].paused);
    assert_eq!(net.messages(sub).len(), 3000);
    assert_eq!(completed(&mut net, publisher), 3000);
}

#[test]
fn a_queue_full_past_the_congestion_timeout_disconnects_its_client_and_keeps_its_messages() {
    for version in BOTH {
        let mut net = Net::new();
        let config = persistent(version, "sub");
        let sub = net.connect(config);
        net.take(sub);
        net.subscribe(sub, "t", QoS::AtLeastOnce);
        let publisher = net.join(version, "pub");
        net.clients[sub].stalled = true;
        for n in 0..1500 {
            publish_quietly(&mut net, publisher, "t", n.to_string());
        }
        net.pump();
        assert!(net.broker.stats().held_acks > 0, "{version:?}");
        net.advance(secs(29));
        assert!(!net.clients[sub].gone, "{version:?}: not yet");
        net.advance(secs(2));
        assert!(net.clients[sub].gone, "{version:?}: disconnected");
        let reason = net.broker_events.iter().find_map(|e| match e {
            BrokerEvent::ClientDisconnected {
                client_id: Some(id),
                reason,
                ..
            } if id == "sub" => Some(reason.clone()),
            _ => None,
        });
        assert!(
            matches!(&reason, Some(DisconnectReason::Local(d)) if d.reason_code == ReasonCode::QuotaExceeded),
            "{reason:?}"
        );
        assert_eq!(net.broker.stats().congestion_disconnects, 1);
        // The publisher is released, and every message waits in the session.
        assert_eq!(completed(&mut net, publisher), 1500, "{version:?}");
        assert_eq!(net.broker.stats().held_acks, 0);
        let sub = net.reconnect(sub);
        let payloads: Vec<String> = net
            .messages(sub)
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        // The window's worth it had been sent before comes again first (DUP), then the rest.
        let expected: Vec<String> = (0..1500).map(|n| n.to_string()).collect();
        assert_eq!(payloads, expected, "{version:?}");
        assert_eq!(net.broker.stats().dropped, Default::default());
    }
}

#[test]
fn a_persistent_session_offline_keeps_a_3000_message_backlog() {
    for version in BOTH {
        let mut net = Net::new();
        let config = persistent(version, "sub");
        let sub = net.connect(config);
        net.take(sub);
        net.subscribe(sub, "t", QoS::AtLeastOnce);
        net.drop_transport(sub);
        let publisher = net.join(version, "pub");
        for n in 0..3000 {
            publish_quietly(&mut net, publisher, "t", n.to_string());
            if n % 100 == 99 {
                net.pump();
            }
        }
        net.pump();
        assert_eq!(completed(&mut net, publisher), 3000);
        let sub = net.reconnect(sub);
        let got = net.messages(sub);
        assert_eq!(got.len(), 3000, "{version:?}");
        assert!(
            got.iter()
                .enumerate()
                .all(|(n, m)| m.payload == n.to_string().as_bytes())
        );
        assert_eq!(net.broker.stats().dropped, Default::default());
    }
}

#[test]
fn drops_of_a_full_offline_queue_are_counted_and_reported() {
    let config = BrokerConfig {
        max_session_queue: 5,
        ..BrokerConfig::default()
    };
    let mut net = Net::with_config(config);
    let client = persistent(Version::V5, "sub");
    let sub = net.connect(client);
    net.subscribe(sub, "t", QoS::AtLeastOnce);
    net.drop_transport(sub);
    let publisher = net.join(Version::V5, "pub");
    for n in 0..8 {
        publish_quietly(&mut net, publisher, "t", n.to_string());
    }
    net.pump();
    net.advance(secs(0));
    assert_eq!(net.broker.stats().dropped.queue_full, 3);
    let reports: Vec<_> = net
        .broker_events
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::MessagesDropped {
                client_id,
                reason,
                count,
            } => Some((client_id.to_string(), *reason, *count)),
            _ => None,
        })
        .collect();
    assert_eq!(reports, [("sub".to_owned(), DropReason::QueueFull, 3)]);
    // Reports are spaced out: more drops within the interval wait for the next one.
    publish_quietly(&mut net, publisher, "t", "late".to_owned());
    net.pump();
    net.advance(secs(1));
    let count = |net: &Net| {
        net.broker_events
            .iter()
            .filter(|e| matches!(e, BrokerEvent::MessagesDropped { .. }))
            .count()
    };
    assert_eq!(count(&net), 1);
    net.advance(secs(5));
    assert_eq!(count(&net), 2);
}

#[test]
fn queued_messages_own_their_bytes() {
    let mut net = Net::new();
    let client = persistent(Version::V5, "sub");
    let sub = net.connect(client);
    net.subscribe(sub, "t", QoS::AtLeastOnce);
    net.drop_transport(sub);
    let publisher = net.join(Version::V5, "pub");
    // Ten messages in one read: zero-copy slices would all share its buffer.
    for n in 0..10 {
        publish_quietly(&mut net, publisher, "t", format!("message {n}"));
    }
    net.pump();
    let key = net.broker.by_client_id["sub"];
    let session = net.broker.sessions[key as usize].as_mut().expect("kept");
    let mut payloads = 0;
    session
        .delivery
        .as_mut()
        .expect("queued")
        .for_each_publish_mut(|p| {
            assert!(p.payload.is_unique(), "{:?}", p.payload);
            payloads += 1;
        });
    assert_eq!(payloads, 10);
}

#[test]
fn max_sessions_refuses_one_more_session() {
    for (version, code) in [
        (Version::V5, ReasonCode::QuotaExceeded),
        (Version::V3_1_1, ReasonCode::ServerUnavailable),
    ] {
        let config = BrokerConfig {
            max_sessions: 2,
            ..BrokerConfig::default()
        };
        let mut net = Net::with_config(config);
        net.join(version, "a");
        net.join(version, "b");
        let c = net.connect(Net::config(version, "c"));
        assert_ne!(net.clients[c].core.state(), ClientState::Connected);
        let refused = net.disconnected(c);
        assert!(
            matches!(&refused, Some(DisconnectReason::Refused { reason_code, .. }) if *reason_code == code),
            "{version:?}: {refused:?}"
        );
        assert_eq!(net.broker.stats().refused_sessions, 1);
        // An existing session may still connect.
        let a = net.connect(Net::config(version, "a"));
        assert_eq!(net.clients[a].core.state(), ClientState::Connected);
    }
}

#[test]
fn retained_messages_beyond_their_byte_budget_are_delivered_but_not_kept() {
    let config = BrokerConfig {
        max_retained_bytes: 2000,
        ..BrokerConfig::default()
    };
    let mut net = Net::with_config(config);
    let sub = net.join(Version::V5, "sub");
    net.subscribe(sub, "r/#", QoS::AtLeastOnce);
    let publisher = net.join(Version::V5, "pub");
    let big = "x".repeat(1000);
    for topic in ["r/1", "r/2"] {
        let mut publish = Publish::new(valid_name(topic), Bytes::from(big.clone()));
        publish.retain = true;
        net.publish_packet(publisher, publish);
    }
    assert_eq!(net.messages(sub).len(), 2, "both delivered");
    let stats = net.broker.stats();
    assert_eq!((stats.retained, stats.dropped.retained), (1, 1));
    assert!(stats.retained_bytes <= 2000);
    // Replacing the kept one with one of the same size fits.
    let mut publish = Publish::new(valid_name("r/1"), Bytes::from(big));
    publish.retain = true;
    net.publish_packet(publisher, publish);
    assert_eq!(net.broker.stats().dropped.retained, 1);
    let late = net.join(Version::V5, "late");
    net.subscribe(late, "r/#", QoS::AtLeastOnce);
    let kept: Vec<_> = net
        .messages(late)
        .iter()
        .map(|m| m.topic.to_string())
        .collect();
    assert_eq!(kept, ["r/1"]);
}

// ---- the incoming budget, through the broker core alone ----

fn wire(packet: Packet, version: Version) -> BytesMut {
    let mut wire = BytesMut::new();
    codec::encode(&packet, version, &mut wire).expect("valid packet");
    wire
}

fn drain(broker: &mut Broker, now: Instant) -> Vec<BrokerEvent> {
    while let Some(conn) = broker.poll_ready() {
        broker.poll_transmit(conn, now, &mut BytesMut::new());
    }
    std::iter::from_fn(|| broker.poll_event()).collect()
}

#[test]
fn large_packets_wait_for_room_in_the_incoming_budget() {
    let now = Instant::now();
    let config = BrokerConfig {
        max_incoming_bytes: 150 * 1024,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config);
    let mut conns = Vec::new();
    let mut packets = Vec::new();
    for i in 0..2 {
        let conn = broker.open(now).expect("room");
        let connect = Connect::new(Version::V3_1_1, format!("big-{i}"));
        broker.handle_bytes(
            conn,
            now,
            &wire(Packet::Connect(Box::new(connect)), Version::V3_1_1),
        );
        let mut publish = Publish::new(valid_name("big"), vec![i as u8; 100 * 1024]);
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(1);
        packets.push(wire(Packet::Publish(publish), Version::V3_1_1));
        conns.push(conn);
    }
    drain(&mut broker, now);
    // The first announces 100 KiB and gets it; the second does not fit and is not read.
    broker.handle_bytes(conns[0], now, &packets[0][..1000]);
    assert_eq!(broker.stats().incoming_bytes, packets[0].len());
    broker.handle_bytes(conns[1], now, &packets[1][..1000]);
    let events = drain(&mut broker, now);
    assert_eq!(events, [BrokerEvent::PauseReading(conns[1])]);
    assert!(!broker.wants_read(conns[1]));
    // Unread, it cannot be late with its keep alive (60 s): waiting is not its fault.
    let later = now + std::time::Duration::from_secs(600);
    broker.handle_bytes(conns[0], later, &packets[0][1000..2000]);
    broker.handle_timeout(later);
    assert!(drain(&mut broker, later).is_empty(), "nobody timed out");
    let now = later;
    // The first completes: the second gets its room and is read again.
    broker.handle_bytes(conns[0], now, &packets[0][2000..]);
    let events = drain(&mut broker, now);
    assert!(
        events.contains(&BrokerEvent::ResumeReading(conns[1])),
        "{events:?}"
    );
    assert_eq!(broker.stats().incoming_bytes, packets[1].len());
    broker.handle_bytes(conns[1], now, &packets[1][1000..]);
    assert_eq!(broker.stats().incoming_bytes, 0);
    assert_eq!(broker.stats().messages_in, 2);
}

#[test]
fn a_packet_larger_than_the_incoming_budget_is_refused_from_its_header() {
    let now = Instant::now();
    let config = BrokerConfig {
        max_incoming_bytes: 64 * 1024,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config);
    assert_eq!(broker.config().connection.max_packet_size, 64 * 1024);
    let conn = broker.open(now).expect("room");
    let connect = Connect::new(Version::V5, "big");
    broker.handle_bytes(
        conn,
        now,
        &wire(Packet::Connect(Box::new(connect)), Version::V5),
    );
    drain(&mut broker, now);
    let publish = Publish::new(valid_name("big"), vec![0u8; 100 * 1024]);
    let packet = wire(Packet::Publish(publish), Version::V5);
    broker.handle_bytes(conn, now, &packet[..100]);
    let events = drain(&mut broker, now);
    assert!(
        events.iter().any(|e| matches!(e,
            BrokerEvent::ClientDisconnected { reason: DisconnectReason::Protocol(error), .. }
                if error.reason_code() == ReasonCode::PacketTooLarge)),
        "{events:?}"
    );
}
