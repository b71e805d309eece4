//! The codec side by side with rumqttc's (`mqttbytes::v4` and `v5::mqttbytes::v5`).
//!
//! Every case is one criterion group with two functions, `mqtt-proto` and `rumqttc`, that work
//! on the same bytes: our encoder writes the wire form, rumqttc decodes it into its own packet
//! type (checked to re-encode to those same bytes), and each side then encodes its own packet
//! and decodes identical copies of the wire form. Decode benches make the copy outside the
//! timed routine (`iter_batched`). Encode benches write [`ENCODE_COPIES`] packets into one
//! cleared buffer per iteration: each side's copies of the packet, decoded from copies of the
//! wire form, with the same payloads on both sides ([`Case::new`]).
//!
//! The copies are read buffers in their steady state ([`read_buffer`]); the `decode-fresh`
//! groups decode plain `BytesMut` clones instead, which adds the one-time cost of a connection's
//! first packet to every iteration of both sides.
//!
//! `cargo bench -p mqtt-proto --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::packet::{Connect, TopicFilter, TopicName, WillProperties};
use mqtt_proto::packet::{
    ConnectProperties, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Subscribe,
    SubscribeProperties, Subscription, Unsubscribe, UnsubscribeProperties, UserProperty, Version,
    Will,
};
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

/// Large enough for every case; both decoders check it.
const MAX: usize = 1 << 20;

/// Inputs prepared per timed batch. `iter_batched` keeps every output of a batch in a fresh
/// `Vec`; the default batch sizes make that `Vec` so large that page faults on it dominate a
/// 100 ns decode. A small fixed batch keeps it in the allocator's reused memory; the two clock
/// reads per batch are spread over the batch.
const BATCH: BatchSize = BatchSize::NumIterations(64);

/// How many packets an encode iteration writes (one for the 64 KiB cases). A copy's speed
/// depends on where its source and destination lie relative to cache lines and to the stores
/// before it; one packet encoded to the start of one buffer measures one such placement, and
/// which one depends on the allocator. Several packets from different allocations, each
/// written after the one before, measure an average (and a connection's write buffer holds
/// several packets between flushes, too). Times are per iteration: divide by this.
const ENCODE_COPIES: usize = 8;

/// rumqttc's packet for one protocol version.
// Built once per case and only borrowed in the timed loops: its size costs nothing there.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Theirs {
    V4(r4::Packet),
    V5(r5::Packet),
}

impl Theirs {
    fn decode(wire: &mut BytesMut, version: Version) -> Theirs {
        match version {
            Version::V3_1_1 => Theirs::V4(r4::Packet::read(wire, MAX).expect("rumqttc v4 decode")),
            Version::V5 => {
                Theirs::V5(r5::Packet::read(wire, Some(MAX as u32)).expect("rumqttc v5 decode"))
            }
        }
    }

    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Theirs::V4(packet) => packet.write(buf, MAX).expect("rumqttc v4 encode"),
            Theirs::V5(packet) => packet
                .write(buf, Some(MAX as u32))
                .expect("rumqttc v5 encode"),
        };
    }
}

/// A copy of `wire` in the state a connection's read buffer is in once it has handed out its
/// first packet: its memory is already shared, so taking a packet off the front only counts a
/// reference. A fresh `BytesMut` allocates that shared state on its first `split_to`, on both
/// sides, once per buffer rather than once per packet.
fn read_buffer(wire: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(wire.len() + 1);
    buf.extend_from_slice(wire);
    buf.extend_from_slice(&[0]);
    drop(buf.split_off(wire.len()));
    buf
}

/// One benchmark case: its wire form, rumqttc's packet for it and the copies the encode benches
/// write.
struct Case {
    name: String,
    version: Version,
    theirs: Theirs,
    wire: BytesMut,
    /// What the encode benches write: copies of `ours` and `theirs`.
    encode: Vec<(Packet, Theirs)>,
}

