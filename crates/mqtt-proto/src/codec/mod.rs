//! Decoding and encoding of whole packets.
//!
//! ```
//! use bytes::BytesMut;
//! use mqtt_proto::codec::{self, Limits};
//! use mqtt_proto::packet::{Packet, Publish, Version};
//!
//! let mut wire = BytesMut::new();
//! let publish = Publish::new("a/b".parse()?, "hello");
//! codec::encode(&Packet::Publish(publish), Version::V5, &mut wire)?;
//! codec::encode(&Packet::PingReq, Version::V5, &mut wire)?;
//!
//! // Two packets in one buffer: each call takes one; `Ok(None)` asks for more bytes.
//! let limits = Limits::default();
//! assert!(matches!(codec::decode(&mut wire, Version::V5, &limits)?, Some(Packet::Publish(_))));
//! assert_eq!(codec::decode(&mut wire, Version::V5, &limits)?, Some(Packet::PingReq));
//! assert_eq!(codec::decode(&mut wire, Version::V5, &limits)?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub(crate) mod wire;

use bytes::{Buf, BytesMut};

pub use error::{DecodeError, EncodeError, V5Only};
use wire::{MAX_VARIABLE_BYTE_INTEGER, Put, Reader, put_varint, read_varint, varint_len};

use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, PubAck, PubComp, PubRec,
    PubRel, Publish, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};

/// Limits the decoder enforces on what the peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest packet accepted, in bytes, fixed header included (the MQTT 5.0 Maximum Packet
    /// Size). A packet announcing more is rejected from its fixed header, before it is buffered.
    pub max_packet_size: u32,
}

impl Limits {
    /// The protocol's own ceiling: a fixed header of 5 bytes and the largest remaining length.
    pub const PROTOCOL_MAX_PACKET_SIZE: u32 = MAX_VARIABLE_BYTE_INTEGER + 5;

    /// Limits with this maximum packet size.
    pub const fn new(max_packet_size: u32) -> Self {
        Self { max_packet_size }
    }

    /// The Maximum Packet Size property that announces `max_packet_size` to the peer: none at
    /// the protocol's ceiling (absence means no limit, MQTT-3.1.2-24's counterpart), and never
    /// more than 268,435,455. The property is a Four Byte Integer, but paho-mqtt 2 refuses a
    /// CONNACK whose value exceeds the largest remaining length, so a limit within 5 bytes of
    /// the ceiling is announced as that (a few bytes stricter than the limit, never looser).
    pub fn announced_max_packet_size(max_packet_size: u32) -> Option<core::num::NonZeroU32> {
        if max_packet_size >= Self::PROTOCOL_MAX_PACKET_SIZE {
            return None;
        }
        core::num::NonZeroU32::new(max_packet_size.min(MAX_VARIABLE_BYTE_INTEGER))
    }
}

impl Default for Limits {
    /// A maximum packet size of 1 MiB: enough for ordinary messages, small enough that a peer
    /// cannot make a connection hold hundreds of megabytes.
    fn default() -> Self {
        Self::new(1024 * 1024)
    }
}

/// The fixed header of a packet (section 2.1.1).
#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    packet: PacketType,
    flags: u8,
    /// Bytes of the fixed header itself.
    header_len: usize,
    remaining_len: usize,
}

fn read_fixed_header(
    buf: &[u8],
    version: Version,
    limits: &Limits,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let kind = first >> 4;
    let flags = first & 0x0F;
    let packet = match PacketType::from_u8(kind) {
        Some(PacketType::Auth) if version == Version::V3_1_1 => None,
        other => other,
    }
    .ok_or(DecodeError::ReservedPacketType(kind))?;
    let expected = match packet {
        // PUBLISH flags are DUP, QoS and RETAIN, checked by its decoder.
        PacketType::Publish => flags,
        PacketType::PubRel => PubRel::FLAGS,
        PacketType::Subscribe => Subscribe::FLAGS,
        PacketType::Unsubscribe => Unsubscribe::FLAGS,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::InvalidFixedHeaderFlags { packet, flags });
    }
    let Some((remaining, used)) = read_varint(rest)? else {
        return Ok(None);
    };
    let header_len = 1 + used;
    let size = header_len as u64 + u64::from(remaining);
    if size > u64::from(limits.max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: limits.max_packet_size,
        });
    }
    Ok(Some(FixedHeader {
        packet,
        flags,
        header_len,
        remaining_len: remaining as usize,
    }))
}

