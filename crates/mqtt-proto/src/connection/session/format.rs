//! The saved form of a client [`Session`]: a small, versioned binary format, so that a session
//! outlives the process (see [`Session::encode`]).
//!
//! ```text
//! magic           8 bytes  "MQTTSESS"
//! version         u16      FORMAT_VERSION
//! body length     u64
//! body
//! checksum        u32      CRC-32 (IEEE 802.3) of every byte before it
//!
//! body:
//! flags           u8       bit 0: an assigned client identifier follows; the others are 0
//! [assigned id]            string
//! next packet id  u16      where packet identifier allocation resumes
//! next token      u64      where acknowledgement tokens resume
//! awaiting PUBREL u32 n    then n packet identifiers (u16), ascending: QoS 2 messages received
//! in flight       u32 n    then n entries, in the order sent: 1 and a PUBLISH packet (sent,
//!                          PUBACK or PUBREC awaited), or 2 and a packet identifier (u16; PUBREL
//!                          sent, PUBCOMP awaited)
//! queued          u32 n    then n PUBLISH packets, in the order published
//! requests        u32 n    then n SUBSCRIBE or UNSUBSCRIBE packets, unacknowledged
//! subscriptions   u32 n    then n entries: the filter (string), the Subscription Options byte
//!                          and the Subscription Identifier (u32, 0 for none)
//! ```
//!
//! Integers are big-endian; a string is a UTF-8 Encoded String as MQTT writes it (a two-byte
//! length). Packets are MQTT 5.0 packets, whatever the connection's version, so that every
//! property survives; reading them is the codec's decoding with its validation. Reading checks
//! every length against what is left before it takes anything, and allocates only for what it
//! has read.

use std::collections::{BTreeSet, VecDeque};

use bytes::{Buf, BytesMut};
use bytestring::ByteString;

use super::{ActiveSubscription, Request, Session};
use crate::codec::wire::{Put, check_field, put_binary, utf8};
use crate::codec::{self, DecodeError, EncodeError, Limits};
use crate::connection::outbound::{Inflight, Outbound};
use crate::packet::{
    Packet, PacketId, Publish, QoS, Subscription, SubscriptionId, SubscriptionOptions, Version,
};
use crate::topic::TopicFilter;

/// The first bytes of a saved session.
const MAGIC: [u8; 8] = *b"MQTTSESS";

/// Magic, version and body length.
const HEADER_LEN: usize = MAGIC.len() + 2 + 8;

const CHECKSUM_LEN: usize = 4;

/// `flags`: an assigned client identifier follows.
const HAS_ASSIGNED_ID: u8 = 0x01;

/// An in-flight entry: PUBLISH sent.
const STAGE_PUBLISH: u8 = 1;
/// An in-flight entry: PUBREL sent.
const STAGE_PUBREL: u8 = 2;

/// Why [`Session::decode`] refused its input. Nothing is restored: start without a session, or
/// find out what wrote the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionDecodeError {
    /// The input does not start as a saved session does: it is something else.
    #[error("not a saved MQTT session (unknown magic)")]
    NotASession,
    /// A version of the format this build does not read (a newer program wrote it).
    #[error(
        "saved session format version {0} is not supported (this build reads version {current})",
        current = Session::FORMAT_VERSION
    )]
    UnsupportedVersion(u16),
    /// The input ends before the session does: a file cut short.
    #[error("the saved session is truncated")]
    Truncated,
    /// Bytes follow the end of the session.
    #[error("{0} bytes follow the saved session")]
    TrailingBytes(u64),
    /// The checksum does not match: the bytes changed after they were written.
    #[error("the saved session is corrupt (checksum mismatch)")]
    ChecksumMismatch,
    /// Two unfinished exchanges hold the same packet identifier.
    #[error("packet identifier {0} is held twice in the saved session")]
    DuplicatePacketId(u16),
    /// A saved packet is not valid MQTT.
    #[error("invalid packet in the saved session: {0}")]
    Packet(#[from] DecodeError),
    /// A field holds what no session can.
    #[error("invalid saved session: {0}")]
    Invalid(&'static str),
}

/// What the format holds, borrowed: from a [`Session`], or from a live connection, whose
/// QoS 2 receive set and token counter sit in its inbound state rather than in its session.
pub(crate) struct Parts<'a> {
    pub(crate) assigned_client_id: Option<&'a ByteString>,
    pub(crate) outbound: &'a Outbound,
    pub(crate) awaiting_pubrel: &'a BTreeSet<u16>,
    pub(crate) next_token: u64,
    pub(crate) requests: &'a [Request],
    pub(crate) subscriptions: &'a [ActiveSubscription],
}

