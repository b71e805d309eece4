//! One table of (version, packet, bytes) vectors, written by hand from the OASIS specifications
//! (MQTT 3.1.1 and 5.0), never produced by our encoder.
//!
//! Every vector is encoded and compared byte for byte, decoded whole, decoded one byte at a time,
//! and decoded with the start of the following packets behind it. Together the vectors cover all
//! fifteen packet types in both versions (AUTH only exists in 5.0), every property in every packet
//! that may carry it, repeated user properties in order, the short forms of the acknowledgements,
//! DISCONNECT and AUTH, and the 3.1.1 CONNACK and SUBACK return codes. Where the specification
//! gives a worked example, the vector uses its bytes and says where it comes from.

use super::{filter, name};
use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU16, NonZeroU32};

use bytes::BytesMut;
use mqtt_proto::ReasonCode;
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::packet::{
    AckProperties, Auth, AuthProperties, ByteString, Bytes, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, Packet, PacketType, PayloadFormat, PubAck,
    PubComp, PubRec, PubRel, Publish, PublishProperties, QoS, RetainHandling, SubAck, Subscribe,
    SubscribeProperties, Subscription, SubscriptionId, SubscriptionOptions, TopicName, UnsubAck,
    Unsubscribe, UnsubscribeProperties, UserProperty, Version, Will, WillProperties,
};

use Version::{V3_1_1, V5};

/// Parses "30 0b 00 03 ..." into bytes: whitespace-separated pairs of hex digits.
pub(crate) fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| {
            assert_eq!(pair.len(), 2, "hex byte {pair:?} is not two digits");
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex byte {pair:?}"))
        })
        .collect()
}

struct Vector {
    name: &'static str,
    version: Version,
    packet: Packet,
    bytes: Vec<u8>,
}

fn vector(name: &'static str, version: Version, packet: impl Into<Packet>, bytes: &str) -> Vector {
    Vector {
        name,
        version,
        packet: packet.into(),
        bytes: hex(bytes),
    }
}

fn pid(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).unwrap()
}

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

fn b(data: &'static [u8]) -> Bytes {
    Bytes::from_static(data)
}

fn user(name: &'static str, value: &'static str) -> UserProperty {
    UserProperty::new(name, value)
}

fn sub_id(value: u32) -> SubscriptionId {
    SubscriptionId::new(value).unwrap()
}

fn connack(session_present: bool, reason_code: ReasonCode) -> ConnAck {
    ConnAck {
        session_present,
        reason_code,
        properties: ConnAckProperties::default(),
    }
}

fn publish(
    qos: QoS,
    topic: &'static str,
    packet_id: Option<u16>,
    payload: &'static [u8],
) -> Publish {
    Publish {
        qos,
        // The empty name stands for a Topic Alias.
        topic: if topic.is_empty() {
            TopicName::empty()
        } else {
            name(topic)
        },
        packet_id: packet_id.map(pid),
        payload: b(payload),
        ..Publish::default()
    }
}

fn ack_properties(
    reason_string: Option<&'static str>,
    users: &[(&'static str, &'static str)],
) -> AckProperties {
    AckProperties {
        reason_string: reason_string.map(s),
        user_properties: users.iter().map(|&(n, v)| user(n, v)).collect(),
    }
}

macro_rules! pub_ack_ctor {
    ($name:ident, $ty:ident) => {
        fn $name(id: u16, reason_code: ReasonCode, properties: AckProperties) -> $ty {
            $ty {
                packet_id: pid(id),
                reason_code,
                properties,
            }
        }
    };
}
pub_ack_ctor!(puback, PubAck);
pub_ack_ctor!(pubrec, PubRec);
pub_ack_ctor!(pubrel, PubRel);
pub_ack_ctor!(pubcomp, PubComp);

fn suback(id: u16, properties: AckProperties, reason_codes: Vec<ReasonCode>) -> SubAck {
    SubAck {
        packet_id: pid(id),
        properties,
        reason_codes,
    }
}

fn unsuback(id: u16, properties: AckProperties, reason_codes: Vec<ReasonCode>) -> UnsubAck {
    UnsubAck {
        packet_id: pid(id),
        properties,
        reason_codes,
    }
}

fn subscribe(id: u16, properties: SubscribeProperties, filters: Vec<Subscription>) -> Subscribe {
    Subscribe {
        packet_id: pid(id),
        properties,
        filters,
    }
}

fn unsubscribe(
    id: u16,
    properties: UnsubscribeProperties,
    filters: &[&'static str],
) -> Unsubscribe {
    Unsubscribe {
        packet_id: pid(id),
        properties,
        filters: filters.iter().map(|&f| filter(f)).collect(),
    }
}

/// The CONNECT of the specification's examples: flags 0xCE (user name, password, will QoS 1,
/// will, clean start), keep alive 10; client "c", will "w/t" = "bye", user "u", password "p".
fn example_connect(version: Version) -> Connect {
    Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 10,
        client_id: s("c"),
        will: Some(Will::new(name("w/t"), &b"bye"[..], QoS::AtLeastOnce)),
        username: Some(s("u")),
        password: Some(b(b"p")),
        properties: ConnectProperties::default(),
        bridge: false,
    }
}

