//! CONNECT (section 3.1) and CONNACK (section 3.2).

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{ConnAckProperties, ConnectProperties, PacketType, QoS, Version, WillProperties};
use crate::ReasonCode;
use crate::codec::wire::{Put, Reader, field_len, is_valid_topic_name, put_binary, string_len};
use crate::codec::{DecodeError, EncodeError, V5Only};
use crate::reason::ReasonContext;
use crate::topic::TopicName;

/// Bit 7 of the protocol level: the client is a bridge (see [`Connect::bridge`]).
const BRIDGE_BIT: u8 = 0x80;

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks; it decides how every later packet is encoded.
    pub protocol_version: Version,
    /// Clean Start (5.0) or Clean Session (3.1.1): begin a new session.
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// Client Identifier; may be empty, asking the server to assign one.
    pub client_id: ByteString,
    /// The Will Message, if any.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<ByteString>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0 only).
    pub properties: ConnectProperties,
    /// The client is a bridge (another broker): bit 7 of the protocol level is set, as
    /// mosquitto's `try_private` sends it (level 0x84 or 0x85). This broker then sends it none
    /// of its own messages back and keeps their retain flag, as mosquitto does, whatever its
    /// subscriptions ask: a bridge's loop protection under 3.1.1, which has no No Local. Not in
    /// the OASIS standard; a server that does not know it refuses the protocol level.
    pub bridge: bool,
}

/// A Will Message: published by the server when the connection ends abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Topic, checked when it was made; it may not be empty.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (5.0 only).
    pub properties: WillProperties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present: the server resumed a session it kept for this client.
    pub session_present: bool,
    /// The outcome; 3.1.1 return codes are mapped onto reason codes
    /// (see [`ReasonCode::from_v311_connack`]).
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: ConnAckProperties,
}

const PROTOCOL_NAME: &[u8] = b"MQTT";

mod flag {
    pub(super) const RESERVED: u8 = 0x01;
    pub(super) const CLEAN_START: u8 = 0x02;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_QOS: u8 = 0x18;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const USERNAME: u8 = 0x80;
}

impl Connect {
    /// A CONNECT with the given version and client identifier, clean start, a 60 second keep
    /// alive and nothing else.
    pub fn new(protocol_version: Version, client_id: impl Into<ByteString>) -> Self {
        Self {
            protocol_version,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            bridge: false,
        }
    }