impl<'a> Parts<'a> {
    pub(crate) fn of(session: &'a Session) -> Self {
        Self {
            assigned_client_id: session.assigned_client_id.as_ref(),
            outbound: &session.outbound,
            awaiting_pubrel: &session.awaiting_pubrel,
            next_token: session.next_token,
            requests: &session.requests,
            subscriptions: &session.subscriptions,
        }
    }

    /// Appends the saved form to `buf`; on error nothing is appended.
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let start = buf.len();
        let written = self.write(start, buf);
        if written.is_err() {
            buf.truncate(start);
        }
        written
    }

    fn write(&self, start: usize, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_slice(&MAGIC);
        buf.put_u16(Session::FORMAT_VERSION);
        let length_at = buf.len();
        buf.put_slice(&[0; 8]);
        let body_start = buf.len();

        match self.assigned_client_id {
            Some(id) => {
                check_field(id.len())?;
                buf.put_u8(HAS_ASSIGNED_ID);
                put_binary(buf, id.as_bytes());
            }
            None => buf.put_u8(0),
        }
        buf.put_u16(self.outbound.next_id());
        buf.put_slice(&self.next_token.to_be_bytes());

        put_count(buf, self.awaiting_pubrel.len())?;
        for id in self.awaiting_pubrel {
            buf.put_u16(*id);
        }

        put_count(buf, self.outbound.inflight.len())?;
        for entry in &self.outbound.inflight {
            match entry {
                Inflight::Publish(publish) => {
                    buf.put_u8(STAGE_PUBLISH);
                    publish.encode(Version::V5, buf)?;
                }
                Inflight::PubRel(id) => {
                    buf.put_u8(STAGE_PUBREL);
                    buf.put_u16(id.get());
                }
            }
        }

        put_count(buf, self.outbound.queued.len())?;
        for queued in &self.outbound.queued {
            queued.publish.encode(Version::V5, buf)?;
        }

        put_count(buf, self.requests.len())?;
        for request in self.requests {
            let packet = match request {
                Request::Subscribe(s) => Packet::Subscribe(s.clone()),
                Request::Unsubscribe(u) => Packet::Unsubscribe(u.clone()),
            };
            codec::encode(&packet, Version::V5, buf)?;
        }

        put_count(buf, self.subscriptions.len())?;
        for active in self.subscriptions {
            // A `TopicFilter` is valid, so it fits a string.
            put_binary(buf, active.subscription.filter.as_bytes());
            buf.put_u8(active.subscription.options.to_byte(Version::V5)?);
            buf.put_u32(active.identifier.map_or(0, SubscriptionId::get));
        }

        let body_len = (buf.len() - body_start) as u64;
        if let Some(length) = buf.get_mut(length_at..body_start) {
            length.copy_from_slice(&body_len.to_be_bytes());
        }
        let checksum = crc32(buf.get(start..).unwrap_or_default());
        buf.put_u32(checksum);
        Ok(())
    }
}

fn put_count(buf: &mut BytesMut, count: usize) -> Result<(), EncodeError> {
    let count = u32::try_from(count).map_err(|_| EncodeError::FieldTooLong(count))?;
    buf.put_u32(count);
    Ok(())
}

