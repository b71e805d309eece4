//! Property-based round trips of every packet of both protocol versions, and the decoder's
//! contract on arbitrary input.
//!
//! The generators in [`strategies`] produce only valid packets: topic names without wildcards,
//! well-formed filters (with `+`, `#` and `$share/`), strings without U+0000, reason codes from
//! the packet's own list in table 2-6, packet identifiers exactly where QoS needs them, and for
//! 3.1.1 nothing that 3.1.1 cannot carry. They are shared with the differential tests.

use bytes::BytesMut;
use mqtt_proto::ReasonCode;
use mqtt_proto::codec::{self, DecodeError, EncodeError, Limits};
use mqtt_proto::packet::{
    AckProperties, Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, PubAck,
    PubComp, PubRec, PubRel, Publish, PublishProperties, SubAck, UnsubAck, Unsubscribe, Version,
};
use proptest::prelude::*;
use proptest::sample::Index;

use strategies::{codes, packet, packet_of_either_version, publish, version};

/// Generators of valid packets.
pub(crate) mod strategies {
    use std::num::{NonZeroU16, NonZeroU32};

    use mqtt_proto::ReasonCode;
    use mqtt_proto::packet::{
        AckProperties, Auth, AuthProperties, ByteString, Bytes, ConnAck, ConnAckProperties,
        Connect, ConnectProperties, Disconnect, DisconnectProperties, Packet, PacketId,
        PayloadFormat, PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, QoS,
        RetainHandling, SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionId,
        SubscriptionOptions, TopicName, UnsubAck, Unsubscribe, UnsubscribeProperties, UserProperty,
        Version, Will, WillProperties,
    };
    use mqtt_proto::topic::TopicFilter;
    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::strategy::Union;

