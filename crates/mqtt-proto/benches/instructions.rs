//! The codec benches of `codec.rs`, counted in instructions under callgrind instead of timed.
//!
//! Times on a shared machine move by a quarter between runs; instruction counts do not move at
//! all, so they show what a change to the code did. They do not show what memory costs (a cache
//! miss is one instruction, and so is a call to `malloc` that takes the slow path), which is
//! why the timed benches stay the measure of speed.
//!
//! Each bench works on 1,000 packets of one case (the stream: one pass over its 10,000), made
//! in the setup, which callgrind does not count, and returns what it made, so that dropping the
//! output is not counted either (as in `codec.rs`, where `iter_batched` drops outputs outside
//! the timed routine). `compare_by_id` prints our count beside rumqttc's for each case.
//!
//! ```text
//! cargo install gungraun-runner --version 0.20.0   # once; valgrind must be installed too
//! cargo bench -p mqtt-proto --bench instructions
//! ```

// gungraun's macros generate a module per bench function and group, without docs.
#![allow(missing_docs)]

mod cases;

use std::hint::black_box;

use bytes::BytesMut;
use gungraun::{library_benchmark, library_benchmark_group, main};
use mqtt_proto::codec::{self, DecodeError, Limits};
use mqtt_proto::packet::{Packet, QoS, Version};
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

use cases::{Case, MAX, Theirs, connect_v5, mixed_stream, publish, read_buffer, subscribe};

/// Packets per bench.
const PACKETS: usize = 1_000;

/// What a decode bench reads, and the room for what it returns.
struct Decode {
    version: Version,
    /// One buffer per packet.
    wires: Vec<BytesMut>,
    ours: Vec<Result<Option<Packet>, DecodeError>>,
    v4: Vec<Result<r4::Packet, rumqttc::mqttbytes::Error>>,
    v5: Vec<Result<r5::Packet, rumqttc::v5::mqttbytes::Error>>,
}

impl Decode {
    fn new(version: Version, wires: Vec<BytesMut>) -> Decode {
        Decode {
            version,
            wires,
            ours: Vec::with_capacity(PACKETS),
            v4: Vec::with_capacity(PACKETS),
            v5: Vec::with_capacity(PACKETS),
        }
    }
}

/// 1,000 read buffers (see [`read_buffer`]) holding the case's packet.
fn decode_setup(case: fn() -> Case) -> Decode {
    let case = case();
    let wires = (0..PACKETS).map(|_| read_buffer(&case.wire)).collect();
    Decode::new(case.version, wires)
}

/// 1,000 fresh `BytesMut` holding the case's packet: the first packet of a buffer, whose
/// `split_to` allocates the buffer's shared state.
fn fresh_setup(case: fn() -> Case) -> Decode {
    let case = case();
    let wires = (0..PACKETS).map(|_| case.wire.clone()).collect();
    Decode::new(case.version, wires)
}

#[library_benchmark]
#[benches::case(args = [p311_q0_16, p311_q0_256, p311_q1_16, p311_q1_256, p5_q1_16, connect_v5, subscribe_311, subscribe_5], setup = decode_setup)]
#[benches::fresh(args = [p311_q1_16, p5_q1_16], setup = fresh_setup)]
fn decode_mqtt_proto(mut input: Decode) -> Decode {
    let limits = Limits::new(MAX as u32);
    for wire in &mut input.wires {
        input
            .ours
            .push(codec::decode(black_box(wire), input.version, &limits));
    }
    input
}

#[library_benchmark]
#[benches::case(args = [p311_q0_16, p311_q0_256, p311_q1_16, p311_q1_256, p5_q1_16, connect_v5, subscribe_311, subscribe_5], setup = decode_setup)]
#[benches::fresh(args = [p311_q1_16, p5_q1_16], setup = fresh_setup)]
fn decode_rumqttc(mut input: Decode) -> Decode {
    for wire in &mut input.wires {
        match input.version {
            Version::V3_1_1 => input.v4.push(r4::Packet::read(black_box(wire), MAX)),
            Version::V5 => input
                .v5
                .push(r5::Packet::read(black_box(wire), Some(MAX as u32))),
        }
    }
    input
}