fn vectors() -> Vec<Vector> {
    let mut table = vec![
        // ---------------------------------------------------------------- CONNECT
        vector(
            "v3 CONNECT minimal, clean session, keep alive 60",
            V3_1_1,
            Connect::new(V3_1_1, "c1"),
            "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31",
        ),
        // The variable header is the example of 3.1.1 section 3.1.2.10 (figure 3.6):
        // "MQTT", level 4, flags 0xCE, keep alive 10.
        vector(
            "v3 CONNECT spec example 3.1.2.10 with will, user name and password",
            V3_1_1,
            example_connect(V3_1_1),
            "10 1d 00 04 4d 51 54 54 04 ce 00 0a \
             00 01 63 00 03 77 2f 74 00 03 62 79 65 00 01 75 00 01 70",
        ),
        // The variable header is the example of 5.0 section 3.1.2.12 (figure 3-6): "MQTT",
        // version 5, flags 0xCE, keep alive 10, properties of length 5 holding a Session Expiry
        // Interval (17) of 10.
        vector(
            "v5 CONNECT spec example 3.1.2.12 with will, user name and password",
            V5,
            Connect {
                properties: ConnectProperties {
                    session_expiry_interval: Some(10),
                    ..ConnectProperties::default()
                },
                ..example_connect(V5)
            },
            "10 24 00 04 4d 51 54 54 05 ce 00 0a 05 11 00 00 00 0a \
             00 01 63 00 00 03 77 2f 74 00 03 62 79 65 00 01 75 00 01 70",
        ),
        vector(
            "v5 CONNECT every CONNECT and will property, will QoS 2 retained, empty client id",
            V5,
            Connect {
                protocol_version: V5,
                clean_start: false,
                keep_alive: 0,
                client_id: s(""),
                will: Some(Will {
                    topic: name("w/t"),
                    payload: Bytes::new(),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    properties: WillProperties {
                        will_delay_interval: Some(5),
                        payload_format_indicator: Some(PayloadFormat::Utf8),
                        message_expiry_interval: Some(3600),
                        content_type: Some(s("t")),
                        response_topic: Some(s("r")),
                        correlation_data: Some(b(&[0xab, 0xcd])),
                        user_properties: vec![user("w", "x")],
                    },
                }),
                username: Some(s("u")),
                password: None,
                properties: ConnectProperties {
                    session_expiry_interval: Some(u32::MAX),
                    receive_maximum: Some(pid(20)),
                    maximum_packet_size: NonZeroU32::new(1024),
                    topic_alias_maximum: Some(10),
                    request_response_information: Some(true),
                    request_problem_information: Some(false),
                    user_properties: vec![user("k", "1"), user("k", "2"), user("a", "b")],
                    authentication_method: Some(s("m")),
                    authentication_data: Some(b(&[1, 2])),
                },
                bridge: false,
            },
            "10 6a 00 04 4d 51 54 54 05 b4 00 00 \
             32 \
               11 ff ff ff ff \
               21 00 14 \
               27 00 00 04 00 \
               22 00 0a \
               19 01 \
               17 00 \
               26 00 01 6b 00 01 31 \
               26 00 01 6b 00 01 32 \
               26 00 01 61 00 01 62 \
               15 00 01 6d \
               16 00 02 01 02 \
             00 00 \
             20 \
               18 00 00 00 05 \
               01 01 \
               02 00 00 0e 10 \
               03 00 01 74 \
               08 00 01 72 \
               09 00 02 ab cd \
               26 00 01 77 00 01 78 \
             00 03 77 2f 74 \
             00 00 \
             00 01 75",
        ),
        // 5.0 allows a password without a user name (3.1.1 does not).
        vector(
            "v5 CONNECT password without user name",
            V5,
            Connect {
                password: Some(b(b"p")),
                ..Connect::new(V5, "c")
            },
            "10 11 00 04 4d 51 54 54 05 42 00 3c 00 00 01 63 00 01 70",
        ),
        // ---------------------------------------------------------------- CONNACK
        vector(
            "v3 CONNACK 0 accepted",
            V3_1_1,
            connack(false, ReasonCode::Success),
            "20 02 00 00",
        ),
        vector(
            "v3 CONNACK 0 accepted, session present",
            V3_1_1,
            connack(true, ReasonCode::Success),
            "20 02 01 00",
        ),
        vector(
            "v3 CONNACK 1 unacceptable protocol version",
            V3_1_1,
            connack(false, ReasonCode::UnsupportedProtocolVersion),
            "20 02 00 01",
        ),
        vector(
            "v3 CONNACK 2 identifier rejected",
            V3_1_1,
            connack(false, ReasonCode::ClientIdentifierNotValid),
            "20 02 00 02",
        ),
        vector(
            "v3 CONNACK 3 server unavailable",
            V3_1_1,
            connack(false, ReasonCode::ServerUnavailable),
            "20 02 00 03",
        ),
        vector(
            "v3 CONNACK 4 bad user name or password",
            V3_1_1,
            connack(false, ReasonCode::BadUserNameOrPassword),
            "20 02 00 04",
        ),
        vector(
            "v3 CONNACK 5 not authorized",
            V3_1_1,
            connack(false, ReasonCode::NotAuthorized),
            "20 02 00 05",
        ),
        vector(
            "v5 CONNACK success, no properties",
            V5,
            connack(false, ReasonCode::Success),
            "20 03 00 00 00",
        ),
        vector(
            "v5 CONNACK session present",
            V5,
            connack(true, ReasonCode::Success),
            "20 03 01 00 00",
        ),
        vector(
            "v5 CONNACK 0x87 not authorized with a reason string",
            V5,
            ConnAck {
                session_present: false,
                reason_code: ReasonCode::NotAuthorized,
                properties: ConnAckProperties {
                    reason_string: Some(s("no")),
                    ..ConnAckProperties::default()
                },
            },
            "20 08 00 87 05 1f 00 02 6e 6f",
        ),
        vector(
            "v5 CONNACK every CONNACK property",
            V5,
            ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: ConnAckProperties {
                    session_expiry_interval: Some(120),
                    receive_maximum: Some(pid(10)),
                    maximum_qos: Some(QoS::AtLeastOnce),
                    retain_available: Some(false),
                    maximum_packet_size: NonZeroU32::new(0x0001_0000),
                    assigned_client_identifier: Some(s("id")),
                    topic_alias_maximum: Some(5),
                    reason_string: Some(s("ok")),
                    user_properties: vec![user("a", "1"), user("a", "2")],
                    wildcard_subscription_available: Some(false),
                    subscription_identifiers_available: Some(false),
                    shared_subscription_available: Some(true),
                    server_keep_alive: Some(30),
                    response_information: Some(s("ri")),
                    server_reference: Some(s("sr")),
                    authentication_method: Some(s("m")),
                    authentication_data: Some(b(&[3])),
                },
            },
            "20 4a 01 00 47 \
             11 00 00 00 78 \
             21 00 0a \
             24 01 \
             25 00 \
             27 00 01 00 00 \
             12 00 02 69 64 \
             22 00 05 \
             1f 00 02 6f 6b \
             26 00 01 61 00 01 31 \
             26 00 01 61 00 01 32 \
             28 00 \
             29 00 \
             2a 01 \
             13 00 1e \
             1a 00 02 72 69 \
             1c 00 02 73 72 \
             15 00 01 6d \
             16 00 01 03",
        ),
        // ---------------------------------------------------------------- PUBLISH
        vector(
            "v3 PUBLISH QoS 0",
            V3_1_1,
            publish(QoS::AtMostOnce, "a/b", None, b"hi"),
            "30 07 00 03 61 2f 62 68 69",
        ),
        // Topic "a/b" and packet identifier 10: the example of 3.1.1 section 3.3.2.3.
        vector(
            "v3 PUBLISH QoS 1 DUP, spec example 3.3.2.3",
            V3_1_1,
            Publish {
                dup: true,
                ..publish(QoS::AtLeastOnce, "a/b", Some(10), b"x")
            },
            "3a 08 00 03 61 2f 62 00 0a 78",
        ),
        vector(
            "v3 PUBLISH QoS 2 RETAIN, packet id 65535, empty payload",
            V3_1_1,
            Publish {
                retain: true,
                ..publish(QoS::ExactlyOnce, "a", Some(0xffff), b"")
            },
            "35 05 00 01 61 ff ff",
        ),
        // Topic "a/b", packet identifier 10, no properties: the example of 5.0 section 3.3.2.4
        // (figure 3-9).
        vector(
            "v5 PUBLISH QoS 1, spec example 3.3.2.4",
            V5,
            publish(QoS::AtLeastOnce, "a/b", Some(10), b"hi"),
            "32 0a 00 03 61 2f 62 00 0a 00 68 69",
        ),
        vector(
            "v5 PUBLISH QoS 0, empty payload",
            V5,
            publish(QoS::AtMostOnce, "a/b", None, b""),
            "30 06 00 03 61 2f 62 00",
        ),
        // The subscription identifiers are the boundary values of 5.0 table 1-1 (size of a
        // Variable Byte Integer): 127, 128, 16,383, 16,384, 2,097,151, 2,097,152, 268,435,455.
        vector(
            "v5 PUBLISH every PUBLISH property, subscription identifiers at each varint size",
            V5,
            Publish {
                retain: true,
                properties: PublishProperties {
                    payload_format_indicator: Some(PayloadFormat::Utf8),
                    message_expiry_interval: Some(60),
                    topic_alias: Some(pid(3)),
                    response_topic: Some(s("r/t")),
                    correlation_data: Some(b(&[1])),
                    user_properties: vec![user("k", "v"), user("k", "v"), user("j", "w")],
                    subscription_identifiers: vec![
                        sub_id(127),
                        sub_id(128),
                        sub_id(16_383),
                        sub_id(16_384),
                        sub_id(2_097_151),
                        sub_id(2_097_152),
                        sub_id(268_435_455),
                    ],
                    content_type: Some(s("ct")),
                }
                .into(),
                ..publish(QoS::ExactlyOnce, "a/b", Some(0x1234), b"p")
            },
            "35 51 00 03 61 2f 62 12 34 \
             48 \
               01 01 \
               02 00 00 00 3c \
               23 00 03 \
               08 00 03 72 2f 74 \
               09 00 01 01 \
               26 00 01 6b 00 01 76 \
               26 00 01 6b 00 01 76 \
               26 00 01 6a 00 01 77 \
               0b 7f \
               0b 80 01 \
               0b ff 7f \
               0b 80 80 01 \
               0b ff ff 7f \
               0b 80 80 80 01 \
               0b ff ff ff 7f \
               03 00 02 63 74 \
             70",
        ),
        vector(
            "v5 PUBLISH empty topic name with a topic alias",
            V5,
            Publish {
                properties: PublishProperties {
                    topic_alias: Some(pid(1)),
                    ..PublishProperties::default()
                }
                .into(),
                ..publish(QoS::AtMostOnce, "", None, b"x")
            },
            "30 07 00 00 03 23 00 01 78",
        ),
        // ---------------------------------------------------------------- PUBACK .. PUBCOMP
        vector("v3 PUBACK", V3_1_1, PubAck::new(pid(10)), "40 02 00 0a"),
        vector("v3 PUBREC", V3_1_1, PubRec::new(pid(10)), "50 02 00 0a"),
        vector("v3 PUBREL", V3_1_1, PubRel::new(pid(10)), "62 02 00 0a"),
        vector("v3 PUBCOMP", V3_1_1, PubComp::new(pid(10)), "70 02 00 0a"),
        vector(
            "v5 PUBACK short form, remaining length 2",
            V5,
            PubAck::new(pid(10)),
            "40 02 00 0a",
        ),
        vector(
            "v5 PUBACK 0x10 no matching subscribers, remaining length 3",
            V5,
            puback(
                10,
                ReasonCode::NoMatchingSubscribers,
                AckProperties::default(),
            ),
            "40 03 00 0a 10",
        ),
        vector(
            "v5 PUBACK success with reason string and repeated user properties",
            V5,
            puback(
                10,
                ReasonCode::Success,
                ack_properties(Some("r"), &[("a", "b"), ("a", "c")]),
            ),
            "40 16 00 0a 00 12 1f 00 01 72 26 00 01 61 00 01 62 26 00 01 61 00 01 63",
        ),
        vector(
            "v5 PUBREC short form",
            V5,
            PubRec::new(pid(11)),
            "50 02 00 0b",
        ),
        vector(
            "v5 PUBREC 0x99 payload format invalid, remaining length 3",
            V5,
            pubrec(
                11,
                ReasonCode::PayloadFormatInvalid,
                AckProperties::default(),
            ),
            "50 03 00 0b 99",
        ),
        vector(
            "v5 PUBREC 0x97 quota exceeded with reason string and user property",
            V5,
            pubrec(
                11,
                ReasonCode::QuotaExceeded,
                ack_properties(Some("q"), &[("u", "1")]),
            ),
            "50 0f 00 0b 97 0b 1f 00 01 71 26 00 01 75 00 01 31",
        ),
        vector(
            "v5 PUBREL short form",
            V5,
            PubRel::new(pid(12)),
            "62 02 00 0c",
        ),
        vector(
            "v5 PUBREL 0x92 packet identifier not found with reason string and user property",
            V5,
            pubrel(
                12,
                ReasonCode::PacketIdentifierNotFound,
                ack_properties(Some("n"), &[("u", "v")]),
            ),
            "62 0f 00 0c 92 0b 1f 00 01 6e 26 00 01 75 00 01 76",
        ),
        vector(
            "v5 PUBCOMP 0x92, remaining length 3",
            V5,
            pubcomp(
                13,
                ReasonCode::PacketIdentifierNotFound,
                AckProperties::default(),
            ),
            "70 03 00 0d 92",
        ),
        vector(
            "v5 PUBCOMP success with reason string and user property",
            V5,
            pubcomp(
                13,
                ReasonCode::Success,
                ack_properties(Some("done"), &[("x", "y")]),
            ),
            "70 12 00 0d 00 0e 1f 00 04 64 6f 6e 65 26 00 01 78 00 01 79",
        ),
        // ---------------------------------------------------------------- SUBSCRIBE
        // Packet identifier 10 and the payload "a/b" QoS 1, "c/d" QoS 2: the examples of 3.1.1
        // sections 3.8.2 and 3.8.3.
        vector(
            "v3 SUBSCRIBE spec example 3.8.3",
            V3_1_1,
            subscribe(
                10,
                SubscribeProperties::default(),
                vec![
                    Subscription::new(filter("a/b"), QoS::AtLeastOnce),
                    Subscription::new(filter("c/d"), QoS::ExactlyOnce),
                ],
            ),
            "82 0e 00 0a 00 03 61 2f 62 01 00 03 63 2f 64 02",
        ),
        // Packet identifier 10, no properties (5.0 figure 3-19) and the payload of 5.0 section
        // 3.8.3 ("a/b" options 1, "c/d" options 2).
        vector(
            "v5 SUBSCRIBE spec example 3.8.2 and 3.8.3",
            V5,
            subscribe(
                10,
                SubscribeProperties::default(),
                vec![
                    Subscription::new(filter("a/b"), QoS::AtLeastOnce),
                    Subscription::new(filter("c/d"), QoS::ExactlyOnce),
                ],
            ),
            "82 0f 00 0a 00 00 03 61 2f 62 01 00 03 63 2f 64 02",
        ),
        vector(
            "v5 SUBSCRIBE subscription identifier, user properties, every option, shared",
            V5,
            subscribe(
                0x0102,
                SubscribeProperties {
                    subscription_identifier: Some(sub_id(128)),
                    user_properties: vec![user("a", "b"), user("a", "a")],
                },
                vec![
                    Subscription {
                        filter: filter("x/+"),
                        options: SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::DoNotSend,
                        },
                    },
                    Subscription {
                        filter: filter("$share/g/y/#"),
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            no_local: false,
                            retain_as_published: false,
                            retain_handling: RetainHandling::SendAtSubscribeIfNew,
                        },
                    },
                    Subscription::new(filter("#"), QoS::AtMostOnce),
                ],
            ),
            "82 2d 01 02 \
             11 0b 80 01 26 00 01 61 00 01 62 26 00 01 61 00 01 61 \
             00 03 78 2f 2b 2e \
             00 0c 24 73 68 61 72 65 2f 67 2f 79 2f 23 11 \
             00 01 23 00",
        ),
        // ---------------------------------------------------------------- SUBACK
        // Granted QoS 0, granted QoS 2, failure: the example of 3.1.1 section 3.9.3.
        vector(
            "v3 SUBACK spec example 3.9.3 with failure 0x80",
            V3_1_1,
            suback(
                10,
                AckProperties::default(),
                vec![
                    ReasonCode::Success,
                    ReasonCode::GrantedQoS2,
                    ReasonCode::UnspecifiedError,
                ],
            ),
            "90 05 00 0a 00 02 80",
        ),
        vector(
            "v3 SUBACK granted QoS 1",
            V3_1_1,
            suback(11, AckProperties::default(), vec![ReasonCode::GrantedQoS1]),
            "90 03 00 0b 01",
        ),
        vector(
            "v5 SUBACK minimal",
            V5,
            suback(10, AckProperties::default(), vec![ReasonCode::GrantedQoS1]),
            "90 04 00 0a 00 01",
        ),
        vector(
            "v5 SUBACK every SUBACK reason code, reason string, user property",
            V5,
            suback(
                10,
                ack_properties(Some("s"), &[("a", "b")]),
                vec![
                    ReasonCode::Success,
                    ReasonCode::GrantedQoS1,
                    ReasonCode::GrantedQoS2,
                    ReasonCode::UnspecifiedError,
                    ReasonCode::ImplementationSpecificError,
                    ReasonCode::NotAuthorized,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::PacketIdentifierInUse,
                    ReasonCode::QuotaExceeded,
                    ReasonCode::SharedSubscriptionsNotSupported,
                    ReasonCode::SubscriptionIdentifiersNotSupported,
                    ReasonCode::WildcardSubscriptionsNotSupported,
                ],
            ),
            "90 1a 00 0a 0b 1f 00 01 73 26 00 01 61 00 01 62 \
             00 01 02 80 83 87 8f 91 97 9e a1 a2",
        ),
        // ---------------------------------------------------------------- UNSUBSCRIBE
        // Packet identifier 10 and the payload "a/b", "c/d": the examples of 3.1.1 section 3.10.
        vector(
            "v3 UNSUBSCRIBE spec example 3.10.3",
            V3_1_1,
            unsubscribe(10, UnsubscribeProperties::default(), &["a/b", "c/d"]),
            "a2 0c 00 0a 00 03 61 2f 62 00 03 63 2f 64",
        ),
        // Packet identifier 10, property length 0 (5.0 figure 3-28) and the payload of 5.0
        // section 3.10.3.
        vector(
            "v5 UNSUBSCRIBE spec example 3.10.2 and 3.10.3",
            V5,
            unsubscribe(10, UnsubscribeProperties::default(), &["a/b", "c/d"]),
            "a2 0d 00 0a 00 00 03 61 2f 62 00 03 63 2f 64",
        ),
        vector(
            "v5 UNSUBSCRIBE user properties, shared filter",
            V5,
            unsubscribe(
                11,
                UnsubscribeProperties {
                    user_properties: vec![user("a", "b"), user("c", "d")],
                },
                &["$share/g/#"],
            ),
            "a2 1d 00 0b 0e 26 00 01 61 00 01 62 26 00 01 63 00 01 64 \
             00 0a 24 73 68 61 72 65 2f 67 2f 23",
        ),
        // ---------------------------------------------------------------- UNSUBACK
        vector(
            "v3 UNSUBACK",
            V3_1_1,
            unsuback(10, AckProperties::default(), Vec::new()),
            "b0 02 00 0a",
        ),
        vector(
            "v5 UNSUBACK minimal",
            V5,
            unsuback(
                10,
                AckProperties::default(),
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            ),
            "b0 05 00 0a 00 00 11",
        ),
        vector(
            "v5 UNSUBACK every UNSUBACK reason code, reason string, user property",
            V5,
            unsuback(
                10,
                ack_properties(Some("r"), &[("a", "b")]),
                vec![
                    ReasonCode::Success,
                    ReasonCode::NoSubscriptionExisted,
                    ReasonCode::UnspecifiedError,
                    ReasonCode::ImplementationSpecificError,
                    ReasonCode::NotAuthorized,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::PacketIdentifierInUse,
                ],
            ),
            "b0 15 00 0a 0b 1f 00 01 72 26 00 01 61 00 01 62 00 11 80 83 87 8f 91",
        ),
        // ---------------------------------------------------------------- PINGREQ, PINGRESP
        vector("v3 PINGREQ", V3_1_1, Packet::PingReq, "c0 00"),
        vector("v5 PINGREQ", V5, Packet::PingReq, "c0 00"),
        vector("v3 PINGRESP", V3_1_1, Packet::PingResp, "d0 00"),
        vector("v5 PINGRESP", V5, Packet::PingResp, "d0 00"),
        // ---------------------------------------------------------------- DISCONNECT
        vector("v3 DISCONNECT", V3_1_1, Disconnect::default(), "e0 00"),
        vector(
            "v5 DISCONNECT normal, remaining length 0",
            V5,
            Disconnect::default(),
            "e0 00",
        ),
        vector(
            "v5 DISCONNECT 0x04 with will message, remaining length 1",
            V5,
            Disconnect::new(ReasonCode::DisconnectWithWillMessage),
            "e0 01 04",
        ),
        vector(
            "v5 DISCONNECT normal with session expiry interval",
            V5,
            Disconnect {
                reason_code: ReasonCode::NORMAL_DISCONNECTION,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(10),
                    ..DisconnectProperties::default()
                },
            },
            "e0 07 00 05 11 00 00 00 0a",
        ),
        vector(
            "v5 DISCONNECT 0x9c use another server, every DISCONNECT property",
            V5,
            Disconnect {
                reason_code: ReasonCode::UseAnotherServer,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(0),
                    reason_string: Some(s("bye")),
                    user_properties: vec![user("a", "1"), user("b", "2")],
                    server_reference: Some(s("s2")),
                },
            },
            "e0 20 9c 1e \
             11 00 00 00 00 \
             1f 00 03 62 79 65 \
             26 00 01 61 00 01 31 \
             26 00 01 62 00 01 32 \
             1c 00 02 73 32",
        ),
        // ---------------------------------------------------------------- AUTH (5.0 only)
        vector(
            "v5 AUTH success, remaining length 0",
            V5,
            Auth::default(),
            "f0 00",
        ),
        vector(
            "v5 AUTH 0x18 continue authentication, remaining length 1",
            V5,
            Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: AuthProperties::default(),
            },
            "f0 01 18",
        ),
        vector(
            "v5 AUTH 0x19 re-authenticate, every AUTH property",
            V5,
            Auth {
                reason_code: ReasonCode::ReAuthenticate,
                properties: AuthProperties {
                    authentication_method: Some(s("m")),
                    authentication_data: Some(b(&[0xde, 0xad])),
                    reason_string: Some(s("again")),
                    user_properties: vec![user("a", "b"), user("a", "b")],
                },
            },
            "f0 21 19 1f \
             15 00 01 6d \
             16 00 02 de ad \
             1f 00 05 61 67 61 69 6e \
             26 00 01 61 00 01 62 \
             26 00 01 61 00 01 62",
        ),
    ];

    // Remaining lengths at the Variable Byte Integer boundaries of table 1-1 (2.2.3 in 3.1.1):
    // 127 (0x7F), 128 (0x80 0x01), 16,383 (0xFF 0x7F), 16,384 (0x80 0x80 0x01). A QoS 0 PUBLISH
    // to "t" has 3 bytes of topic before its payload.
    for (name, header, remaining) in [
        ("v3 PUBLISH remaining length 127 (7f)", "30 7f", 127usize),
        ("v3 PUBLISH remaining length 128 (80 01)", "30 80 01", 128),
        (
            "v3 PUBLISH remaining length 16383 (ff 7f)",
            "30 ff 7f",
            16_383,
        ),
        (
            "v3 PUBLISH remaining length 16384 (80 80 01)",
            "30 80 80 01",
            16_384,
        ),
    ] {
        let payload = vec![b'z'; remaining - 3];
        let mut bytes = hex(header);
        bytes.extend(hex("00 01 74"));
        bytes.extend(&payload);
        table.push(Vector {
            name,
            version: V3_1_1,
            packet: Packet::Publish(Publish::new(super::name("t"), payload)),
            bytes,
        });
    }
    table
}