    /// Reason codes each packet may carry, copied from table 2-6 of MQTT 5.0 (and the tables of
    /// sections 3.2.2.2, 3.4.2.1, 3.6.2.1, 3.9.3, 3.11.3, 3.14.2.1 and 3.15.2.1), independently of
    /// the codec's own table.
    pub(crate) mod codes {
        pub(crate) const CONNACK: &[u8] = &[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
            0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ];
        /// The 3.1.1 return codes 0 to 5, as the reason codes the codec maps them to.
        pub(crate) const CONNACK_V311: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
        pub(crate) const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
        pub(crate) const PUBREC: &[u8] = PUBACK;
        pub(crate) const PUBREL: &[u8] = &[0x00, 0x92];
        pub(crate) const PUBCOMP: &[u8] = PUBREL;
        pub(crate) const SUBACK: &[u8] = &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ];
        /// 3.1.1 SUBACK return codes 0, 1, 2 and 0x80 (failure, mapped to Unspecified error).
        pub(crate) const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
        pub(crate) const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
        pub(crate) const DISCONNECT: &[u8] = &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
            0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
            0xA2,
        ];
        pub(crate) const AUTH: &[u8] = &[0x00, 0x18, 0x19];
    }

    fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
        select(codes).prop_map(|code| ReasonCode::from_u8(code).expect("a defined reason code"))
    }

    /// A reason code of `codes` in 5.0; Success in 3.1.1, which has no reason codes there.
    fn ack_reason(version: Version, codes: &'static [u8]) -> BoxedStrategy<ReasonCode> {
        match version {
            Version::V5 => reason(codes).boxed(),
            Version::V3_1_1 => Just(ReasonCode::Success).boxed(),
        }
    }

    pub(crate) fn version() -> impl Strategy<Value = Version> {
        select(&[Version::V3_1_1, Version::V5][..])
    }

    /// Any character but U+0000, mostly ASCII so that collisions with `/`, `+`, `#` and `$`
    /// happen, sometimes anything up to four UTF-8 bytes.
    fn text_char() -> impl Strategy<Value = char> {
        prop_oneof![
            4 => proptest::char::range('\u{1}', '\u{7F}'),
            1 => any::<char>(),
        ]
        .prop_filter("U+0000 is not allowed in MQTT strings", |c| *c != '\0')
    }

    /// An MQTT UTF-8 string of at most `max` characters.
    pub(crate) fn string(max: usize) -> impl Strategy<Value = ByteString> {
        vec(text_char(), 0..=max).prop_map(|chars| ByteString::from(String::from_iter(chars)))
    }

    /// Binary data of at most `max` bytes.
    pub(crate) fn binary(max: usize) -> impl Strategy<Value = Bytes> {
        vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
    }

    /// A PUBLISH payload: mostly small, sometimes large enough for a two- or three-byte
    /// remaining length.
    fn payload() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            8 => binary(32),
            2 => binary(300),
            1 => vec(any::<u8>(), 16_300..16_500).prop_map(Bytes::from),
        ]
    }

    fn level_char() -> impl Strategy<Value = char> {
        text_char().prop_filter("not a separator or wildcard", |c| {
            !matches!(c, '/' | '+' | '#')
        })
    }

    /// One level of a topic, without wildcards; may be empty.
    fn level() -> impl Strategy<Value = String> {
        vec(level_char(), 0..6).prop_map(String::from_iter)
    }

    /// A valid topic name: at least one character, no wildcards, any number of empty levels.
    pub(crate) fn topic_name() -> impl Strategy<Value = ByteString> {
        prop_oneof![
            4 => vec(level(), 1..5).prop_map(|levels| levels.join("/")),
            1 => level().prop_map(|rest| format!("$SYS/{rest}")),
        ]
        .prop_filter("topic names are not empty", |name| !name.is_empty())
        .prop_map(ByteString::from)
    }

    /// [`topic_name`] as a [`TopicName`], as a PUBLISH or a will carries it.
    pub(crate) fn topic() -> impl Strategy<Value = TopicName> {
        topic_name().prop_map(|name| TopicName::new(name).expect("a valid topic name"))
    }

    /// A valid topic filter: levels that are plain, `+`, or a final `#`; sometimes shared.
    pub(crate) fn topic_filter() -> impl Strategy<Value = TopicFilter> {
        let level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
        let plain = (vec(level, 0..5), any::<bool>())
            .prop_map(|(mut levels, multi)| {
                if multi || levels.is_empty() {
                    levels.push("#".to_owned());
                }
                levels.join("/")
            })
            .prop_filter("topic filters are not empty", |filter| !filter.is_empty());
        let group = vec(level_char(), 1..6).prop_map(String::from_iter);
        prop_oneof![
            4 => plain.clone(),
            1 => (group, plain).prop_map(|(group, filter)| format!("$share/{group}/{filter}")),
        ]
        .prop_map(|filter| TopicFilter::new(filter).expect("the strategy makes valid filters"))
    }

    pub(crate) fn qos() -> impl Strategy<Value = QoS> {
        select(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][..])
    }

    pub(crate) fn packet_id() -> impl Strategy<Value = PacketId> {
        (1..=u16::MAX).prop_map(|id| PacketId::new(id).expect("not zero"))
    }

    fn non_zero_u16() -> impl Strategy<Value = NonZeroU16> {
        (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).expect("not zero"))
    }

    fn non_zero_u32() -> impl Strategy<Value = NonZeroU32> {
        (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).expect("not zero"))
    }

    fn subscription_id() -> impl Strategy<Value = SubscriptionId> {
        prop_oneof![1..128u32, 1..=SubscriptionId::MAX]
            .prop_map(|id| SubscriptionId::new(id).expect("in range"))
    }

    fn payload_format() -> impl Strategy<Value = PayloadFormat> {
        select(&[PayloadFormat::Unspecified, PayloadFormat::Utf8][..])
    }

    pub(crate) fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
        vec(
            (string(6), string(6)).prop_map(|(name, value)| UserProperty { name, value }),
            0..3,
        )
    }

    /// `strategy` in 5.0; the empty default in 3.1.1.
    fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
        version: Version,
        strategy: impl Strategy<Value = T> + 'static,
    ) -> BoxedStrategy<T> {
        match version {
            Version::V5 => strategy.boxed(),
            Version::V3_1_1 => Just(T::default()).boxed(),
        }
    }

    pub(crate) fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
        (
            of(any::<u32>()),
            of(non_zero_u16()),
            of(non_zero_u32()),
            of(any::<u16>()),
            of(any::<bool>()),
            of(any::<bool>()),
            user_properties(),
            of(string(8)),
            of(binary(8)),
        )
            .prop_map(|p| ConnectProperties {
                session_expiry_interval: p.0,
                receive_maximum: p.1,
                maximum_packet_size: p.2,
                topic_alias_maximum: p.3,
                request_response_information: p.4,
                request_problem_information: p.5,
                user_properties: p.6,
                // Authentication Data only comes with a method (section 3.1.2.11.10).
                authentication_data: p.8.filter(|_| p.7.is_some()),
                authentication_method: p.7,
            })
    }

    pub(crate) fn will_properties() -> impl Strategy<Value = WillProperties> {
        (
            of(any::<u32>()),
            of(payload_format()),
            of(any::<u32>()),
            of(string(8)),
            of(topic_name()),
            of(binary(8)),
            user_properties(),
        )
            .prop_map(|p| WillProperties {
                will_delay_interval: p.0,
                payload_format_indicator: p.1,
                message_expiry_interval: p.2,
                content_type: p.3,
                response_topic: p.4,
                correlation_data: p.5,
                user_properties: p.6,
            })
    }

    pub(crate) fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
        let first = (
            of(any::<u32>()),
            of(non_zero_u16()),
            // Maximum QoS may only be 0 or 1 (section 3.2.2.3.4).
            of(select(&[QoS::AtMostOnce, QoS::AtLeastOnce][..])),
            of(any::<bool>()),
            of(non_zero_u32()),
            of(string(8)),
            of(any::<u16>()),
            of(string(8)),
            user_properties(),
        );
        let second = (
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<u16>()),
            of(string(8)),
            of(string(8)),
            of(string(8)),
            of(binary(8)),
        );
        (first, second).prop_map(|(a, b)| ConnAckProperties {
            session_expiry_interval: a.0,
            receive_maximum: a.1,
            maximum_qos: a.2,
            retain_available: a.3,
            maximum_packet_size: a.4,
            assigned_client_identifier: a.5,
            topic_alias_maximum: a.6,
            reason_string: a.7,
            user_properties: a.8,
            wildcard_subscription_available: b.0,
            subscription_identifiers_available: b.1,
            shared_subscription_available: b.2,
            server_keep_alive: b.3,
            response_information: b.4,
            server_reference: b.5,
            authentication_method: b.6,
            authentication_data: b.7,
        })
    }

    pub(crate) fn publish_properties() -> impl Strategy<Value = PublishProperties> {
        (
            of(payload_format()),
            of(any::<u32>()),
            of(non_zero_u16()),
            of(topic_name()),
            of(binary(8)),
            user_properties(),
            vec(subscription_id(), 0..3),
            of(string(8)),
        )
            .prop_map(|p| PublishProperties {
                payload_format_indicator: p.0,
                message_expiry_interval: p.1,
                topic_alias: p.2,
                response_topic: p.3,
                correlation_data: p.4,
                user_properties: p.5,
                subscription_identifiers: p.6,
                content_type: p.7,
            })
    }

    pub(crate) fn ack_properties() -> impl Strategy<Value = AckProperties> {
        (of(string(8)), user_properties()).prop_map(|(reason_string, user_properties)| {
            AckProperties {
                reason_string,
                user_properties,
            }
        })
    }

    pub(crate) fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
        (
            of(any::<u32>()),
            of(string(8)),
            user_properties(),
            of(string(8)),
        )
            .prop_map(|p| DisconnectProperties {
                session_expiry_interval: p.0,
                reason_string: p.1,
                user_properties: p.2,
                server_reference: p.3,
            })
    }

    pub(crate) fn auth_properties() -> impl Strategy<Value = AuthProperties> {
        (
            of(string(8)),
            of(binary(8)),
            of(string(8)),
            user_properties(),
        )
            .prop_map(|p| AuthProperties {
                authentication_method: p.0,
                authentication_data: p.1,
                reason_string: p.2,
                user_properties: p.3,
            })
    }

    pub(crate) fn publish(version: Version) -> impl Strategy<Value = Publish> {
        let topic = match version {
            // An empty topic stands for a Topic Alias (section 3.3.2.1).
            Version::V5 => prop_oneof![5 => topic(), 1 => Just(TopicName::empty())].boxed(),
            Version::V3_1_1 => topic().boxed(),
        };
        (
            any::<bool>(),
            qos(),
            any::<bool>(),
            topic,
            packet_id(),
            v5_only(version, publish_properties()),
            payload(),
            non_zero_u16(),
        )
            .prop_map(
                |(dup, qos, retain, topic, id, mut properties, payload, alias)| {
                    let acknowledged = qos != QoS::AtMostOnce;
                    if topic.is_empty() && properties.topic_alias.is_none() {
                        properties.topic_alias = Some(alias);
                    }
                    Publish {
                        // DUP is only for QoS 1 and 2 (MQTT-3.3.1-2).
                        dup: dup && acknowledged,
                        qos,
                        retain,
                        topic,
                        packet_id: acknowledged.then_some(id),
                        properties: properties.into(),
                        payload,
                    }
                },
            )
    }

    pub(crate) fn will(version: Version) -> impl Strategy<Value = Will> {
        (
            topic(),
            binary(16),
            qos(),
            any::<bool>(),
            v5_only(version, will_properties()),
        )
            .prop_map(|(topic, payload, qos, retain, properties)| Will {
                topic,
                payload,
                qos,
                retain,
                properties,
            })
    }

    pub(crate) fn connect(version: Version) -> impl Strategy<Value = Connect> {
        (
            any::<bool>(),
            any::<u16>(),
            string(12),
            of(will(version)),
            of(string(8)),
            of(binary(8)),
            v5_only(version, connect_properties()),
        )
            .prop_map(
                move |(
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                )| {
                    // 3.1.1 allows a password only with a user name (MQTT-3.1.2-22).
                    let password =
                        password.filter(|_| version == Version::V5 || username.is_some());
                    Connect {
                        protocol_version: version,
                        clean_start,
                        keep_alive,
                        client_id,
                        will,
                        username,
                        password,
                        properties,
                        bridge: false,
                    }
                },
            )
    }

    pub(crate) fn connack(version: Version) -> impl Strategy<Value = ConnAck> {
        let codes = match version {
            Version::V5 => codes::CONNACK,
            Version::V3_1_1 => codes::CONNACK_V311,
        };
        (
            any::<bool>(),
            reason(codes),
            v5_only(version, connack_properties()),
        )
            .prop_map(|(session_present, reason_code, properties)| ConnAck {
                // A refusal never claims a session (MQTT-3.2.2-6).
                session_present: session_present && reason_code.is_success(),
                reason_code,
                properties,
            })
    }

    macro_rules! pub_ack_strategy {
        ($name:ident, $ty:ident, $codes:expr) => {
            pub(crate) fn $name(version: Version) -> impl Strategy<Value = $ty> {
                (
                    packet_id(),
                    ack_reason(version, $codes),
                    v5_only(version, ack_properties()),
                )
                    .prop_map(|(packet_id, reason_code, properties)| $ty {
                        packet_id,
                        reason_code,
                        properties,
                    })
            }
        };
    }

    pub_ack_strategy!(puback, PubAck, codes::PUBACK);
    pub_ack_strategy!(pubrec, PubRec, codes::PUBREC);
    pub_ack_strategy!(pubrel, PubRel, codes::PUBREL);
    pub_ack_strategy!(pubcomp, PubComp, codes::PUBCOMP);

    pub(crate) fn subscription(version: Version) -> impl Strategy<Value = Subscription> {
        let retain_handling = select(
            &[
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendAtSubscribeIfNew,
                RetainHandling::DoNotSend,
            ][..],
        );
        let extended = v5_only(version, (any::<bool>(), any::<bool>(), retain_handling));
        (topic_filter(), qos(), extended).prop_map(
            |(filter, qos, (no_local, retain_as_published, retain_handling))| {
                // No Local on a shared subscription is a protocol error (MQTT-3.8.3-4).
                let shared = filter.is_shared();
                Subscription {
                    filter,
                    options: SubscriptionOptions {
                        qos,
                        no_local: no_local && !shared,
                        retain_as_published,
                        retain_handling,
                    },
                }
            },
        )
    }

    pub(crate) fn subscribe(version: Version) -> impl Strategy<Value = Subscribe> {
        let properties = v5_only(
            version,
            (of(subscription_id()), user_properties()).prop_map(
                |(subscription_identifier, user_properties)| SubscribeProperties {
                    subscription_identifier,
                    user_properties,
                },
            ),
        );
        (packet_id(), properties, vec(subscription(version), 1..5)).prop_map(
            |(packet_id, properties, filters)| Subscribe {
                packet_id,
                properties,
                filters,
            },
        )
    }

    pub(crate) fn suback(version: Version) -> impl Strategy<Value = SubAck> {
        let codes = match version {
            Version::V5 => codes::SUBACK,
            Version::V3_1_1 => codes::SUBACK_V311,
        };
        (
            packet_id(),
            v5_only(version, ack_properties()),
            vec(reason(codes), 1..5),
        )
            .prop_map(|(packet_id, properties, reason_codes)| SubAck {
                packet_id,
                properties,
                reason_codes,
            })
    }

    pub(crate) fn unsubscribe(version: Version) -> impl Strategy<Value = Unsubscribe> {
        let properties = v5_only(
            version,
            user_properties().prop_map(|user_properties| UnsubscribeProperties { user_properties }),
        );
        (packet_id(), properties, vec(topic_filter(), 1..5)).prop_map(
            |(packet_id, properties, filters)| Unsubscribe {
                packet_id,
                properties,
                filters,
            },
        )
    }

    pub(crate) fn unsuback(version: Version) -> impl Strategy<Value = UnsubAck> {
        // A 3.1.1 UNSUBACK carries neither reason codes nor properties.
        (
            packet_id(),
            v5_only(version, ack_properties()),
            v5_only(version, vec(reason(codes::UNSUBACK), 1..5)),
        )
            .prop_map(|(packet_id, properties, reason_codes)| UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
    }

    pub(crate) fn disconnect(version: Version) -> impl Strategy<Value = Disconnect> {
        (
            ack_reason(version, codes::DISCONNECT),
            v5_only(version, disconnect_properties()),
        )
            .prop_map(|(reason_code, properties)| Disconnect {
                reason_code,
                properties,
            })
    }

    pub(crate) fn auth() -> impl Strategy<Value = Auth> {
        (reason(codes::AUTH), auth_properties()).prop_map(|(reason_code, properties)| Auth {
            reason_code,
            properties,
        })
    }

    /// Any packet `version` can carry, every type equally likely.
    pub(crate) fn packet(version: Version) -> BoxedStrategy<Packet> {
        let mut packets = vec![
            connect(version).prop_map(Packet::from).boxed(),
            connack(version).prop_map(Packet::from).boxed(),
            publish(version).prop_map(Packet::from).boxed(),
            puback(version).prop_map(Packet::from).boxed(),
            pubrec(version).prop_map(Packet::from).boxed(),
            pubrel(version).prop_map(Packet::from).boxed(),
            pubcomp(version).prop_map(Packet::from).boxed(),
            subscribe(version).prop_map(Packet::from).boxed(),
            suback(version).prop_map(Packet::from).boxed(),
            unsubscribe(version).prop_map(Packet::from).boxed(),
            unsuback(version).prop_map(Packet::from).boxed(),
            Just(Packet::PingReq).boxed(),
            Just(Packet::PingResp).boxed(),
            disconnect(version).prop_map(Packet::from).boxed(),
        ];
        if version == Version::V5 {
            packets.push(auth().prop_map(Packet::from).boxed());
        }
        Union::new(packets).boxed()
    }

    /// A version and a packet it can carry.
    pub(crate) fn packet_of_either_version() -> impl Strategy<Value = (Version, Packet)> {
        prop_oneof![
            packet(Version::V3_1_1).prop_map(|p| (Version::V3_1_1, p)),
            packet(Version::V5).prop_map(|p| (Version::V5, p)),
        ]
    }
}