/// Reads a saved session: checks the frame (magic, version, length, checksum), then the body.
pub(crate) fn decode(bytes: &[u8]) -> Result<Session, SessionDecodeError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes.get(..magic_len) != MAGIC.get(..magic_len) {
        return Err(SessionDecodeError::NotASession);
    }
    let mut header = bytes.get(MAGIC.len()..).unwrap_or_default();
    if header.len() < HEADER_LEN - MAGIC.len() {
        return Err(SessionDecodeError::Truncated);
    }
    let version = header.get_u16();
    if version != Session::FORMAT_VERSION {
        return Err(SessionDecodeError::UnsupportedVersion(version));
    }
    let body_len = header.get_u64();
    let available = (bytes.len() - HEADER_LEN) as u64;
    let Some(expected) = body_len.checked_add(CHECKSUM_LEN as u64) else {
        return Err(SessionDecodeError::Truncated);
    };
    if available < expected {
        return Err(SessionDecodeError::Truncated);
    }
    if available > expected {
        return Err(SessionDecodeError::TrailingBytes(available - expected));
    }
    // Within `bytes`, which is in memory: the length fits a `usize`.
    let end = bytes.len() - CHECKSUM_LEN;
    let (framed, mut checksum) = bytes
        .split_at_checked(end)
        .ok_or(SessionDecodeError::Truncated)?;
    if crc32(framed) != checksum.get_u32() {
        return Err(SessionDecodeError::ChecksumMismatch);
    }
    let body = framed.get(HEADER_LEN..).unwrap_or_default();
    Input {
        // One copy of the body: the payloads restored are slices of it.
        buf: BytesMut::from(body),
    }
    .session()
}

/// The body being read. Every accessor checks what is left first.
struct Input {
    buf: BytesMut,
}

impl Input {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SessionDecodeError> {
        let bytes = *self
            .buf
            .first_chunk::<N>()
            .ok_or(SessionDecodeError::Truncated)?;
        self.buf.advance(N);
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, SessionDecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, SessionDecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, SessionDecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SessionDecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn packet_id(&mut self) -> Result<PacketId, SessionDecodeError> {
        PacketId::new(self.u16()?).ok_or(SessionDecodeError::Invalid("packet identifier 0"))
    }

    /// A UTF-8 Encoded String, validated as the codec validates one.
    fn string(&mut self) -> Result<ByteString, SessionDecodeError> {
        let len = usize::from(self.u16()?);
        if self.buf.len() < len {
            return Err(SessionDecodeError::Truncated);
        }
        Ok(utf8(self.buf.split_to(len).freeze())?)
    }

    /// A count of entries of at least `min_len` bytes each: more than what is left can hold
    /// is refused before anything is read.
    fn count(&mut self, min_len: usize) -> Result<usize, SessionDecodeError> {
        let count = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if count > self.buf.len() / min_len {
            return Err(SessionDecodeError::Truncated);
        }
        Ok(count)
    }

    /// One MQTT 5.0 packet, decoded by the codec.
    fn packet(&mut self) -> Result<Packet, SessionDecodeError> {
        let limits = Limits::new(Limits::PROTOCOL_MAX_PACKET_SIZE);
        codec::decode(&mut self.buf, Version::V5, &limits)?.ok_or(SessionDecodeError::Truncated)
    }

    /// A PUBLISH of ours: QoS 1 or 2 (so with a packet identifier), and nothing only the
    /// connection that sends it may add.
    fn publish(&mut self) -> Result<Publish, SessionDecodeError> {
        let Packet::Publish(publish) = self.packet()? else {
            return Err(SessionDecodeError::Invalid("a message is not a PUBLISH"));
        };
        if publish.qos == QoS::AtMostOnce {
            return Err(SessionDecodeError::Invalid("a QoS 0 message"));
        }
        if publish.properties.topic_alias.is_some()
            || !publish.properties.subscription_identifiers.is_empty()
        {
            return Err(SessionDecodeError::Invalid(
                "a message carries a Topic Alias or Subscription Identifier",
            ));
        }
        Ok(publish)
    }

