//! Negative tests: one per validation rule, named after the normative statement where the
//! specification numbers one (MQTT 5.0 numbering unless the name says `v311`). Each asserts the
//! exact [`DecodeError`] and the reason code a DISCONNECT (or CONNACK) reporting it carries:
//! 0x81 Malformed Packet, 0x82 Protocol Error, 0x84 Unsupported Protocol Version, 0x90 Topic Name
//! invalid, 0x95 Packet too large. Most rules get a control too: the same bytes with the fault
//! removed decode, so each failure is the rule's and not a slip in the hand-written bytes.
//!
//! The last part covers encoding: what has no valid wire form is an [`EncodeError`], and nothing
//! is written.

use bytes::BytesMut;
use mqtt_proto::ReasonCode;
use mqtt_proto::codec::{self, DecodeError, EncodeError, Limits, V5Only};
use mqtt_proto::packet::{
    AckProperties, Auth, ByteString, Bytes, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, Packet, PacketType, PubAck, PubRel, Publish,
    PublishProperties, QoS, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe, UserProperty, Version, Will, WillProperties,
};
use mqtt_proto::topic::{TopicError, TopicFilter, TopicName};

use super::vectors::hex;
use super::{filter, name};
use DecodeError as E;
use ReasonCode::{
    MalformedPacket as MALFORMED, PacketTooLarge as TOO_LARGE, ProtocolError as PROTOCOL,
    TopicNameInvalid as TOPIC_NAME, UnsupportedProtocolVersion as UNSUPPORTED,
};
use Version::{V3_1_1, V5};

const BOTH: [Version; 2] = [V3_1_1, V5];

// ------------------------------------------------------------------------------------ helpers

/// A packet: the first byte, a one-byte remaining length, the body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).unwrap();
    assert!(len < 0x80, "test bodies stay under 128 bytes");
    let mut bytes = vec![first, len];
    bytes.extend_from_slice(body);
    bytes
}

