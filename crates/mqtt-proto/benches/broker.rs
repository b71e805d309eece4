//! The broker core alone, no sockets: messages per second through the router for 1 to 1,
//! 1 to 100 fan-out, and with 10,000 wildcard subscriptions; and heap bytes of core state per
//! idle connected client (printed before the timings).

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt_proto::broker::{Broker, BrokerConfig, ConnectionId};
use mqtt_proto::codec;
use mqtt_proto::packet::{
    Connect, Packet, PacketId, Publish, QoS, Subscribe, SubscribeProperties, Subscription,
    TopicFilter, Version,
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
    let net = change.bytes_allocated as i64 - change.bytes_deallocated as i64
        + change.bytes_reallocated as i64;
    println!(
        "broker core: {} bytes of heap per idle connected v5 client ({n} clients, no subscriptions)",
        net / n as i64
    );
    black_box(&broker);
}

fn bench_router(c: &mut Criterion) {
    idle_memory();
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

criterion_group!(benches, bench_router);
criterion_main!(benches);
