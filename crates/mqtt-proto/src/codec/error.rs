//! Errors of the codec: what the peer sent wrong ([`DecodeError`]) and what the local caller asked
//! for that cannot be encoded ([`EncodeError`]).

use crate::ReasonCode;
use crate::packet::PacketType;

/// The peer sent bytes that are not a valid MQTT packet.
///
/// Every variant is fatal for the connection: the bytes after a bad packet cannot be trusted.
/// A connection state machine reports it once and, on MQTT 5.0, first sends a DISCONNECT carrying
/// [`DecodeError::reason_code`] (or a CONNACK with it when the bad packet was the CONNECT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A Variable Byte Integer used more than four bytes, or more bytes than its value needs
    /// (MQTT-1.5.5-1). Close the connection.
    #[error("variable byte integer longer than four bytes or not in its shortest form")]
    MalformedVariableByteInteger,
    /// The packet is larger than the maximum packet size the caller allows. Its remaining length
    /// was rejected as soon as the fixed header was read, before any buffer grew. Close the
    /// connection (v5: DISCONNECT 0x95 Packet too large).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The size of the whole packet, fixed header included.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// The packet type nibble is 0, or 15 (AUTH) on a 3.1.1 connection. Close the connection.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The flags of the fixed header are not the ones the packet type requires
    /// (MQTT-2.1.3-1, MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1). Close the connection.
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    InvalidFixedHeaderFlags {
        /// The packet whose header was wrong.
        packet: PacketType,
        /// The four flag bits received.
        flags: u8,
    },
    /// A QoS field held the value 3 (MQTT-3.3.1-4). Close the connection.
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// A QoS 0 PUBLISH had the DUP flag set (MQTT-3.3.1-2). Close the connection.
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// A packet that needs a packet identifier carried 0 (MQTT-2.2.1-3). Close the connection.
    #[error("packet identifier 0 in {0}")]
    ZeroPacketId(PacketType),
    /// A string was not well-formed UTF-8, or encoded a UTF-16 surrogate (MQTT-1.5.4-1).
    /// Close the connection.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string contained U+0000 (MQTT-1.5.4-2). Close the connection.
    #[error("string contains the null character U+0000")]
    NullCharacter,
    /// A PUBLISH or will topic name contained `+` or `#` (MQTT-3.3.2-2), or was empty on 3.1.1
    /// (MQTT-4.7.3-1). Close the connection (v5: DISCONNECT 0x90 Topic Name invalid).
    #[error("invalid topic name")]
    InvalidTopicName,
    /// A v5 PUBLISH had an empty topic name and no Topic Alias (section 3.3.2.1). Close the
    /// connection (DISCONNECT 0x82 Protocol Error).
    #[error("empty topic name without a topic alias")]
    EmptyTopicWithoutAlias,
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is not well formed: misplaced wildcards
    /// (MQTT-4.7.1-1, MQTT-4.7.1-2), empty (MQTT-4.7.3-1) or a bad shared subscription
    /// (MQTT-4.8.2-1, MQTT-4.8.2-2). Close the connection.
    #[error("invalid topic filter")]
    InvalidTopicFilter,
    /// A property identifier is not defined by MQTT 5.0. Close the connection.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property appeared in a packet that may not carry it. Close the connection.
    #[error("property {id:#04x} is not allowed in {packet}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet (or, for will properties, the CONNECT) that carried it.
        packet: PacketType,
    },
    /// A property that may appear once appeared twice. Close the connection
    /// (DISCONNECT 0x82 Protocol Error).
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// A property had a value the specification forbids, such as a Receive Maximum of 0 or a
    /// Maximum QoS of 2. Close the connection (DISCONNECT 0x82 Protocol Error).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// Reserved bits of the subscription options were set (MQTT-3.8.3-5), or its QoS was 3.
    /// Close the connection (DISCONNECT 0x81 Malformed Packet for reserved bits, 0x82 Protocol
    /// Error for a QoS of 3, section 3.8.3.1).
    #[error("reserved bits set in subscription options {0:#04x}")]
    InvalidSubscriptionOptions(u8),
    /// Retain Handling had the value 3 (section 3.8.3.1). Close the connection
    /// (DISCONNECT 0x82 Protocol Error).
    #[error("retain handling 3 is not valid")]
    InvalidRetainHandling,
    /// A shared subscription asked for No Local (MQTT-3.8.3-4). Close the connection
    /// (DISCONNECT 0x82 Protocol Error).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A SUBSCRIBE, UNSUBSCRIBE or SUBACK carried no entries (MQTT-3.8.3-2, MQTT-3.10.3-2).
    /// Close the connection (DISCONNECT 0x82 Protocol Error).
    #[error("{0} carries no topic filters")]
    EmptyPayload(PacketType),
    /// The CONNECT protocol name was not `MQTT` (MQTT-3.1.2-1). Answer with CONNACK
    /// 0x84 Unsupported Protocol Version (or 3.1.1 return code 1) and close.
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// The CONNECT protocol level is neither 4 (3.1.1) nor 5 (5.0) (MQTT-3.1.2-2). Answer with
    /// CONNACK 0x84 Unsupported Protocol Version (or 3.1.1 return code 1) and close.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// The reserved bit of the CONNECT flags was set (MQTT-3.1.2-3). Close the connection.
    #[error("reserved CONNECT flag set")]
    InvalidConnectFlags,
    /// Will QoS or Will Retain were set without the Will Flag (MQTT-3.1.2-11, MQTT-3.1.2-13),
    /// or the Will QoS was 3 (MQTT-3.1.2-12). Close the connection.
    #[error("invalid will flags")]
    InvalidWillFlags,
    /// A 3.1.1 CONNECT had the Password Flag without the User Name Flag (3.1.1 MQTT-3.1.2-22).
    /// Close the connection.
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// Reserved bits of the CONNACK acknowledge flags were set (MQTT-3.2.2-1). Close the
    /// connection.
    #[error("reserved CONNACK flags set")]
    InvalidConnAckFlags,
    /// A CONNACK with an error code claimed a session was present (MQTT-3.2.2-6). Close the
    /// connection.
    #[error("session present with an error reason code")]
    SessionPresentOnError,
    /// CONNECT or CONNACK carried Authentication Data without an Authentication Method
    /// (section 3.1.2.11.10). Close the connection (0x82 Protocol Error).
    #[error("authentication data without an authentication method")]
    AuthenticationDataWithoutMethod,
    /// A reason code (or 3.1.1 return code) that this packet may not carry. Close the connection.
    #[error("reason code {code:#04x} is not valid in {packet}")]
    InvalidReasonCode {
        /// The packet that carried it.
        packet: PacketType,
        /// The value received.
        code: u8,
    },
    /// The packet ended before a field it announced (a length prefix larger than what is left).
    /// Close the connection.
    #[error("{0} is truncated")]
    Truncated(PacketType),
    /// The packet's contents ended before its remaining length did. Close the connection.
    #[error("{0} has trailing bytes after its contents")]
    TrailingBytes(PacketType),
}