/// Bytes that follow each vector in the trailing-bytes check: a whole PINGREQ, then the first
/// bytes of a PUBLISH that has not fully arrived.
const TRAILING: &str = "c0 00 30 05 00 03 61";

/// Decodes `bytes` whole, one byte at a time, and followed by [`TRAILING`], checking that each
/// way yields `packet` and consumes exactly its bytes.
fn check_decode(name: &str, version: Version, packet: &Packet, bytes: &[u8]) {
    let limits = Limits::default();

    // (b) Whole.
    let mut buf = BytesMut::from(bytes);
    let decoded = codec::decode(&mut buf, version, &limits);
    assert_eq!(decoded, Ok(Some(packet.clone())), "{name}: decode whole");
    assert!(buf.is_empty(), "{name}: decode whole left {buf:02x?}");

    // (c) One byte at a time: every proper prefix asks for more and consumes nothing.
    let mut buf = BytesMut::new();
    for (i, &byte) in bytes.iter().enumerate() {
        let before = buf.clone();
        assert_eq!(
            codec::decode(&mut buf, version, &limits),
            Ok(None),
            "{name}: prefix of {i} bytes"
        );
        assert_eq!(buf, before, "{name}: prefix of {i} bytes was consumed");
        buf.extend_from_slice(&[byte]);
    }
    assert_eq!(
        codec::decode(&mut buf, version, &limits),
        Ok(Some(packet.clone())),
        "{name}: decode byte by byte"
    );
    assert!(buf.is_empty(), "{name}: byte by byte left {buf:02x?}");

    // (d) With the following packets behind it.
    let trailing = hex(TRAILING);
    let mut buf = BytesMut::from(bytes);
    buf.extend_from_slice(&trailing);
    assert_eq!(
        codec::decode(&mut buf, version, &limits),
        Ok(Some(packet.clone())),
        "{name}: decode with trailing bytes"
    );
    assert_eq!(
        &buf[..],
        &trailing[..],
        "{name}: trailing bytes not left intact"
    );
    assert_eq!(
        codec::decode(&mut buf, version, &limits),
        Ok(Some(Packet::PingReq)),
        "{name}: the PINGREQ after it"
    );
    assert_eq!(
        codec::decode(&mut buf, version, &limits),
        Ok(None),
        "{name}: the partial PUBLISH after it"
    );
    assert_eq!(&buf[..], &trailing[2..], "{name}: partial PUBLISH consumed");
}