/// Limits that accept any packet the protocol can express.
fn no_limit() -> Limits {
    Limits::new(Limits::PROTOCOL_MAX_PACKET_SIZE)
}

fn encode(packet: &Packet, version: Version) -> BytesMut {
    let mut wire = BytesMut::new();
    codec::encode(packet, version, &mut wire)
        .unwrap_or_else(|e| panic!("cannot encode {packet:?} for {version:?}: {e}"));
    wire
}

/// The version a packet is encoded with: a CONNECT carries its own.
fn encoding_version(packet: &Packet, connection: Version) -> Version {
    match packet {
        Packet::Connect(connect) => connect.protocol_version,
        _ => connection,
    }
}

/// Checks the decoder's contract on one input: `Ok(None)` consumes nothing, `Ok(Some)` consumes
/// at most the input and gives a packet that re-encodes and decodes to itself, `Err` is an error.
/// Nothing may panic.
fn check_decode_contract(
    input: &[u8],
    version: Version,
    limits: &Limits,
) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(input);
    match codec::decode(&mut buf, version, limits) {
        Ok(None) => prop_assert_eq!(&buf[..], input, "Ok(None) consumed bytes"),
        Ok(Some(packet)) => {
            let consumed = input.len() - buf.len();
            prop_assert!(consumed >= 2, "a packet is at least two bytes");
            prop_assert_eq!(&buf[..], &input[consumed..], "only the front is consumed");
            prop_assert!(
                consumed <= limits.max_packet_size as usize,
                "a packet larger than the limit was accepted"
            );
            // Whatever the decoder accepts, the encoder can write back, and that decodes to
            // the same packet (possibly shorter: the input may use non-minimal forms).
            let wire = encode(&packet, encoding_version(&packet, version));
            prop_assert!(wire.len() <= consumed, "re-encoding grew {packet:?}");
            let mut again = wire.clone();
            prop_assert_eq!(
                codec::decode(&mut again, version, &no_limit()),
                Ok(Some(packet))
            );
            prop_assert!(again.is_empty());
        }
        Err(_) => {}
    }
    Ok(())
}

