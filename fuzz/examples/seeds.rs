//! Writes the seed inputs of `fuzz/seeds/`: one valid packet of every type and version, in the
//! input format of `mqtt_proto_fuzz::split_input`, so that fuzzing starts from deep inside the
//! decoder instead of rediscovering the fixed header; and for the `session` target the body of
//! a saved client session with some of everything. Run from the fuzz folder:
//! `cargo run --example seeds`.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use mqtt_proto::ReasonCode;
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::packet::*;

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

fn packets(version: Version) -> Vec<Packet> {
    let v5 = version == Version::V5;
    let user = vec![UserProperty::new("k", "v")];
    let mut connect = Connect::new(version, "client-1");
    connect.username = Some("user".into());
    connect.password = Some(Bytes::from_static(b"pass"));
    let mut will = Will::new(
        TopicName::from_static("will/topic"),
        "gone",
        QoS::AtLeastOnce,
    );
    will.retain = true;
    if v5 {
        connect.properties = ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: NonZeroU16::new(20),
            maximum_packet_size: NonZeroU32::new(65_536),
            topic_alias_maximum: Some(10),
            request_problem_information: Some(true),
            user_properties: user.clone(),
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(b"data")),
            ..Default::default()
        };
        will.properties = WillProperties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(PayloadFormat::Utf8),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            user_properties: user.clone(),
            ..Default::default()
        };
    }
    connect.will = Some(will);

    let mut connack = ConnAck {
        session_present: true,
        ..ConnAck::default()
    };
    if v5 {
        connack.properties = ConnAckProperties {
            receive_maximum: NonZeroU16::new(10),
            maximum_qos: Some(QoS::AtLeastOnce),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_maximum: Some(5),
            reason_string: Some("ok".into()),
            server_keep_alive: Some(30),
            ..Default::default()
        };
    }

    let mut publish = Publish::new(
        TopicName::from_static("sensors/kitchen/temperature"),
        "23.5",
    );
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = Some(id(7));
    publish.retain = true;
    publish.dup = true;
    if v5 {
        publish.properties = PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(60),
            topic_alias: NonZeroU16::new(3),
            response_topic: Some("reply".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: user.clone(),
            subscription_identifiers: SubscriptionId::new(200_000).into_iter().collect(),
            content_type: Some("json".into()),
        }
        .into();
    }

    let mut ack = PubAck::new(id(7));
    if v5 {
        ack.reason_code = ReasonCode::NoMatchingSubscribers;
        ack.properties.reason_string = Some("nobody".into());
    }

    let mut filters = vec![
        Subscription::new(filter("a/+/c"), QoS::AtLeastOnce),
        Subscription::new(filter("$share/group/x/#"), QoS::ExactlyOnce),
    ];
    if v5 {
        let mut options = SubscriptionOptions::new(QoS::AtMostOnce);
        options.no_local = true;
        options.retain_as_published = true;
        options.retain_handling = RetainHandling::DoNotSend;
        filters.push(Subscription {
            filter: filter("b/#"),
            options,
        });
    }
    let subscribe = Subscribe {
        packet_id: id(9),
        properties: SubscribeProperties {
            subscription_identifier: SubscriptionId::new(v5.into()),
            user_properties: if v5 { user.clone() } else { Vec::new() },
        },
        filters,
    };
    let suback = SubAck {
        packet_id: id(9),
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::UnspecifiedError,
            ReasonCode::Success,
        ],
    };
    let unsubscribe = Unsubscribe {
        packet_id: id(10),
        properties: UnsubscribeProperties::default(),
        filters: vec![filter("a/+/c"), filter("$share/group/x/#")],
    };
    let unsuback = UnsubAck {
        packet_id: id(10),
        properties: AckProperties::default(),
        reason_codes: if v5 {
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
        } else {
            Vec::new()
        },
    };
    let mut disconnect = Disconnect::default();
    let mut packets = vec![
        connect.into(),
        connack.into(),
        publish.into(),
        Publish::new(TopicName::from_static("t"), Bytes::new()).into(),
        ack.clone().into(),
        PubRec::new(id(8)).into(),
        PubRel::new(id(8)).into(),
        PubComp::new(id(8)).into(),
        subscribe.into(),
        suback.into(),
        unsubscribe.into(),
        unsuback.into(),
        Packet::PingReq,
        Packet::PingResp,
    ];
    if v5 {
        disconnect.reason_code = ReasonCode::ServerMoved;
        disconnect.properties.server_reference = Some("elsewhere:1883".into());
        packets.push(
            Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: AuthProperties {
                    authentication_method: Some("SCRAM".into()),
                    authentication_data: Some(Bytes::from_static(b"nonce")),
                    ..Default::default()
                },
            }
            .into(),
        );
    }
    packets.push(disconnect.into());
    packets
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    std::fs::create_dir_all(&dir)?;
    let max = Limits::default().max_packet_size;
    for version in [Version::V3_1_1, Version::V5] {
        let name = if version == Version::V5 { "v5" } else { "v311" };
        let mut stream = BytesMut::new();
        for (index, packet) in packets(version).into_iter().enumerate() {
            let mut wire = BytesMut::new();
            let encoding = mqtt_proto_fuzz::encoding_version(&packet, version);
            codec::encode(&packet, encoding, &mut wire)?;
            stream.extend_from_slice(&wire);
            let file = format!("{name}-{index:02}-{:?}", packet.packet_type()).to_lowercase();
            std::fs::write(
                dir.join(file),
                mqtt_proto_fuzz::make_input(version, max, &wire),
            )?;
        }
        // All of them in one buffer, as a stream from one peer.
        let input = mqtt_proto_fuzz::make_input(version, max, &stream);
        std::fs::write(dir.join(format!("{name}-stream")), input)?;
    }
    std::fs::write(dir.join("session-body"), session_body()?)?;
    Ok(())
}