impl DecodeError {
    /// The MQTT 5.0 reason code that a DISCONNECT (or CONNACK, for a bad CONNECT) reporting this
    /// error should carry.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            InvalidTopicName => ReasonCode::TopicNameInvalid,
            InvalidProtocolName | UnsupportedProtocolVersion(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            // A Maximum QoS of 3 is a Protocol Error (section 3.8.3.1); reserved bits are not.
            InvalidSubscriptionOptions(options) if options & 0xC3 == 0x03 => {
                ReasonCode::ProtocolError
            }
            EmptyTopicWithoutAlias
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | EmptyPayload(_)
            | SessionPresentOnError
            | AuthenticationDataWithoutMethod => ReasonCode::ProtocolError,
            MalformedVariableByteInteger
            | ReservedPacketType(_)
            | InvalidFixedHeaderFlags { .. }
            | InvalidQoS
            | DupWithQoS0
            | ZeroPacketId(_)
            | InvalidUtf8
            | NullCharacter
            | InvalidTopicFilter
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidSubscriptionOptions(_)
            | InvalidConnectFlags
            | InvalidWillFlags
            | PasswordWithoutUsername
            | InvalidConnAckFlags
            | InvalidReasonCode { .. }
            | Truncated(_)
            | TrailingBytes(_) => ReasonCode::MalformedPacket,
        }
    }
}

