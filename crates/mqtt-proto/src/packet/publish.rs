//! PUBLISH (section 3.3).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{PacketId, PacketType, PublishProperties, QoS, Version};
use crate::codec::wire::{Reader, check_topic, field_len, put_binary};
use crate::codec::{DecodeError, EncodeError};
use crate::topic;

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

    pub(crate) fn read(flags: u8, r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let qos =
            QoS::from_u8((flags & flag::QOS) >> flag::QOS_SHIFT).ok_or(DecodeError::InvalidQoS)?;
        let dup = flags & flag::DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId(PacketType::Publish))?)
        };
        let properties = match version {
            Version::V5 => PublishProperties::read(r)?,
            Version::V3_1_1 => PublishProperties::default(),
        };
        if topic.is_empty() {
            if version == Version::V3_1_1 {
                return Err(DecodeError::InvalidTopicName);
            }
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
        } else if !topic::is_valid_topic_name(&topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        Ok(Publish {
            dup,
            qos,
            retain: flags & flag::RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
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
        if self.topic.is_empty()
            && (version == Version::V3_1_1 || self.properties.topic_alias.is_none())
        {
            return Err(EncodeError::EmptyTopic);
        }
        if !self.topic.is_empty() {
            check_topic(topic::check_topic_name(&self.topic), &self.topic)?;
        }
        let mut len = field_len(self.topic.as_bytes())? + self.payload.len();
        if self.packet_id.is_some() {
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
