//! AUTH (section 3.15).

use bytes::BytesMut;

use super::disconnect::read_reason;
use super::{AuthProperties, PacketType, Version};
use crate::ReasonCode;
use crate::codec::wire::{Put, Reader};
use crate::codec::{DecodeError, EncodeError, V5Only};
use crate::reason::ReasonContext;

/// AUTH: one step of an enhanced authentication exchange (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties: the method and data of this step.
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut auth = Auth {
            reason_code: read_reason(r, ReasonContext::Auth)?,
            properties: AuthProperties::default(),
        };
        if !r.is_empty() {
            auth.properties = AuthProperties::read(r)?;
        }
        Ok(auth)
    }

    pub(crate) fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        if version == Version::V3_1_1 {
            return Err(EncodeError::NotInV311(V5Only::Auth));
        }
        if !self.reason_code.allowed_in(ReasonContext::Auth) {
            return Err(EncodeError::InvalidReasonCode {
                packet: PacketType::Auth,
                code: self.reason_code,
            });
        }
        if self.properties.is_empty() {
            Ok(usize::from(self.reason_code != ReasonCode::Success))
        } else {
            Ok(1 + self.properties.block_len()?)
        }
    }

    pub(crate) fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !self.properties.is_empty() {
            buf.put_u8(self.reason_code.as_u8());
            self.properties.write(buf);
        } else if self.reason_code != ReasonCode::Success {
            buf.put_u8(self.reason_code.as_u8());
        }
        Ok(())
    }
}