#[test]
fn every_vector_encodes_and_decodes_whole_bytewise_and_with_trailing_bytes() {
    let table = vectors();
    let mut names = BTreeSet::new();
    for Vector {
        name,
        version,
        packet,
        bytes,
    } in &table
    {
        assert!(names.insert(*name), "duplicate vector name {name:?}");

        // (a) Encoding gives exactly the specified bytes, appended after what the buffer held.
        let mut buf = BytesMut::from(&b"prefix"[..]);
        codec::encode(packet, *version, &mut buf)
            .unwrap_or_else(|e| panic!("{name}: encode failed: {e}"));
        assert_eq!(&buf[..6], b"prefix", "{name}: encode touched earlier bytes");
        assert_eq!(
            &buf[6..],
            &bytes[..],
            "{name}: encoded bytes differ (left: ours, right: expected)"
        );
        assert_eq!(
            packet.encoded_len(*version),
            Ok(bytes.len()),
            "{name}: encoded_len"
        );

        check_decode(name, *version, packet, bytes);
    }
}

/// Every packet type appears in the table for every version that has it.
#[test]
fn vectors_cover_every_packet_type_in_both_versions() {
    let covered: BTreeSet<(Version, u8)> = vectors()
        .iter()
        .map(|v| (v.version, v.packet.packet_type() as u8))
        .collect();
    for version in [V3_1_1, V5] {
        for kind in 1..=15u8 {
            if kind == PacketType::Auth as u8 && version == V3_1_1 {
                continue;
            }
            assert!(
                covered.contains(&(version, kind)),
                "no vector for packet type {kind} in {version:?}"
            );
        }
    }
}

