//! PUBLISH (section 3.3).

use std::num::NonZeroU16;

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::properties::id::TOPIC_ALIAS;
use super::{Boxed, Packet, PacketId, PacketType, PublishProperties, QoS, Version};
use crate::codec::wire::{
    MAX_VARIABLE_BYTE_INTEGER, Put, Reader, has_nul_or_wildcard, put_binary, put_varint, utf8,
    varint_len,
};
use crate::codec::{DecodeError, EncodeError};
use crate::topic::TopicName;

/// PUBLISH: an application message, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// DUP: this may be a re-delivery (QoS 1 and 2 only).
    pub dup: bool,
    /// The QoS of this delivery.
    pub qos: QoS,
    /// RETAIN: store the message as the topic's retained message (or, server to client, this is
    /// a retained message).
    pub retain: bool,
    /// Topic Name, checked when it was made. Empty ([`TopicName::empty`]) in 5.0 only when a
    /// Topic Alias stands for it.
    pub topic: TopicName,
    /// Packet Identifier: present exactly for QoS 1 and 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (5.0 only; dropped when encoding for 3.1.1, see [`Publish`]), kept
    /// out of line: an empty set costs a pointer and no allocation (see [`Boxed`]).
    pub properties: Boxed<PublishProperties>,
    /// The application message.
    pub payload: Bytes,
}

/// A topic alias to put on a PUBLISH as it is encoded, without changing the message: the
/// Topic Alias property is added, and the topic is left out unless this is the alias's first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AliasUse {
    /// The alias.
    pub(crate) alias: NonZeroU16,
    /// Whether the topic goes too: the first message on a topic carries it with the new alias.
    pub(crate) with_topic: bool,
}

/// Topic Alias's identifier and its two-byte value.
const ALIAS_PROPERTY_LEN: usize = 3;

mod flag {
    pub(super) const DUP: u8 = 0x08;
    pub(super) const QOS_SHIFT: u8 = 1;
    pub(super) const QOS: u8 = 0x06;
    pub(super) const RETAIN: u8 = 0x01;
}

