//! DISCONNECT (section 3.14).

use bytes::BytesMut;

use super::{DisconnectProperties, PacketType, Version};
use crate::ReasonCode;
use crate::codec::wire::{Put, Reader};
use crate::codec::{DecodeError, EncodeError, V5Only};
use crate::reason::ReasonContext;

/// DISCONNECT: the connection is closing. In 3.1.1 it has no contents and only the client sends
/// it; in 5.0 either side may, with a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why (5.0); Normal disconnection in 3.1.1.
    pub reason_code: ReasonCode,
    /// Properties (5.0 only).
    pub properties: DisconnectProperties,
}

/// Reads the optional reason code and properties shared by DISCONNECT and AUTH: both are omitted
/// when the remaining length is 0, the properties when it is 1 (sections 3.14.2.1, 3.15.2.1).
pub(super) fn read_reason(
    r: &mut Reader,
    context: ReasonContext,
) -> Result<ReasonCode, DecodeError> {
    if r.is_empty() {
        return Ok(ReasonCode::Success);
    }
    let code = r.u8()?;
    ReasonCode::from_u8(code)
        .filter(|reason| reason.allowed_in(context))
        .ok_or(DecodeError::InvalidReasonCode {
            packet: r.packet(),
            code,
        })
}

impl Disconnect {
    /// A DISCONNECT with this reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn read(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let mut disconnect = Disconnect::default();
        if version == Version::V5 {
            disconnect.reason_code = read_reason(r, ReasonContext::Disconnect)?;
            if !r.is_empty() {
                disconnect.properties = DisconnectProperties::read(r)?;
            }
        }
        Ok(disconnect)
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if !self.reason_code.allowed_in(ReasonContext::Disconnect) {
            return Err(EncodeError::InvalidReasonCode {
                packet: PacketType::Disconnect,
                code: self.reason_code,
            });
        }
        match version {
            Version::V3_1_1 if self.reason_code != ReasonCode::Success => Err(
                EncodeError::NotInV311(V5Only::ReasonCode(PacketType::Disconnect)),
            ),
            Version::V3_1_1 if !self.properties.is_empty() => Err(EncodeError::NotInV311(
                V5Only::Properties(PacketType::Disconnect),
            )),
            Version::V3_1_1 => Ok(0),
            Version::V5 if self.properties.is_empty() => {
                Ok(usize::from(self.reason_code != ReasonCode::Success))
            }
            Version::V5 => Ok(1 + self.properties.block_len()?),
        }
    }

    pub(crate) fn write(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
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