/// A property block: a one-byte property length, then the properties.
fn block(properties: &[u8]) -> Vec<u8> {
    let len = u8::try_from(properties.len()).unwrap();
    assert!(len < 0x80, "test property blocks stay under 128 bytes");
    let mut bytes = vec![len];
    bytes.extend_from_slice(properties);
    bytes
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A 5.0 CONNECT: "MQTT" level 5, the flags, keep alive 60, the properties, then the payload.
fn connect_v5(flags: u8, properties: &str, payload: &str) -> Vec<u8> {
    let head = cat(&[&hex("00 04 4d 51 54 54 05"), &[flags], &hex("00 3c")]);
    frame(
        0x10,
        &cat(&[&head, &block(&hex(properties)), &hex(payload)]),
    )
}

/// A 3.1.1 CONNECT: "MQTT" level 4, the flags, keep alive 60, then the payload.
fn connect_v3(flags: u8, payload: &str) -> Vec<u8> {
    let head = cat(&[&hex("00 04 4d 51 54 54 04"), &[flags], &hex("00 3c")]);
    frame(0x10, &cat(&[&head, &hex(payload)]))
}

fn decode(version: Version, bytes: &[u8], limits: &Limits) -> Result<Option<Packet>, DecodeError> {
    codec::decode(&mut BytesMut::from(bytes), version, limits)
}

/// Decoding `bytes` fails with `error`, whose reason code is `reason`.
#[track_caller]
fn rejects(version: Version, bytes: impl AsRef<[u8]>, error: DecodeError, reason: ReasonCode) {
    let bytes = bytes.as_ref();
    assert_eq!(
        decode(version, bytes, &Limits::default()),
        Err(error.clone()),
        "{version:?} {bytes:02x?}"
    );
    assert_eq!(error.reason_code(), reason, "reason code of {error:?}");
}

/// Decoding `bytes` yields a packet and consumes all of them: the control of a negative test.
#[track_caller]
fn accepts(version: Version, bytes: impl AsRef<[u8]>) -> Packet {
    let bytes = bytes.as_ref();
    let mut buf = BytesMut::from(bytes);
    match codec::decode(&mut buf, version, &Limits::default()) {
        Ok(Some(packet)) if buf.is_empty() => packet,
        other => {
            panic!("{version:?} {bytes:02x?}: expected a packet, got {other:?} (left {buf:02x?})")
        }
    }
}

// ------------------------------------------------------------------------ fixed header, varints

#[test]
fn mqtt_1_5_5_1_remaining_length_longer_than_four_bytes() {
    for version in BOTH {
        rejects(
            version,
            hex("30 ff ff ff ff 7f"),
            E::MalformedVariableByteInteger,
            MALFORMED,
        );
        // Four bytes with the continuation bit are already too many: the fifth need not arrive.
        rejects(
            version,
            hex("30 80 80 80 80"),
            E::MalformedVariableByteInteger,
            MALFORMED,
        );
        // Three are only incomplete.
        assert_eq!(
            decode(version, &hex("30 80 80 80"), &Limits::default()),
            Ok(None)
        );
    }
}

#[test]
fn mqtt_1_5_5_1_remaining_length_not_in_its_shortest_form() {
    for version in BOTH {
        accepts(version, hex("c0 00"));
        // 0 in two bytes.
        rejects(
            version,
            hex("c0 80 00"),
            E::MalformedVariableByteInteger,
            MALFORMED,
        );
        // 127 in three bytes.
        rejects(
            version,
            hex("30 ff 80 00"),
            E::MalformedVariableByteInteger,
            MALFORMED,
        );
    }
}

#[test]
fn mqtt_1_5_5_1_property_varints_not_in_their_shortest_form() {
    // A property length of 0 written as 80 00.
    accepts(V5, hex("40 04 00 0a 00 00"));
    rejects(
        V5,
        hex("40 05 00 0a 00 80 00"),
        E::MalformedVariableByteInteger,
        MALFORMED,
    );
    // A Subscription Identifier of 1 written as 81 00.
    accepts(V5, frame(0x82, &hex("00 0a 02 0b 01 00 01 23 00")));
    rejects(
        V5,
        frame(0x82, &hex("00 0a 03 0b 81 00 00 01 23 00")),
        E::MalformedVariableByteInteger,
        MALFORMED,
    );
    // A property length of five bytes.
    rejects(
        V5,
        hex("40 08 00 0a 00 80 80 80 80 00"),
        E::MalformedVariableByteInteger,
        MALFORMED,
    );
}

#[test]
fn reserved_packet_type_0_is_malformed() {
    for version in BOTH {
        rejects(version, hex("00 00"), E::ReservedPacketType(0), MALFORMED);
        // The type alone decides: no remaining length is needed.
        rejects(version, hex("00"), E::ReservedPacketType(0), MALFORMED);
    }
}

#[test]
fn auth_is_reserved_packet_type_15_in_v311() {
    accepts(V5, hex("f0 00"));
    rejects(V3_1_1, hex("f0 00"), E::ReservedPacketType(15), MALFORMED);
    rejects(
        V3_1_1,
        hex("f0 01 18"),
        E::ReservedPacketType(15),
        MALFORMED,
    );
}

/// A valid packet of each type with fixed header flags (all but PUBLISH), per version.
fn flagged_packets(version: Version) -> Vec<Vec<u8>> {
    let packets = match version {
        V3_1_1 => vec![
            "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31",
            "20 02 00 00",
            "40 02 00 0a",
            "50 02 00 0a",
            "62 02 00 0a",
            "70 02 00 0a",
            "82 06 00 0a 00 01 23 00",
            "90 03 00 0a 00",
            "a2 05 00 0a 00 01 23",
            "b0 02 00 0a",
            "c0 00",
            "d0 00",
            "e0 00",
        ],
        V5 => vec![
            "10 0e 00 04 4d 51 54 54 05 02 00 3c 00 00 01 63",
            "20 03 00 00 00",
            "40 02 00 0a",
            "50 02 00 0a",
            "62 02 00 0a",
            "70 02 00 0a",
            "82 07 00 0a 00 00 01 23 00",
            "90 04 00 0a 00 00",
            "a2 06 00 0a 00 00 01 23",
            "b0 04 00 0a 00 00",
            "c0 00",
            "d0 00",
            "e0 00",
            "f0 00",
        ],
    };
    packets.into_iter().map(hex).collect()
}

#[test]
fn mqtt_2_1_3_1_reserved_fixed_header_flags_on_every_packet_type() {
    for version in BOTH {
        for valid in flagged_packets(version) {
            let packet = accepts(version, &valid);
            let kind = packet.packet_type();
            let required = valid[0] & 0x0f;
            for flags in (0..16u8).filter(|&flags| flags != required) {
                let mut bytes = valid.clone();
                bytes[0] = (valid[0] & 0xf0) | flags;
                rejects(
                    version,
                    &bytes,
                    E::InvalidFixedHeaderFlags {
                        packet: kind,
                        flags,
                    },
                    MALFORMED,
                );
                // Rejected from the first byte alone.
                rejects(
                    version,
                    &bytes[..1],
                    E::InvalidFixedHeaderFlags {
                        packet: kind,
                        flags,
                    },
                    MALFORMED,
                );
            }
        }
    }
}

#[test]
fn mqtt_3_6_1_1_pubrel_flags_must_be_0010() {
    for version in BOTH {
        accepts(version, hex("62 02 00 0a"));
        for (first, flags) in [(0x60, 0b0000), (0x63, 0b0011), (0x6a, 0b1010)] {
            let packet = PacketType::PubRel;
            let bytes = frame(first, &hex("00 0a"));
            rejects(
                version,
                bytes,
                E::InvalidFixedHeaderFlags { packet, flags },
                MALFORMED,
            );
        }
    }
}

#[test]
fn mqtt_3_8_1_1_subscribe_flags_must_be_0010() {
    let body = hex("00 0a 00 01 23 00");
    accepts(V3_1_1, frame(0x82, &body));
    for (first, flags) in [(0x80, 0b0000), (0x83, 0b0011), (0x86, 0b0110)] {
        let packet = PacketType::Subscribe;
        let error = E::InvalidFixedHeaderFlags { packet, flags };
        rejects(V3_1_1, frame(first, &body), error, MALFORMED);
    }
}

#[test]
fn mqtt_3_10_1_1_unsubscribe_flags_must_be_0010() {
    let body = hex("00 0a 00 01 23");
    accepts(V3_1_1, frame(0xa2, &body));
    for (first, flags) in [(0xa0, 0b0000), (0xa3, 0b0011), (0xaa, 0b1010)] {
        let packet = PacketType::Unsubscribe;
        let error = E::InvalidFixedHeaderFlags { packet, flags };
        rejects(V3_1_1, frame(first, &body), error, MALFORMED);
    }
}

// ----------------------------------------------------------------------------------- PUBLISH

#[test]
fn mqtt_3_3_1_4_qos_3_is_malformed() {
    accepts(V5, hex("32 0a 00 03 61 2f 62 00 0a 00 68 69"));
    rejects(
        V5,
        hex("36 0a 00 03 61 2f 62 00 0a 00 68 69"),
        E::InvalidQoS,
        MALFORMED,
    );
    rejects(
        V5,
        hex("37 0a 00 03 61 2f 62 00 0a 00 68 69"),
        E::InvalidQoS,
        MALFORMED,
    );
    accepts(V3_1_1, hex("32 07 00 03 61 2f 62 00 0a"));
    rejects(
        V3_1_1,
        hex("36 07 00 03 61 2f 62 00 0a"),
        E::InvalidQoS,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        hex("3e 07 00 03 61 2f 62 00 0a"),
        E::InvalidQoS,
        MALFORMED,
    );
}

#[test]
fn mqtt_3_3_1_2_dup_on_qos_0_is_malformed() {
    accepts(V5, hex("30 06 00 03 61 2f 62 00"));
    rejects(
        V5,
        hex("38 06 00 03 61 2f 62 00"),
        E::DupWithQoS0,
        MALFORMED,
    );
    rejects(
        V5,
        hex("39 06 00 03 61 2f 62 00"),
        E::DupWithQoS0,
        MALFORMED,
    );
    accepts(V3_1_1, hex("30 05 00 03 61 2f 62"));
    rejects(
        V3_1_1,
        hex("38 05 00 03 61 2f 62"),
        E::DupWithQoS0,
        MALFORMED,
    );
    // DUP is fine on QoS 1.
    accepts(V3_1_1, hex("3a 07 00 03 61 2f 62 00 0a"));
}

/// Packet identifier 0 in every packet that carries one (3.1.1 numbers this MQTT-2.3.1-1).
#[test]
fn mqtt_2_2_1_3_packet_identifier_0_is_malformed() {
    use PacketType::*;
    let v5 = [
        (Publish, "32 0a 00 03 61 2f 62 00 00 00 68 69"),
        (Publish, "34 08 00 03 61 2f 62 00 00 00"),
        (PubAck, "40 02 00 00"),
        (PubRec, "50 03 00 00 10"),
        (PubRel, "62 02 00 00"),
        (PubComp, "70 02 00 00"),
        (Subscribe, "82 07 00 00 00 00 01 23 00"),
        (SubAck, "90 04 00 00 00 00"),
        (Unsubscribe, "a2 06 00 00 00 00 01 23"),
        (UnsubAck, "b0 04 00 00 00 00"),
    ];
    let v3 = [
        (Publish, "32 07 00 03 61 2f 62 00 00"),
        (Publish, "34 07 00 03 61 2f 62 00 00"),
        (PubAck, "40 02 00 00"),
        (PubRec, "50 02 00 00"),
        (PubRel, "62 02 00 00"),
        (PubComp, "70 02 00 00"),
        (Subscribe, "82 06 00 00 00 01 23 00"),
        (SubAck, "90 03 00 00 00"),
        (Unsubscribe, "a2 05 00 00 00 01 23"),
        (UnsubAck, "b0 02 00 00"),
    ];
    for (version, cases) in [(V5, v5), (V3_1_1, v3)] {
        for (packet, bytes) in cases {
            let bytes = hex(bytes);
            // Control: the same packet with identifier 10.
            let mut valid = bytes.clone();
            let at = if packet == Publish { 7 } else { 3 };
            valid[at] = 0x0a;
            accepts(version, &valid);
            rejects(version, &bytes, E::ZeroPacketId(packet), MALFORMED);
        }
    }
}

// ----------------------------------------------------------------------------------- strings

#[test]
fn mqtt_1_5_4_1_ill_formed_utf8_is_malformed() {
    // In a topic name: a byte that never occurs in UTF-8, an overlong "/", a cut sequence.
    for topic in ["00 03 61 ff 62", "00 02 c0 af", "00 02 e2 82"] {
        rejects(
            V5,
            frame(0x30, &hex(&format!("{topic} 00"))),
            E::InvalidUtf8,
            MALFORMED,
        );
        rejects(V3_1_1, frame(0x30, &hex(topic)), E::InvalidUtf8, MALFORMED);
    }
    // In a client identifier.
    accepts(V3_1_1, connect_v3(0x02, "00 02 63 31"));
    rejects(
        V3_1_1,
        connect_v3(0x02, "00 02 63 ff"),
        E::InvalidUtf8,
        MALFORMED,
    );
    // In a user name.
    accepts(V5, connect_v5(0x82, "", "00 01 63 00 01 75"));
    rejects(
        V5,
        connect_v5(0x82, "", "00 01 63 00 01 ff"),
        E::InvalidUtf8,
        MALFORMED,
    );
    // In a topic filter.
    accepts(V3_1_1, frame(0x82, &hex("00 0a 00 02 61 62 00")));
    rejects(
        V3_1_1,
        frame(0x82, &hex("00 0a 00 02 61 ff 00")),
        E::InvalidUtf8,
        MALFORMED,
    );
}

#[test]
fn mqtt_1_5_4_1_utf16_surrogates_are_malformed() {
    // U+D800 encoded as if it were a character: ED A0 80.
    // In a topic name.
    rejects(
        V5,
        hex("30 06 00 03 ed a0 80 00"),
        E::InvalidUtf8,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        hex("30 05 00 03 ed a0 80"),
        E::InvalidUtf8,
        MALFORMED,
    );
    // In a client identifier.
    rejects(
        V5,
        connect_v5(0x02, "", "00 03 ed a0 80"),
        E::InvalidUtf8,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        connect_v3(0x02, "00 03 ed a0 80"),
        E::InvalidUtf8,
        MALFORMED,
    );
    // In a user property value, and a user property name.
    accepts(V5, hex("30 0d 00 01 61 09 26 00 01 6b 00 03 61 62 63"));
    rejects(
        V5,
        hex("30 0d 00 01 61 09 26 00 01 6b 00 03 ed a0 80"),
        E::InvalidUtf8,
        MALFORMED,
    );
    rejects(
        V5,
        hex("30 0d 00 01 61 09 26 00 03 ed a0 80 00 01 76"),
        E::InvalidUtf8,
        MALFORMED,
    );
    // In a will topic.
    rejects(
        V3_1_1,
        connect_v3(0x06, "00 01 63 00 03 ed a0 80 00 00"),
        E::InvalidUtf8,
        MALFORMED,
    );
    // In a reason string.
    accepts(V5, hex("40 0a 00 0a 80 06 1f 00 03 61 62 63"));
    rejects(
        V5,
        hex("40 0a 00 0a 80 06 1f 00 03 ed a0 80"),
        E::InvalidUtf8,
        MALFORMED,
    );
}

#[test]
fn mqtt_1_5_4_2_null_character_is_malformed() {
    // In a topic name.
    rejects(
        V5,
        hex("30 06 00 03 61 00 62 00"),
        E::NullCharacter,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        hex("30 05 00 03 61 00 62"),
        E::NullCharacter,
        MALFORMED,
    );
    // In a client identifier.
    rejects(
        V5,
        connect_v5(0x02, "", "00 01 00"),
        E::NullCharacter,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        connect_v3(0x02, "00 02 63 00"),
        E::NullCharacter,
        MALFORMED,
    );
    // In a user property name.
    accepts(V5, hex("30 0b 00 01 61 07 26 00 01 6b 00 01 76"));
    rejects(
        V5,
        hex("30 0b 00 01 61 07 26 00 01 00 00 01 76"),
        E::NullCharacter,
        MALFORMED,
    );
    // In a topic filter.
    rejects(
        V3_1_1,
        hex("82 08 00 0a 00 03 61 00 62 00"),
        E::NullCharacter,
        MALFORMED,
    );
}

/// Binary Data (section 1.5.6) is not a string: any bytes, 0 and invalid UTF-8 included.
#[test]
fn binary_data_is_not_checked_as_utf8() {
    let packet = accepts(
        V5,
        connect_v5(0x42, "15 00 01 6d 16 00 02 00 ff", "00 01 63 00 02 00 ff"),
    );
    let Packet::Connect(connect) = packet else {
        panic!("not a CONNECT: {packet:?}");
    };
    assert_eq!(connect.password.as_deref(), Some(&[0x00, 0xff][..]));
    assert_eq!(
        connect.properties.authentication_data.as_deref(),
        Some(&[0x00, 0xff][..])
    );
}

// ------------------------------------------------------------------------------- topic names

#[test]
fn mqtt_3_3_2_2_wildcard_in_topic_name() {
    for topic in [
        "00 03 61 2f 2b",
        "00 03 61 2f 23",
        "00 01 2b",
        "00 01 23",
        "00 02 61 2b",
    ] {
        rejects(
            V5,
            frame(0x30, &hex(&format!("{topic} 00"))),
            E::InvalidTopicName,
            TOPIC_NAME,
        );
        rejects(
            V3_1_1,
            frame(0x30, &hex(topic)),
            E::InvalidTopicName,
            TOPIC_NAME,
        );
    }
}

#[test]
fn mqtt_3_3_2_2_wildcard_in_will_topic() {
    // Will flag and clean start; client "c", will topic, empty will payload.
    accepts(V3_1_1, connect_v3(0x06, "00 01 63 00 03 61 2f 62 00 00"));
    rejects(
        V3_1_1,
        connect_v3(0x06, "00 01 63 00 03 61 2f 23 00 00"),
        E::InvalidTopicName,
        TOPIC_NAME,
    );
    accepts(V5, connect_v5(0x06, "", "00 01 63 00 00 03 61 2f 62 00 00"));
    rejects(
        V5,
        connect_v5(0x06, "", "00 01 63 00 00 03 61 2f 2b 00 00"),
        E::InvalidTopicName,
        TOPIC_NAME,
    );
}

#[test]
fn v5_empty_topic_name_without_topic_alias_is_a_protocol_error() {
    // Section 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no
    // Topic Alias."
    accepts(V5, hex("30 06 00 00 03 23 00 01"));
    rejects(
        V5,
        hex("30 03 00 00 00"),
        E::EmptyTopicWithoutAlias,
        PROTOCOL,
    );
    rejects(
        V5,
        hex("32 05 00 00 00 0a 00"),
        E::EmptyTopicWithoutAlias,
        PROTOCOL,
    );
    // Other properties do not stand in for the alias.
    rejects(
        V5,
        hex("30 05 00 00 02 01 01"),
        E::EmptyTopicWithoutAlias,
        PROTOCOL,
    );
}

#[test]
fn mqtt_4_7_3_1_v311_empty_topic_name() {
    rejects(V3_1_1, hex("30 02 00 00"), E::InvalidTopicName, TOPIC_NAME);
    rejects(
        V3_1_1,
        hex("32 04 00 00 00 0a"),
        E::InvalidTopicName,
        TOPIC_NAME,
    );
    // An empty will topic, in either version.
    rejects(
        V3_1_1,
        connect_v3(0x06, "00 01 63 00 00 00 00"),
        E::InvalidTopicName,
        TOPIC_NAME,
    );
    rejects(
        V5,
        connect_v5(0x06, "", "00 01 63 00 00 00 00 00"),
        E::InvalidTopicName,
        TOPIC_NAME,
    );
}

// -------------------------------------------------------------------------------- properties

/// Where a property block sits: each packet that has one, and the will properties of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Every property identifier of 5.0 table 2-4.
const ALL_PROPERTIES: [u8; 27] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1c,
    0x1f, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a,
];