/// What a 5.0 packet becomes when encoded for 3.1.1 and decoded again, or `None` when 3.1.1
/// cannot carry it and encoding must fail.
fn as_v311(packet: &Packet) -> Option<Packet> {
    let success_without_properties = |reason: ReasonCode, properties: &AckProperties| {
        reason == ReasonCode::Success && properties.is_empty()
    };
    let converted = match packet {
        // The CONNECT decides the version: a 5.0 CONNECT cannot be written as 3.1.1.
        Packet::Connect(_) | Packet::Auth(_) => return None,
        Packet::ConnAck(ack) => {
            ack.reason_code.to_v311_connack()?;
            if !ack.properties.is_empty() {
                return None;
            }
            packet.clone()
        }
        // A broker forwarding a 5.0 message to a 3.1.1 subscriber drops the properties.
        Packet::Publish(publish) => {
            if publish.topic.is_empty() {
                return None;
            }
            Packet::Publish(Publish {
                properties: PublishProperties::default().into(),
                ..publish.clone()
            })
        }
        Packet::PubAck(PubAck {
            reason_code,
            properties,
            ..
        })
        | Packet::PubRec(PubRec {
            reason_code,
            properties,
            ..
        })
        | Packet::PubRel(PubRel {
            reason_code,
            properties,
            ..
        })
        | Packet::PubComp(PubComp {
            reason_code,
            properties,
            ..
        }) => {
            if !success_without_properties(*reason_code, properties) {
                return None;
            }
            packet.clone()
        }
        Packet::Subscribe(subscribe) => {
            let qos_only = subscribe.filters.iter().all(|s| {
                !s.options.no_local
                    && !s.options.retain_as_published
                    && s.options.retain_handling == Default::default()
            });
            if !subscribe.properties.is_empty() || !qos_only {
                return None;
            }
            packet.clone()
        }
        // 3.1.1 has one failure code, 0x80, read back as Unspecified error.
        Packet::SubAck(ack) => {
            if !ack.properties.is_empty() {
                return None;
            }
            let reason_codes = ack
                .reason_codes
                .iter()
                .map(|&code| {
                    if code.is_error() {
                        ReasonCode::UnspecifiedError
                    } else {
                        code
                    }
                })
                .collect();
            Packet::SubAck(SubAck {
                reason_codes,
                ..ack.clone()
            })
        }
        Packet::Unsubscribe(Unsubscribe { properties, .. }) => {
            if !properties.is_empty() {
                return None;
            }
            packet.clone()
        }
        // A 3.1.1 UNSUBACK has no payload: the reason codes are dropped.
        Packet::UnsubAck(ack) => {
            if !ack.properties.is_empty() {
                return None;
            }
            Packet::UnsubAck(UnsubAck {
                reason_codes: Vec::new(),
                ..ack.clone()
            })
        }
        Packet::PingReq | Packet::PingResp => packet.clone(),
        Packet::Disconnect(disconnect) => {
            if disconnect.reason_code != ReasonCode::Success || !disconnect.properties.is_empty() {
                return None;
            }
            packet.clone()
        }
    };
    Some(converted)
}