/// The body of a saved session: publishes in flight (one at its PUBREL stage), queued ones, a
/// QoS 2 message received, requests, subscriptions and an assigned client identifier.
fn session_body() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use mqtt_proto::connection::{ClientConfig, ClientConnection};
    let now = std::time::Instant::now();
    let mut config = ClientConfig::new(Version::V5, "");
    config.max_inflight = 2;
    let mut client = ClientConnection::new(config, None, now);
    let mut wire = BytesMut::new();
    let mut connack = ConnAck::default();
    connack.properties.assigned_client_identifier = Some("assigned-1".into());
    codec::encode(&Packet::ConnAck(Box::new(connack)), Version::V5, &mut wire)?;
    client.handle_bytes(now, &wire);
    let mut ids = Vec::new();
    for (qos, payload) in [
        (QoS::ExactlyOnce, "two"),
        (QoS::AtLeastOnce, "one"),
        (QoS::AtLeastOnce, "queued"),
    ] {
        let mut publish = Publish::new(TopicName::from_static("a/b"), payload);
        publish.qos = qos;
        publish.properties.user_properties = vec![UserProperty::new("k", "v")];
        ids.extend(client.publish(now, publish)?);
    }
    let subscription = Subscription::new(filter("s/+"), QoS::AtLeastOnce);
    let granted = client.subscribe(now, vec![subscription], SubscribeProperties::default())?;
    client.subscribe(
        now,
        vec![Subscription::new(filter("t/#"), QoS::ExactlyOnce)],
        SubscribeProperties::default(),
    )?;
    let mut received = Publish::new(TopicName::from_static("in"), "in");
    received.qos = QoS::ExactlyOnce;
    received.packet_id = Some(id(77));
    let mut wire = BytesMut::new();
    for packet in [
        Packet::PubRec(PubRec::new(ids[0])),
        Packet::SubAck(SubAck {
            packet_id: granted,
            properties: AckProperties::default(),
            reason_codes: vec![ReasonCode::GrantedQoS1],
        }),
        Packet::Publish(received),
    ] {
        codec::encode(&packet, Version::V5, &mut wire)?;
    }
    client.handle_bytes(now, &wire);
    let mut saved = BytesMut::new();
    client.encode_session(&mut saved)?;
    Ok(mqtt_proto_fuzz::session_body(&saved).to_vec())
}
