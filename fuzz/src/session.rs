//! The `session` target: a saved client session (`Session::decode`) of any bytes.

use bytes::BytesMut;
use mqtt_proto::connection::Session;

/// The magic, version and length of a saved session: 18 bytes before the body.
const HEADER_LEN: usize = 18;

/// Decoding never panics; what decodes encodes, and reads back the same. The input is tried as
/// it is, where the magic and the checksum refuse nearly everything, and as the body of a saved
/// session, framed with a correct header and checksum, so that the body's reader is fuzzed.
pub fn session(data: &[u8]) {
    check(data);
    check(&frame(data));
}

fn check(bytes: &[u8]) {
    let Ok(session) = Session::decode(bytes) else {
        return;
    };
    let mut saved = BytesMut::new();
    if let Err(error) = session.encode(&mut saved) {
        panic!("{session:?} decoded but does not encode: {error}");
    }
    assert_eq!(Session::decode(&saved).as_ref(), Ok(&session));
}

/// `body` as a saved session of the current format version: header, body, CRC-32.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut saved = b"MQTTSESS".to_vec();
    saved.extend_from_slice(&Session::FORMAT_VERSION.to_be_bytes());
    saved.extend_from_slice(&(body.len() as u64).to_be_bytes());
    saved.extend_from_slice(body);
    let checksum = crc32(&saved);
    saved.extend_from_slice(&checksum.to_be_bytes());
    saved
}

/// The body of a saved session (what [`frame`] wraps), for the seeds.
pub fn body(saved: &[u8]) -> &[u8] {
    saved
        .get(HEADER_LEN..saved.len().saturating_sub(4))
        .unwrap_or_default()
}

/// CRC-32 (IEEE), bit by bit: fast enough for inputs of a few kilobytes.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