proptest! {
    /// Encode then decode gives back the packet, consuming exactly its bytes; `encoded_len`
    /// predicts the size; any prefix is `Ok(None)` without consuming anything.
    #[test]
    fn every_packet_round_trips(
        (version, packet) in packet_of_either_version(),
        before in proptest::collection::vec(any::<u8>(), 0..4),
        after in proptest::collection::vec(any::<u8>(), 0..8),
        split in any::<Index>(),
    ) {
        // `encode` appends to what the buffer already holds.
        let mut buf = BytesMut::from(&before[..]);
        codec::encode(&packet, version, &mut buf)
            .unwrap_or_else(|e| panic!("cannot encode {packet:?}: {e}"));
        prop_assert_eq!(&buf[..before.len()], &before[..]);
        let wire = buf.split_off(before.len()).freeze();
        prop_assert_eq!(packet.encoded_len(version), Ok(wire.len()));

        // Whole, followed by unrelated bytes.
        let mut input = BytesMut::from(&wire[..]);
        input.extend_from_slice(&after);
        prop_assert_eq!(
            codec::decode(&mut input, version, &no_limit()),
            Ok(Some(packet.clone()))
        );
        prop_assert_eq!(&input[..], &after[..]);

        // In two pieces.
        let at = split.index(wire.len());
        let mut input = BytesMut::from(&wire[..at]);
        prop_assert_eq!(codec::decode(&mut input, version, &no_limit()), Ok(None));
        prop_assert_eq!(&input[..], &wire[..at]);
        input.extend_from_slice(&wire[at..]);
        prop_assert_eq!(
            codec::decode(&mut input, version, &no_limit()),
            Ok(Some(packet.clone()))
        );
        prop_assert!(input.is_empty());

        // A limit of exactly the packet's size accepts it; one byte less rejects it.
        let exact = Limits::new(wire.len() as u32);
        prop_assert_eq!(
            codec::decode(&mut BytesMut::from(&wire[..]), version, &exact),
            Ok(Some(packet.clone()))
        );
        let below = Limits::new(wire.len() as u32 - 1);
        let too_large = codec::decode(&mut BytesMut::from(&wire[..]), version, &below);
        let is_too_large = matches!(too_large, Err(DecodeError::PacketTooLarge { .. }));
        prop_assert!(is_too_large, "{:?}", too_large);
    }

    /// A CONNECT is decoded by its own protocol level, whatever the connection assumed.
    #[test]
    fn connect_is_decoded_by_its_own_version(
        connect in version().prop_flat_map(strategies::connect),
        assumed in version(),
    ) {
        let packet = Packet::Connect(Box::new(connect.clone()));
        let mut wire = encode(&packet, connect.protocol_version);
        prop_assert_eq!(codec::decode(&mut wire, assumed, &no_limit()), Ok(Some(packet)));
    }

    /// Arbitrary bytes never make the decoder panic, and it keeps its contract.
    #[test]
    fn decode_keeps_its_contract_on_random_bytes(
        version in version(),
        input in proptest::collection::vec(any::<u8>(), 0..64),
        max_packet_size in 0u32..96,
    ) {
        check_decode_contract(&input, version, &Limits::new(max_packet_size))?;
    }

    /// Valid packets with a few bytes overwritten, or cut short: the decoder keeps its contract.
    #[test]
    fn decode_keeps_its_contract_on_corrupted_packets(
        (version, packet) in packet_of_either_version(),
        edits in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        cut in any::<Index>(),
        cut_short in any::<bool>(),
    ) {
        let mut wire = encode(&packet, version);
        for (at, byte) in edits {
            let at = at.index(wire.len());
            wire[at] = byte;
        }
        if cut_short {
            wire.truncate(cut.index(wire.len()));
        }
        check_decode_contract(&wire, version, &no_limit())?;
        check_decode_contract(&wire, version, &Limits::default())?;
    }

    /// A 5.0 PUBLISH encoded for a 3.1.1 peer loses its properties and nothing else.
    #[test]
    fn v5_publish_encoded_for_v311_drops_properties(
        mut publish in publish(Version::V5)
            .prop_filter("carries properties", |p| !p.properties.is_empty()),
        topic in strategies::topic(),
    ) {
        // 3.1.1 has no Topic Alias to stand for an empty topic.
        if publish.topic.is_empty() {
            publish.topic = topic;
        }
        let packet = Packet::Publish(publish.clone());
        let mut wire = encode(&packet, Version::V3_1_1);
        prop_assert_eq!(packet.encoded_len(Version::V3_1_1), Ok(wire.len()));
        let expected = Publish {
            properties: PublishProperties::default().into(),
            ..publish
        };
        prop_assert_eq!(
            codec::decode(&mut wire, Version::V3_1_1, &no_limit()),
            Ok(Some(Packet::Publish(expected)))
        );
        prop_assert!(wire.is_empty());
    }

    /// Encoding a 5.0 packet for 3.1.1 either writes what 3.1.1 can carry of it, or fails
    /// without writing anything.
    #[test]
    fn v5_packets_encoded_for_v311_convert_or_fail_cleanly(
        packet in packet(Version::V5),
        before in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut buf = BytesMut::from(&before[..]);
        let result = codec::encode(&packet, Version::V3_1_1, &mut buf);
        match as_v311(&packet) {
            Some(expected) => {
                prop_assert_eq!(result, Ok(()));
                let mut wire = buf.split_off(before.len());
                prop_assert_eq!(packet.encoded_len(Version::V3_1_1), Ok(wire.len()));
                prop_assert_eq!(
                    codec::decode(&mut wire, Version::V3_1_1, &no_limit()),
                    Ok(Some(expected))
                );
                prop_assert!(wire.is_empty());
            }
            None => {
                let error = result.expect_err("3.1.1 cannot carry this packet");
                prop_assert_eq!(&buf[..], &before[..], "a failed encode wrote bytes");
                prop_assert_eq!(packet.encoded_len(Version::V3_1_1), Err(error.clone()));
                let expected_kind = matches!(
                    error,
                    EncodeError::NotInV311(_)
                        | EncodeError::VersionMismatch
                        | EncodeError::InvalidReasonCode { .. }
                        | EncodeError::EmptyTopic
                );
                prop_assert!(expected_kind, "{:?}", error);
            }
        }
    }
}