impl Place {
    const ALL: [Place; 14] = [
        Place::Connect,
        Place::Will,
        Place::ConnAck,
        Place::Publish,
        Place::PubAck,
        Place::PubRec,
        Place::PubRel,
        Place::PubComp,
        Place::Subscribe,
        Place::SubAck,
        Place::Unsubscribe,
        Place::UnsubAck,
        Place::Disconnect,
        Place::Auth,
    ];

    /// The packet a property error names.
    fn packet(self) -> PacketType {
        match self {
            Place::Connect | Place::Will => PacketType::Connect,
            Place::ConnAck => PacketType::ConnAck,
            Place::Publish => PacketType::Publish,
            Place::PubAck => PacketType::PubAck,
            Place::PubRec => PacketType::PubRec,
            Place::PubRel => PacketType::PubRel,
            Place::PubComp => PacketType::PubComp,
            Place::Subscribe => PacketType::Subscribe,
            Place::SubAck => PacketType::SubAck,
            Place::Unsubscribe => PacketType::Unsubscribe,
            Place::UnsubAck => PacketType::UnsubAck,
            Place::Disconnect => PacketType::Disconnect,
            Place::Auth => PacketType::Auth,
        }
    }

    /// The properties this place may carry (table 2-4).
    fn allowed(self) -> &'static [u8] {
        match self {
            Place::Connect => &[0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16],
            Place::Will => &[0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26],
            Place::ConnAck => &[
                0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1f, 0x26, 0x28, 0x29, 0x2a, 0x13, 0x1a,
                0x1c, 0x15, 0x16,
            ],
            Place::Publish => &[0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0b, 0x03],
            Place::PubAck
            | Place::PubRec
            | Place::PubRel
            | Place::PubComp
            | Place::SubAck
            | Place::UnsubAck => &[0x1f, 0x26],
            Place::Subscribe => &[0x0b, 0x26],
            Place::Unsubscribe => &[0x26],
            Place::Disconnect => &[0x11, 0x1f, 0x26, 0x1c],
            Place::Auth => &[0x15, 0x16, 0x1f, 0x26],
        }
    }

    /// Whether a property may appear more than once here: User Property anywhere, Subscription
    /// Identifier in PUBLISH.
    fn repeatable(self, id: u8) -> bool {
        id == 0x26 || (id == 0x0b && self == Place::Publish)
    }

    /// A valid 5.0 packet with these properties (identifiers and values, without the length).
    fn packet_with(self, properties: &[u8]) -> Vec<u8> {
        let props = block(properties);
        let (first, before, after) = match self {
            // "MQTT" 5, clean start, keep alive 60, [properties], client "c".
            Place::Connect => (0x10, "00 04 4d 51 54 54 05 02 00 3c", "00 01 63"),
            // Will flag and clean start, no CONNECT properties, client "c", [will properties],
            // will topic "t", empty will payload.
            Place::Will => (
                0x10,
                "00 04 4d 51 54 54 05 06 00 3c 00 00 01 63",
                "00 01 74 00 00",
            ),
            Place::ConnAck => (0x20, "00 00", ""),
            Place::Publish => (0x30, "00 01 74", ""),
            Place::PubAck => (0x40, "00 0a 00", ""),
            Place::PubRec => (0x50, "00 0a 00", ""),
            Place::PubRel => (0x62, "00 0a 00", ""),
            Place::PubComp => (0x70, "00 0a 00", ""),
            Place::Subscribe => (0x82, "00 0a", "00 01 23 00"),
            Place::SubAck => (0x90, "00 0a", "00"),
            Place::Unsubscribe => (0xa2, "00 0a", "00 01 23"),
            Place::UnsubAck => (0xb0, "00 0a", "00"),
            Place::Disconnect => (0xe0, "00", ""),
            Place::Auth => (0xf0, "18", ""),
        };
        frame(first, &cat(&[&hex(before), &props, &hex(after)]))
    }
}

