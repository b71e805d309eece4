//! The acknowledgements: PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 to 3.7), SUBACK (3.9) and
//! UNSUBACK (3.11).

use bytes::BytesMut;

use super::{AckProperties, PacketId, PacketType, Version};
use crate::ReasonCode;
use crate::codec::wire::{Put, Reader};
use crate::codec::{DecodeError, EncodeError, V5Only};
use crate::reason::ReasonContext;

fn read_packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId(r.packet()))
}

fn read_reason(
    r: &mut Reader,
    context: ReasonContext,
    v311: fn(u8) -> Option<ReasonCode>,
    version: Version,
) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    let reason = match version {
        Version::V3_1_1 => v311(code),
        Version::V5 => ReasonCode::from_u8(code).filter(|reason| reason.allowed_in(context)),
    };
    reason.ok_or(DecodeError::InvalidReasonCode {
        packet: r.packet(),
        code,
    })
}

fn check_reason(
    reason: ReasonCode,
    context: ReasonContext,
    packet: PacketType,
) -> Result<(), EncodeError> {
    if reason.allowed_in(context) {
        Ok(())
    } else {
        Err(EncodeError::InvalidReasonCode {
            packet,
            code: reason,
        })
    }
}

/// Declares the four publish acknowledgements, which share one layout: a packet identifier, and in
/// 5.0 a reason code and properties, both omitted on the wire when they are Success and empty.
macro_rules! pub_ack {
    ($($(#[$meta:meta])* $name:ident: $context:ident, flags $flags:literal;)*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The packet identifier of the PUBLISH (or PUBREL) being acknowledged.
            pub packet_id: PacketId,
            /// The outcome (5.0); always Success in 3.1.1.
            pub reason_code: ReasonCode,
            /// Properties (5.0 only).
            pub properties: AckProperties,
        }

        impl $name {
            /// A successful acknowledgement without properties.
            pub fn new(packet_id: PacketId) -> Self {
                Self {
                    packet_id,
                    reason_code: ReasonCode::Success,
                    properties: AckProperties::default(),
                }
            }

            pub(crate) const FLAGS: u8 = $flags;

            pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
                let packet_id = read_packet_id(r)?;
                let mut ack = Self::new(packet_id);
                if version == Version::V5 && !r.is_empty() {
                    ack.reason_code = read_reason(
                        r,
                        ReasonContext::$context,
                        ReasonCode::from_u8,
                        version,
                    )?;
                    if !r.is_empty() {
                        ack.properties = AckProperties::read(r)?;
                    }
                }
                Ok(ack)
            }

            pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
                check_reason(self.reason_code, ReasonContext::$context, PacketType::$context)?;
                match version {
                    Version::V3_1_1 if self.reason_code != ReasonCode::Success => {
                        Err(EncodeError::NotInV311(V5Only::ReasonCode(PacketType::$context)))
                    }
                    Version::V3_1_1 if !self.properties.is_empty() => {
                        Err(EncodeError::NotInV311(V5Only::Properties(PacketType::$context)))
                    }
                    Version::V3_1_1 => Ok(2),
                    // The shortest form: reason code and property length may be omitted when
                    // they are Success and empty (section 3.4.2.1).
                    Version::V5 if self.properties.is_empty() => {
                        Ok(if self.reason_code == ReasonCode::Success { 2 } else { 3 })
                    }
                    Version::V5 => Ok(3 + self.properties.block_len()?),
                }
            }

            pub(crate) fn write(
                &self,
                version: Version,
                buf: &mut BytesMut,
            ) -> Result<(), EncodeError> {
                buf.put_u16(self.packet_id.get());
                if version == Version::V5 {
                    if !self.properties.is_empty() {
                        buf.put_u8(self.reason_code.as_u8());
                        self.properties.write(buf);
                    } else if self.reason_code != ReasonCode::Success {
                        buf.put_u8(self.reason_code.as_u8());
                    }
                }
                Ok(())
            }
        }
    )*};
}

