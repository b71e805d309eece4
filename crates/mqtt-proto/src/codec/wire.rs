//! Checked primitives of the wire format (section 1.5): integers, Variable Byte Integers, UTF-8
//! strings and binary data, read from a packet body and written into a caller's buffer.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use crate::packet::PacketType;
use crate::topic::{self, MAX_TOPIC_LEN, TopicFilter};

/// Writes into a `BytesMut` the way `BufMut` does, but inlined.
///
/// `BufMut::put_slice` for `BytesMut` is not `#[inline]`, and `put_u8`/`put_u16`/`put_u32` go
/// through it: every integer written costs a call and a `memcpy` call of one to four bytes.
/// `BytesMut::extend_from_slice` is `#[inline]`, so with a constant length the copy becomes a
/// plain store. The encoders import this trait instead of `BufMut`; the names are the same.
pub(crate) trait Put {
    fn put_u8(&mut self, n: u8);
    fn put_u16(&mut self, n: u16);
    fn put_u32(&mut self, n: u32);
    fn put_slice(&mut self, src: &[u8]);
}

impl Put for BytesMut {
    #[inline]
    fn put_u8(&mut self, n: u8) {
        self.extend_from_slice(&[n]);
    }
    #[inline]
    fn put_u16(&mut self, n: u16) {
        self.extend_from_slice(&n.to_be_bytes());
    }
    #[inline]
    fn put_u32(&mut self, n: u32) {
        self.extend_from_slice(&n.to_be_bytes());
    }
    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        self.extend_from_slice(src);
    }
}

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
    #[inline]
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Self { buf, packet }
    }

    #[inline]
    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(self.packet))
        } else {
            Ok(())
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    #[inline]
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
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// A topic filter (SUBSCRIBE, UNSUBSCRIBE): a UTF-8 string, validated as [`Reader::string`]
    /// does, then as a filter ([`DecodeError::InvalidTopicFilter`]).
    #[inline]
    pub(crate) fn topic_filter(&mut self) -> Result<TopicFilter, DecodeError> {
        let raw = self.binary()?;
        if is_plain_topic_filter(&raw) {
            return match ByteString::try_from(raw) {
                Ok(filter) => Ok(TopicFilter::new_unchecked(filter)),
                Err(_) => Err(DecodeError::InvalidUtf8),
            };
        }
        let filter = utf8(raw)?;
        match topic::check_topic_filter_by_levels(&filter) {
            Ok(()) => Ok(TopicFilter::new_unchecked(filter)),
            Err(_) => Err(DecodeError::InvalidTopicFilter),
        }
    }

    /// How many length-prefixed fields, each followed by `trailer` bytes, the rest holds: the
    /// capacity to give a list of topic filters. A hint only; stops at the first that does not
    /// fit.
    pub(crate) fn count_fields(&self, trailer: usize) -> usize {
        let mut rest: &[u8] = &self.buf;
        let mut count = 0;
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let Some(after) = tail.get(usize::from(u16::from_be_bytes(*len)) + trailer..) else {
                break;
            };
            rest = after;
            count += 1;
        }
        count
    }

    /// Everything that is left (a PUBLISH payload).
    #[inline]
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A sub-reader over the next `n` bytes (a property block).
    #[inline]
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n)?, self.packet))
    }

    /// Binary Data (section 1.5.6): a two-byte length and that many bytes.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Whether the next Binary Data field (read and skipped) is `expected`: a comparison that
    /// keeps nothing, so it takes no reference to the input's memory.
    #[inline]
    pub(crate) fn binary_is(&mut self, expected: &[u8]) -> Result<bool, DecodeError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        let same = self.buf.get(..len) == Some(expected);
        self.buf.advance(len);
        Ok(same)
    }

    /// A UTF-8 Encoded String (section 1.5.4), validated: well-formed UTF-8 without surrogates
    /// (MQTT-1.5.4-1) and without U+0000 (MQTT-1.5.4-2).
    #[inline]
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        utf8(raw)
    }

    /// Whether the body was read to its end ([`DecodeError::TrailingBytes`] if not).
    #[inline]
    pub(crate) fn check_finished(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.packet))
        }
    }
}

/// Validates MQTT string bytes (section 1.5.4) without copying them.
#[inline]
pub(crate) fn utf8(raw: Bytes) -> Result<ByteString, DecodeError> {
    // `from_utf8` rejects encoded UTF-16 surrogates (U+D800..U+DFFF) as ill-formed.
    if has_nul(&raw) {
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
#[inline]
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
#[inline]
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a Variable Byte Integer; the caller has checked `value <= MAX_VARIABLE_BYTE_INTEGER`.
#[inline]
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
#[inline]
pub(crate) fn check_field(len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong(len))
    } else {
        Ok(())
    }
}

