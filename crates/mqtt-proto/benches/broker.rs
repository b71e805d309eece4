//! The broker core alone, no sockets: messages per second through the router for 1 to 1,
//! 1 to 100 fan-out, and with 10,000 wildcard subscriptions; one SUBSCRIBE among 100,000
//! retained messages; and heap bytes of core state per idle connected client and per retained
//! message (printed before the timings).

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt_proto::broker::{Broker, BrokerConfig, ConnectionId};
use mqtt_proto::codec;
use mqtt_proto::packet::{
    Connect, Packet, PacketId, Publish, QoS, RetainHandling, Subscribe, SubscribeProperties,
    Subscription, TopicFilter, Version,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const V: Version = Version::V5;

fn bytes(packet: Packet) -> BytesMut {
    let mut wire = BytesMut::new();
    codec::encode(&packet, V, &mut wire).unwrap();
    wire
}

fn drain(broker: &mut Broker, now: Instant, out: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(conn) = broker.poll_ready() {
        out.clear();
        broker.poll_transmit(conn, now, out);
        n += out.len();
    }
    while broker.poll_event().is_some() {}
    n
}

fn client(broker: &mut Broker, now: Instant, id: &str, filters: &[String]) -> ConnectionId {
    let conn = broker.open(now).unwrap();
    let mut connect = Connect::new(V, id.to_owned());
    connect.keep_alive = 0;
    // A large window, as a client that keeps up announces.
    connect.properties.receive_maximum = std::num::NonZeroU16::new(u16::MAX);
    broker.handle_bytes(conn, now, &bytes(Packet::Connect(Box::new(connect))));
    if !filters.is_empty() {
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: SubscribeProperties::default(),
            filters: filters
                .iter()
                .map(|f| Subscription::new(TopicFilter::new(f.as_str()).unwrap(), QoS::AtMostOnce))
                .collect(),
        };
        broker.handle_bytes(conn, now, &bytes(Packet::Subscribe(subscribe)));
    }
    drain(broker, now, &mut BytesMut::new());
    conn
}

/// Heap bytes held after minus before. stats_alloc counts a reallocation's growth in
/// `bytes_allocated` (and its shrinking in `bytes_deallocated`) as well as in
/// `bytes_reallocated`, so the two are the whole story; adding `bytes_reallocated` would count
/// every growth twice.
fn heap_change(change: &stats_alloc::Stats) -> i64 {
    change.bytes_allocated as i64 - change.bytes_deallocated as i64
}

fn config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.max_connections = 100_000;
    config
}

fn idle_memory() {
    let now = Instant::now();
    let mut broker = Broker::new(config());
    // Warm the maps so their growth is not charged to the measured clients.
    for i in 0..1000 {
        client(&mut broker, now, &format!("warm-{i}"), &[]);
    }
    let n = 10_000;
    let region = Region::new(GLOBAL);
    for i in 0..n {
        client(&mut broker, now, &format!("idle-{i:05}"), &[]);
    }
    let change = region.change();
    let net = heap_change(&change);
    println!(
        "broker core: {} bytes of heap per idle connected v5 client ({n} clients, no subscriptions)",
        net / n as i64
    );
    black_box(&broker);
}

/// 10,000 disconnected sessions, each holding 100 queued QoS 1 messages of 64 B, published in
/// batches of 1,000 packets per read: heap bytes per queued message, and what the broker
/// accounts for them against its budget.
fn queued_memory() {
    let now = Instant::now();
    let mut broker = Broker::new(config());
    let sessions = 10_000;
    let per_session = 100;
    for i in 0..sessions {
        let conn = broker.open(now).unwrap();
        let mut connect = Connect::new(V, format!("offline-{i:05}"));
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(3600);
        broker.handle_bytes(conn, now, &bytes(Packet::Connect(Box::new(connect))));
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: SubscribeProperties::default(),
            filters: vec![Subscription::new(
                TopicFilter::new(format!("q/{i}")).unwrap(),
                QoS::AtLeastOnce,
            )],
        };
        broker.handle_bytes(conn, now, &bytes(Packet::Subscribe(subscribe)));
        drain(&mut broker, now, &mut BytesMut::new());
        broker.handle_eof(conn, now);
    }
    let publisher = {
        let conn = broker.open(now).unwrap();
        let connect = Connect::new(Version::V3_1_1, "publisher");
        let mut wire = BytesMut::new();
        codec::encode(
            &Packet::Connect(Box::new(connect)),
            Version::V3_1_1,
            &mut wire,
        )
        .unwrap();
        broker.handle_bytes(conn, now, &wire);
        drain(&mut broker, now, &mut BytesMut::new());
        conn
    };
    let region = Region::new(GLOBAL);
    let mut batch = BytesMut::new();
    let mut id = 0u16;
    for round in 0..per_session {
        for i in 0..sessions {
            let mut publish = Publish::new(
                format!("q/{i}").parse().expect("valid topic name"),
                bytes::Bytes::from(vec![round as u8; 64]),
            );
            publish.qos = QoS::AtLeastOnce;
            id = id.checked_add(1).unwrap_or(1);
            publish.packet_id = PacketId::new(id);
            codec::encode(&Packet::Publish(publish), Version::V3_1_1, &mut batch).unwrap();
            if i % 1000 == 999 {
                broker.handle_bytes(publisher, now, &batch);
                batch.clear();
                drain(&mut broker, now, &mut BytesMut::new());
            }
        }
    }
    let change = region.change();
    let net = heap_change(&change);
    let queued = (sessions * per_session) as i64;
    let stats = broker.stats();
    assert_eq!(stats.dropped.queue_full + stats.dropped.memory_budget, 0);
    println!(
        "broker core: {} bytes of heap per queued 64 B message ({sessions} disconnected sessions \
         x {per_session}), {} bytes each as the broker accounts them",
        net / queued,
        stats.queued_bytes as i64 / queued
    );
    black_box(&broker);
}