/// What a packet carried that only MQTT 5.0 can express ([`EncodeError::NotInV311`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum V5Only {
    /// Properties, in a packet of this type.
    #[error("{0} properties")]
    Properties(PacketType),
    /// Will properties in a CONNECT.
    #[error("will properties")]
    WillProperties,
    /// A password without a user name in a CONNECT (MQTT-3.1.2-22).
    #[error("a password without a user name")]
    PasswordWithoutUsername,
    /// A reason code other than Success, in a packet of this type.
    #[error("a {0} reason code other than Success")]
    ReasonCode(PacketType),
    /// Subscription options other than the maximum QoS.
    #[error("subscription options other than QoS")]
    SubscriptionOptions,
    /// The AUTH packet.
    #[error("the AUTH packet")]
    Auth,
    /// Request/response: a Response Topic and Correlation Data.
    #[error("request/response")]
    RequestResponse,
}

/// The caller asked to encode something that has no valid wire form.
///
/// Nothing was written to the buffer. The connection is unaffected: fix the packet and try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet's remaining length would exceed 268,435,455 bytes, the most a Variable Byte
    /// Integer can express. Send a smaller payload.
    #[error("packet remaining length {0} exceeds 268,435,455 bytes")]
    PacketTooLarge(usize),
    /// A string or binary field is longer than 65,535 bytes. Shorten it.
    #[error("field of {0} bytes exceeds the 65,535 byte limit")]
    FieldTooLong(usize),
    /// A QoS 1 or 2 PUBLISH had no packet identifier, or a QoS 0 PUBLISH had one. Allocate a
    /// packet identifier for QoS 1 and 2 only.
    #[error("packet identifier must be present exactly for QoS 1 and 2")]
    PacketIdMismatch,
    /// DUP was set on a QoS 0 PUBLISH (MQTT-3.3.1-2). Clear it.
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// A SUBSCRIBE, UNSUBSCRIBE or SUBACK had no entries. Add at least one.
    #[error("{0} must carry at least one entry")]
    EmptyPayload(PacketType),
    /// The packet carries something only MQTT 5.0 can express (properties, a reason code, an
    /// option, the AUTH packet). Leave it out for a 3.1.1 peer.
    #[error("{0} cannot be expressed in MQTT 3.1.1")]
    NotInV311(V5Only),
    /// The version passed to `encode` differs from the CONNECT's own protocol version.
    #[error("CONNECT protocol version differs from the version requested")]
    VersionMismatch,
    /// The reason code is not one this packet may carry (table 2-6). Use one from its list.
    #[error("reason code {code} is not valid in {packet}")]
    InvalidReasonCode {
        /// The packet being encoded.
        packet: PacketType,
        /// The reason code given.
        code: ReasonCode,
    },
    /// A property value is out of its range (a Subscription Identifier above 268,435,455).
    #[error("value of property {0:#04x} is out of range")]
    PropertyOutOfRange(u8),
    /// The empty [`TopicName`](crate::topic::TopicName) where a topic is required: on a will,
    /// on a 3.1.1 PUBLISH, or on a 5.0 PUBLISH without a Topic Alias to stand for it.
    #[error("empty topic name without a topic alias")]
    EmptyTopic,
    /// A string contained U+0000 (MQTT-1.5.4-2). Remove it.
    #[error("string contains the null character U+0000")]
    NullCharacter,
    /// A shared subscription asked for No Local (MQTT-3.8.3-4). Clear it.
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A CONNACK with an error reason code claimed a session (MQTT-3.2.2-6). Clear it.
    #[error("session present with an error reason code")]
    SessionPresentOnError,
    /// Authentication Data without an Authentication Method (section 3.1.2.11.10). Set both.
    #[error("authentication data without an authentication method")]
    AuthenticationDataWithoutMethod,
}
