//! Checked primitives of the wire format (section 1.5): integers, Variable Byte Integers, UTF-8
//! strings and binary data, read from a packet body and written into a caller's buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use crate::packet::PacketType;

/// The largest value a Variable Byte Integer can carry (section 1.5.5).
pub(crate) const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// Reads the fields of one packet body. Every accessor checks the remaining length first and
/// reports [`DecodeError::Truncated`] for the packet being read; slices share the input's memory.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Self { buf, packet }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(self.packet))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::Truncated(self.packet)),
        }
    }

    /// The next `n` bytes, sharing the input's memory.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything that is left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A sub-reader over the next `n` bytes (a property block).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n)?, self.packet))
    }

    /// Binary Data (section 1.5.6): a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String (section 1.5.4), validated: well-formed UTF-8 without surrogates
    /// (MQTT-1.5.4-1) and without U+0000 (MQTT-1.5.4-2).
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        utf8(raw)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.packet))
        }
    }
}

/// Validates MQTT string bytes (section 1.5.4) without copying them.
pub(crate) fn utf8(raw: Bytes) -> Result<ByteString, DecodeError> {
    // `from_utf8` rejects encoded UTF-16 surrogates (U+D800..U+DFFF) as ill-formed.
    if raw.contains(&0) {
        // U+0000 can only be encoded as the single byte 0 in well-formed UTF-8.
        return if std::str::from_utf8(&raw).is_ok() {
            Err(DecodeError::NullCharacter)
        } else {
            Err(DecodeError::InvalidUtf8)
        };
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
}

/// Reads a Variable Byte Integer from the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the value and how many bytes it used.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of 0 after a continuation adds nothing: the value had a shorter form,
            // and the encoding MUST use the fewest bytes (MQTT-1.5.5-1).
            if i > 0 && byte == 0 {
                return Err(DecodeError::MalformedVariableByteInteger);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedVariableByteInteger)
    } else {
        Ok(None)
    }
}

/// How many bytes `value` takes as a Variable Byte Integer.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a Variable Byte Integer; the caller has checked `value <= MAX_VARIABLE_BYTE_INTEGER`.
pub(crate) fn put_varint(buf: &mut BytesMut, value: usize) {
    let mut value = value;
    loop {
        // Truncation is the point: the low seven bits of what is left.
        #[allow(clippy::cast_possible_truncation)]
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Checks a string or binary field fits its two-byte length prefix.
pub(crate) fn check_field(len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong(len))
    } else {
        Ok(())
    }
}

/// Writes a length-prefixed field (string or binary); the caller has run [`check_field`].
pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    #[allow(clippy::cast_possible_truncation)] // checked by `check_field` during sizing
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// The length of a field with its two-byte prefix, checked against the 65,535 byte limit.
pub(crate) fn field_len(data: &[u8]) -> Result<usize, EncodeError> {
    check_field(data.len())?;
    Ok(2 + data.len())
}

/// Converts a topic check into an encoding error; an over-long topic is an over-long field.
pub(crate) fn check_topic(
    check: Result<(), crate::topic::TopicError>,
    topic: &str,
) -> Result<(), EncodeError> {
    match check {
        Ok(()) => Ok(()),
        Err(crate::topic::TopicError::TooLong) => Err(EncodeError::FieldTooLong(topic.len())),
        Err(error) => Err(EncodeError::InvalidTopic(error)),
    }
}

/// The length of a UTF-8 string field, which also may not contain U+0000 (MQTT-1.5.4-2).
pub(crate) fn string_len(s: &str) -> Result<usize, EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NullCharacter);
    }
    field_len(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        // The boundary values of table 1-1.
        for value in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value));
            let (decoded, used) = read_varint(&buf).unwrap().unwrap();
            assert_eq!(decoded as usize, value);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn mqtt_1_5_5_1_varint_longer_than_four_bytes_is_malformed() {
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn mqtt_1_5_5_1_overlong_varint_is_malformed() {
        assert_eq!(
            read_varint(&[0x80, 0x00]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(
            read_varint(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(read_varint(&[0x80, 0x01]), Ok(Some((128, 2))));
    }

    #[test]
    fn mqtt_1_5_4_1_surrogates_are_invalid_utf8() {
        // U+D800 encoded as if it were a scalar value.
        let raw = Bytes::from_static(&[0xED, 0xA0, 0x80]);
        assert_eq!(utf8(raw), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn mqtt_1_5_4_2_null_character_is_rejected() {
        let raw = Bytes::from_static(b"a\0b");
        assert_eq!(utf8(raw), Err(DecodeError::NullCharacter));
    }
}