impl Case {
    fn new(name: &str, version: Version, ours: impl Into<Packet>) -> Case {
        let ours = ours.into();
        let mut wire = BytesMut::new();
        codec::encode(&ours, version, &mut wire).expect("encode");
        let theirs = Theirs::decode(&mut wire.clone(), version);
        let mut theirs_wire = BytesMut::new();
        theirs.encode(&mut theirs_wire);
        assert_eq!(
            theirs_wire, wire,
            "{name}: both codecs must agree on the bytes"
        );
        let decoded = codec::decode(&mut wire.clone(), version, &Limits::new(MAX as u32));
        assert_eq!(decoded, Ok(Some(ours)), "{name}");
        // Each copy is decoded by both sides from its own copy of the bytes, and then both
        // encode the same payload: encoding is mostly that copy, and its speed depends on
        // where the source lies.
        let copies = if wire.len() > 1024 { 1 } else { ENCODE_COPIES };
        let encode = (0..copies)
            .map(|_| {
                let mut ours = codec::decode(&mut wire.clone(), version, &Limits::new(MAX as u32))
                    .ok()
                    .flatten()
                    .expect("decoded");
                let mut theirs = Theirs::decode(&mut wire.clone(), version);
                if let Packet::Publish(publish) = &mut ours {
                    let payload = publish.payload.clone();
                    match &mut theirs {
                        Theirs::V4(r4::Packet::Publish(p)) => p.payload = payload,
                        Theirs::V5(r5::Packet::Publish(p)) => p.payload = payload,
                        _ => panic!("{name}: both codecs must read a PUBLISH"),
                    }
                }
                (ours, theirs)
            })
            .collect();
        Case {
            name: name.to_owned(),
            version,
            theirs,
            wire,
            encode,
        }
    }
}