/// A property with a valid value.
fn sample(id: u8) -> Vec<u8> {
    let value = match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a | 0x0b => "01",
        0x02 | 0x11 | 0x18 => "00 00 00 01",
        0x27 => "00 00 01 00",
        0x13 | 0x21 | 0x22 | 0x23 => "00 01",
        0x03 | 0x08 | 0x12 | 0x15 | 0x1a | 0x1c | 0x1f => "00 01 61",
        0x09 | 0x16 => "00 02 00 ff",
        0x26 => "00 01 6b 00 01 76",
        _ => panic!("no sample for property {id:#04x}"),
    };
    cat(&[&[id], &hex(value)])
}

#[test]
fn every_allowed_property_decodes_once_in_every_place() {
    for place in Place::ALL {
        accepts(V5, place.packet_with(&[]));
        for &id in place.allowed() {
            let mut properties = sample(id);
            if place == Place::Connect && id == 0x16 {
                // CONNECT Authentication Data needs its method (section 3.1.2.11.10).
                properties = [sample(0x15), properties].concat();
            }
            accepts(V5, place.packet_with(&properties));
        }
    }
}

/// "It is a Protocol Error to include Authentication Data if there is no Authentication
/// Method" (section 3.1.2.11.10).
#[test]
fn connect_authentication_data_without_method_is_a_protocol_error() {
    rejects(
        V5,
        Place::Connect.packet_with(&sample(0x16)),
        E::AuthenticationDataWithoutMethod,
        PROTOCOL,
    );
    let mut connect = Connect::new(Version::V5, "c");
    connect.properties.authentication_data = Some(Bytes::from_static(b"x"));
    assert_eq!(
        codec::encode(
            &Packet::Connect(Box::new(connect)),
            Version::V5,
            &mut BytesMut::new()
        ),
        Err(EncodeError::AuthenticationDataWithoutMethod)
    );
}

/// "It is a Protocol Error to include the {property} more than once" (section 3, for every
/// property but User Property and, in PUBLISH, Subscription Identifier).
#[test]
fn duplicate_property_is_a_protocol_error_in_every_place() {
    for place in Place::ALL {
        for &id in place.allowed() {
            let twice = place.packet_with(&[sample(id), sample(id)].concat());
            if place.repeatable(id) {
                accepts(V5, twice);
            } else {
                rejects(V5, twice, E::DuplicateProperty(id), PROTOCOL);
            }
        }
    }
}

#[test]
fn two_session_expiry_intervals_in_connect() {
    let once = "11 00 00 00 0a";
    accepts(V5, connect_v5(0x02, once, "00 01 63"));
    let twice = "11 00 00 00 0a 11 00 00 00 0a";
    rejects(
        V5,
        connect_v5(0x02, twice, "00 01 63"),
        E::DuplicateProperty(0x11),
        PROTOCOL,
    );
}

#[test]
fn two_topic_aliases_in_publish() {
    accepts(V5, hex("30 07 00 01 74 03 23 00 01"));
    rejects(
        V5,
        hex("30 0a 00 01 74 06 23 00 01 23 00 02"),
        E::DuplicateProperty(0x23),
        PROTOCOL,
    );
}

#[test]
fn property_not_allowed_in_its_packet_is_malformed() {
    for place in Place::ALL {
        for id in ALL_PROPERTIES
            .into_iter()
            .filter(|id| !place.allowed().contains(id))
        {
            let packet = place.packet();
            rejects(
                V5,
                place.packet_with(&sample(id)),
                E::PropertyNotAllowed { id, packet },
                MALFORMED,
            );
        }
    }
    // The example of the rule: a Topic Alias in CONNECT.
    rejects(
        V5,
        connect_v5(0x02, "23 00 01", "00 01 63"),
        E::PropertyNotAllowed {
            id: 0x23,
            packet: PacketType::Connect,
        },
        MALFORMED,
    );
}

#[test]
fn unknown_property_identifier_is_malformed() {
    for place in Place::ALL {
        for id in [
            0x00, 0x04, 0x05, 0x0a, 0x0c, 0x10, 0x14, 0x1b, 0x20, 0x2b, 0x7f,
        ] {
            rejects(
                V5,
                place.packet_with(&[id, 0x00]),
                E::UnknownProperty(id),
                MALFORMED,
            );
        }
        // Identifiers are Variable Byte Integers: 128 is 80 01.
        rejects(
            V5,
            place.packet_with(&hex("80 01 00")),
            E::UnknownProperty(0x80),
            MALFORMED,
        );
    }
}

#[test]
fn invalid_property_values_are_protocol_errors() {
    let cases: [(Place, &str, u8); 17] = [
        // Receive Maximum 0 (3.1.2.11.3, 3.2.2.3.3).
        (Place::Connect, "21 00 00", 0x21),
        (Place::ConnAck, "21 00 00", 0x21),
        // Maximum Packet Size 0 (3.1.2.11.4, 3.2.2.3.6).
        (Place::Connect, "27 00 00 00 00", 0x27),
        (Place::ConnAck, "27 00 00 00 00", 0x27),
        // Maximum QoS other than 0 or 1 (3.2.2.3.4).
        (Place::ConnAck, "24 02", 0x24),
        (Place::ConnAck, "24 03", 0x24),
        // Byte flags other than 0 or 1.
        (Place::Connect, "17 02", 0x17),
        (Place::Connect, "19 02", 0x19),
        (Place::ConnAck, "25 02", 0x25),
        (Place::ConnAck, "28 02", 0x28),
        (Place::ConnAck, "29 02", 0x29),
        (Place::ConnAck, "2a 02", 0x2a),
        (Place::Publish, "01 02", 0x01),
        (Place::Will, "01 ff", 0x01),
        // Topic Alias 0 (MQTT-3.3.2-8).
        (Place::Publish, "23 00 00", 0x23),
        // Subscription Identifier 0 (3.3.2.3.8, 3.8.2.1.2).
        (Place::Publish, "0b 00", 0x0b),
        (Place::Subscribe, "0b 00", 0x0b),
    ];
    for (place, property, id) in cases {
        rejects(
            V5,
            place.packet_with(&hex(property)),
            E::InvalidPropertyValue(id),
            PROTOCOL,
        );
    }
}

#[test]
fn property_length_past_the_end_of_the_packet_is_truncated() {
    // Property length 5 with one byte left.
    rejects(
        V5,
        hex("40 05 00 0a 00 05 1f"),
        E::Truncated(PacketType::PubAck),
        MALFORMED,
    );
    // A property value cut by the property length: Session Expiry Interval with 2 of 4 bytes.
    rejects(
        V5,
        hex("e0 05 00 03 11 00 00"),
        E::Truncated(PacketType::Disconnect),
        MALFORMED,
    );
    // A property length whose Variable Byte Integer is cut.
    rejects(
        V5,
        hex("40 04 00 0a 00 80"),
        E::Truncated(PacketType::PubAck),
        MALFORMED,
    );
}

// ---------------------------------------------------------------------- subscription options

#[test]
fn mqtt_3_8_3_5_reserved_subscription_option_bits() {
    accepts(V5, hex("82 07 00 0a 00 00 01 23 2e"));
    for options in [0x40, 0x80, 0xc0, 0x41] {
        let bytes = cat(&[&hex("82 07 00 0a 00 00 01 23"), &[options]]);
        rejects(V5, bytes, E::InvalidSubscriptionOptions(options), MALFORMED);
    }
}

/// 3.1.1 reserves bits 2 to 7 of the requested QoS byte.
#[test]
fn mqtt_3_8_3_4_v311_reserved_subscription_option_bits() {
    accepts(V3_1_1, hex("82 06 00 0a 00 01 23 02"));
    for options in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x06] {
        let bytes = cat(&[&hex("82 06 00 0a 00 01 23"), &[options]]);
        rejects(
            V3_1_1,
            bytes,
            E::InvalidSubscriptionOptions(options),
            MALFORMED,
        );
    }
}