#[test]
fn connect_of_one_version_cannot_be_encoded_as_the_other() {
    for (own, other) in [
        (Version::V5, Version::V3_1_1),
        (Version::V3_1_1, Version::V5),
    ] {
        let packet = Packet::Connect(Box::new(Connect::new(own, "client")));
        let mut buf = BytesMut::new();
        assert_eq!(
            codec::encode(&packet, other, &mut buf),
            Err(EncodeError::VersionMismatch)
        );
        assert!(buf.is_empty());
    }
}

/// A 5.0 packet carrying `code`, and the same packet on the wire with the code's byte replaced
/// by `byte`.
struct ReasonCase {
    packet: PacketType,
    allowed: &'static [u8],
    make: fn(ReasonCode) -> Packet,
    wire: fn(u8) -> Vec<u8>,
}

const REASON_CASES: &[ReasonCase] = &[
    ReasonCase {
        packet: PacketType::ConnAck,
        allowed: codes::CONNACK,
        make: |reason_code| {
            Packet::from(ConnAck {
                reason_code,
                ..ConnAck::default()
            })
        },
        wire: |code| vec![0x20, 3, 0, code, 0],
    },
    ReasonCase {
        packet: PacketType::PubAck,
        allowed: codes::PUBACK,
        make: |reason_code| {
            Packet::from(PubAck {
                reason_code,
                ..PubAck::new(PacketId::MIN)
            })
        },
        wire: |code| vec![0x40, 3, 0, 1, code],
    },
    ReasonCase {
        packet: PacketType::PubRec,
        allowed: codes::PUBREC,
        make: |reason_code| {
            Packet::from(PubRec {
                reason_code,
                ..PubRec::new(PacketId::MIN)
            })
        },
        wire: |code| vec![0x50, 3, 0, 1, code],
    },
    ReasonCase {
        packet: PacketType::PubRel,
        allowed: codes::PUBREL,
        make: |reason_code| {
            Packet::from(PubRel {
                reason_code,
                ..PubRel::new(PacketId::MIN)
            })
        },
        wire: |code| vec![0x62, 3, 0, 1, code],
    },
    ReasonCase {
        packet: PacketType::PubComp,
        allowed: codes::PUBCOMP,
        make: |reason_code| {
            Packet::from(PubComp {
                reason_code,
                ..PubComp::new(PacketId::MIN)
            })
        },
        wire: |code| vec![0x70, 3, 0, 1, code],
    },
    ReasonCase {
        packet: PacketType::SubAck,
        allowed: codes::SUBACK,
        make: |code| {
            Packet::from(SubAck {
                packet_id: PacketId::MIN,
                properties: AckProperties::default(),
                reason_codes: vec![code],
            })
        },
        wire: |code| vec![0x90, 4, 0, 1, 0, code],
    },
    ReasonCase {
        packet: PacketType::UnsubAck,
        allowed: codes::UNSUBACK,
        make: |code| {
            Packet::from(UnsubAck {
                packet_id: PacketId::MIN,
                properties: AckProperties::default(),
                reason_codes: vec![code],
            })
        },
        wire: |code| vec![0xB0, 4, 0, 1, 0, code],
    },
    ReasonCase {
        packet: PacketType::Disconnect,
        allowed: codes::DISCONNECT,
        make: |code| Packet::from(Disconnect::new(code)),
        wire: |code| vec![0xE0, 1, code],
    },
    ReasonCase {
        packet: PacketType::Auth,
        allowed: codes::AUTH,
        make: |reason_code| {
            Packet::from(Auth {
                reason_code,
                ..Auth::default()
            })
        },
        wire: |code| vec![0xF0, 1, code],
    },
];

