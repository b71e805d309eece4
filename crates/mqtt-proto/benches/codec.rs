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

mod cases;

use std::hint::black_box;

use bytes::BytesMut;
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::packet::{QoS, Version};
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

use cases::{
    Case, MAX, Theirs, connect_v5, mixed_stream, payload, publish, read_buffer, subscribe,
};

/// Inputs prepared per timed batch. `iter_batched` keeps every output of a batch in a fresh
/// `Vec`; the default batch sizes make that `Vec` so large that page faults on it dominate a
/// 100 ns decode. A small fixed batch keeps it in the allocator's reused memory; the two clock
/// reads per batch are spread over the batch.
const BATCH: BatchSize = BatchSize::NumIterations(64);

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
    // The copy alone, into memory that is already allocated and mapped. A destination at the
    // same offset in its page as the source runs into 4K aliasing (the loads from the source
    // look as if they might depend on the stores just made to the destination): on this
    // project's machine that copy took 23 us instead of 1.4 us, and an allocation of the same
    // size as the payload tends to land there, so `vec` and `bytes_mut` above can show it too.
    // This one is put half a page away from the source.
    let mut existing = vec![0; payload.len() + 4096];
    let offset = (payload
        .as_ptr()
        .addr()
        .wrapping_sub(existing.as_ptr().addr())
        + 2048)
        % 4096;
    let existing = &mut existing[offset..offset + payload.len()];
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