/// The size on the wire of the packet at the front of `buf` (fixed header included), once its
/// fixed header is complete; `None` before that or when the header is malformed (decoding then
/// reports why). It says how much memory the whole packet will take before it has arrived.
pub(crate) fn packet_len(buf: &[u8]) -> Option<usize> {
    let rest = buf.get(1..)?;
    let (remaining, used) = read_varint(rest).ok()??;
    Some(1 + used + remaining as usize)
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(Some(packet))`: the packet's bytes were removed from `buf`; whatever follows stays.
/// - `Ok(None)`: `buf` holds only part of a packet; nothing was consumed. Read more and call again.
/// - `Err(_)`: the peer sent an invalid packet. The error is fatal for the connection.
///
/// `version` is the connection's protocol version; a CONNECT, which carries its own, is decoded
/// by that instead, and its [`Connect::protocol_version`] tells the server which to use from
/// then on. Strings, binary fields and the payload of the result share `buf`'s memory.
///
/// A packet larger than `limits.max_packet_size` is rejected as soon as its fixed header is
/// complete, so `buf` never needs to grow past the limit. Every length inside the packet is
/// checked against the bytes actually present before anything is read.
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    limits: &Limits,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = read_fixed_header(buf, version, limits)? else {
        return Ok(None);
    };
    let total = header.header_len + header.remaining_len;
    if buf.len() < total {
        return Ok(None);
    }
    if let Some(short) = decode_short(&header, buf) {
        buf.advance(total);
        return short.map(Some);
    }
    // Skipping the header on the frozen `Bytes` only moves a pointer; on the `BytesMut` it
    // would also update its bookkeeping.
    let mut body = buf.split_to(total).freeze();
    body.advance(header.header_len);
    let mut r = Reader::new(body, header.packet);
    // Each arm checks the end of the body before wrapping what it read, so that the packet is
    // built in the return value: a finished `Packet` is 104 bytes, a `memcpy` per move.
    let r = &mut r;
    match header.packet {
        PacketType::Connect => whole(Connect::read(r)?, r, Packet::Connect),
        PacketType::ConnAck => whole(Box::new(ConnAck::read(r, version)?), r, Packet::ConnAck),
        // Read from the slice rather than the reader; its payload takes the rest, so there is
        // nothing to finish.
        PacketType::Publish => Publish::decode(header.flags, r.rest(), version),
        PacketType::PubAck => whole(PubAck::read(r, version)?, r, Packet::PubAck),
        PacketType::PubRec => whole(PubRec::read(r, version)?, r, Packet::PubRec),
        PacketType::PubRel => whole(PubRel::read(r, version)?, r, Packet::PubRel),
        PacketType::PubComp => whole(PubComp::read(r, version)?, r, Packet::PubComp),
        PacketType::Subscribe => whole(Subscribe::read(r, version)?, r, Packet::Subscribe),
        PacketType::SubAck => whole(SubAck::read(r, version)?, r, Packet::SubAck),
        PacketType::Unsubscribe => whole(Unsubscribe::read(r, version)?, r, Packet::Unsubscribe),
        PacketType::UnsubAck => whole(UnsubAck::read(r, version)?, r, Packet::UnsubAck),
        PacketType::PingReq => whole((), r, |()| Packet::PingReq),
        PacketType::PingResp => whole((), r, |()| Packet::PingResp),
        PacketType::Disconnect => whole(Disconnect::read(r, version)?, r, Packet::Disconnect),
        PacketType::Auth => whole(Box::new(Auth::read(r)?), r, Packet::Auth),
    }
}

/// The packets that keep nothing of the buffer in their common form, read from the slice: a
/// publish acknowledgement of only a packet identifier (3.1.1, and 5.0 with Success and no
/// properties) and PINGREQ/PINGRESP. Splitting their bytes off the buffer would count a
/// reference to its memory up and down again for nothing. `None` for every other packet.
#[inline]
fn decode_short(header: &FixedHeader, buf: &[u8]) -> Option<Result<Packet, DecodeError>> {
    let packet_id = || {
        let id = buf.get(header.header_len..)?.first_chunk::<2>()?;
        Some(PacketId::new(u16::from_be_bytes(*id)).ok_or(DecodeError::ZeroPacketId(header.packet)))
    };
    match (header.packet, header.remaining_len) {
        (PacketType::PubAck, 2) => Some(packet_id()?.map(|id| Packet::PubAck(PubAck::new(id)))),
        (PacketType::PubRec, 2) => Some(packet_id()?.map(|id| Packet::PubRec(PubRec::new(id)))),
        (PacketType::PubRel, 2) => Some(packet_id()?.map(|id| Packet::PubRel(PubRel::new(id)))),
        (PacketType::PubComp, 2) => Some(packet_id()?.map(|id| Packet::PubComp(PubComp::new(id)))),
        (PacketType::PingReq, 0) => Some(Ok(Packet::PingReq)),
        (PacketType::PingResp, 0) => Some(Ok(Packet::PingResp)),
        _ => None,
    }
}

/// `body`, wrapped as a packet, once `r` has been read to its end.
#[inline(always)]
fn whole<T>(
    body: T,
    r: &Reader,
    wrap: impl FnOnce(T) -> Packet,
) -> Result<Option<Packet>, DecodeError> {
    r.check_finished()?;
    Ok(Some(wrap(body)))
}

impl Packet {
    /// The remaining length and fixed header flags of this packet for `version`, validating it.
    fn remaining_len(&self, version: Version) -> Result<(usize, u8), EncodeError> {
        Ok(match self {
            Packet::Connect(p) => (p.body_len(version)?, 0),
            Packet::ConnAck(p) => (p.body_len(version)?, 0),
            Packet::Publish(p) => (p.body_len(version)?, p.flags()),
            Packet::PubAck(p) => (p.body_len(version)?, PubAck::FLAGS),
            Packet::PubRec(p) => (p.body_len(version)?, PubRec::FLAGS),
            Packet::PubRel(p) => (p.body_len(version)?, PubRel::FLAGS),
            Packet::PubComp(p) => (p.body_len(version)?, PubComp::FLAGS),
            Packet::Subscribe(p) => (p.body_len(version)?, Subscribe::FLAGS),
            Packet::SubAck(p) => (p.body_len(version)?, 0),
            Packet::Unsubscribe(p) => (p.body_len(version)?, Unsubscribe::FLAGS),
            Packet::UnsubAck(p) => (p.body_len(version)?, 0),
            Packet::PingReq | Packet::PingResp => (0, 0),
            Packet::Disconnect(p) => (p.body_len(version)?, 0),
            Packet::Auth(p) => (p.body_len(version)?, 0),
        })
    }

    /// The size of this packet on the wire for `version`, fixed header included: what a peer's
    /// Maximum Packet Size is compared with.
    pub fn encoded_len(&self, version: Version) -> Result<usize, EncodeError> {
        let (remaining, _) = self.remaining_len(version)?;
        if remaining > MAX_VARIABLE_BYTE_INTEGER as usize {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        Ok(1 + varint_len(remaining) + remaining)
    }
}

/// Appends `packet`, encoded for `version`, to `buf`.
///
/// On error nothing is written. Encoding a PUBLISH for 3.1.1 drops its 5.0 properties (what a
/// broker forwarding a 5.0 message to a 3.1.1 subscriber must do); anything else that 3.1.1
/// cannot carry is an [`EncodeError::NotInV311`].
pub fn encode(packet: &Packet, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if let Packet::Publish(publish) = packet {
        return publish.encode(version, buf);
    }
    let (remaining, flags) = packet.remaining_len(version)?;
    if remaining > MAX_VARIABLE_BYTE_INTEGER as usize {
        return Err(EncodeError::PacketTooLarge(remaining));
    }
    let start = buf.len();
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8((packet.packet_type() as u8) << 4 | flags);
    put_varint(buf, remaining);
    let body_start = buf.len();
    let written = match packet {
        Packet::Connect(p) => p.write(version, buf),
        Packet::ConnAck(p) => p.write(version, buf),
        Packet::Publish(p) => p.write(version, buf),
        Packet::PubAck(p) => p.write(version, buf),
        Packet::PubRec(p) => p.write(version, buf),
        Packet::PubRel(p) => p.write(version, buf),
        Packet::PubComp(p) => p.write(version, buf),
        Packet::Subscribe(p) => p.write(version, buf),
        Packet::SubAck(p) => p.write(version, buf),
        Packet::Unsubscribe(p) => p.write(version, buf),
        Packet::UnsubAck(p) => p.write(version, buf),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(p) => p.write(version, buf),
        Packet::Auth(p) => p.write(buf),
    };
    if let Err(error) = written {
        buf.truncate(start);
        return Err(error);
    }
    debug_assert_eq!(buf.len() - body_start, remaining, "{packet:?}");
    Ok(())
}