/// What an encode bench writes: the case's copies, written over and over into one buffer.
struct Encode {
    case: Case,
    buf: BytesMut,
}

fn encode_setup(case: fn() -> Case) -> Encode {
    let case = case();
    let buf = BytesMut::with_capacity(case.wire.len() * case.encode.len() * 2);
    Encode { case, buf }
}

#[library_benchmark]
#[benches::case(args = [p311_q0_16, p311_q0_256, p311_q1_16, p311_q1_256, p5_q1_16, connect_v5, subscribe_311, subscribe_5], setup = encode_setup)]
fn encode_mqtt_proto(mut input: Encode) -> Encode {
    for _ in 0..PACKETS / input.case.encode.len() {
        input.buf.clear();
        for (packet, _) in &input.case.encode {
            let _ = black_box(codec::encode(
                black_box(packet),
                input.case.version,
                &mut input.buf,
            ));
        }
    }
    input
}

#[library_benchmark]
#[benches::case(args = [p311_q0_16, p311_q0_256, p311_q1_16, p311_q1_256, p5_q1_16, connect_v5, subscribe_311, subscribe_5], setup = encode_setup)]
fn encode_rumqttc(mut input: Encode) -> Encode {
    for _ in 0..PACKETS / input.case.encode.len() {
        input.buf.clear();
        for (_, theirs) in &input.case.encode {
            match black_box(theirs) {
                Theirs::V4(packet) => {
                    let _ = black_box(packet.write(&mut input.buf, MAX));
                }
                Theirs::V5(packet) => {
                    let _ = black_box(packet.write(&mut input.buf, Some(MAX as u32)));
                }
            }
        }
    }
    input
}

/// The 10,000-packet stream of `codec.rs`, in one fresh buffer.
fn stream_setup() -> BytesMut {
    mixed_stream(10_000).0
}

fn p311_q0_16() -> Case {
    publish(Version::V3_1_1, QoS::AtMostOnce, 16)
}
fn p311_q0_256() -> Case {
    publish(Version::V3_1_1, QoS::AtMostOnce, 256)
}
fn p311_q1_16() -> Case {
    publish(Version::V3_1_1, QoS::AtLeastOnce, 16)
}
fn p311_q1_256() -> Case {
    publish(Version::V3_1_1, QoS::AtLeastOnce, 256)
}
fn p5_q1_16() -> Case {
    publish(Version::V5, QoS::AtLeastOnce, 16)
}
fn subscribe_311() -> Case {
    subscribe(Version::V3_1_1)
}
fn subscribe_5() -> Case {
    subscribe(Version::V5)
}

#[library_benchmark]
#[bench::mixed_v311_10000(setup = stream_setup)]
fn stream_mqtt_proto(mut wire: BytesMut) -> BytesMut {
    let limits = Limits::new(MAX as u32);
    while let Ok(Some(packet)) = codec::decode(&mut wire, Version::V3_1_1, &limits) {
        black_box(packet);
    }
    // Stopped by the end of the stream, not by an error halfway through it.
    assert!(wire.is_empty());
    wire
}

#[library_benchmark]
#[bench::mixed_v311_10000(setup = stream_setup)]
fn stream_rumqttc(mut wire: BytesMut) -> BytesMut {
    while let Ok(packet) = r4::Packet::read(&mut wire, MAX) {
        black_box(packet);
    }
    // Stopped by the end of the stream, not by an error halfway through it.
    assert!(wire.is_empty());
    wire
}

// `case` and `fresh` number their benches in the order of their lists (the output names the
// case, too); `compare_by_id` sets each next to its namesake of the other side.
library_benchmark_group!(
    name = decode;
    compare_by_id = true;
    benchmarks = decode_mqtt_proto, decode_rumqttc
);
library_benchmark_group!(
    name = encode;
    compare_by_id = true;
    benchmarks = encode_mqtt_proto, encode_rumqttc
);
library_benchmark_group!(
    name = stream;
    compare_by_id = true;
    benchmarks = stream_mqtt_proto, stream_rumqttc
);

main!(library_benchmark_groups = decode, encode, stream);