    fn session(mut self) -> Result<Session, SessionDecodeError> {
        let flags = self.u8()?;
        if flags & !HAS_ASSIGNED_ID != 0 {
            return Err(SessionDecodeError::Invalid("unknown flags"));
        }
        let assigned_client_id = if flags & HAS_ASSIGNED_ID != 0 {
            Some(self.string()?)
        } else {
            None
        };
        let next_id = self.u16()?;
        let next_token = self.u64()?;

        let mut awaiting_pubrel = BTreeSet::new();
        for _ in 0..self.count(2)? {
            let id = self.packet_id()?.get();
            if awaiting_pubrel.last().is_some_and(|last| *last >= id) {
                return Err(SessionDecodeError::Invalid(
                    "QoS 2 identifiers not in ascending order",
                ));
            }
            awaiting_pubrel.insert(id);
        }

        let mut inflight = VecDeque::new();
        for _ in 0..self.count(3)? {
            inflight.push_back(match self.u8()? {
                STAGE_PUBLISH => Inflight::Publish(self.publish()?),
                STAGE_PUBREL => Inflight::PubRel(self.packet_id()?),
                _ => return Err(SessionDecodeError::Invalid("unknown in-flight stage")),
            });
        }

        let mut queued = VecDeque::new();
        for _ in 0..self.count(2)? {
            queued.push_back(self.publish()?);
        }

        let mut requests = Vec::new();
        for _ in 0..self.count(2)? {
            requests.push(match self.packet()? {
                Packet::Subscribe(s) => Request::Subscribe(s),
                Packet::Unsubscribe(u) => Request::Unsubscribe(u),
                _ => {
                    return Err(SessionDecodeError::Invalid(
                        "a request is not a SUBSCRIBE or UNSUBSCRIBE",
                    ));
                }
            });
        }

        let mut subscriptions = Vec::new();
        for _ in 0..self.count(7)? {
            subscriptions.push(self.subscription()?);
        }

        if !self.buf.is_empty() {
            return Err(SessionDecodeError::Invalid("bytes after the last field"));
        }
        let outbound = Outbound::restore(
            next_id,
            inflight,
            queued,
            requests.iter().map(Request::packet_id),
        )
        .map_err(|id| match id {
            Some(id) => SessionDecodeError::DuplicatePacketId(id.get()),
            None => SessionDecodeError::Invalid("a message without a packet identifier"),
        })?;
        Ok(Session {
            assigned_client_id,
            outbound,
            awaiting_pubrel,
            next_token,
            requests,
            subscriptions,
        })
    }

    fn subscription(&mut self) -> Result<ActiveSubscription, SessionDecodeError> {
        let filter = TopicFilter::new(self.string()?)
            .map_err(|_| SessionDecodeError::Invalid("an invalid topic filter"))?;
        let options = SubscriptionOptions::from_byte(self.u8()?, Version::V5)?;
        if options.no_local && filter.is_shared() {
            return Err(SessionDecodeError::Invalid(
                "No Local on a shared subscription",
            ));
        }
        let identifier = match self.u32()? {
            0 => None,
            id => Some(SubscriptionId::new(id).ok_or(SessionDecodeError::Invalid(
                "subscription identifier too large",
            ))?),
        };
        Ok(ActiveSubscription {
            subscription: Subscription { filter, options },
            identifier,
        })
    }
}

/// CRC-32 as IEEE 802.3, zlib and PNG compute it (polynomial 0xEDB88320, reflected).
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = crc32_table();
    let mut crc = !0u32;
    for &byte in bytes {
        let index = usize::from((crc as u8) ^ byte);
        crc = (crc >> 8) ^ TABLE.get(index).copied().unwrap_or(0);
    }
    !crc
}

// Filled at compile time: `i` runs over the table's 256 entries.
#[allow(clippy::indexing_slicing)]
const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}