    /// Reads a CONNECT into the box it is returned in: its fields (432 bytes, 144 of them the
    /// will's properties) are filled where they stay, rather than built on the stack and copied
    /// into place one level at a time.
    pub(crate) fn read(r: &mut Reader) -> Result<Box<Self>, DecodeError> {
        if !r.binary_is(PROTOCOL_NAME)? {
            return Err(DecodeError::InvalidProtocolName);
        }
        let level = r.u8()?;
        let bridge = level & BRIDGE_BIT != 0;
        let protocol_version = Version::from_level(level & !BRIDGE_BIT)
            .ok_or(DecodeError::UnsupportedProtocolVersion(level))?;
        let flags = r.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::InvalidConnectFlags);
        }
        let will_qos = (flags & flag::WILL_QOS) >> flag::WILL_QOS_SHIFT;
        let has_will = flags & flag::WILL != 0;
        if !has_will && (will_qos != 0 || flags & flag::WILL_RETAIN != 0) {
            return Err(DecodeError::InvalidWillFlags);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillFlags)?;
        let has_password = flags & flag::PASSWORD != 0;
        let has_username = flags & flag::USERNAME != 0;
        if protocol_version == Version::V3_1_1 && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let mut connect = Box::new(Connect {
            protocol_version,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            client_id: ByteString::new(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            bridge,
        });
        let properties = &mut connect.properties;
        if protocol_version == Version::V5 {
            properties.read_into(r)?;
        }
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        connect.client_id = r.string()?;
        if has_will {
            let will = connect.will.insert(Will {
                topic: TopicName::empty(),
                payload: Bytes::new(),
                qos: will_qos,
                retain: flags & flag::WILL_RETAIN != 0,
                properties: WillProperties::default(),
            });
            if protocol_version == Version::V5 {
                will.properties.read_into(r)?;
            }
            let topic = r.string()?;
            if !is_valid_topic_name(topic.as_bytes()) {
                return Err(DecodeError::InvalidTopicName);
            }
            will.topic = TopicName::new_unchecked(topic);
            will.payload = r.binary()?;
        }
        if has_username {
            connect.username = Some(r.string()?);
        }
        if has_password {
            connect.password = Some(r.binary()?);
        }
        Ok(connect)
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if version != self.protocol_version {
            return Err(EncodeError::VersionMismatch);
        }
        let v5 = version == Version::V5;
        if !v5 {
            if !self.properties.is_empty() {
                return Err(EncodeError::NotInV311(V5Only::Properties(
                    PacketType::Connect,
                )));
            }
            if self.password.is_some() && self.username.is_none() {
                return Err(EncodeError::NotInV311(V5Only::PasswordWithoutUsername));
            }
        }
        // Protocol name, level, flags, keep alive.
        let mut len = 2 + PROTOCOL_NAME.len() + 1 + 1 + 2;
        if v5 {
            len += self.properties.block_len()?;
        }
        if self.properties.authentication_data.is_some()
            && self.properties.authentication_method.is_none()
        {
            return Err(EncodeError::AuthenticationDataWithoutMethod);
        }
        len += string_len(&self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.block_len()?;
            } else if !will.properties.is_empty() {
                return Err(EncodeError::NotInV311(V5Only::WillProperties));
            }
            // A topic name needs no check but that it is not the empty one.
            if will.topic.is_empty() {
                return Err(EncodeError::EmptyTopic);
            }
            len += 2 + will.topic.len() + field_len(&will.payload)?;
        }
        if let Some(username) = &self.username {
            len += string_len(username)?;
        }
        if let Some(password) = &self.password {
            len += field_len(password)?;
        }
        Ok(len)
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_binary(buf, PROTOCOL_NAME);
        buf.put_u8(version.level() | if self.bridge { BRIDGE_BIT } else { 0 });
        let mut flags = 0;
        if self.clean_start {
            flags |= flag::CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= flag::WILL | (will.qos.as_u8() << flag::WILL_QOS_SHIFT);
            if will.retain {
                flags |= flag::WILL_RETAIN;
            }
        }
        if self.password.is_some() {
            flags |= flag::PASSWORD;
        }
        if self.username.is_some() {
            flags |= flag::USERNAME;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        if version == Version::V5 {
            self.properties.write(buf);
        }
        put_binary(buf, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if version == Version::V5 {
                will.properties.write(buf);
            }
            put_binary(buf, will.topic.as_bytes());
            put_binary(buf, &will.payload);
        }
        if let Some(username) = &self.username {
            put_binary(buf, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_binary(buf, password);
        }
        Ok(())
    }
}

impl Will {
    /// A will with the given topic, payload and QoS, not retained, without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>, qos: QoS) -> Self {
        Self {
            topic,
            payload: payload.into(),
            qos,
            retain: false,
            properties: WillProperties::default(),
        }
    }
}

impl ConnAck {
    pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & !0x01 != 0 {
            return Err(DecodeError::InvalidConnAckFlags);
        }
        let code = r.u8()?;
        let invalid = DecodeError::InvalidReasonCode {
            packet: r.packet(),
            code,
        };
        let (reason_code, properties) = match version {
            Version::V3_1_1 => (
                ReasonCode::from_v311_connack(code).ok_or(invalid)?,
                ConnAckProperties::default(),
            ),
            Version::V5 => {
                let reason = ReasonCode::from_u8(code)
                    .filter(|reason| reason.allowed_in(ReasonContext::ConnAck))
                    .ok_or(invalid)?;
                (reason, ConnAckProperties::read(r)?)
            }
        };
        let session_present = flags & 0x01 != 0;
        if session_present && reason_code.is_error() {
            return Err(DecodeError::SessionPresentOnError);
        }
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    fn code(&self, version: Version) -> Result<u8, EncodeError> {
        let invalid = EncodeError::InvalidReasonCode {
            packet: super::PacketType::ConnAck,
            code: self.reason_code,
        };
        match version {
            Version::V3_1_1 => self.reason_code.to_v311_connack().ok_or(invalid),
            Version::V5 if self.reason_code.allowed_in(ReasonContext::ConnAck) => {
                Ok(self.reason_code.as_u8())
            }
            Version::V5 => Err(invalid),
        }
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if self.session_present && self.reason_code.is_error() {
            return Err(EncodeError::SessionPresentOnError);
        }
        self.code(version)?;
        match version {
            Version::V3_1_1 if !self.properties.is_empty() => Err(EncodeError::NotInV311(
                V5Only::Properties(PacketType::ConnAck),
            )),
            Version::V3_1_1 => Ok(2),
            Version::V5 => Ok(2 + self.properties.block_len()?),
        }
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u8(u8::from(self.session_present));
        buf.put_u8(self.code(version)?);
        if version == Version::V5 {
            self.properties.write(buf);
        }
        Ok(())
    }
}