fn publish(version: Version, qos: QoS, payload_len: usize) -> Case {
    let mut publish = Publish::new(
        topic("sensors/building-7/floor-3/temperature"),
        payload(payload_len),
    );
    publish.qos = qos;
    if qos != QoS::AtMostOnce {
        publish.packet_id = NonZeroU16::new(4242);
    }
    let v = match version {
        Version::V3_1_1 => "v311",
        Version::V5 => "v5",
    };
    let size = match payload_len {
        n if n >= 1024 => format!("{}KiB", n / 1024),
        n => format!("{n}B"),
    };
    Case::new(
        &format!("publish/{v}/qos{}/{size}", qos.as_u8()),
        version,
        publish,
    )
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn connect_v5() -> Case {
    let mut connect = Connect::new(Version::V5, "sensor-gateway-0042");
    connect.keep_alive = 30;
    connect.username = Some("gateway".into());
    connect.password = Some(Bytes::from_static(b"correct horse battery staple"));
    connect.properties = ConnectProperties {
        session_expiry_interval: Some(3600),
        receive_maximum: NonZeroU16::new(100),
        maximum_packet_size: NonZeroU32::new(256 * 1024),
        topic_alias_maximum: Some(16),
        request_response_information: Some(true),
        request_problem_information: Some(true),
        user_properties: vec![
            UserProperty::new("site", "berlin-3"),
            UserProperty::new("firmware", "2.4.1"),
        ],
        ..ConnectProperties::default()
    };
    let mut will = Will::new(
        topic("sensors/building-7/status"),
        "offline",
        QoS::AtLeastOnce,
    );
    will.retain = true;
    will.properties = WillProperties {
        will_delay_interval: Some(10),
        message_expiry_interval: Some(600),
        content_type: Some("text/plain".into()),
        ..WillProperties::default()
    };
    connect.will = Some(will);
    Case::new("connect/v5/properties", Version::V5, connect)
}

fn subscribe(version: Version) -> Case {
    let filters = (0..10)
        .map(|i| {
            let qos = QoS::from_u8(i % 3).unwrap_or_default();
            let filter = TopicFilter::new(format!("sensors/building-{i}/+/temperature"));
            Subscription::new(filter.expect("valid filter"), qos)
        })
        .collect();
    let subscribe = Subscribe {
        packet_id: NonZeroU16::MIN,
        properties: SubscribeProperties::default(),
        filters,
    };
    let name = match version {
        Version::V3_1_1 => "subscribe/v311/10-filters",
        Version::V5 => "subscribe/v5/10-filters",
    };
    Case::new(name, version, subscribe)
}

/// A plausible inbound stream of a busy 3.1.1 connection: mostly small publishes and acks.
fn mixed_stream(count: usize) -> (BytesMut, usize) {
    let mut wire = BytesMut::new();
    let filter = TopicFilter::new("devices/+/telemetry").expect("valid filter");
    for i in 0..count {
        let id = NonZeroU16::new((i % 65_535) as u16 + 1).unwrap_or(NonZeroU16::MIN);
        let packet: Packet = match i % 10 {
            0..=3 => Publish::new(
                topic(&format!("devices/{}/telemetry", i % 100)),
                payload(32),
            )
            .into(),
            4 | 5 => {
                let mut publish = Publish::new(topic("devices/commands/reboot"), payload(100));
                publish.qos = QoS::AtLeastOnce;
                publish.packet_id = Some(id);
                publish.into()
            }
            6 => PubAck::new(id).into(),
            7 => match i % 3 {
                0 => PubRec::new(id).into(),
                1 => PubRel::new(id).into(),
                _ => PubComp::new(id).into(),
            },
            8 => Packet::PingReq,
            _ if i % 20 == 9 => Subscribe {
                packet_id: id,
                properties: SubscribeProperties::default(),
                filters: vec![Subscription::new(filter.clone(), QoS::AtLeastOnce)],
            }
            .into(),
            _ => Unsubscribe {
                packet_id: id,
                properties: UnsubscribeProperties::default(),
                filters: vec![filter.clone()],
            }
            .into(),
        };
        codec::encode(&packet, Version::V3_1_1, &mut wire).expect("encode");
    }
    (wire, count)
}

fn bench_case(c: &mut Criterion, case: &Case, bytes_throughput: bool) {
    for op in ["decode", "encode"] {
        let mut group = c.benchmark_group(format!("{op}/{}", case.name));
        // A decode iteration reads one packet, an encode iteration writes every copy.
        let copies = if op == "decode" { 1 } else { case.encode.len() };
        if bytes_throughput {
            group.throughput(Throughput::Bytes((case.wire.len() * copies) as u64));
        } else {
            group.throughput(Throughput::Elements(copies as u64));
        }
        if op == "decode" {
            bench_decode(&mut group, case, || read_buffer(&case.wire));
        } else {
            let mut buf = BytesMut::with_capacity(case.wire.len() * copies * 2);
            group.bench_function("mqtt-proto", |b| {
                b.iter(|| {
                    buf.clear();
                    for (packet, _) in &case.encode {
                        let _ = black_box(codec::encode(black_box(packet), case.version, &mut buf));
                    }
                })
            });
            let v4: Vec<&r4::Packet> = case
                .encode
                .iter()
                .filter_map(|(_, theirs)| match theirs {
                    Theirs::V4(packet) => Some(packet),
                    Theirs::V5(_) => None,
                })
                .collect();
            let v5: Vec<&r5::Packet> = case
                .encode
                .iter()
                .filter_map(|(_, theirs)| match theirs {
                    Theirs::V5(packet) => Some(packet),
                    Theirs::V4(_) => None,
                })
                .collect();
            group.bench_function("rumqttc", |b| match case.version {
                Version::V3_1_1 => b.iter(|| {
                    buf.clear();
                    for packet in &v4 {
                        let _ = black_box(black_box(*packet).write(&mut buf, MAX));
                    }
                }),
                Version::V5 => b.iter(|| {
                    buf.clear();
                    for packet in &v5 {
                        let _ = black_box(black_box(*packet).write(&mut buf, Some(MAX as u32)));
                    }
                }),
            });
        }
        group.finish();
    }
}

/// Both decoders on copies of the case's bytes made by `input`, outside the timed routine.
fn bench_decode(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &Case,
    input: impl Fn() -> BytesMut + Copy,
) {
    let limits = Limits::new(MAX as u32);
    group.bench_function("mqtt-proto", |b| {
        b.iter_batched(
            input,
            |mut wire| codec::decode(&mut wire, case.version, &limits),
            BATCH,
        )
    });
    // Each side returns its own packet type, so that moving the output costs what it costs in
    // real use.
    match case.theirs {
        Theirs::V4(_) => group.bench_function("rumqttc", |b| {
            b.iter_batched(input, |mut wire| r4::Packet::read(&mut wire, MAX), BATCH)
        }),
        Theirs::V5(_) => group.bench_function("rumqttc", |b| {
            b.iter_batched(
                input,
                |mut wire| r5::Packet::read(&mut wire, Some(MAX as u32)),
                BATCH,
            )
        }),
    };
}

/// Decoding from a fresh `BytesMut` clone: the first `split_to` of a buffer allocates.
fn fresh_buffer_benches(c: &mut Criterion) {
    for case in [
        publish(Version::V3_1_1, QoS::AtLeastOnce, 16),
        publish(Version::V5, QoS::AtLeastOnce, 16),
    ] {
        let mut group = c.benchmark_group(format!("decode-fresh/{}", case.name));
        group.throughput(Throughput::Elements(1));
        bench_decode(&mut group, &case, || case.wire.clone());
        group.finish();
    }
}

fn codec_benches(c: &mut Criterion) {
    for version in [Version::V3_1_1, Version::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for len in [16, 256, 64 * 1024] {
                if version == Version::V5 && !(qos == QoS::AtLeastOnce && len == 16) {
                    continue;
                }
                bench_case(c, &publish(version, qos, len), len > 1024);
            }
        }
    }
    bench_case(c, &connect_v5(), false);
    bench_case(c, &subscribe(Version::V3_1_1), false);
    bench_case(c, &subscribe(Version::V5), false);
}