#[test]
fn subscription_maximum_qos_3() {
    // 5.0 section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    rejects(
        V5,
        hex("82 07 00 0a 00 00 01 23 03"),
        E::InvalidSubscriptionOptions(0x03),
        PROTOCOL,
    );
    rejects(
        V5,
        hex("82 07 00 0a 00 00 01 23 0f"),
        E::InvalidSubscriptionOptions(0x0f),
        PROTOCOL,
    );
    // 3.1.1 MQTT-3.8.3-4: malformed; 3.1.1 has no reason codes, the error is what matters.
    let bytes = hex("82 06 00 0a 00 01 23 03");
    let result = decode(V3_1_1, &bytes, &Limits::default());
    assert_eq!(result, Err(E::InvalidSubscriptionOptions(0x03)));
}

#[test]
fn retain_handling_3_is_a_protocol_error() {
    // Section 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
    accepts(V5, hex("82 07 00 0a 00 00 01 23 20"));
    rejects(
        V5,
        hex("82 07 00 0a 00 00 01 23 30"),
        E::InvalidRetainHandling,
        PROTOCOL,
    );
    rejects(
        V5,
        hex("82 07 00 0a 00 00 01 23 3e"),
        E::InvalidRetainHandling,
        PROTOCOL,
    );
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription() {
    // "$share/g/a" with No Local; the same without No Local, and No Local on "g/a", decode.
    let shared = "00 0a 24 73 68 61 72 65 2f 67 2f 61";
    accepts(V5, frame(0x82, &hex(&format!("00 0a 00 {shared} 01"))));
    accepts(V5, frame(0x82, &hex("00 0a 00 00 03 67 2f 61 05")));
    rejects(
        V5,
        frame(0x82, &hex(&format!("00 0a 00 {shared} 05"))),
        E::NoLocalOnSharedSubscription,
        PROTOCOL,
    );
}

// ----------------------------------------------------------------------------- topic filters

/// Invalid filters, in SUBSCRIBE and UNSUBSCRIBE of both versions.
#[test]
fn invalid_topic_filters_are_malformed() {
    let cases = [
        // MQTT-4.7.1-1: "#" must be last and alone in its level.
        ("mqtt_4_7_1_1", "a/#/b"),
        ("mqtt_4_7_1_1", "a/b#"),
        ("mqtt_4_7_1_1", "#/"),
        // MQTT-4.7.1-2: "+" must occupy a whole level.
        ("mqtt_4_7_1_2", "a+"),
        ("mqtt_4_7_1_2", "a/+b/c"),
        // MQTT-4.7.3-1: at least one character.
        ("mqtt_4_7_3_1", ""),
        // MQTT-4.8.2-1, MQTT-4.8.2-2: a share name of at least one character without wildcards,
        // then "/" and a topic filter.
        ("mqtt_4_8_2_1", "$share/g"),
        ("mqtt_4_8_2_1", "$share/g/"),
        ("mqtt_4_8_2_1", "$share//a"),
        ("mqtt_4_8_2_2", "$share/g+/a"),
        ("mqtt_4_8_2_2", "$share/g#/a"),
        ("mqtt_4_8_2_2", "$share/g/a#"),
    ];
    for (rule, filter) in cases {
        let encoded = cat(&[
            &u16::try_from(filter.len()).unwrap().to_be_bytes(),
            filter.as_bytes(),
        ]);
        let v5_subscribe = frame(0x82, &cat(&[&hex("00 0a 00"), &encoded, &[0x01]]));
        let v3_subscribe = frame(0x82, &cat(&[&hex("00 0a"), &encoded, &[0x01]]));
        let v5_unsubscribe = frame(0xa2, &cat(&[&hex("00 0a 00"), &encoded]));
        let v3_unsubscribe = frame(0xa2, &cat(&[&hex("00 0a"), &encoded]));
        for (version, bytes) in [
            (V5, v5_subscribe),
            (V3_1_1, v3_subscribe),
            (V5, v5_unsubscribe),
            (V3_1_1, v3_unsubscribe),
        ] {
            assert_eq!(
                decode(version, &bytes, &Limits::default()),
                Err(E::InvalidTopicFilter),
                "{rule}: {filter:?} in {version:?} {bytes:02x?}"
            );
        }
    }
    assert_eq!(E::InvalidTopicFilter.reason_code(), MALFORMED);
    // Controls: the well-formed neighbours.
    for filter in ["a/#", "+/b/+", "#", "$share/g/a/#", "$share/g/+"] {
        let encoded = cat(&[
            &u16::try_from(filter.len()).unwrap().to_be_bytes(),
            filter.as_bytes(),
        ]);
        accepts(
            V5,
            frame(0x82, &cat(&[&hex("00 0a 00"), &encoded, &[0x01]])),
        );
        accepts(V3_1_1, frame(0xa2, &cat(&[&hex("00 0a"), &encoded])));
    }
}

// ----------------------------------------------------------------------------------- CONNECT

#[test]
fn mqtt_3_1_2_1_wrong_protocol_name() {
    // MQTT 3.1 spoke "MQIsdp" at level 3; a name in the wrong case; a name of 5 bytes.
    let bodies = [
        "00 06 4d 51 49 73 64 70 03 02 00 3c 00 01 63",
        "00 04 6d 71 74 74 04 02 00 3c 00 01 63",
        "00 05 4d 51 54 54 35 05 02 00 3c 00 00 01 63",
    ];
    for body in bodies {
        for version in BOTH {
            let bytes = frame(0x10, &hex(body));
            rejects(version, bytes, E::InvalidProtocolName, UNSUPPORTED);
        }
    }
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level() {
    for level in [3u8, 6, 0, 0xff] {
        let body = cat(&[
            &hex("00 04 4d 51 54 54"),
            &[level],
            &hex("02 00 3c 00 01 63"),
        ]);
        for version in BOTH {
            let bytes = frame(0x10, &body);
            rejects(
                version,
                bytes,
                E::UnsupportedProtocolVersion(level),
                UNSUPPORTED,
            );
        }
    }
}

#[test]
fn mqtt_3_1_2_3_reserved_connect_flag() {
    rejects(
        V3_1_1,
        connect_v3(0x03, "00 01 63"),
        E::InvalidConnectFlags,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        connect_v3(0x01, "00 01 63"),
        E::InvalidConnectFlags,
        MALFORMED,
    );
    rejects(
        V5,
        connect_v5(0x03, "", "00 01 63"),
        E::InvalidConnectFlags,
        MALFORMED,
    );
}

#[test]
fn mqtt_3_1_2_11_will_qos_without_will_flag() {
    for flags in [0x0a, 0x12, 0x1a] {
        rejects(
            V3_1_1,
            connect_v3(flags, "00 01 63"),
            E::InvalidWillFlags,
            MALFORMED,
        );
        rejects(
            V5,
            connect_v5(flags, "", "00 01 63"),
            E::InvalidWillFlags,
            MALFORMED,
        );
    }
}

#[test]
fn mqtt_3_1_2_12_will_qos_3() {
    // Will flag, will QoS 3, clean start.
    accepts(V3_1_1, connect_v3(0x16, "00 01 63 00 01 74 00 00"));
    rejects(
        V3_1_1,
        connect_v3(0x1e, "00 01 63 00 01 74 00 00"),
        E::InvalidWillFlags,
        MALFORMED,
    );
    rejects(
        V5,
        connect_v5(0x1e, "", "00 01 63 00 00 01 74 00 00"),
        E::InvalidWillFlags,
        MALFORMED,
    );
}

#[test]
fn mqtt_3_1_2_13_will_retain_without_will_flag() {
    accepts(V3_1_1, connect_v3(0x26, "00 01 63 00 01 74 00 00"));
    rejects(
        V3_1_1,
        connect_v3(0x22, "00 01 63"),
        E::InvalidWillFlags,
        MALFORMED,
    );
    rejects(
        V5,
        connect_v5(0x22, "", "00 01 63"),
        E::InvalidWillFlags,
        MALFORMED,
    );
}

/// 3.1.1 MQTT-3.1.2-22: no password without a user name (5.0 allows it).
#[test]
fn mqtt_3_1_2_22_v311_password_without_user_name() {
    accepts(V3_1_1, connect_v3(0xc2, "00 01 63 00 01 75 00 01 70"));
    rejects(
        V3_1_1,
        connect_v3(0x42, "00 01 63 00 01 70"),
        E::PasswordWithoutUsername,
        MALFORMED,
    );
    accepts(V5, connect_v5(0x42, "", "00 01 63 00 01 70"));
}

#[test]
fn connect_with_fields_past_its_end_or_bytes_after_them() {
    // The user name flag without a user name.
    rejects(
        V3_1_1,
        connect_v3(0x82, "00 01 63"),
        E::Truncated(PacketType::Connect),
        MALFORMED,
    );
    // A client identifier announcing 5 bytes, with 1.
    rejects(
        V3_1_1,
        connect_v3(0x02, "00 05 63"),
        E::Truncated(PacketType::Connect),
        MALFORMED,
    );
    // A byte after the client identifier.
    rejects(
        V3_1_1,
        connect_v3(0x02, "00 01 63 00"),
        E::TrailingBytes(PacketType::Connect),
        MALFORMED,
    );
    rejects(
        V5,
        connect_v5(0x02, "", "00 01 63 00"),
        E::TrailingBytes(PacketType::Connect),
        MALFORMED,
    );
}

// ----------------------------------------------------------------------------------- CONNACK

#[test]
fn mqtt_3_2_2_1_connack_reserved_flags() {
    rejects(
        V3_1_1,
        hex("20 02 02 00"),
        E::InvalidConnAckFlags,
        MALFORMED,
    );
    rejects(
        V3_1_1,
        hex("20 02 80 00"),
        E::InvalidConnAckFlags,
        MALFORMED,
    );
    rejects(V5, hex("20 03 fe 00 00"), E::InvalidConnAckFlags, MALFORMED);
}

/// 5.0 MQTT-3.2.2-6 (3.1.1 MQTT-3.2.2-4): Session Present must be 0 with an error code.
#[test]
fn mqtt_3_2_2_6_session_present_with_an_error_code() {
    accepts(V5, hex("20 03 01 00 00"));
    rejects(
        V5,
        hex("20 03 01 87 00"),
        E::SessionPresentOnError,
        PROTOCOL,
    );
    rejects(
        V5,
        hex("20 03 01 80 00"),
        E::SessionPresentOnError,
        PROTOCOL,
    );
    accepts(V3_1_1, hex("20 02 01 00"));
    rejects(
        V3_1_1,
        hex("20 02 01 05"),
        E::SessionPresentOnError,
        PROTOCOL,
    );
    rejects(
        V3_1_1,
        hex("20 02 01 01"),
        E::SessionPresentOnError,
        PROTOCOL,
    );
}

// ------------------------------------------------------------------------------ reason codes

#[test]
fn reason_code_not_allowed_in_its_packet_is_malformed() {
    use PacketType::*;
    let cases = [
        // 0x8F Topic Filter invalid is a SUBACK / UNSUBACK code, not a PUBACK one.
        (V5, "40 03 00 0a 8f", PubAck, 0x8f),
        (V5, "50 03 00 0a 8f", PubRec, 0x8f),
        (V5, "62 03 00 0a 10", PubRel, 0x10),
        (V5, "70 03 00 0a 80", PubComp, 0x80),
        (V5, "90 04 00 0a 00 10", SubAck, 0x10),
        (V5, "b0 04 00 0a 00 01", UnsubAck, 0x01),
        (V5, "20 03 00 04 00", ConnAck, 0x04),
        (V5, "20 03 00 8e 00", ConnAck, 0x8e),
        (V5, "e0 01 01", Disconnect, 0x01),
        (V5, "e0 01 18", Disconnect, 0x18),
        (V5, "f0 01 80", Auth, 0x80),
        (V5, "f0 01 04", Auth, 0x04),
        // Values table 2-6 does not define at all.
        (V5, "40 03 00 0a 03", PubAck, 0x03),
        (V5, "e0 01 ff", Disconnect, 0xff),
        // 3.1.1 CONNACK return codes are 0 to 5; SUBACK return codes 0, 1, 2 and 0x80.
        (V3_1_1, "20 02 00 06", ConnAck, 0x06),
        (V3_1_1, "20 02 00 80", ConnAck, 0x80),
        (V3_1_1, "90 03 00 0a 03", SubAck, 0x03),
        (V3_1_1, "90 04 00 0a 00 81", SubAck, 0x81),
    ];
    for (version, bytes, packet, code) in cases {
        rejects(
            version,
            hex(bytes),
            E::InvalidReasonCode { packet, code },
            MALFORMED,
        );
    }
}

// ------------------------------------------------------------ remaining length vs. contents

#[test]
fn bytes_after_the_contents_are_malformed() {
    use PacketType::*;
    let cases = [
        // 3.1.1 acknowledgements carry only the packet identifier.
        (V3_1_1, "40 03 00 0a 00", PubAck),
        (V3_1_1, "62 03 00 0a 00", PubRel),
        (V3_1_1, "b0 03 00 0a 00", UnsubAck),
        (V3_1_1, "20 03 00 00 00", ConnAck),
        (V3_1_1, "e0 01 00", Disconnect),
        (V3_1_1, "c0 01 00", PingReq),
        (V5, "c0 01 00", PingReq),
        (V5, "d0 02 00 00", PingResp),
        // After a property block.
        (V5, "40 05 00 0a 00 00 ff", PubAck),
        (V5, "e0 03 00 00 00", Disconnect),
        (V5, "f0 03 18 00 00", Auth),
        (V5, "20 04 00 00 00 00", ConnAck),
    ];
    for (version, bytes, packet) in cases {
        rejects(version, hex(bytes), E::TrailingBytes(packet), MALFORMED);
    }
}

#[test]
fn a_length_prefix_past_the_end_is_truncated() {
    use PacketType::*;
    let cases = [
        // A topic announcing 5 bytes with 2 left.
        (V3_1_1, "30 04 00 05 61 62", Publish),
        (V5, "30 04 00 05 61 62", Publish),
        // A packet identifier cut in half.
        (V3_1_1, "40 01 00", PubAck),
        (V3_1_1, "32 04 00 01 61 00", Publish),
        // A subscription without its options byte.
        (V3_1_1, "82 05 00 0a 00 01 23", Subscribe),
        // A 5.0 CONNACK without its property length.
        (V5, "20 02 00 00", ConnAck),
        // A 5.0 UNSUBACK without its property length.
        (V5, "b0 02 00 0a", UnsubAck),
        // A user property whose value runs past the property block.
        (V5, "e0 09 00 07 26 00 01 6b 00 05 76", Disconnect),
    ];
    for (version, bytes, packet) in cases {
        rejects(version, hex(bytes), E::Truncated(packet), MALFORMED);
    }
}

// --------------------------------------------------------------------------- empty payloads

/// 5.0 MQTT-3.8.3-2 (3.1.1 MQTT-3.8.3-3): a SUBSCRIBE carries at least one filter.
#[test]
fn mqtt_3_8_3_2_empty_subscribe() {
    let error = E::EmptyPayload(PacketType::Subscribe);
    rejects(V3_1_1, hex("82 02 00 0a"), error.clone(), PROTOCOL);
    rejects(V5, hex("82 03 00 0a 00"), error.clone(), PROTOCOL);
    rejects(V5, hex("82 05 00 0a 02 0b 01"), error, PROTOCOL);
}

/// 5.0 MQTT-3.10.3-2 (3.1.1 MQTT-3.10.3-2): an UNSUBSCRIBE carries at least one filter.
#[test]
fn mqtt_3_10_3_2_empty_unsubscribe() {
    let error = E::EmptyPayload(PacketType::Unsubscribe);
    rejects(V3_1_1, hex("a2 02 00 0a"), error.clone(), PROTOCOL);
    rejects(V5, hex("a2 03 00 0a 00"), error, PROTOCOL);
}

/// A SUBACK answers each filter of a SUBSCRIBE, and there is at least one; likewise a 5.0
/// UNSUBACK.
#[test]
fn empty_suback_and_unsuback() {
    let error = E::EmptyPayload(PacketType::SubAck);
    rejects(V3_1_1, hex("90 02 00 0a"), error.clone(), PROTOCOL);
    rejects(V5, hex("90 03 00 0a 00"), error, PROTOCOL);
    let error = E::EmptyPayload(PacketType::UnsubAck);
    rejects(V5, hex("b0 03 00 0a 00"), error, PROTOCOL);
}

// ------------------------------------------------------------------------- packet too large

#[test]
fn packet_too_large_is_rejected_from_the_fixed_header_alone() {
    let limits = Limits::new(128);
    for version in BOTH {
        // Remaining length 16,383: only the three bytes of the fixed header are in the buffer.
        let mut buf = BytesMut::from(&hex("30 ff 7f")[..]);
        let error = E::PacketTooLarge {
            size: 3 + 16_383,
            max: 128,
        };
        assert_eq!(
            codec::decode(&mut buf, version, &limits),
            Err(error.clone())
        );
        assert_eq!(error.reason_code(), TOO_LARGE);
        assert_eq!(&buf[..], &hex("30 ff 7f")[..], "nothing consumed");

        // The largest remaining length there is.
        let mut buf = BytesMut::from(&hex("30 ff ff ff 7f")[..]);
        let error = E::PacketTooLarge {
            size: 5 + 268_435_455,
            max: 128,
        };
        assert_eq!(codec::decode(&mut buf, version, &limits), Err(error));

        // An incomplete remaining length cannot tell yet.
        let mut buf = BytesMut::from(&hex("30 ff")[..]);
        assert_eq!(codec::decode(&mut buf, version, &limits), Ok(None));
    }
}

#[test]
fn packet_of_exactly_the_maximum_size_is_accepted() {
    let limits = Limits::new(128);
    // A QoS 0 PUBLISH to "t": 2 bytes of fixed header, 3 of topic, then the payload.
    let mut exact = hex("30 7e 00 01 74");
    exact.extend(vec![b'z'; 126 - 3]);
    assert_eq!(exact.len(), 128);
    let decoded = codec::decode(&mut BytesMut::from(&exact[..]), V3_1_1, &limits);
    assert!(
        matches!(decoded, Ok(Some(Packet::Publish(_)))),
        "{decoded:?}"
    );
    // One byte more is too many, known from the two bytes of its fixed header.
    let error = E::PacketTooLarge {
        size: 129,
        max: 128,
    };
    assert_eq!(
        codec::decode(&mut BytesMut::from(&hex("30 7f")[..]), V3_1_1, &limits),
        Err(error)
    );
}

// ================================================================================== encoding

/// Encoding `packet` fails with `error`, writes nothing, and `encoded_len` reports the same.
#[track_caller]
fn encode_fails(packet: impl Into<Packet>, version: Version, error: EncodeError) {
    let packet = packet.into();
    let mut buf = BytesMut::from(&b"before"[..]);
    assert_eq!(
        codec::encode(&packet, version, &mut buf),
        Err(error.clone()),
        "{packet:?}"
    );
    assert_eq!(&buf[..], b"before", "a failed encode wrote bytes");
    assert_eq!(
        packet.encoded_len(version),
        Err(error),
        "encoded_len of {packet:?}"
    );
}

/// Encoding `packet` for 3.1.1 fails with [`EncodeError::NotInV311`] naming `what`, writing
/// nothing.
#[track_caller]
fn not_in_v311(packet: impl Into<Packet>, what: V5Only) {
    let packet = packet.into();
    let mut buf = BytesMut::new();
    let result = codec::encode(&packet, V3_1_1, &mut buf);
    assert_eq!(result, Err(EncodeError::NotInV311(what)), "{packet:?}");
    assert!(buf.is_empty());
}

fn pid(id: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(id).unwrap()
}

fn long_string() -> ByteString {
    ByteString::from("x".repeat(65_536))
}

#[test]
fn encode_publish_packet_id_must_match_qos() {
    let mut publish = Publish::new(name("a/b"), "x");
    publish.qos = QoS::AtLeastOnce;
    for version in BOTH {
        encode_fails(publish.clone(), version, EncodeError::PacketIdMismatch);
    }
    publish.qos = QoS::ExactlyOnce;
    encode_fails(publish.clone(), V5, EncodeError::PacketIdMismatch);
    let mut publish = Publish::new(name("a/b"), "x");
    publish.packet_id = Some(pid(1));
    encode_fails(publish, V5, EncodeError::PacketIdMismatch);
}

#[test]
fn encode_mqtt_3_3_1_2_dup_on_qos_0() {
    let mut publish = Publish::new(name("a/b"), "x");
    publish.dup = true;
    encode_fails(publish, V5, EncodeError::DupWithQoS0);
}

#[test]
fn encode_empty_topic_without_alias() {
    encode_fails(
        Publish::new(TopicName::empty(), "x"),
        V5,
        EncodeError::EmptyTopic,
    );
    encode_fails(
        Publish::new(TopicName::empty(), "x"),
        V3_1_1,
        EncodeError::EmptyTopic,
    );
    // A topic alias stands in for the topic in 5.0 only.
    let mut aliased = Publish::new(TopicName::empty(), "x");
    aliased.properties.topic_alias = Some(pid(1));
    let mut buf = BytesMut::new();
    codec::encode(&aliased.clone().into(), V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &hex("30 07 00 00 03 23 00 01 78")[..]);
    encode_fails(aliased, V3_1_1, EncodeError::EmptyTopic);
}

#[test]
fn encode_auth_in_v311() {
    encode_fails(
        Auth::default(),
        V3_1_1,
        EncodeError::NotInV311(V5Only::Auth),
    );
}

#[test]
fn encode_v5_only_fields_in_v311() {
    // Properties of every packet that has them, except PUBLISH (whose are dropped, below).
    let mut connect = Connect::new(V3_1_1, "c");
    connect.properties.session_expiry_interval = Some(1);
    not_in_v311(connect, V5Only::Properties(PacketType::Connect));
    let mut connect = Connect::new(V3_1_1, "c");
    let mut will = Will::new(name("w"), "x", QoS::AtMostOnce);
    will.properties.will_delay_interval = Some(1);
    connect.will = Some(will);
    not_in_v311(connect, V5Only::WillProperties);
    let mut connack = ConnAck::default();
    connack.properties.maximum_qos = Some(QoS::AtMostOnce);
    not_in_v311(connack, V5Only::Properties(PacketType::ConnAck));
    let mut puback = PubAck::new(pid(1));
    puback.properties.reason_string = Some("r".into());
    not_in_v311(puback, V5Only::Properties(PacketType::PubAck));
    let mut subscribe = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![Subscription::new(filter("a"), QoS::AtMostOnce)],
    };
    subscribe
        .properties
        .user_properties
        .push(UserProperty::new("k", "v"));
    not_in_v311(subscribe, V5Only::Properties(PacketType::Subscribe));
    let mut suback = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::Success],
    };
    suback.properties.reason_string = Some("r".into());
    not_in_v311(suback, V5Only::Properties(PacketType::SubAck));
    let mut unsubscribe = Unsubscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![filter("a")],
    };
    unsubscribe
        .properties
        .user_properties
        .push(UserProperty::new("k", "v"));
    not_in_v311(unsubscribe, V5Only::Properties(PacketType::Unsubscribe));
    let unsuback = UnsubAck {
        packet_id: pid(1),
        properties: AckProperties {
            reason_string: Some("r".into()),
            user_properties: Vec::new(),
        },
        reason_codes: vec![ReasonCode::Success],
    };
    not_in_v311(unsuback, V5Only::Properties(PacketType::UnsubAck));
    let disconnect = Disconnect {
        reason_code: ReasonCode::Success,
        properties: DisconnectProperties {
            reason_string: Some("r".into()),
            ..Default::default()
        },
    };
    not_in_v311(disconnect, V5Only::Properties(PacketType::Disconnect));

    // Reason codes other than Success.
    let mut puback = PubAck::new(pid(1));
    puback.reason_code = ReasonCode::NoMatchingSubscribers;
    not_in_v311(puback, V5Only::ReasonCode(PacketType::PubAck));
    let mut pubrel = PubRel::new(pid(1));
    pubrel.reason_code = ReasonCode::PacketIdentifierNotFound;
    not_in_v311(pubrel, V5Only::ReasonCode(PacketType::PubRel));
    not_in_v311(
        Disconnect::new(ReasonCode::DisconnectWithWillMessage),
        V5Only::ReasonCode(PacketType::Disconnect),
    );

    // Subscription options other than QoS.
    let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
    options.retain_handling = RetainHandling::DoNotSend;
    not_in_v311(
        Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![Subscription {
                filter: filter("a"),
                options,
            }],
        },
        V5Only::SubscriptionOptions,
    );

    // A password without a user name.
    let mut connect = Connect::new(V3_1_1, "c");
    connect.password = Some(Bytes::from_static(b"p"));
    not_in_v311(connect, V5Only::PasswordWithoutUsername);
}