/// The property identifiers (5.0 table 2-4) set in `packet`, grouped by the packet (or will)
/// that carries them.
fn properties_of(packet: &Packet) -> Vec<(&'static str, u8)> {
    fn add<T>(out: &mut Vec<(&'static str, u8)>, place: &'static str, id: u8, set: &Option<T>) {
        if set.is_some() {
            out.push((place, id));
        }
    }
    fn add_all<T>(out: &mut Vec<(&'static str, u8)>, place: &'static str, id: u8, set: &[T]) {
        if !set.is_empty() {
            out.push((place, id));
        }
    }
    fn ack(out: &mut Vec<(&'static str, u8)>, place: &'static str, p: &AckProperties) {
        add(out, place, 0x1f, &p.reason_string);
        add_all(out, place, 0x26, &p.user_properties);
    }
    let mut out = Vec::new();
    let o = &mut out;
    match packet {
        Packet::Connect(c) => {
            let p = &c.properties;
            add(o, "CONNECT", 0x11, &p.session_expiry_interval);
            add(o, "CONNECT", 0x21, &p.receive_maximum);
            add(o, "CONNECT", 0x27, &p.maximum_packet_size);
            add(o, "CONNECT", 0x22, &p.topic_alias_maximum);
            add(o, "CONNECT", 0x19, &p.request_response_information);
            add(o, "CONNECT", 0x17, &p.request_problem_information);
            add_all(o, "CONNECT", 0x26, &p.user_properties);
            add(o, "CONNECT", 0x15, &p.authentication_method);
            add(o, "CONNECT", 0x16, &p.authentication_data);
            if let Some(will) = &c.will {
                let p = &will.properties;
                add(o, "will", 0x18, &p.will_delay_interval);
                add(o, "will", 0x01, &p.payload_format_indicator);
                add(o, "will", 0x02, &p.message_expiry_interval);
                add(o, "will", 0x03, &p.content_type);
                add(o, "will", 0x08, &p.response_topic);
                add(o, "will", 0x09, &p.correlation_data);
                add_all(o, "will", 0x26, &p.user_properties);
            }
        }
        Packet::ConnAck(c) => {
            let p = &c.properties;
            add(o, "CONNACK", 0x11, &p.session_expiry_interval);
            add(o, "CONNACK", 0x21, &p.receive_maximum);
            add(o, "CONNACK", 0x24, &p.maximum_qos);
            add(o, "CONNACK", 0x25, &p.retain_available);
            add(o, "CONNACK", 0x27, &p.maximum_packet_size);
            add(o, "CONNACK", 0x12, &p.assigned_client_identifier);
            add(o, "CONNACK", 0x22, &p.topic_alias_maximum);
            add(o, "CONNACK", 0x1f, &p.reason_string);
            add_all(o, "CONNACK", 0x26, &p.user_properties);
            add(o, "CONNACK", 0x28, &p.wildcard_subscription_available);
            add(o, "CONNACK", 0x29, &p.subscription_identifiers_available);
            add(o, "CONNACK", 0x2a, &p.shared_subscription_available);
            add(o, "CONNACK", 0x13, &p.server_keep_alive);
            add(o, "CONNACK", 0x1a, &p.response_information);
            add(o, "CONNACK", 0x1c, &p.server_reference);
            add(o, "CONNACK", 0x15, &p.authentication_method);
            add(o, "CONNACK", 0x16, &p.authentication_data);
        }
        Packet::Publish(publish) => {
            let p = &publish.properties;
            add(o, "PUBLISH", 0x01, &p.payload_format_indicator);
            add(o, "PUBLISH", 0x02, &p.message_expiry_interval);
            add(o, "PUBLISH", 0x23, &p.topic_alias);
            add(o, "PUBLISH", 0x08, &p.response_topic);
            add(o, "PUBLISH", 0x09, &p.correlation_data);
            add_all(o, "PUBLISH", 0x26, &p.user_properties);
            add_all(o, "PUBLISH", 0x0b, &p.subscription_identifiers);
            add(o, "PUBLISH", 0x03, &p.content_type);
        }
        Packet::PubAck(p) => ack(o, "PUBACK", &p.properties),
        Packet::PubRec(p) => ack(o, "PUBREC", &p.properties),
        Packet::PubRel(p) => ack(o, "PUBREL", &p.properties),
        Packet::PubComp(p) => ack(o, "PUBCOMP", &p.properties),
        Packet::SubAck(p) => ack(o, "SUBACK", &p.properties),
        Packet::UnsubAck(p) => ack(o, "UNSUBACK", &p.properties),
        Packet::Subscribe(sub) => {
            add(
                o,
                "SUBSCRIBE",
                0x0b,
                &sub.properties.subscription_identifier,
            );
            add_all(o, "SUBSCRIBE", 0x26, &sub.properties.user_properties);
        }
        Packet::Unsubscribe(unsub) => {
            add_all(o, "UNSUBSCRIBE", 0x26, &unsub.properties.user_properties);
        }
        Packet::Disconnect(d) => {
            let p = &d.properties;
            add(o, "DISCONNECT", 0x11, &p.session_expiry_interval);
            add(o, "DISCONNECT", 0x1f, &p.reason_string);
            add_all(o, "DISCONNECT", 0x26, &p.user_properties);
            add(o, "DISCONNECT", 0x1c, &p.server_reference);
        }
        Packet::Auth(a) => {
            let p = &a.properties;
            add(o, "AUTH", 0x15, &p.authentication_method);
            add(o, "AUTH", 0x16, &p.authentication_data);
            add(o, "AUTH", 0x1f, &p.reason_string);
            add_all(o, "AUTH", 0x26, &p.user_properties);
        }
        Packet::PingReq | Packet::PingResp => {}
    }
    out
}

/// Every property appears in every packet that may carry it (5.0 table 2-4), so all 27
/// identifiers appear at least once.
#[test]
fn vectors_cover_every_property_in_every_packet_that_may_carry_it() {
    let allowed: BTreeMap<&str, Vec<u8>> = [
        (
            "CONNECT",
            vec![0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16],
        ),
        ("will", vec![0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26]),
        (
            "CONNACK",
            vec![
                0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1f, 0x26, 0x28, 0x29, 0x2a, 0x13, 0x1a,
                0x1c, 0x15, 0x16,
            ],
        ),
        (
            "PUBLISH",
            vec![0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0b, 0x03],
        ),
        ("PUBACK", vec![0x1f, 0x26]),
        ("PUBREC", vec![0x1f, 0x26]),
        ("PUBREL", vec![0x1f, 0x26]),
        ("PUBCOMP", vec![0x1f, 0x26]),
        ("SUBSCRIBE", vec![0x0b, 0x26]),
        ("SUBACK", vec![0x1f, 0x26]),
        ("UNSUBSCRIBE", vec![0x26]),
        ("UNSUBACK", vec![0x1f, 0x26]),
        ("DISCONNECT", vec![0x11, 0x1f, 0x26, 0x1c]),
        ("AUTH", vec![0x15, 0x16, 0x1f, 0x26]),
    ]
    .into_iter()
    .collect();
    let every: BTreeSet<u8> = allowed.values().flatten().copied().collect();
    assert_eq!(every.len(), 27, "table 2-4 defines 27 properties");

    let mut seen: BTreeSet<(&str, u8)> = BTreeSet::new();
    for v in vectors().iter().filter(|v| v.version == V5) {
        seen.extend(properties_of(&v.packet));
    }
    for (place, ids) in &allowed {
        for id in ids {
            assert!(
                seen.contains(&(*place, *id)),
                "no vector carries property {id:#04x} in {place}"
            );
        }
    }
}

/// Forms the specification allows but our encoder never produces (it writes the shortest one):
/// each decodes to the packet, and re-encodes to the canonical bytes given.
#[test]
fn non_canonical_forms_decode_and_reencode_in_the_shortest_form() {
    let cases = [
        // 3.4.2.1: the reason code 0x00 and property length 0 may be present or omitted.
        (
            "v5 PUBACK success spelled out",
            "40 03 00 0a 00",
            Packet::PubAck(PubAck::new(pid(10))),
            "40 02 00 0a",
        ),
        (
            "v5 PUBACK success with empty properties",
            "40 04 00 0a 00 00",
            Packet::PubAck(PubAck::new(pid(10))),
            "40 02 00 0a",
        ),
        (
            "v5 PUBACK 0x10 with empty properties",
            "40 04 00 0a 10 00",
            Packet::PubAck(puback(
                10,
                ReasonCode::NoMatchingSubscribers,
                AckProperties::default(),
            )),
            "40 03 00 0a 10",
        ),
        (
            "v5 PUBREL success with empty properties",
            "62 04 00 0a 00 00",
            Packet::PubRel(PubRel::new(pid(10))),
            "62 02 00 0a",
        ),
        // 3.14.2.1 and 3.15.2.1: DISCONNECT and AUTH, reason code 0 and/or property length 0.
        (
            "v5 DISCONNECT normal spelled out",
            "e0 01 00",
            Packet::Disconnect(Disconnect::default()),
            "e0 00",
        ),
        (
            "v5 DISCONNECT normal with empty properties, remaining length 2",
            "e0 02 00 00",
            Packet::Disconnect(Disconnect::default()),
            "e0 00",
        ),
        (
            "v5 DISCONNECT 0x04 with empty properties",
            "e0 02 04 00",
            Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWillMessage)),
            "e0 01 04",
        ),
        (
            "v5 AUTH success spelled out",
            "f0 01 00",
            Packet::Auth(Box::default()),
            "f0 00",
        ),
        (
            "v5 AUTH 0x18 with empty properties, remaining length 2",
            "f0 02 18 00",
            Packet::Auth(Box::new(Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: AuthProperties::default(),
            })),
            "f0 01 18",
        ),
        // 2.2.2.2: properties may come in any order; user properties keep theirs.
        (
            "v5 PUBLISH properties in another order",
            "30 17 00 01 74 13 \
             26 00 01 62 00 01 32 23 00 07 26 00 01 61 00 01 31 01 01",
            Packet::Publish(Publish {
                properties: PublishProperties {
                    payload_format_indicator: Some(PayloadFormat::Utf8),
                    topic_alias: Some(pid(7)),
                    user_properties: vec![user("b", "2"), user("a", "1")],
                    ..PublishProperties::default()
                }
                .into(),
                ..publish(QoS::AtMostOnce, "t", None, b"")
            }),
            "30 17 00 01 74 13 \
             01 01 23 00 07 26 00 01 62 00 01 32 26 00 01 61 00 01 31",
        ),
    ];
    for (name, input, packet, canonical) in cases {
        check_decode(name, V5, &packet, &hex(input));
        let mut buf = BytesMut::new();
        codec::encode(&packet, V5, &mut buf).unwrap();
        assert_eq!(&buf[..], &hex(canonical)[..], "{name}: canonical encoding");
    }
}
