//! The MQTT control packets of 3.1.1 and 5.0, as one type tree.
//!
//! Data that only MQTT 5.0 can carry sits in typed property structs (one per packet, every field
//! an `Option` or a list) and in [`ReasonCode`](crate::ReasonCode)s; a 3.1.1 packet simply leaves
//! them empty. Strings are [`ByteString`]s and binary fields [`Bytes`]: after decoding, both are
//! slices of the read buffer, not copies.

mod ack;
mod auth;
mod connect;
mod disconnect;
mod properties;
mod publish;
mod subscribe;

use std::num::NonZeroU16;

pub use bytes::Bytes;
pub use bytestring::ByteString;

pub use crate::topic::{TopicFilter, TopicName};
pub use ack::{PubAck, PubComp, PubRec, PubRel, SubAck, UnsubAck};
pub use auth::Auth;
pub use connect::{ConnAck, Connect, Will};
pub use disconnect::Disconnect;
pub use properties::{
    AckProperties, AuthProperties, Boxed, ConnAckProperties, ConnectProperties,
    DisconnectProperties, PayloadFormat, PropertySet, PublishProperties, SubscribeProperties,
    SubscriptionId, UnsubscribeProperties, UserProperty, WillProperties,
};
pub(crate) use publish::AliasUse;
pub use publish::Publish;
pub use subscribe::{RetainHandling, Subscribe, Subscription, SubscriptionOptions, Unsubscribe};

/// A packet identifier (section 2.2.1): never 0 in a packet that carries one.
pub type PacketId = NonZeroU16;

/// The protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V3_1_1,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Version::V3_1_1 => 4,
            Version::V5 => 5,
        }
    }

    /// The version for a CONNECT protocol level, if supported.
    pub fn from_level(level: u8) -> Option<Version> {
        match level {
            4 => Some(Version::V3_1_1),
            5 => Some(Version::V5),
            _ => None,
        }
    }
}

/// Quality of service of a message (section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: at most once, no acknowledgement.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once, acknowledged by PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: exactly once, the PUBREC / PUBREL / PUBCOMP exchange.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a two-bit value; 3 is not a QoS.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The numeric value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The type of a control packet: the high nibble of its first byte (section 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// CONNECT (1).
    Connect = 1,
    /// CONNACK (2).
    ConnAck = 2,
    /// PUBLISH (3).
    Publish = 3,
    /// PUBACK (4).
    PubAck = 4,
    /// PUBREC (5).
    PubRec = 5,
    /// PUBREL (6).
    PubRel = 6,
    /// PUBCOMP (7).
    PubComp = 7,
    /// SUBSCRIBE (8).
    Subscribe = 8,
    /// SUBACK (9).
    SubAck = 9,
    /// UNSUBSCRIBE (10).
    Unsubscribe = 10,
    /// UNSUBACK (11).
    UnsubAck = 11,
    /// PINGREQ (12).
    PingReq = 12,
    /// PINGRESP (13).
    PingResp = 13,
    /// DISCONNECT (14).
    Disconnect = 14,
    /// AUTH (15, MQTT 5.0 only).
    Auth = 15,
}

impl PacketType {
    /// The packet's name as the specification spells it: `"CONNECT"`, `"PUBACK"`, ….
    pub fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }

    /// The packet type for a nibble; 0 is reserved.
    pub fn from_u8(value: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match value {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }
}

/// Shows the [`PacketType::name`].
impl std::fmt::Display for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One MQTT control packet, of either protocol version.
///
/// Size: 104 bytes on 64-bit targets, set by [`Disconnect`]. A [`Publish`] is 80: its
/// properties are [`Boxed`], allocated only when one is set. CONNECT, CONNACK and AUTH, rare and
/// larger, are boxed. The codec builds a decoded PUBLISH directly in
/// [`codec::decode`](crate::codec::decode)'s return value so that it is not copied on the way
/// out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT: a client asks to connect.
    Connect(Box<Connect>),
    /// CONNACK: the server's answer to CONNECT.
    ConnAck(Box<ConnAck>),
    /// PUBLISH: an application message.
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubAck),
    /// PUBREC: QoS 2, part 1.
    PubRec(PubRec),
    /// PUBREL: QoS 2, part 2.
    PubRel(PubRel),
    /// PUBCOMP: QoS 2, part 3.
    PubComp(PubComp),
    /// SUBSCRIBE: a client subscribes.
    Subscribe(Subscribe),
    /// SUBACK: the server's answer to SUBSCRIBE.
    SubAck(SubAck),
    /// UNSUBSCRIBE: a client unsubscribes.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK: the server's answer to UNSUBSCRIBE.
    UnsubAck(UnsubAck),
    /// PINGREQ: keep-alive request.
    PingReq,
    /// PINGRESP: keep-alive response.
    PingResp,
    /// DISCONNECT: the connection is closing (in 3.1.1 only from the client).
    Disconnect(Disconnect),
    /// AUTH: enhanced authentication exchange (MQTT 5.0 only).
    Auth(Box<Auth>),
}

impl Packet {
    /// This packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

macro_rules! impl_from_packet {
    ($($variant:ident($ty:ty) $(boxed)?),* $(,)?) => {
        $(impl From<$ty> for Packet {
            fn from(packet: $ty) -> Packet {
                Packet::$variant(packet.into())
            }
        })*
    };
}

impl_from_packet!(
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    Disconnect(Disconnect),
    Auth(Auth),
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The size documented on [`Packet`]: a change should be deliberate.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn packet_size_is_as_documented() {
        assert_eq!(std::mem::size_of::<Packet>(), 104);
        assert_eq!(std::mem::size_of::<Publish>(), 80);
        assert_eq!(std::mem::size_of::<PublishProperties>(), 160);
    }

    /// An encoding error is two words: a change should be deliberate.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn encode_result_is_two_words() {
        use crate::codec::EncodeError;
        assert_eq!(std::mem::size_of::<Result<(), EncodeError>>(), 16);
        assert_eq!(std::mem::size_of::<Result<usize, EncodeError>>(), 16);
    }

    #[test]
    fn packet_types_display_as_the_specification_names_them() {
        assert_eq!(PacketType::ConnAck.to_string(), "CONNACK");
        // Each name is its variant's, in capitals ("PubAck" is "PUBACK").
        for nibble in 1..=15 {
            let packet = PacketType::from_u8(nibble).unwrap();
            assert_eq!(packet.name(), format!("{packet:?}").to_uppercase());
            assert_eq!(packet.to_string(), packet.name());
        }
    }
}