#[test]
fn encode_connack_code_without_a_v311_return_code() {
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Banned,
        properties: ConnAckProperties::default(),
    };
    encode_fails(
        connack,
        V3_1_1,
        EncodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: ReasonCode::Banned,
        },
    );
}

#[test]
fn encode_field_longer_than_65535_bytes() {
    let error = EncodeError::FieldTooLong(65_536);
    encode_fails(Connect::new(V5, long_string()), V5, error.clone());
    encode_fails(Connect::new(V3_1_1, long_string()), V3_1_1, error.clone());
    // A topic name that long cannot be made, so it cannot be encoded.
    assert_eq!(TopicName::new(long_string()), Err(TopicError::TooLong));
    let mut publish = Publish::new(name("a"), "x");
    publish
        .properties
        .user_properties
        .push(UserProperty::new("k", long_string()));
    encode_fails(publish, V5, error.clone());
    let mut publish = Publish::new(name("a"), "x");
    publish.properties.correlation_data = Some(Bytes::from(vec![0; 65_536]));
    encode_fails(publish, V5, error.clone());
    let mut connect = Connect::new(V5, "c");
    connect.password = Some(Bytes::from(vec![0; 65_536]));
    encode_fails(connect, V5, error);
    // A filter that long cannot be made, so it cannot be encoded.
    assert_eq!(TopicFilter::new(long_string()), Err(TopicError::TooLong));
    // 65,535 bytes is the limit, not past it.
    let ok = Publish::new(name(&"x".repeat(65_535)), "");
    assert_eq!(Packet::from(ok).encoded_len(V5), Ok(1 + 3 + 2 + 65_535 + 1));
}