/// Writes a length-prefixed field (string or binary); the caller has run [`check_field`].
#[inline]
pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    #[allow(clippy::cast_possible_truncation)] // checked by `check_field` during sizing
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// The length of a field with its two-byte prefix, checked against the 65,535 byte limit.
#[inline]
pub(crate) fn field_len(data: &[u8]) -> Result<usize, EncodeError> {
    check_field(data.len())?;
    Ok(2 + data.len())
}

/// The bytes that topic validation cares about, U+0000, `+` and `#`, found eight at a time: a
/// byte search in `core` looks for one value per pass, topic checks need three.
///
/// `+` (0x2B) and `#` (0x23) differ only in bit 3, and no other byte becomes 0x2B when that bit is
/// set, so one comparison finds both.
const ONES: u64 = 0x0101_0101_0101_0101;
const BIT3: u64 = ONES * 0x08;
const WILDCARD: u64 = ONES * 0x2B;

/// Bit 7 set in each byte of `word` (little endian) that is special. Exact, unlike the cheaper
/// test of [`any_special`]: `(x & 0x7F) + 0x7F` cannot carry into the next byte.
#[inline]
fn special_bytes(word: u64) -> u64 {
    const LOW7: u64 = ONES * 0x7F;
    let zero_bytes = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    zero_bytes(word) | zero_bytes((word | BIT3) ^ WILDCARD)
}

/// Nonzero exactly when some byte of `word` is special (bits may be set above the first special
/// byte, so this says whether, not where).
#[inline]
fn any_special(word: u64) -> u64 {
    const HIGH: u64 = ONES * 0x80;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    has_zero(word) | has_zero((word | BIT3) ^ WILDCARD)
}

#[inline]
fn is_special(byte: u8) -> bool {
    matches!(byte, 0 | b'+' | b'#')
}

#[inline(always)]
pub(crate) fn has_nul_or_wildcard(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    // Branch-free over the words; the tail is covered by the last eight bytes, which overlap
    // the words (only a string shorter than eight bytes is read one byte at a time).
    let found = words.iter().fold(0, |found, word| {
        found | any_special(u64::from_le_bytes(*word))
    });
    match bytes.last_chunk::<8>() {
        Some(last) => found | any_special(u64::from_le_bytes(*last)) != 0,
        None => tail.iter().copied().any(is_special),
    }
}

/// Whether `bytes` holds a 0, eight bytes at a time (the strings are short: a call to `memchr`
/// costs more than the search).
#[inline(always)]
fn has_nul(bytes: &[u8]) -> bool {
    const HIGH: u64 = ONES * 0x80;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let (words, tail) = bytes.as_chunks::<8>();
    let found = words
        .iter()
        .fold(0, |found, word| found | has_zero(u64::from_le_bytes(*word)));
    match bytes.last_chunk::<8>() {
        Some(last) => found | has_zero(u64::from_le_bytes(*last)) != 0,
        // Four to seven bytes: the first four and the last four, which overlap, as one word
        // (`contains` would call `memchr`, which costs more than the search for so few bytes).
        None => match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
            (Some(first), Some(last)) => {
                let word = u64::from(u32::from_le_bytes(*first))
                    | u64::from(u32::from_le_bytes(*last)) << 32;
                has_zero(word) != 0
            }
            // Up to three bytes: a loop, not a call to `memchr`.
            #[allow(clippy::manual_contains)]
            _ => tail.iter().any(|&byte| byte == 0),
        },
    }
}

/// Whether `name` is a valid topic name: the same answer as [`topic::is_valid_topic_name`] in
/// one pass over the bytes.
#[inline]
pub(crate) fn is_valid_topic_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_TOPIC_LEN && !has_nul_or_wildcard(name)
}

/// True when `filter` is a valid topic filter that is not a shared subscription (the answer of
/// [`topic::is_valid_topic_filter`] in one pass); false when it is invalid or starts with
/// `$share/`, which the caller leaves to [`topic`].
pub(crate) fn is_plain_topic_filter(filter: &[u8]) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.starts_with(b"$share/") {
        return false;
    }
    // A wildcard is a whole level: `+` anywhere, `#` only as the last one (MQTT-4.7.1-1,
    // MQTT-4.7.1-2). U+0000 is never allowed.
    let fits = |i: usize| {
        let level_start = i == 0 || filter.get(i - 1) == Some(&b'/');
        match filter.get(i) {
            Some(b'+') => level_start && matches!(filter.get(i + 1), None | Some(b'/')),
            Some(b'#') => level_start && i + 1 == filter.len(),
            _ => false,
        }
    };
    let fits_word = |start: usize, word: &[u8; 8]| {
        let mut mask = special_bytes(u64::from_le_bytes(*word));
        while mask != 0 {
            if !fits(start + mask.trailing_zeros() as usize / 8) {
                return false;
            }
            mask &= mask - 1;
        }
        true
    };
    let (words, tail) = filter.as_chunks::<8>();
    if !words
        .iter()
        .enumerate()
        .all(|(w, word)| fits_word(w * 8, word))
    {
        return false;
    }
    // The tail, as the last eight bytes: those that overlap the words are checked twice, which
    // changes nothing.
    match filter.last_chunk::<8>() {
        _ if tail.is_empty() => true,
        Some(last) => fits_word(filter.len() - 8, last),
        None => tail
            .iter()
            .enumerate()
            .all(|(i, &byte)| !is_special(byte) || fits(i)),
    }
}