pub_ack! {
    /// PUBACK: the answer to a QoS 1 PUBLISH.
    PubAck: PubAck, flags 0b0000;
    /// PUBREC: the first answer to a QoS 2 PUBLISH.
    PubRec: PubRec, flags 0b0000;
    /// PUBREL: the sender's answer to PUBREC; its fixed header flags are 0b0010 (MQTT-3.6.1-1).
    PubRel: PubRel, flags 0b0010;
    /// PUBCOMP: the last packet of the QoS 2 exchange.
    PubComp: PubComp, flags 0b0000;
}

/// SUBACK: one reason code per topic filter of the SUBSCRIBE, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (5.0 only).
    pub properties: AckProperties,
    /// The granted QoS or the failure, per filter. 3.1.1 return codes are mapped (0x80 to
    /// [`ReasonCode::UnspecifiedError`]); for 3.1.1 every failure is encoded as 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = match version {
            Version::V5 => AckProperties::read(r)?,
            Version::V3_1_1 => AckProperties::default(),
        };
        if r.is_empty() {
            return Err(DecodeError::EmptyPayload(PacketType::SubAck));
        }
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(read_reason(
                r,
                ReasonContext::SubAck,
                ReasonCode::from_v311_suback,
                version,
            )?);
        }
        Ok(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::SubAck));
        }
        for &code in &self.reason_codes {
            check_reason(code, ReasonContext::SubAck, PacketType::SubAck)?;
        }
        let properties = match version {
            Version::V5 => self.properties.block_len()?,
            Version::V3_1_1 if !self.properties.is_empty() => {
                return Err(EncodeError::NotInV311(V5Only::Properties(
                    PacketType::SubAck,
                )));
            }
            Version::V3_1_1 => 0,
        };
        Ok(2 + properties + self.reason_codes.len())
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        match version {
            Version::V5 => {
                self.properties.write(buf);
                for code in &self.reason_codes {
                    buf.put_u8(code.as_u8());
                }
            }
            Version::V3_1_1 => {
                for code in &self.reason_codes {
                    // Every SUBACK reason code maps: the grants to themselves, failures to 0x80.
                    buf.put_u8(code.to_v311_suback().unwrap_or(0x80));
                }
            }
        }
        Ok(())
    }
}

/// UNSUBACK: the answer to UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (5.0 only).
    pub properties: AckProperties,
    /// One reason code per topic filter (5.0). Empty when decoded from 3.1.1, whose UNSUBACK
    /// carries none; dropped when encoding for 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let mut ack = UnsubAck {
            packet_id,
            properties: AckProperties::default(),
            reason_codes: Vec::new(),
        };
        if version == Version::V5 {
            ack.properties = AckProperties::read(r)?;
            if r.is_empty() {
                return Err(DecodeError::EmptyPayload(PacketType::UnsubAck));
            }
            ack.reason_codes.reserve(r.remaining());
            while !r.is_empty() {
                ack.reason_codes.push(read_reason(
                    r,
                    ReasonContext::UnsubAck,
                    ReasonCode::from_u8,
                    version,
                )?);
            }
        }
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        match version {
            Version::V3_1_1 if !self.properties.is_empty() => Err(EncodeError::NotInV311(
                V5Only::Properties(PacketType::UnsubAck),
            )),
            Version::V3_1_1 => Ok(2),
            Version::V5 => {
                if self.reason_codes.is_empty() {
                    return Err(EncodeError::EmptyPayload(PacketType::UnsubAck));
                }
                for &code in &self.reason_codes {
                    check_reason(code, ReasonContext::UnsubAck, PacketType::UnsubAck)?;
                }
                Ok(2 + self.properties.block_len()? + self.reason_codes.len())
            }
        }
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version == Version::V5 {
            self.properties.write(buf);
            for code in &self.reason_codes {
                buf.put_u8(code.as_u8());
            }
        }
        Ok(())
    }
}