#[test]
fn encode_reason_code_not_allowed_in_the_packet() {
    fn invalid(packet: PacketType, code: ReasonCode) -> EncodeError {
        EncodeError::InvalidReasonCode { packet, code }
    }
    let mut puback = PubAck::new(pid(1));
    puback.reason_code = ReasonCode::Banned;
    encode_fails(puback, V5, invalid(PacketType::PubAck, ReasonCode::Banned));
    let mut pubrel = PubRel::new(pid(1));
    pubrel.reason_code = ReasonCode::NoMatchingSubscribers;
    let error = invalid(PacketType::PubRel, ReasonCode::NoMatchingSubscribers);
    encode_fails(pubrel, V5, error);
    let suback = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::Success, ReasonCode::NoMatchingSubscribers],
    };
    let error = invalid(PacketType::SubAck, ReasonCode::NoMatchingSubscribers);
    encode_fails(suback.clone(), V5, error.clone());
    encode_fails(suback, V3_1_1, error);
    let unsuback = UnsubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::GrantedQoS1],
    };
    encode_fails(
        unsuback,
        V5,
        invalid(PacketType::UnsubAck, ReasonCode::GrantedQoS1),
    );
    let error = invalid(PacketType::Disconnect, ReasonCode::GrantedQoS1);
    encode_fails(Disconnect::new(ReasonCode::GrantedQoS1), V5, error);
    let auth = Auth {
        reason_code: ReasonCode::UnspecifiedError,
        properties: Default::default(),
    };
    encode_fails(
        auth,
        V5,
        invalid(PacketType::Auth, ReasonCode::UnspecifiedError),
    );
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::GrantedQoS1,
        properties: ConnAckProperties::default(),
    };
    encode_fails(
        connack,
        V5,
        invalid(PacketType::ConnAck, ReasonCode::GrantedQoS1),
    );
}