fn bench_router(c: &mut Criterion) {
    idle_memory();
    queued_memory();
    let now = Instant::now();
    let publish = |topic: &str| {
        bytes(Packet::Publish(Publish::new(
            topic.parse().expect("valid topic name"),
            bytes::Bytes::from_static(&[0x42; 64]),
        )))
    };
    let mut group = c.benchmark_group("router");
    for fanout in [1usize, 100] {
        let mut broker = Broker::new(config());
        for i in 0..fanout {
            client(
                &mut broker,
                now,
                &format!("sub-{i}"),
                &["bench/topic".to_owned()],
            );
        }
        let publisher = client(&mut broker, now, "pub", &[]);
        let wire = publish("bench/topic");
        let mut out = BytesMut::with_capacity(1 << 16);
        group.throughput(Throughput::Elements(fanout as u64));
        group.bench_function(format!("qos0_64B_1_to_{fanout}"), |b| {
            b.iter(|| {
                broker.handle_bytes(publisher, now, &wire);
                black_box(drain(&mut broker, now, &mut out));
            })
        });
    }
    {
        // 10,000 clients, each with its own wildcard filter; one matches.
        let mut broker = Broker::new(config());
        for i in 0..10_000 {
            client(
                &mut broker,
                now,
                &format!("w-{i}"),
                &[
                    format!("sensors/{i}/+/temperature"),
                    format!("sensors/{i}/#"),
                ],
            );
        }
        let publisher = client(&mut broker, now, "pub", &[]);
        let wire = publish("sensors/4242/kitchen/temperature");
        let mut out = BytesMut::with_capacity(1 << 16);
        group.throughput(Throughput::Elements(1));
        group.bench_function("qos0_64B_20000_wildcard_subscriptions", |b| {
            b.iter(|| {
                broker.handle_bytes(publisher, now, &wire);
                black_box(drain(&mut broker, now, &mut out));
            })
        });
    }
    group.finish();
}

/// The topic of retained message `i`: 100 branches of 1,000 leaves, four levels deep.
fn retained_topic(i: usize) -> String {
    format!("retained/{}/{}/state", i / 1000, i % 1000)
}

/// A broker holding `n` retained messages of 64 bytes on distinct topics, and the heap bytes
/// they added.
fn retained_broker(now: Instant, n: usize) -> (Broker, i64) {
    let mut broker = Broker::new(config());
    let publisher = client(&mut broker, now, "retainer", &[]);
    let mut out = BytesMut::new();
    let region = Region::new(GLOBAL);
    for i in 0..n {
        let mut publish = Publish::new(
            retained_topic(i).parse().expect("valid topic name"),
            bytes::Bytes::from_static(&[0x42; 64]),
        );
        publish.retain = true;
        broker.handle_bytes(publisher, now, &bytes(Packet::Publish(publish)));
        drain(&mut broker, now, &mut out);
    }
    let change = region.change();
    let net = heap_change(&change);
    assert_eq!(broker.stats().retained, n);
    (broker, net)
}

/// The retained PUBLISH packets a connection has to send, decoded.
fn retained_received(broker: &mut Broker, now: Instant) -> usize {
    let mut count = 0;
    while let Some(conn) = broker.poll_ready() {
        let mut out = BytesMut::new();
        broker.poll_transmit(conn, now, &mut out);
        while let Some(packet) = codec::decode(&mut out, V, &Default::default()).unwrap() {
            if let Packet::Publish(publish) = packet {
                assert!(publish.retain);
                count += 1;
            }
        }
    }
    count
}

fn bench_retained(c: &mut Criterion) {
    let now = Instant::now();
    let n = 100_000;
    let (mut broker, heap) = retained_broker(now, n);
    println!(
        "broker core: {} bytes of heap per retained message ({n} messages, 64-byte payloads, \
         topics of about 22 bytes)",
        heap / n as i64
    );
    let subscriber = client(&mut broker, now, "retained-sub", &[]);
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut group = c.benchmark_group("retained");
    // Each case subscribes again to the same filter: Send At Subscribe sends the retained
    // messages every time, whether or not the subscription existed.
    for (name, filter, matches) in [
        ("subscribe_literal_of_100000", "retained/42/420/state", 1),
        ("subscribe_plus_1000_of_100000", "retained/42/+/state", 1000),
        ("subscribe_hash_1000_of_100000", "retained/42/#", 1000),
        ("subscribe_plus_100_of_100000", "retained/+/420/state", 100),
    ] {
        let mut subscription =
            Subscription::new(TopicFilter::new(filter).unwrap(), QoS::AtMostOnce);
        subscription.options.retain_handling = RetainHandling::SendAtSubscribe;
        let wire = bytes(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: SubscribeProperties::default(),
            filters: vec![subscription],
        }));
        for round in ["new", "existing"] {
            broker.handle_bytes(subscriber, now, &wire);
            let received = retained_received(&mut broker, now);
            assert_eq!(received, matches, "{filter}, {round} subscription");
        }
        // The same packets go out every round: the SUBACK and the retained messages.
        broker.handle_bytes(subscriber, now, &wire);
        let round = drain(&mut broker, now, &mut out);
        group.throughput(Throughput::Elements(matches as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                broker.handle_bytes(subscriber, now, &wire);
                assert_eq!(drain(&mut broker, now, &mut out), round);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_router, bench_retained);
criterion_main!(benches);