/// Each packet accepts exactly the reason codes its table in MQTT 5.0 lists (table 2-6), when
/// encoding and when decoding; every value of the byte is tried.
#[test]
fn reason_codes_follow_table_2_6_for_each_packet() {
    for case in REASON_CASES {
        for value in 0..=u8::MAX {
            let allowed = case.allowed.contains(&value);
            let mut wire = BytesMut::from(&(case.wire)(value)[..]);
            let decoded = codec::decode(&mut wire, Version::V5, &no_limit());
            let Some(code) = ReasonCode::from_u8(value) else {
                assert!(!allowed, "{value:#04x} is not a reason code");
                assert_eq!(
                    decoded,
                    Err(DecodeError::InvalidReasonCode {
                        packet: case.packet,
                        code: value
                    })
                );
                continue;
            };
            let packet = (case.make)(code);
            let mut encoded = BytesMut::new();
            let result = codec::encode(&packet, Version::V5, &mut encoded);
            if allowed {
                assert_eq!(result, Ok(()), "{:?} {code}", case.packet);
                assert_eq!(
                    decoded,
                    Ok(Some(packet.clone())),
                    "{:?} {code}",
                    case.packet
                );
                assert_eq!(
                    codec::decode(&mut encoded, Version::V5, &no_limit()),
                    Ok(Some(packet))
                );
            } else {
                assert_eq!(
                    result,
                    Err(EncodeError::InvalidReasonCode {
                        packet: case.packet,
                        code
                    }),
                    "{:?} {code}",
                    case.packet
                );
                assert!(encoded.is_empty());
                assert_eq!(
                    decoded,
                    Err(DecodeError::InvalidReasonCode {
                        packet: case.packet,
                        code: value
                    }),
                    "{:?} {code}",
                    case.packet
                );
            }
        }
    }
}

