//! The client core alone, no sockets: QoS 1 publish round trips (publish, bytes out, PUBACK bytes
//! in, completion event) and QoS 0 publishes, per second.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt_proto::codec;
use mqtt_proto::connection::{ClientConfig, ClientConnection, ClientEvent};
use mqtt_proto::packet::{Packet, PubAck, Publish, QoS, TopicName, Version};

fn connected(version: Version) -> ClientConnection {
    let now = Instant::now();
    let mut client = ClientConnection::new(ClientConfig::new(version, "bench"), None, now);
    let mut out = BytesMut::new();
    client.poll_transmit(now, &mut out);
    let mut connack = BytesMut::new();
    codec::encode(&Packet::ConnAck(Box::default()), version, &mut connack).unwrap();
    client.handle_bytes(now, &connack);
    while client.poll_event().is_some() {}
    client
}

fn bench_client(c: &mut Criterion) {
    let payload = Bytes::from_static(&[0x5A; 64]);
    // Checked once, as an application that publishes to one topic would hold it.
    let topic = TopicName::new("bench/topic").expect("valid topic name");
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(1));
    for version in [Version::V3_1_1, Version::V5] {
        let name = match version {
            Version::V3_1_1 => "v311",
            Version::V5 => "v5",
        };
        group.bench_function(format!("qos1_round_trip_64B_{name}"), |b| {
            let mut client = connected(version);
            let now = Instant::now();
            let mut out = BytesMut::with_capacity(4096);
            let mut ack = BytesMut::with_capacity(16);
            b.iter(|| {
                let mut publish = Publish::new(topic.clone(), payload.clone());
                publish.qos = QoS::AtLeastOnce;
                let id = client.publish(now, publish).unwrap().unwrap();
                out.clear();
                client.poll_transmit(now, &mut out);
                black_box(&out);
                ack.clear();
                codec::encode(&Packet::PubAck(PubAck::new(id)), version, &mut ack).unwrap();
                client.handle_bytes(now, &ack);
                match client.poll_event() {
                    Some(ClientEvent::Published(outcome)) => black_box(outcome),
                    other => panic!("{other:?}"),
                };
            });
        });
        group.bench_function(format!("qos0_publish_64B_{name}"), |b| {
            let mut client = connected(version);
            let now = Instant::now();
            let mut out = BytesMut::with_capacity(4096);
            b.iter(|| {
                client
                    .publish(now, Publish::new(topic.clone(), payload.clone()))
                    .unwrap();
                out.clear();
                client.poll_transmit(now, &mut out);
                black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_client);
criterion_main!(benches);