impl Publish {
    /// A QoS 0 message, not retained, without properties.
    ///
    /// ```
    /// use mqtt_proto::packet::{Publish, QoS};
    ///
    /// let mut publish = Publish::new("sensors/kitchen/temperature".parse()?, "23.5");
    /// publish.qos = QoS::AtLeastOnce;
    /// # Ok::<(), mqtt_proto::topic::TopicError>(())
    /// ```
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Self {
            topic,
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Decodes a PUBLISH body (the packet without its fixed header), as the packet
    /// [`codec::decode`](crate::codec::decode) returns: built in the return value, because a
    /// `Packet` costs a `memcpy` per move.
    ///
    /// The topic and packet identifier are read from the slice, so that the only `Bytes`
    /// operations are one split for the topic and the payload taking what is left; a 5.0
    /// property block is read with a [`Reader`] only when it is not empty. Errors are reported
    /// in the order the fields appear.
    #[inline(always)]
    pub(crate) fn decode(
        flags: u8,
        mut body: Bytes,
        version: Version,
    ) -> Result<Option<Packet>, DecodeError> {
        let qos =
            QoS::from_u8((flags & flag::QOS) >> flag::QOS_SHIFT).ok_or(DecodeError::InvalidQoS)?;
        let dup = flags & flag::DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        let truncated = || DecodeError::Truncated(PacketType::Publish);
        let (len, rest) = body.split_first_chunk::<2>().ok_or_else(truncated)?;
        let topic_len = usize::from(u16::from_be_bytes(*len));
        let (topic, rest) = rest.split_at_checked(topic_len).ok_or_else(truncated)?;
        let special = has_nul_or_wildcard(topic);
        let (packet_id, rest) = match qos {
            QoS::AtMostOnce => (None, rest),
            _ => {
                let (id, rest) = rest.split_first_chunk::<2>().ok_or_else(truncated)?;
                let id = PacketId::new(u16::from_be_bytes(*id))
                    .ok_or(DecodeError::ZeroPacketId(PacketType::Publish))?;
                (Some(id), rest)
            }
        };
        // No properties (3.1.1, or an empty 5.0 block: a single 0) is the common case.
        let empty_properties = match version {
            Version::V3_1_1 => true,
            Version::V5 => rest.first() == Some(&0),
        };
        let fixed = body.len() - rest.len();
        let topic = body.slice(2..2 + topic_len);
        // What follows the fixed part: the properties, or past an empty block the payload.
        // Advanced before the topic is checked, so that the stores to `body` have landed by the
        // time the packet is built from it (reading it back at once stalls on them).
        body.advance(fixed + usize::from(empty_properties && version == Version::V5));
        let topic = if special {
            utf8(topic)?
        } else {
            ByteString::try_from(topic).map_err(|_| DecodeError::InvalidUtf8)?
        };
        if !empty_properties {
            return Self::decode_with_properties(flags, topic, special, packet_id, body);
        }
        if topic.is_empty() || special {
            // Without properties there is no Topic Alias to stand for an empty topic; a topic
            // that passed `utf8` with a special byte has a wildcard.
            return Err(match version {
                Version::V5 if topic.is_empty() => DecodeError::EmptyTopicWithoutAlias,
                _ => DecodeError::InvalidTopicName,
            });
        }
        Ok(Some(Packet::Publish(Publish {
            dup,
            qos,
            retain: flags & flag::RETAIN != 0,
            topic: TopicName::new_unchecked(topic),
            packet_id,
            properties: Boxed::new(),
            payload: body,
        })))
    }

    /// The rest of [`Self::decode`] for a 5.0 PUBLISH whose property block is not empty.
    #[inline(never)]
    fn decode_with_properties(
        flags: u8,
        topic: ByteString,
        special: bool,
        packet_id: Option<PacketId>,
        body: Bytes,
    ) -> Result<Option<Packet>, DecodeError> {
        let mut r = Reader::new(body, PacketType::Publish);
        let mut properties = Box::<PublishProperties>::default();
        properties.read_into(&mut r)?;
        if topic.is_empty() {
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
        } else if special {
            return Err(DecodeError::InvalidTopicName);
        }
        Ok(Some(Packet::Publish(Publish {
            dup: flags & flag::DUP != 0,
            qos: QoS::from_u8((flags & flag::QOS) >> flag::QOS_SHIFT).unwrap_or_default(),
            retain: flags & flag::RETAIN != 0,
            topic: TopicName::new_unchecked(topic),
            packet_id,
            properties: properties.into(),
            payload: r.rest(),
        })))
    }

    pub(crate) fn flags(&self) -> u8 {
        let mut flags = self.qos.as_u8() << flag::QOS_SHIFT;
        if self.dup {
            flags |= flag::DUP;
        }
        if self.retain {
            flags |= flag::RETAIN;
        }
        flags
    }

    /// The checks of the fixed header's view of the packet: a packet identifier exactly for QoS
    /// 1 and 2, DUP only with them.
    #[inline]
    fn check_flags(&self) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::DupWithQoS0);
        }
        Ok(())
    }

    /// Remaining length. Properties are left out for 3.1.1: a broker forwarding a 5.0 message to
    /// a 3.1.1 subscriber must drop them, and a 3.1.1 peer could not read them.
    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        self.check_flags()?;
        self.remaining_len(version, self.packet_id.is_some())
    }

    /// The size on the wire with `alias` applied (see [`Self::encode_with`]).
    pub(crate) fn wire_len_with(
        &self,
        version: Version,
        alias: Option<AliasUse>,
    ) -> Result<usize, EncodeError> {
        let remaining = self.sized(version, self.qos != QoS::AtMostOnce, alias)?.0;
        if remaining > MAX_VARIABLE_BYTE_INTEGER as usize {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        Ok(1 + varint_len(remaining) + remaining)
    }

    /// The size on the wire for `version`, fixed header included, counting a packet identifier
    /// for QoS 1 and 2 whether or not one is allocated yet: what a peer's Maximum Packet Size is
    /// compared with before the message is queued.
    pub(crate) fn wire_len(&self, version: Version) -> Result<usize, EncodeError> {
        self.wire_len_with(version, None)
    }

    fn remaining_len(&self, version: Version, with_packet_id: bool) -> Result<usize, EncodeError> {
        Ok(self.sized(version, with_packet_id, None)?.0)
    }

    /// The remaining length, validating the properties, and the length of the property block's
    /// body (5.0 only), so that encoding sizes it once. The topic is a [`TopicName`], valid by
    /// construction: only an empty one, without a Topic Alias to stand for it, is refused.
    #[inline]
    fn sized(
        &self,
        version: Version,
        with_packet_id: bool,
        alias: Option<AliasUse>,
    ) -> Result<(usize, Option<usize>), EncodeError> {
        let topic = self.topic.as_bytes();
        if topic.is_empty() && (version == Version::V3_1_1 || self.properties.topic_alias.is_none())
        {
            return Err(EncodeError::EmptyTopic);
        }
        // A topic name is at most 65,535 bytes: it fits its length prefix.
        let mut len = 2 + topic.len() + self.payload.len();
        if let Some(alias) = alias {
            debug_assert!(version == Version::V5 && self.properties.topic_alias.is_none());
            if !alias.with_topic {
                len -= topic.len();
            }
        }
        if with_packet_id {
            len += 2;
        }
        let properties = match version {
            Version::V3_1_1 => None,
            Version::V5 => {
                let mut body = match self.properties.get() {
                    Some(properties) => properties.body_len()?,
                    None => 0,
                };
                if alias.is_some() {
                    body += ALIAS_PROPERTY_LEN;
                }
                len += varint_len(body) + body;
                Some(body)
            }
        };
        Ok((len, properties))
    }

    /// Encodes the whole packet, fixed header included: what [`codec::encode`] does for a
    /// PUBLISH, with the same checks in the same order, but sizing the property block once
    /// rather than twice.
    ///
    /// [`codec::encode`]: crate::codec::encode
    #[inline]
    pub(crate) fn encode(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_with(version, None, buf)
    }

    /// [`Self::encode`] with a topic alias that the message does not carry: a connection applies
    /// its outbound aliases this way, without copying the message or allocating its
    /// properties. 5.0 only, and only for a message without a Topic Alias of its own.
    #[inline]
    pub(crate) fn encode_with(
        &self,
        version: Version,
        alias: Option<AliasUse>,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        self.check_flags()?;
        let (remaining, properties) = self.sized(version, self.packet_id.is_some(), alias)?;
        if remaining > MAX_VARIABLE_BYTE_INTEGER as usize {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        buf.reserve(1 + varint_len(remaining) + remaining);
        let first = (PacketType::Publish as u8) << 4 | self.flags();
        match u8::try_from(remaining) {
            // A small packet: the fixed header and the topic's length in one write (every write
            // checks the capacity again).
            Ok(short) if short < 0x80 => {
                let topic: &[u8] = match alias {
                    Some(AliasUse {
                        with_topic: false, ..
                    }) => &[],
                    _ => self.topic.as_bytes(),
                };
                #[allow(clippy::cast_possible_truncation)] // checked by `field_len`
                let topic_len = topic.len() as u16;
                buf.put_u32(u32::from(first) << 24 | u32::from(short) << 16 | u32::from(topic_len));
                buf.put_slice(topic);
                self.write_after_topic(properties, alias, buf);
            }
            _ => {
                buf.put_u8(first);
                put_varint(buf, remaining);
                self.write_body(properties, alias, buf);
            }
        }
        Ok(())
    }

    /// The body, after [`Self::body_len`] (the generic path of `codec::encode`, which
    /// [`Self::encode`] takes instead).
    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let properties = match version {
            Version::V3_1_1 => None,
            Version::V5 => Some(self.properties.body_len()?),
        };
        self.write_body(properties, None, buf);
        Ok(())
    }

    /// Writes the body; `properties` is the length of the property block's body for 5.0.
    #[inline]
    fn write_body(&self, properties: Option<usize>, alias: Option<AliasUse>, buf: &mut BytesMut) {
        match alias {
            Some(AliasUse {
                with_topic: false, ..
            }) => put_binary(buf, &[]),
            _ => put_binary(buf, self.topic.as_bytes()),
        }
        self.write_after_topic(properties, alias, buf);
    }

    /// The body after the topic.
    #[inline]
    fn write_after_topic(
        &self,
        properties: Option<usize>,
        alias: Option<AliasUse>,
        buf: &mut BytesMut,
    ) {
        if let Some(packet_id) = self.packet_id {
            buf.put_u16(packet_id.get());
        }
        match (properties, alias) {
            // An empty block, the common case, without a call.
            (Some(0), _) => buf.put_u8(0),
            (Some(len), None) => self.properties.write_with_len(len, buf),
            (Some(len), Some(alias)) => {
                put_varint(buf, len);
                buf.put_u8(TOPIC_ALIAS);
                buf.put_u16(alias.alias.get());
                if let Some(properties) = self.properties.get() {
                    properties.write_all(buf);
                }
            }
            (None, _) => {}
        }
        buf.put_slice(&self.payload);
    }
}