fn stream_benches(c: &mut Criterion) {
    let (wire, count) = mixed_stream(10_000);
    let limits = Limits::new(MAX as u32);
    let mut group = c.benchmark_group("decode/stream/v311/10000-mixed");
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("mqtt-proto", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut wire| {
                let mut n = 0;
                while let Some(packet) =
                    codec::decode(&mut wire, Version::V3_1_1, &limits).expect("valid stream")
                {
                    black_box(packet);
                    n += 1;
                }
                assert_eq!(n, count);
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("rumqttc", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut wire| {
                let mut n = 0;
                while !wire.is_empty() {
                    black_box(r4::Packet::read(&mut wire, MAX).expect("valid stream"));
                    n += 1;
                }
                assert_eq!(n, count);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// What one copy of a 64 KiB payload costs: decoding 64 KiB must cost less (it copies nothing).
fn memcpy_benches(c: &mut Criterion) {
    let payload = payload(64 * 1024);
    let mut group = c.benchmark_group("memcpy/64KiB");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("vec", |b| b.iter(|| black_box(&payload[..]).to_vec()));
    group.bench_function("bytes_mut", |b| {
        b.iter(|| BytesMut::from(black_box(&payload[..])))
    });
    // The copy alone, into memory that is already allocated and mapped.
    let mut existing = vec![0; payload.len()];
    group.bench_function("into_existing", |b| {
        b.iter(|| existing.copy_from_slice(black_box(&payload[..])))
    });
    group.finish();
}

criterion_group!(
    benches,
    codec_benches,
    fresh_buffer_benches,
    stream_benches,
    memcpy_benches
);
criterion_main!(benches);
