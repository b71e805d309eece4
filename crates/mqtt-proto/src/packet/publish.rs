//! PUBLISH (section 3.3).

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{PacketId, PacketType, PublishProperties, QoS, Version};
use crate::codec::wire::{
    MAX_VARIABLE_BYTE_INTEGER, Put, Reader, check_topic_name, field_len, put_binary, varint_len,
};
use crate::codec::{DecodeError, EncodeError};

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
    /// Topic Name. Empty in 5.0 only when a Topic Alias stands for it.
    pub topic: ByteString,
    /// Packet Identifier: present exactly for QoS 1 and 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (5.0 only; dropped when encoding for 3.1.1, see [`Publish`]).
    pub properties: PublishProperties,
    /// The application message.
    pub payload: Bytes,
}

mod flag {
    pub(super) const DUP: u8 = 0x08;
    pub(super) const QOS_SHIFT: u8 = 1;
    pub(super) const QOS: u8 = 0x06;
    pub(super) const RETAIN: u8 = 0x01;
}

impl Publish {
    /// A QoS 0 message, not retained, without properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Reads a PUBLISH body into `self`, a default `Publish`: filled in place, because moving a
    /// finished `Publish` costs a `memcpy` of its 232 bytes.
    #[inline(always)]
    pub(crate) fn read_into(
        &mut self,
        flags: u8,
        r: &mut Reader,
        version: Version,
    ) -> Result<(), DecodeError> {
        self.qos =
            QoS::from_u8((flags & flag::QOS) >> flag::QOS_SHIFT).ok_or(DecodeError::InvalidQoS)?;
        self.dup = flags & flag::DUP != 0;
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        self.retain = flags & flag::RETAIN != 0;
        let valid_topic;
        (self.topic, valid_topic) = r.topic_name()?;
        if self.qos != QoS::AtMostOnce {
            self.packet_id = Some(
                PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId(PacketType::Publish))?,
            );
        }
        if version == Version::V5 {
            self.properties.read_into(r)?;
        }
        if self.topic.is_empty() {
            if version == Version::V3_1_1 {
                return Err(DecodeError::InvalidTopicName);
            }
            if self.properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
        } else if !valid_topic {
            return Err(DecodeError::InvalidTopicName);
        }
        self.payload = r.rest();
        Ok(())
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

    /// Remaining length. Properties are left out for 3.1.1: a broker forwarding a 5.0 message to
    /// a 3.1.1 subscriber must drop them, and a 3.1.1 peer could not read them.
    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::DupWithQoS0);
        }
        self.remaining_len(version, self.packet_id.is_some())
    }

    /// The size on the wire for `version`, fixed header included, counting a packet identifier
    /// for QoS 1 and 2 whether or not one is allocated yet: what a peer's Maximum Packet Size is
    /// compared with before the message is queued.
    pub(crate) fn wire_len(&self, version: Version) -> Result<usize, EncodeError> {
        let remaining = self.remaining_len(version, self.qos != QoS::AtMostOnce)?;
        if remaining > MAX_VARIABLE_BYTE_INTEGER as usize {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        Ok(1 + varint_len(remaining) + remaining)
    }

    fn remaining_len(&self, version: Version, with_packet_id: bool) -> Result<usize, EncodeError> {
        if self.topic.is_empty()
            && (version == Version::V3_1_1 || self.properties.topic_alias.is_none())
        {
            return Err(EncodeError::EmptyTopic);
        }
        if !self.topic.is_empty() {
            check_topic_name(&self.topic)?;
        }
        let mut len = field_len(self.topic.as_bytes())? + self.payload.len();
        if with_packet_id {
            len += 2;
        }
        if version == Version::V5 {
            len += self.properties.block_len()?;
        }
        Ok(len)
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_binary(buf, self.topic.as_bytes());
        if let Some(packet_id) = self.packet_id {
            buf.put_u16(packet_id.get());
        }
        if version == Version::V5 {
            self.properties.write(self.properties.body_len()?, buf);
        }
        buf.put_slice(&self.payload);
        Ok(())
    }
}
