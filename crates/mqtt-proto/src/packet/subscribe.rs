//! SUBSCRIBE (section 3.8) and UNSUBSCRIBE (section 3.10).

use bytes::BytesMut;

use super::{PacketId, PacketType, QoS, SubscribeProperties, UnsubscribeProperties, Version};
use crate::codec::wire::{Put, Reader, put_binary};
use crate::codec::{DecodeError, EncodeError, V5Only};
use crate::topic::TopicFilter;

/// Retain Handling (section 3.8.3.1): whether retained messages are sent when subscribing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe,
    /// 1: send them only if the subscription did not already exist.
    SendAtSubscribeIfNew,
    /// 2: do not send them.
    DoNotSend,
}

/// The Subscription Options byte of one topic filter (section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the server may use to deliver matching messages.
    pub qos: QoS,
    /// No Local (5.0): do not send the client its own publications.
    pub no_local: bool,
    /// Retain As Published (5.0): keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and every 5.0 option at its default.
    pub fn new(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }

    pub(crate) fn from_byte(byte: u8, version: Version) -> Result<Self, DecodeError> {
        let reserved = match version {
            Version::V3_1_1 => 0b1111_1100,
            Version::V5 => 0b1100_0000,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(byte));
        }
        let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::InvalidSubscriptionOptions(byte))?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(Self {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    pub(crate) fn to_byte(self, version: Version) -> Result<u8, EncodeError> {
        let extended = u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | match self.retain_handling {
                RetainHandling::SendAtSubscribe => 0,
                RetainHandling::SendAtSubscribeIfNew => 1,
                RetainHandling::DoNotSend => 2,
            } << 4;
        if version == Version::V3_1_1 && extended != 0 {
            return Err(EncodeError::NotInV311(V5Only::SubscriptionOptions));
        }
        Ok(self.qos.as_u8() | extended)
    }
}

/// One topic filter of a SUBSCRIBE and its options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// The topic filter, possibly a shared subscription (`$share/{group}/{filter}`).
    pub filter: TopicFilter,
    /// Its options.
    pub options: SubscriptionOptions,
}

impl Subscription {
    /// A subscription to `filter` at `qos` with default options.
    ///
    /// ```
    /// use mqtt_proto::packet::{QoS, Subscription, TopicFilter};
    ///
    /// let subscription = Subscription::new(TopicFilter::new("sensors/+/temperature")?, QoS::AtLeastOnce);
    /// assert_eq!(subscription.filter, "sensors/+/temperature");
    /// # Ok::<(), mqtt_proto::topic::TopicError>(())
    /// ```
    pub fn new(filter: TopicFilter, qos: QoS) -> Self {
        Self {
            filter,
            options: SubscriptionOptions::new(qos),
        }
    }
}

/// SUBSCRIBE: a client subscribes to one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (5.0 only).
    pub properties: SubscribeProperties,
    /// The topic filters, at least one.
    pub filters: Vec<Subscription>,
}

fn read_packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId(r.packet()))
}

impl Subscribe {
    pub(crate) const FLAGS: u8 = 0b0010;

    pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = match version {
            Version::V5 => SubscribeProperties::read(r)?,
            Version::V3_1_1 => SubscribeProperties::default(),
        };
        if r.is_empty() {
            return Err(DecodeError::EmptyPayload(PacketType::Subscribe));
        }
        let mut filters = Vec::with_capacity(r.count_fields(1));
        while !r.is_empty() {
            let filter = r.topic_filter()?;
            let options = SubscriptionOptions::from_byte(r.u8()?, version)?;
            if options.no_local && filter.is_shared() {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push(Subscription { filter, options });
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Subscribe));
        }
        let mut len = 2;
        match version {
            Version::V5 => len += self.properties.block_len()?,
            Version::V3_1_1 if !self.properties.is_empty() => {
                return Err(EncodeError::NotInV311(V5Only::Properties(
                    PacketType::Subscribe,
                )));
            }
            Version::V3_1_1 => {}
        }
        for subscription in &self.filters {
            subscription.options.to_byte(version)?;
            if subscription.options.no_local && subscription.filter.is_shared() {
                return Err(EncodeError::NoLocalOnSharedSubscription);
            }
            // A `TopicFilter` is valid, so it fits a length-prefixed field.
            len += 2 + subscription.filter.len() + 1;
        }
        Ok(len)
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version == Version::V5 {
            self.properties.write(buf);
        }
        for subscription in &self.filters {
            put_binary(buf, subscription.filter.as_bytes());
            buf.put_u8(subscription.options.to_byte(version)?);
        }
        Ok(())
    }
}

/// UNSUBSCRIBE: a client removes one or more subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (5.0 only).
    pub properties: UnsubscribeProperties,
    /// The topic filters, at least one.
    pub filters: Vec<TopicFilter>,
}

impl Unsubscribe {
    pub(crate) const FLAGS: u8 = 0b0010;

    pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = match version {
            Version::V5 => UnsubscribeProperties::read(r)?,
            Version::V3_1_1 => UnsubscribeProperties::default(),
        };
        if r.is_empty() {
            return Err(DecodeError::EmptyPayload(PacketType::Unsubscribe));
        }
        let mut filters = Vec::with_capacity(r.count_fields(0));
        while !r.is_empty() {
            filters.push(r.topic_filter()?);
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Unsubscribe));
        }
        let mut len = 2;
        match version {
            Version::V5 => len += self.properties.block_len()?,
            Version::V3_1_1 if !self.properties.is_empty() => {
                return Err(EncodeError::NotInV311(V5Only::Properties(
                    PacketType::Unsubscribe,
                )));
            }
            Version::V3_1_1 => {}
        }
        for filter in &self.filters {
            len += 2 + filter.len();
        }
        Ok(len)
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version == Version::V5 {
            self.properties.write(buf);
        }
        for filter in &self.filters {
            put_binary(buf, filter.as_bytes());
        }
        Ok(())
    }
}
