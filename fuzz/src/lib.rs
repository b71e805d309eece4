//! Helpers behind the fuzz targets, which stay one line each.
//!
//! Every packet target reads the same input: byte 0 picks the connection's protocol version (its
//! low bit), bytes 1 to 4 the decoder's maximum packet size (little endian, any value, 0
//! included), and the rest is what the peer sent. The `session` target reads a saved session,
//! the `restore` target a broker's stored records.

mod restore;
mod session;
mod stream;

pub use restore::restore;
pub use session::{body as session_body, frame as session_frame, session};
pub use stream::{broker_stream, client_stream};

use bytes::BytesMut;
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::packet::{Packet, Version};

/// The version, limits and wire bytes an input stands for; `None` when it is too short.
pub fn split_input(data: &[u8]) -> Option<(Version, Limits, &[u8])> {
    let (&selector, rest) = data.split_first()?;
    let (max, wire) = rest.split_first_chunk::<4>()?;
    let version = if selector & 1 == 0 {
        Version::V3_1_1
    } else {
        Version::V5
    };
    Some((version, Limits::new(u32::from_le_bytes(*max)), wire))
}

/// The inverse of [`split_input`]: an input for this version, limit and wire bytes.
pub fn make_input(version: Version, max_packet_size: u32, wire: &[u8]) -> Vec<u8> {
    let mut input = vec![u8::from(version == Version::V5)];
    input.extend_from_slice(&max_packet_size.to_le_bytes());
    input.extend_from_slice(wire);
    input
}

/// The version a packet is encoded with on a connection of `version`: a CONNECT carries its own.
pub fn encoding_version(packet: &Packet, version: Version) -> Version {
    match packet {
        Packet::Connect(connect) => connect.protocol_version,
        _ => version,
    }
}

/// Decodes packets until the input runs out or is invalid, calling `each` on every packet.
pub fn for_each_packet(data: &[u8], mut each: impl FnMut(Packet, Version)) {
    let Some((version, limits, wire)) = split_input(data) else {
        return;
    };
    let mut buf = BytesMut::from(wire);
    while let Ok(Some(packet)) = codec::decode(&mut buf, version, &limits) {
        each(packet, version);
    }
}

/// The `decode` target: decoding never panics, and neither does encoding what was decoded; a
/// failed encode writes nothing, a successful one writes exactly `encoded_len` bytes.
pub fn decode(data: &[u8]) {
    for_each_packet(data, |packet, version| {
        let version = encoding_version(&packet, version);
        let mut out = BytesMut::from(&b"prefix"[..]);
        match codec::encode(&packet, version, &mut out) {
            Ok(()) => assert_eq!(Ok(out.len() - 6), packet.encoded_len(version)),
            Err(_) => assert_eq!(&out[..], b"prefix", "a failed encode wrote bytes"),
        }
    });
}

/// The `roundtrip` target: whatever decodes encodes; decoding that gives the same packet, and
/// encoding it again the same bytes. Every strict prefix of an encoded packet is incomplete.
pub fn roundtrip(data: &[u8]) {
    let unlimited = Limits::new(Limits::PROTOCOL_MAX_PACKET_SIZE);
    for_each_packet(data, |packet, version| {
        let encoding = encoding_version(&packet, version);
        let first = encode(&packet, encoding);
        assert_eq!(Ok(first.len()), packet.encoded_len(encoding));

        let mut prefix = BytesMut::from(&first[..first.len() - 1]);
        assert_eq!(codec::decode(&mut prefix, version, &unlimited), Ok(None));

        let mut wire = first.clone();
        let again = match codec::decode(&mut wire, version, &unlimited) {
            Ok(Some(again)) => again,
            other => panic!("{packet:?} encoded as {first:?} decodes as {other:?}"),
        };
        assert!(wire.is_empty(), "{again:?} left {wire:?}");
        assert_eq!(again, packet, "from {first:?}");
        assert_eq!(encode(&again, encoding), first, "{again:?}");
    });
}

fn encode(packet: &Packet, version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    if let Err(error) = codec::encode(packet, version, &mut out) {
        panic!("decoded {packet:?} ({version:?}) but encoding failed: {error}");
    }
    out
}