#[test]
fn encode_other_invalid_packets() {
    encode_fails(Connect::new(V5, "c"), V3_1_1, EncodeError::VersionMismatch);
    let subscribe = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: Vec::new(),
    };
    encode_fails(
        subscribe,
        V5,
        EncodeError::EmptyPayload(PacketType::Subscribe),
    );
    let unsubscribe = Unsubscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: Vec::new(),
    };
    encode_fails(
        unsubscribe,
        V3_1_1,
        EncodeError::EmptyPayload(PacketType::Unsubscribe),
    );
    let suback = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    };
    encode_fails(
        suback,
        V3_1_1,
        EncodeError::EmptyPayload(PacketType::SubAck),
    );
    // Maximum QoS may only be 0 or 1.
    let connack = ConnAck {
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::ExactlyOnce),
            ..ConnAckProperties::default()
        },
        ..ConnAck::default()
    };
    encode_fails(connack, V5, EncodeError::PropertyOutOfRange(0x24));
}

/// Encoding a 5.0 PUBLISH for 3.1.1 drops its properties: what a broker forwarding it to a
/// 3.1.1 subscriber must do (documented on `codec::encode`).
#[test]
fn encode_v5_publish_for_v311_drops_its_properties() {
    let mut publish = Publish::new(name("a/b"), "hi");
    publish.properties = PublishProperties {
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        user_properties: vec![UserProperty::new("k", "v")],
        ..PublishProperties::default()
    }
    .into();
    let packet = Packet::Publish(publish);
    let mut buf = BytesMut::new();
    codec::encode(&packet, V3_1_1, &mut buf).unwrap();
    assert_eq!(&buf[..], &hex("30 07 00 03 61 2f 62 68 69")[..]);
    assert_eq!(packet.encoded_len(V3_1_1), Ok(9));
    // The same message for 5.0 keeps them.
    assert!(packet.encoded_len(V5).unwrap() > 9);
    // A will's properties are not dropped but refused.
    let mut will = Will::new(name("w"), "x", QoS::AtMostOnce);
    will.properties = WillProperties {
        content_type: Some("t".into()),
        ..WillProperties::default()
    };
    let mut connect = Connect::new(V3_1_1, "c");
    connect.will = Some(will);
    not_in_v311(connect, V5Only::WillProperties);
    // And the CONNECT properties of a 3.1.1 connection too.
    let connect = Connect {
        properties: ConnectProperties {
            receive_maximum: Some(pid(5)),
            ..ConnectProperties::default()
        },
        ..Connect::new(V3_1_1, "c")
    };
    not_in_v311(connect, V5Only::Properties(PacketType::Connect));
}

/// What the decoder rejects, the encoder refuses to produce.
#[test]
fn encoder_refuses_what_the_decoder_rejects() {
    let encode = |packet: Packet| codec::encode(&packet, V5, &mut BytesMut::new());
    // MQTT-3.3.2-2: no wildcards in a topic name. Such a name cannot be made, so it cannot be
    // encoded, in a PUBLISH or a will.
    assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("w/#"), Err(TopicError::WildcardInName));
    // MQTT-4.7.3-1: a topic is at least one character. The empty name (which stands for a Topic
    // Alias on a 5.0 PUBLISH) is refused on a will.
    let mut connect = Connect::new(V5, "c");
    connect.will = Some(Will::new(TopicName::empty(), "x", QoS::AtMostOnce));
    assert_eq!(
        encode(Packet::Connect(Box::new(connect))),
        Err(EncodeError::EmptyTopic)
    );
    // MQTT-4.7.1-1: malformed filters cannot be made, so they cannot be encoded.
    assert_eq!(
        TopicFilter::new("a/#/b"),
        Err(TopicError::MisplacedWildcard)
    );
    let subscribe = |text: &str, no_local: bool| {
        let mut subscription = Subscription::new(filter(text), QoS::AtMostOnce);
        subscription.options.no_local = no_local;
        Packet::Subscribe(Subscribe {
            packet_id: mqtt_proto::packet::PacketId::new(1).unwrap(),
            properties: Default::default(),
            filters: vec![subscription],
        })
    };
    assert!(encode(subscribe("a/+", false)).is_ok());
    // MQTT-3.8.3-4: no No Local on a shared subscription.
    assert_eq!(
        encode(subscribe("$share/g/a", true)),
        Err(EncodeError::NoLocalOnSharedSubscription)
    );
    // MQTT-1.5.4-2: no U+0000 in any string.
    assert_eq!(
        encode(Packet::Connect(Box::new(Connect::new(V5, "a\0b")))),
        Err(EncodeError::NullCharacter)
    );
    // MQTT-3.2.2-6: no session with an error code.
    let connack = ConnAck {
        session_present: true,
        reason_code: ReasonCode::NotAuthorized,
        properties: ConnAckProperties::default(),
    };
    assert_eq!(
        encode(Packet::ConnAck(Box::new(connack))),
        Err(EncodeError::SessionPresentOnError)
    );
}