/// 3.1.1 CONNACK return codes are 0 to 5 and SUBACK return codes 0, 1, 2 and 0x80; nothing else
/// decodes.
#[test]
fn v311_return_codes_are_the_only_ones_decoded() {
    for value in 0..=u8::MAX {
        let mut connack = BytesMut::from(&[0x20, 2, 0, value][..]);
        let decoded = codec::decode(&mut connack, Version::V3_1_1, &no_limit());
        match ReasonCode::from_v311_connack(value) {
            Some(reason_code) => {
                assert!(value <= 5);
                let expected = ConnAck {
                    reason_code,
                    ..ConnAck::default()
                };
                assert_eq!(decoded, Ok(Some(Packet::from(expected))));
            }
            None => assert_eq!(
                decoded,
                Err(DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code: value
                })
            ),
        }

        let mut suback = BytesMut::from(&[0x90, 3, 0, 1, value][..]);
        let decoded = codec::decode(&mut suback, Version::V3_1_1, &no_limit());
        if codes::SUBACK_V311.contains(&value) {
            let Ok(Some(Packet::SubAck(ack))) = decoded else {
                panic!("SUBACK return code {value:#04x}: {decoded:?}");
            };
            let code = ack.reason_codes[0];
            assert_eq!(code.to_v311_suback(), Some(value));
        } else {
            assert_eq!(
                decoded,
                Err(DecodeError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code: value
                })
            );
        }
    }
}