/// The length of a UTF-8 string field, which also may not contain U+0000 (MQTT-1.5.4-2).
#[inline]
pub(crate) fn string_len(s: &str) -> Result<usize, EncodeError> {
    if has_nul(s.as_bytes()) {
        return Err(EncodeError::NullCharacter);
    }
    field_len(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, Publish, Version};
    use crate::topic::TopicName;

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

    /// Every string of up to five pieces that matter to topic validation, some longer than a
    /// word so that the eight-byte steps and the tail both see wildcards.
    fn topic_like_strings() -> Vec<String> {
        const PIECES: [&str; 7] = ["a", "/", "+", "#", "\0", "$share/", "abcdefgh"];
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|s| PIECES.iter().map(move |piece| format!("{s}{piece}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn one_pass_topic_checks_agree_with_the_topic_module() {
        for s in topic_like_strings() {
            let bytes = s.as_bytes();
            let specials = bytes.iter().copied().any(is_special);
            assert_eq!(has_nul_or_wildcard(bytes), specials, "{s:?}");
            assert_eq!(has_nul(bytes), bytes.contains(&0), "{s:?}");
            let name_ok = topic::check_topic_name_by_bytes(&s).is_ok();
            assert_eq!(is_valid_topic_name(bytes), name_ok, "{s:?}");
            assert_eq!(topic::is_valid_topic_name(&s), name_ok, "{s:?}");
            let filter = topic::check_topic_filter_by_levels(&s).is_ok();
            assert_eq!(topic::is_valid_topic_filter(&s), filter, "{s:?}");
            if s.starts_with("$share/") {
                assert!(!is_plain_topic_filter(bytes), "{s:?}");
            } else {
                assert_eq!(is_plain_topic_filter(bytes), filter, "{s:?}");
            }

            // The readers give what a string read followed by the topic module gives.
            let mut field = BytesMut::new();
            put_binary(&mut field, bytes);
            let reader = || Reader::new(field.clone().freeze(), PacketType::Subscribe);
            let string = reader().string();
            let expected = string.clone().and_then(|f| {
                if filter {
                    Ok(TopicFilter::new_unchecked(f))
                } else {
                    Err(DecodeError::InvalidTopicFilter)
                }
            });
            assert_eq!(reader().topic_filter(), expected, "{s:?}");
            // A 3.1.1 PUBLISH with this topic: decoded, or rejected as the checks above say.
            let name = Publish::decode(0, field.clone().freeze(), Version::V3_1_1).map(|packet| {
                match packet {
                    Some(Packet::Publish(publish)) => publish.topic,
                    other => panic!("{other:?}"),
                }
            });
            let expected = string.and_then(|n| {
                if name_ok {
                    Ok(TopicName::new_unchecked(n))
                } else {
                    Err(DecodeError::InvalidTopicName)
                }
            });
            assert_eq!(name, expected, "{s:?}");
        }
    }

    #[test]
    fn word_checks_find_a_special_byte_at_every_place_of_every_short_length() {
        for len in 0..=17 {
            let plain = vec![b'a'; len];
            assert!(!has_nul(&plain) && !has_nul_or_wildcard(&plain), "{len}");
            for at in 0..len {
                for special in [0, b'+', b'#'] {
                    let mut bytes = plain.clone();
                    bytes[at] = special;
                    assert!(has_nul_or_wildcard(&bytes), "{bytes:?}");
                    assert_eq!(has_nul(&bytes), special == 0, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn count_fields_counts_length_prefixed_entries() {
        let mut body = BytesMut::new();
        for filter in ["a/b", "", "c/#"] {
            put_binary(&mut body, filter.as_bytes());
            body.put_u8(1);
        }
        let whole = Reader::new(body.clone().freeze(), PacketType::Subscribe);
        assert_eq!(whole.count_fields(1), 3);
        // Read without the options byte, the second length is 0x0100: it stops there.
        assert_eq!(whole.count_fields(0), 1);
        body.truncate(body.len() - 1);
        let cut = Reader::new(body.freeze(), PacketType::Subscribe);
        assert_eq!(cut.count_fields(1), 2);
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
