//! Client core scenarios, named after the normative statements they check where there is one.

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::util::{Feed, Sim};
use crate::ReasonCode;
use crate::codec::{self, DecodeError};
use crate::connection::{
    ClientConfig, ClientEvent, ClientState, DisconnectReason, ProtocolError, UsageError,
};
use crate::packet::{
    Auth, AuthProperties, ConnAck, Disconnect, Packet, PacketId, PubAck, PubComp, PubRec, PubRel,
    Publish, QoS, SubAck, SubscribeProperties, Subscription, UnsubAck, UnsubscribeProperties,
    Version,
};
use crate::topic::{TopicError, TopicName, valid_filter, valid_name};

fn config(version: Version) -> ClientConfig {
    let mut config = ClientConfig::new(version, "client-1");
    config.max_inflight = 100;
    config
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).unwrap()
}

fn publish(topic: &str, payload: &'static str, qos: QoS) -> Publish {
    let mut p = Publish::new(valid_name(topic), Bytes::from_static(payload.as_bytes()));
    p.qos = qos;
    p
}

fn connected(version: Version) -> Sim {
    let mut sim = Sim::new(config(version));
    sim.accept(ConnAck::default());
    sim.take_events();
    sim
}

fn both_feeds(test: impl Fn(Sim)) {
    for version in [Version::V3_1_1, Version::V5] {
        for feed in [Feed::Whole, Feed::ByteByByte] {
            let mut sim = connected(version);
            sim.feed = feed;
            test(sim);
        }
    }
}

fn published_ids(events: &[ClientEvent]) -> Vec<(u16, ReasonCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Published(o) => Some((o.packet_id.get(), o.reason_code)),
            _ => None,
        })
        .collect()
}

fn disconnect_reason(events: &[ClientEvent]) -> Option<&DisconnectReason> {
    events.iter().find_map(|e| match e {
        ClientEvent::Disconnected(reason) => Some(reason),
        _ => None,
    })
}

#[test]
fn connect_carries_the_configuration() {
    let mut cfg = config(Version::V5);
    cfg.keep_alive = 30;
    cfg.username = Some("user".into());
    cfg.password = Some(Bytes::from_static(b"pw"));
    cfg.properties.session_expiry_interval = Some(3600);
    cfg.properties.receive_maximum = NonZeroU16::new(5);
    let mut sim = Sim::new(cfg);
    let sent = sim.sent();
    let Some(Packet::Connect(connect)) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(connect.client_id, "client-1");
    assert_eq!(connect.keep_alive, 30);
    assert!(connect.clean_start);
    assert_eq!(connect.username.as_deref(), Some("user"));
    assert_eq!(connect.properties.session_expiry_interval, Some(3600));
    assert_eq!(connect.properties.receive_maximum, NonZeroU16::new(5));
    // By default we take any packet: no maximum packet size is announced.
    assert_eq!(connect.properties.maximum_packet_size, None);
    assert_eq!(sim.client.state(), ClientState::Connecting);
    // A lower one is announced, so the server knows what we enforce.
    let mut cfg = config(Version::V5);
    cfg.max_packet_size = 1024 * 1024;
    let mut sim = Sim::new(cfg);
    let sent = sim.sent();
    let Some(Packet::Connect(connect)) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        connect.properties.maximum_packet_size,
        NonZeroU32::new(1024 * 1024)
    );
}

#[test]
fn connack_connects_and_reports_properties() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut sim = Sim::new(config(version));
        let mut connack = ConnAck::default();
        if version == Version::V5 {
            connack.properties.assigned_client_identifier = Some("assigned".into());
        }
        sim.accept(connack);
        let events = sim.take_events();
        assert!(matches!(
            events.as_slice(),
            [ClientEvent::Connected {
                session_present: false,
                ..
            }]
        ));
        assert_eq!(sim.client.state(), ClientState::Connected);
        if version == Version::V5 {
            assert_eq!(sim.client.session().assigned_client_id(), Some("assigned"));
        }
    }
}

#[test]
fn refused_connack_closes_with_its_reason() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut sim = Sim::new(config(version));
        sim.accept(ConnAck {
            reason_code: ReasonCode::NotAuthorized,
            ..ConnAck::default()
        });
        let events = sim.take_events();
        assert!(matches!(
            disconnect_reason(&events),
            Some(DisconnectReason::Refused {
                reason_code: ReasonCode::NotAuthorized,
                ..
            })
        ));
        assert!(sim.client.is_closed());
    }
}

#[test]
fn connect_timeout_closes_the_connection() {
    let mut sim = Sim::new(config(Version::V5));
    sim.sent();
    sim.advance(Duration::from_secs(29));
    assert_eq!(sim.client.state(), ClientState::Connecting);
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::ConnectTimeout)
    );
}

#[test]
fn packets_before_connack_are_a_protocol_error() {
    let mut sim = Sim::new(config(Version::V5));
    sim.sent();
    sim.deliver([Packet::PingResp]);
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::Protocol(
            ProtocolError::UnexpectedPacket(crate::packet::PacketType::PingResp)
        ))
    );
}

#[test]
fn mqtt_3_2_2_4_session_present_for_clean_start_is_rejected() {
    let mut sim = Sim::new(config(Version::V5));
    sim.accept(ConnAck {
        session_present: true,
        ..ConnAck::default()
    });
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::Protocol(
            ProtocolError::UnexpectedSessionPresent
        ))
    );
}

#[test]
fn mqtt_3_1_2_20_pingreq_when_idle_and_pingresp_keeps_alive() {
    let mut cfg = config(Version::V5);
    cfg.keep_alive = 10;
    cfg.ping_timeout = Duration::from_secs(5);
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    sim.sent();
    assert_eq!(
        sim.client.poll_timeout(),
        Some(sim.now + Duration::from_secs(10))
    );
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.sent(), [Packet::PingReq]);
    sim.deliver([Packet::PingResp]);
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.client.state(), ClientState::Connected);
    // The next PINGREQ comes keep-alive seconds after the last send.
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.sent(), [Packet::PingReq]);
}

#[test]
fn sending_anything_postpones_the_pingreq() {
    let mut cfg = config(Version::V3_1_1);
    cfg.keep_alive = 10;
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    sim.sent();
    sim.advance(Duration::from_secs(8));
    sim.client
        .publish(sim.now, publish("a", "x", QoS::AtMostOnce))
        .unwrap();
    sim.sent();
    sim.advance(Duration::from_secs(8));
    assert_eq!(sim.sent(), []);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.sent(), [Packet::PingReq]);
}

#[test]
fn missing_pingresp_declares_the_connection_dead() {
    let mut cfg = config(Version::V5);
    cfg.keep_alive = 10;
    cfg.ping_timeout = Duration::from_secs(5);
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    sim.sent();
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.sent(), [Packet::PingReq]);
    sim.advance(Duration::from_secs(5));
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::KeepAliveTimeout)
    );
}

#[test]
fn a_keep_alive_shorter_than_the_ping_timeout_still_times_out() {
    let mut cfg = config(Version::V5);
    cfg.keep_alive = 1;
    cfg.ping_timeout = Duration::from_secs(5);
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    sim.sent();
    // A PINGREQ every second, none answered: the first one's deadline (6 s) holds.
    for _ in 0..5 {
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.sent(), [Packet::PingReq]);
        assert_eq!(disconnect_reason(&sim.take_events()), None);
    }
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::KeepAliveTimeout)
    );
}

#[test]
fn mqtt_3_2_2_21_server_keep_alive_replaces_ours() {
    let mut cfg = config(Version::V5);
    cfg.keep_alive = 60;
    let mut sim = Sim::new(cfg);
    let mut connack = ConnAck::default();
    connack.properties.server_keep_alive = Some(5);
    sim.accept(connack);
    sim.sent();
    assert_eq!(sim.client.keep_alive(), 5);
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.sent(), [Packet::PingReq]);
}

#[test]
fn repeated_and_early_timeouts_are_harmless() {
    let mut sim = connected(Version::V5);
    sim.sent();
    let deadline = sim.client.poll_timeout().unwrap();
    sim.client.handle_timeout(sim.now);
    sim.client.handle_timeout(sim.now);
    assert_eq!(sim.sent(), []);
    assert_eq!(sim.client.poll_timeout(), Some(deadline));
}

#[test]
fn qos1_publish_completes_on_puback() {
    both_feeds(|mut sim| {
        let id = sim
            .client
            .publish(sim.now, publish("a/b", "hello", QoS::AtLeastOnce))
            .unwrap()
            .unwrap();
        let sent = sim.sent();
        let [Packet::Publish(p)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(
            (p.packet_id, p.qos, p.dup),
            (Some(id), QoS::AtLeastOnce, false)
        );
        sim.deliver([Packet::PubAck(PubAck::new(id))]);
        assert_eq!(
            published_ids(&sim.take_events()),
            [(id.get(), ReasonCode::Success)]
        );
        assert_eq!(sim.client.inflight(), 0);
    });
}

#[test]
fn qos2_publish_runs_pubrec_pubrel_pubcomp() {
    both_feeds(|mut sim| {
        let id = sim
            .client
            .publish(sim.now, publish("a/b", "once", QoS::ExactlyOnce))
            .unwrap()
            .unwrap();
        assert!(matches!(sim.sent().as_slice(), [Packet::Publish(_)]));
        sim.deliver([Packet::PubRec(PubRec::new(id))]);
        assert_eq!(sim.sent(), [Packet::PubRel(PubRel::new(id))]);
        assert!(published_ids(&sim.take_events()).is_empty());
        sim.deliver([Packet::PubComp(PubComp::new(id))]);
        assert_eq!(
            published_ids(&sim.take_events()),
            [(id.get(), ReasonCode::Success)]
        );
    });
}

/// A server that completed the exchange and forgot it (it restarted after sending PUBCOMP)
/// answers the PUBREL sent again with 0x92 Packet Identifier not found: it had accepted the
/// message with its PUBREC, so the publish succeeded.
#[test]
fn pubcomp_packet_identifier_not_found_completes_the_publish() {
    let mut sim = connected(Version::V5);
    let id = sim
        .client
        .publish(sim.now, publish("a/b", "once", QoS::ExactlyOnce))
        .unwrap()
        .unwrap();
    sim.sent();
    sim.deliver([Packet::PubRec(PubRec::new(id))]);
    assert_eq!(sim.sent(), [Packet::PubRel(PubRel::new(id))]);
    let mut comp = PubComp::new(id);
    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
    sim.deliver([Packet::PubComp(comp)]);
    assert_eq!(
        published_ids(&sim.take_events()),
        [(id.get(), ReasonCode::Success)]
    );
}

#[test]
fn refusing_pubrec_completes_without_pubrel() {
    let mut sim = connected(Version::V5);
    let id = sim
        .client
        .publish(sim.now, publish("a", "x", QoS::ExactlyOnce))
        .unwrap()
        .unwrap();
    sim.sent();
    let mut rec = PubRec::new(id);
    rec.reason_code = ReasonCode::NotAuthorized;
    sim.deliver([Packet::PubRec(rec)]);
    assert_eq!(sim.sent(), []);
    assert_eq!(
        published_ids(&sim.take_events()),
        [(id.get(), ReasonCode::NotAuthorized)]
    );
}

#[test]
fn mqtt_3_3_4_7_never_more_in_flight_than_receive_maximum() {
    let mut sim = Sim::new(config(Version::V5));
    let mut connack = ConnAck::default();
    connack.properties.receive_maximum = NonZeroU16::new(2);
    sim.accept(connack);
    let ids: Vec<_> = (0..5)
        .map(|_| {
            sim.client
                .publish(sim.now, publish("a", "x", QoS::AtLeastOnce))
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(sim.sent().len(), 2);
    assert_eq!(sim.client.inflight(), 2);
    sim.deliver([Packet::PubAck(PubAck::new(ids[1]))]);
    let sent = sim.sent();
    let [Packet::Publish(next)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    // The queue keeps publication order.
    assert_eq!(next.packet_id, Some(ids[2]));
}

#[test]
fn v311_window_is_the_configured_max_inflight() {
    let mut cfg = config(Version::V3_1_1);
    cfg.max_inflight = 3;
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    for _ in 0..10 {
        sim.client
            .publish(sim.now, publish("a", "x", QoS::AtLeastOnce))
            .unwrap();
    }
    assert_eq!(sim.sent().len(), 3);
}

#[test]
fn queue_is_bounded() {
    let mut cfg = config(Version::V5);
    cfg.max_queued = 2;
    let mut sim = Sim::new(cfg);
    sim.client
        .publish(sim.now, publish("a", "x", QoS::AtLeastOnce))
        .unwrap();
    sim.client
        .publish(sim.now, publish("a", "x", QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(
        sim.client
            .publish(sim.now, publish("a", "x", QoS::AtLeastOnce)),
        Err(UsageError::QueueFull)
    );
}

#[test]
fn publishes_made_while_connecting_go_out_after_connack() {
    let mut sim = Sim::new(config(Version::V5));
    let id = sim
        .client
        .publish(sim.now, publish("a", "early", QoS::AtLeastOnce))
        .unwrap()
        .unwrap();
    assert_eq!(
        sim.client
            .publish(sim.now, publish("a", "early", QoS::AtMostOnce)),
        Err(UsageError::NotConnected)
    );
    let sent = sim.accept(ConnAck::default());
    assert_eq!(sent.len(), 1, "only CONNECT before CONNACK");
    let sent = sim.sent();
    assert!(matches!(sent.as_slice(), [Packet::Publish(p)] if p.packet_id == Some(id)));
}

#[test]
fn server_limits_are_usage_errors_never_disconnects() {
    let mut sim = Sim::new(config(Version::V5));
    let mut connack = ConnAck::default();
    connack.properties.maximum_qos = Some(QoS::AtLeastOnce);
    connack.properties.retain_available = Some(false);
    connack.properties.maximum_packet_size = NonZeroU32::new(64);
    sim.accept(connack);
    assert_eq!(
        sim.client
            .publish(sim.now, publish("a", "x", QoS::ExactlyOnce)),
        Err(UsageError::QoSNotSupported {
            requested: QoS::ExactlyOnce,
            max: QoS::AtLeastOnce
        })
    );
    let mut retained = publish("a", "x", QoS::AtMostOnce);
    retained.retain = true;
    assert_eq!(
        sim.client.publish(sim.now, retained),
        Err(UsageError::RetainNotSupported)
    );
    let big = Publish::new(valid_name("a"), vec![0u8; 100]);
    assert!(matches!(
        sim.client.publish(sim.now, big),
        Err(UsageError::PacketTooLarge { max: 64, .. })
    ));
    assert_eq!(sim.client.state(), ClientState::Connected);
    assert_eq!(sim.sent(), []);
}

#[test]
fn queued_publishes_beyond_server_limits_are_dropped_with_an_event() {
    let mut sim = Sim::new(config(Version::V5));
    let id = sim
        .client
        .publish(sim.now, publish("a", "x", QoS::ExactlyOnce))
        .unwrap()
        .unwrap();
    let mut connack = ConnAck::default();
    connack.properties.maximum_qos = Some(QoS::AtMostOnce);
    sim.accept(connack);
    let events = sim.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        ClientEvent::PublishDropped { packet_id, error: UsageError::QoSNotSupported { .. } }
            if *packet_id == id
    )));
    assert_eq!(sim.sent(), []);
}

#[test]
fn the_empty_topic_name_is_a_usage_error() {
    // Names and filters cannot be invalid: a `TopicName` and a `TopicFilter` are checked when
    // they are made. The empty name exists for the aliases the connection applies itself, and
    // a message with it has no topic (MQTT-4.7.3-1).
    let mut sim = connected(Version::V5);
    let mut empty = publish("t", "x", QoS::AtLeastOnce);
    empty.topic = TopicName::empty();
    assert!(matches!(
        sim.client.publish(sim.now, empty),
        Err(UsageError::InvalidTopic(TopicError::Empty))
    ));
    assert_eq!(sim.sent(), Vec::<Packet>::new());
}

#[test]
fn a_publish_that_cannot_be_encoded_is_a_usage_error() {
    // Without a Maximum Packet Size from the server nothing else sizes it: once queued it could
    // never be sent (nor saved with the session).
    let long = "x".repeat(70_000);
    for connected_first in [true, false] {
        let mut sim = Sim::new(config(Version::V5));
        if connected_first {
            sim.accept(ConnAck::default());
        }
        let mut p = publish("t", "x", QoS::AtLeastOnce);
        p.properties.content_type = Some(long.as_str().into());
        assert!(matches!(
            sim.client.publish(sim.now, p),
            Err(UsageError::Encode(codec::EncodeError::FieldTooLong(70_000)))
        ));
        assert_eq!(sim.client.session().queued(), 0);
    }
}

/// The topic and alias of each PUBLISH the client sent, each checked to be at most `max` bytes.
fn sent_topics_and_aliases(sim: &mut Sim, max: Option<usize>) -> Vec<(String, Option<u16>)> {
    sim.sent()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => {
                let size = Packet::Publish(p.clone()).encoded_len(Version::V5).unwrap();
                assert!(max.is_none_or(|max| size <= max), "{size} > {max:?}: {p:?}");
                (
                    p.topic.to_string(),
                    p.properties.topic_alias.map(|a| a.get()),
                )
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn outbound_topic_aliases_within_the_server_maximum() {
    let mut sim = Sim::new(config(Version::V5));
    let mut connack = ConnAck::default();
    connack.properties.topic_alias_maximum = Some(1);
    sim.accept(connack);
    for _ in 0..2 {
        sim.client
            .publish(sim.now, publish("long/topic/name", "x", QoS::AtMostOnce))
            .unwrap();
    }
    sim.client
        .publish(sim.now, publish("other", "x", QoS::AtMostOnce))
        .unwrap();
    assert_eq!(
        sent_topics_and_aliases(&mut sim, None),
        [
            ("long/topic/name".to_string(), Some(1)),
            (String::new(), Some(1)),
            ("other".to_string(), None)
        ]
    );
}

/// MQTT-3.1.2-24: the first use of an alias adds a Topic Alias property (3 bytes), which must
/// not take a PUBLISH over the server's Maximum Packet Size: such a message goes without one.
#[test]
fn mqtt_3_1_2_24_no_new_alias_that_would_exceed_the_maximum_packet_size() {
    let full = publish("some/topic", "0123456789", QoS::AtMostOnce);
    let max = Packet::Publish(full.clone())
        .encoded_len(Version::V5)
        .unwrap();
    let mut sim = Sim::new(config(Version::V5));
    let mut connack = ConnAck::default();
    connack.properties.topic_alias_maximum = Some(1);
    connack.properties.maximum_packet_size = NonZeroU32::new(u32::try_from(max).unwrap());
    sim.accept(connack);
    let smaller = publish("some/topic", "0123456", QoS::AtMostOnce);
    for p in [full.clone(), smaller, full] {
        sim.client.publish(sim.now, p).unwrap();
    }
    assert_eq!(
        sent_topics_and_aliases(&mut sim, Some(max)),
        [
            // At the maximum already: no alias.
            ("some/topic".to_string(), None),
            // 3 bytes smaller: room for the alias, which goes with the topic.
            ("some/topic".to_string(), Some(1)),
            // The alias alone makes the full message smaller.
            (String::new(), Some(1)),
        ]
    );
}

#[test]
fn inbound_qos0_and_qos1_are_delivered_and_acked() {
    both_feeds(|mut sim| {
        let mut one = publish("t", "one", QoS::AtLeastOnce);
        one.packet_id = Some(pid(9));
        sim.deliver([
            Packet::Publish(publish("t", "zero", QoS::AtMostOnce)),
            Packet::Publish(one),
        ]);
        let payloads: Vec<_> = sim
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => Some(m.publish.payload),
                _ => None,
            })
            .collect();
        assert_eq!(payloads, ["zero", "one"]);
        assert_eq!(sim.sent(), [Packet::PubAck(PubAck::new(pid(9)))]);
    });
}

#[test]
fn mqtt_4_3_3_qos2_message_is_delivered_exactly_once() {
    both_feeds(|mut sim| {
        let mut two = publish("t", "two", QoS::ExactlyOnce);
        two.packet_id = Some(pid(4));
        sim.deliver([Packet::Publish(two.clone())]);
        assert_eq!(sim.sent(), [Packet::PubRec(PubRec::new(pid(4)))]);
        two.dup = true;
        sim.deliver([Packet::Publish(two)]);
        assert_eq!(sim.sent(), [Packet::PubRec(PubRec::new(pid(4)))]);
        sim.deliver([Packet::PubRel(PubRel::new(pid(4)))]);
        assert_eq!(sim.sent(), [Packet::PubComp(PubComp::new(pid(4)))]);
        let messages = sim
            .take_events()
            .into_iter()
            .filter(|e| matches!(e, ClientEvent::Message(_)))
            .count();
        assert_eq!(messages, 1);
    });
}

#[test]
fn mqtt_4_6_0_2_manual_acks_reach_the_wire_in_arrival_order() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut cfg = config(version);
        cfg.manual_ack = true;
        let mut sim = Sim::new(cfg);
        sim.accept(ConnAck::default());
        sim.take_events();
        let packets = (1..=3).map(|id| {
            let mut p = publish(
                "t",
                "m",
                if id == 2 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                },
            );
            p.packet_id = Some(pid(id));
            Packet::Publish(p)
        });
        sim.deliver(packets);
        let tokens: Vec<_> = sim
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => m.ack,
                _ => None,
            })
            .collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!(sim.sent(), []);
        sim.client.ack(sim.now, tokens[2]).unwrap();
        sim.client.ack(sim.now, tokens[1]).unwrap();
        assert_eq!(sim.sent(), []);
        sim.client.ack(sim.now, tokens[0]).unwrap();
        assert_eq!(
            sim.sent(),
            [
                Packet::PubAck(PubAck::new(pid(1))),
                Packet::PubRec(PubRec::new(pid(2))),
                Packet::PubAck(PubAck::new(pid(3))),
            ]
        );
        assert_eq!(
            sim.client.ack(sim.now, tokens[0]),
            Err(UsageError::UnknownAck)
        );
    }
}

/// MQTT-3.3.4-9 forbids a server to exceed our Receive Maximum, but mosquitto 2.0 does (when
/// it resumes a session with a backlog): the client keeps the messages, acknowledges them in
/// order, and reports the excess once per connection rather than lose a clean session's
/// messages by disconnecting.
#[test]
fn mqtt_3_3_4_9_a_server_exceeding_our_receive_maximum_is_tolerated_and_reported() {
    let mut cfg = config(Version::V5);
    cfg.manual_ack = true;
    cfg.properties.receive_maximum = NonZeroU16::new(1);
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    sim.take_events();
    let packets = (1..=3).map(|id| {
        let mut p = publish("t", "m", QoS::AtLeastOnce);
        p.packet_id = Some(pid(id));
        Packet::Publish(p)
    });
    sim.deliver(packets);
    assert_eq!(sim.sent(), [], "nothing acknowledged yet, nothing refused");
    let events = sim.take_events();
    let excess = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::ReceiveMaximumExceeded { receive_maximum: 1 }
            )
        })
        .count();
    assert_eq!(excess, 1, "{events:?}");
    let tokens: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) => m.ack,
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 3, "every message kept");
    for token in tokens {
        sim.client.ack(sim.now, token).expect("known token");
    }
    let acked: Vec<u16> = sim
        .sent()
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.packet_id.get()),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [1, 2, 3], "in order (MQTT-4.6.0-2)");
    assert_eq!(sim.client.state(), ClientState::Connected);
}

#[test]
fn packet_larger_than_our_maximum_is_disconnected_with_0x95() {
    let mut cfg = config(Version::V5);
    cfg.max_packet_size = 128;
    let mut sim = Sim::new(cfg);
    sim.accept(ConnAck::default());
    sim.take_events();
    sim.deliver([Packet::Publish(Publish::new(
        valid_name("t"),
        vec![0u8; 200],
    ))]);
    assert_eq!(
        sim.sent(),
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::PacketTooLarge
        ))]
    );
}

#[test]
fn protocol_errors_are_sticky_and_disconnect_first() {
    let mut sim = connected(Version::V5);
    // A PUBLISH with QoS 3.
    sim.deliver_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]);
    assert_eq!(
        sim.sent(),
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::MalformedPacket
        ))]
    );
    let events = sim.take_events();
    assert_eq!(
        disconnect_reason(&events),
        Some(&DisconnectReason::Protocol(ProtocolError::Decode(
            DecodeError::InvalidQoS
        )))
    );
    // Nothing more is processed or sent.
    sim.deliver([Packet::Publish(publish("t", "late", QoS::AtMostOnce))]);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.sent(), []);
    assert!(sim.client.is_closed());
    assert_eq!(
        sim.client
            .publish(sim.now, publish("t", "x", QoS::AtLeastOnce)),
        Err(UsageError::Closed)
    );
}

#[test]
fn v311_protocol_errors_close_without_disconnect() {
    let mut sim = connected(Version::V3_1_1);
    sim.deliver([Packet::Disconnect(Disconnect::default())]);
    assert_eq!(sim.sent(), []);
    assert!(matches!(
        disconnect_reason(&sim.take_events()),
        Some(DisconnectReason::Protocol(ProtocolError::UnexpectedPacket(
            _
        )))
    ));
}

#[test]
fn server_disconnect_is_reported() {
    let mut sim = connected(Version::V5);
    let disconnect = Disconnect::new(ReasonCode::ServerShuttingDown);
    sim.deliver([Packet::Disconnect(disconnect.clone())]);
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::Remote(disconnect))
    );
}

#[test]
fn local_disconnect_sends_disconnect_and_closes() {
    let mut sim = connected(Version::V5);
    let disconnect = Disconnect::new(ReasonCode::DisconnectWithWillMessage);
    sim.client.disconnect(sim.now, disconnect.clone()).unwrap();
    assert!(
        !sim.client.is_closed(),
        "the DISCONNECT is still to be written"
    );
    assert_eq!(sim.sent(), [Packet::Disconnect(disconnect.clone())]);
    assert!(sim.client.is_closed());
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::Local(disconnect))
    );
}

#[test]
fn eof_is_connection_lost() {
    let mut sim = connected(Version::V5);
    sim.client.handle_eof(sim.now);
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::ConnectionLost)
    );
}

#[test]
fn subscribe_and_unsubscribe_are_matched_to_their_acks() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut sim = connected(version);
        let sub_id = sim
            .client
            .subscribe(
                sim.now,
                vec![
                    Subscription::new(valid_filter("a/+"), QoS::AtLeastOnce),
                    Subscription::new(valid_filter("b/#"), QoS::ExactlyOnce),
                ],
                SubscribeProperties::default(),
            )
            .unwrap();
        assert!(matches!(sim.sent().as_slice(), [Packet::Subscribe(s)] if s.packet_id == sub_id));
        let suback = SubAck {
            packet_id: sub_id,
            properties: Default::default(),
            reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError],
        };
        sim.deliver([Packet::SubAck(suback.clone())]);
        assert_eq!(sim.take_events(), [ClientEvent::Subscribed(suback)]);
        // Only the granted filter is remembered.
        let active: Vec<_> = sim
            .client
            .session()
            .subscriptions()
            .iter()
            .map(|s| s.subscription.filter.to_string())
            .collect();
        assert_eq!(active, ["a/+"]);

        let unsub_id = sim
            .client
            .unsubscribe(
                sim.now,
                vec![valid_filter("a/+")],
                UnsubscribeProperties::default(),
            )
            .unwrap();
        sim.sent();
        let unsuback = UnsubAck {
            packet_id: unsub_id,
            properties: Default::default(),
            reason_codes: match version {
                Version::V5 => vec![ReasonCode::Success],
                Version::V3_1_1 => vec![],
            },
        };
        sim.deliver([Packet::UnsubAck(unsuback.clone())]);
        assert_eq!(sim.take_events(), [ClientEvent::Unsubscribed(unsuback)]);
        assert!(sim.client.session().subscriptions().is_empty());
    }
}

#[test]
fn unknown_acks_are_protocol_errors() {
    let mut sim = connected(Version::V5);
    sim.deliver([Packet::PubAck(PubAck::new(pid(77)))]);
    assert_eq!(
        disconnect_reason(&sim.take_events()),
        Some(&DisconnectReason::Protocol(ProtocolError::UnknownPacketId(
            77
        )))
    );
}

#[test]
fn mqtt_4_4_0_1_session_resume_resends_publish_with_dup_and_pubrel_in_order() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut cfg = config(version);
        cfg.clean_start = false;
        let mut sim = Sim::new(cfg.clone());
        sim.accept(ConnAck::default());
        let a = sim
            .client
            .publish(sim.now, publish("t", "a", QoS::AtLeastOnce))
            .unwrap()
            .unwrap();
        let b = sim
            .client
            .publish(sim.now, publish("t", "b", QoS::ExactlyOnce))
            .unwrap()
            .unwrap();
        let c = sim
            .client
            .publish(sim.now, publish("t", "c", QoS::ExactlyOnce))
            .unwrap()
            .unwrap();
        sim.sent();
        sim.deliver([Packet::PubRec(PubRec::new(b))]);
        assert_eq!(sim.sent(), [Packet::PubRel(PubRel::new(b))]);
        sim.client.handle_eof(sim.now);

        let mut sim = sim.reconnect(cfg.clone());
        sim.accept(ConnAck {
            session_present: true,
            ..ConnAck::default()
        });
        let resent = sim.sent();
        let summary: Vec<_> = resent
            .iter()
            .map(|p| match p {
                Packet::PubRel(r) => ("PUBREL", r.packet_id, false),
                Packet::Publish(p) => ("PUBLISH", p.packet_id.unwrap(), p.dup),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("PUBREL", b, false),
                ("PUBLISH", a, true),
                ("PUBLISH", c, true)
            ]
        );
    }
}

#[test]
fn mqtt_3_2_2_5_without_session_publishes_are_sent_anew_and_subscriptions_restored() {
    let mut cfg = config(Version::V5);
    cfg.clean_start = false;
    let mut sim = Sim::new(cfg.clone());
    sim.accept(ConnAck::default());
    let sub = sim
        .client
        .subscribe(
            sim.now,
            vec![Subscription::new(valid_filter("s/#"), QoS::AtLeastOnce)],
            SubscribeProperties::default(),
        )
        .unwrap();
    sim.sent();
    sim.deliver([Packet::SubAck(SubAck {
        packet_id: sub,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GrantedQoS1],
    })]);
    let a = sim
        .client
        .publish(sim.now, publish("t", "a", QoS::AtLeastOnce))
        .unwrap()
        .unwrap();
    let b = sim
        .client
        .publish(sim.now, publish("t", "b", QoS::ExactlyOnce))
        .unwrap()
        .unwrap();
    sim.sent();
    sim.deliver([Packet::PubRec(PubRec::new(b))]);
    sim.sent();
    sim.take_events();
    sim.client.handle_eof(sim.now);

    let mut sim = sim.reconnect(cfg);
    sim.accept(ConnAck::default());
    let events = sim.take_events();
    // The QoS 2 message the server had accepted (PUBREC) is complete, not resent.
    assert_eq!(published_ids(&events), [(b.get(), ReasonCode::Success)]);
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|p| matches!(p, Packet::Publish(p) if p.packet_id == Some(a) && !p.dup))
    );
    assert!(
        sent.iter()
            .any(|p| matches!(p, Packet::Subscribe(s) if s.filters[0].filter == "s/#"))
    );
    assert!(!sent.iter().any(|p| matches!(p, Packet::PubRel(_))));
}

#[test]
fn qos2_receive_set_survives_reconnect() {
    let mut cfg = config(Version::V5);
    cfg.clean_start = false;
    let mut sim = Sim::new(cfg.clone());
    sim.accept(ConnAck::default());
    let mut two = publish("t", "two", QoS::ExactlyOnce);
    two.packet_id = Some(pid(3));
    sim.deliver([Packet::Publish(two.clone())]);
    sim.sent();
    sim.take_events();
    sim.client.handle_eof(sim.now);
    let mut sim = sim.reconnect(cfg);
    sim.accept(ConnAck {
        session_present: true,
        ..ConnAck::default()
    });
    sim.take_events();
    two.dup = true;
    sim.deliver([Packet::Publish(two)]);
    assert!(
        !sim.take_events()
            .iter()
            .any(|e| matches!(e, ClientEvent::Message(_)))
    );
    assert_eq!(sim.sent(), [Packet::PubRec(PubRec::new(pid(3)))]);
}

#[test]
fn unacked_manual_message_is_delivered_again_after_reconnect() {
    let mut cfg = config(Version::V5);
    cfg.clean_start = false;
    cfg.manual_ack = true;
    let mut sim = Sim::new(cfg.clone());
    sim.accept(ConnAck::default());
    let mut two = publish("t", "two", QoS::ExactlyOnce);
    two.packet_id = Some(pid(3));
    sim.deliver([Packet::Publish(two.clone())]);
    assert!(
        sim.take_events()
            .iter()
            .any(|e| matches!(e, ClientEvent::Message(_)))
    );
    sim.client.handle_eof(sim.now);
    let mut sim = sim.reconnect(cfg);
    sim.accept(ConnAck {
        session_present: true,
        ..ConnAck::default()
    });
    sim.take_events();
    two.dup = true;
    sim.deliver([Packet::Publish(two)]);
    assert!(
        sim.take_events()
            .iter()
            .any(|e| matches!(e, ClientEvent::Message(_)))
    );
}

#[test]
fn enhanced_authentication_and_reauthentication() {
    let mut cfg = config(Version::V5);
    cfg.properties.authentication_method = Some("SCRAM-SHA-1".into());
    cfg.properties.authentication_data = Some(Bytes::from_static(b"client-first"));
    let mut sim = Sim::new(cfg);
    assert!(matches!(sim.sent().as_slice(), [Packet::Connect(_)]));
    let step = |reason, data: &'static [u8]| Auth {
        reason_code: reason,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..AuthProperties::default()
        },
    };
    sim.deliver([Packet::Auth(Box::new(step(
        ReasonCode::ContinueAuthentication,
        b"server-first",
    )))]);
    assert_eq!(
        sim.take_events(),
        [ClientEvent::Auth(step(
            ReasonCode::ContinueAuthentication,
            b"server-first"
        ))]
    );
    sim.client
        .auth(
            sim.now,
            step(ReasonCode::ContinueAuthentication, b"client-final"),
        )
        .unwrap();
    assert_eq!(
        sim.sent(),
        [Packet::Auth(Box::new(step(
            ReasonCode::ContinueAuthentication,
            b"client-final"
        )))]
    );
    sim.deliver([Packet::ConnAck(Box::default())]);
    assert!(matches!(
        sim.take_events().as_slice(),
        [ClientEvent::Connected { .. }]
    ));
    sim.client
        .auth(sim.now, step(ReasonCode::ReAuthenticate, b"again"))
        .unwrap();
    assert_eq!(
        sim.sent(),
        [Packet::Auth(Box::new(step(
            ReasonCode::ReAuthenticate,
            b"again"
        )))]
    );
    sim.deliver([Packet::Auth(Box::new(step(ReasonCode::Success, b"ok")))]);
    assert_eq!(
        sim.take_events(),
        [ClientEvent::Auth(step(ReasonCode::Success, b"ok"))]
    );
    // The wrong method is refused locally.
    let mut wrong = step(ReasonCode::ReAuthenticate, b"x");
    wrong.properties.authentication_method = Some("PLAIN".into());
    assert_eq!(
        sim.client.auth(sim.now, wrong),
        Err(UsageError::AuthNotAllowed)
    );
}

#[test]
fn auth_without_a_method_is_a_protocol_error() {
    let mut sim = connected(Version::V5);
    sim.deliver([Packet::Auth(Box::default())]);
    assert!(matches!(
        disconnect_reason(&sim.take_events()),
        Some(DisconnectReason::Protocol(ProtocolError::UnexpectedPacket(
            _
        )))
    ));
}

/// The connection is cut after every possible number of server bytes; each time, the client
/// reconnects with its session, the server replays what it has not seen answered, and the
/// exchange completes with nothing lost or duplicated.
#[test]
fn cut_at_every_byte_then_resume_loses_nothing() {
    let inbound = {
        let mut p = publish("in", "q2", QoS::ExactlyOnce);
        p.packet_id = Some(pid(500));
        p
    };
    let mut cut = 0;
    loop {
        let mut cfg = config(Version::V5);
        cfg.clean_start = false;
        let mut sim = Sim::new(cfg.clone());
        sim.accept(ConnAck::default());
        let a = sim
            .client
            .publish(sim.now, publish("t", "a", QoS::AtLeastOnce))
            .unwrap()
            .unwrap();
        let b = sim
            .client
            .publish(sim.now, publish("t", "b", QoS::ExactlyOnce))
            .unwrap()
            .unwrap();
        sim.sent();
        let mut wire = bytes::BytesMut::new();
        for packet in [
            Packet::PubAck(PubAck::new(a)),
            Packet::PubRec(PubRec::new(b)),
            Packet::Publish(inbound.clone()),
            Packet::PubRel(PubRel::new(pid(500))),
            Packet::PubComp(PubComp::new(b)),
        ] {
            crate::codec::encode(&packet, Version::V5, &mut wire).unwrap();
        }
        if cut > wire.len() {
            break;
        }
        sim.deliver_bytes(&wire[..cut]);
        // What the client answered reaches the server before the cut.
        let answered = sim.sent();
        let saw = |want: fn(&Packet) -> bool| answered.iter().any(want);
        let got_pubrec = saw(|p| matches!(p, Packet::PubRec(r) if r.packet_id.get() == 500));
        let got_pubcomp = saw(|p| matches!(p, Packet::PubComp(c) if c.packet_id.get() == 500));
        let mut events = sim.take_events();
        sim.client.handle_eof(sim.now);

        let mut sim = sim.reconnect(cfg);
        sim.accept(ConnAck {
            session_present: true,
            ..ConnAck::default()
        });
        // The server resumes its own side of the inbound QoS 2 exchange.
        let mut replay = Vec::new();
        if !got_pubrec {
            let mut again = inbound.clone();
            again.dup = true;
            replay.push(Packet::Publish(again));
        } else if !got_pubcomp {
            replay.push(Packet::PubRel(PubRel::new(pid(500))));
        }
        sim.deliver(replay);
        for _ in 0..4 {
            let mut answers = Vec::new();
            for packet in sim.sent() {
                match packet {
                    Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                        assert!(p.dup, "cut at {cut}");
                        answers.push(Packet::PubAck(PubAck::new(p.packet_id.unwrap())));
                    }
                    Packet::Publish(p) => {
                        answers.push(Packet::PubRec(PubRec::new(p.packet_id.unwrap())))
                    }
                    Packet::PubRel(r) => answers.push(Packet::PubComp(PubComp::new(r.packet_id))),
                    Packet::PubRec(r) => answers.push(Packet::PubRel(PubRel::new(r.packet_id))),
                    Packet::PubComp(_) | Packet::PubAck(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            sim.deliver(answers);
        }
        events.extend(sim.take_events());
        let mut completed: Vec<_> = published_ids(&events)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        completed.sort_unstable();
        let mut expected = vec![a.get(), b.get()];
        expected.sort_unstable();
        assert_eq!(completed, expected, "cut at {cut}");
        assert_eq!(sim.client.session().inflight(), 0, "cut at {cut}");
        assert!(
            sim.client.session().pending_packet_ids().is_empty(),
            "cut at {cut}"
        );
        let delivered = events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Message(_)))
            .count();
        assert_eq!(
            delivered, 1,
            "QoS 2 message delivered {delivered} times, cut at {cut}"
        );
        cut += 1;
    }
}

#[test]
fn inbound_pending_counts_until_pubcomp() {
    let mut sim = connected(Version::V5);
    let mut two = publish("t", "two", QoS::ExactlyOnce);
    two.packet_id = Some(pid(8));
    sim.deliver([Packet::Publish(two)]);
    assert_eq!(sim.client.inbound_pending(), 1);
    sim.deliver([Packet::PubRel(PubRel::new(pid(8)))]);
    assert_eq!(sim.client.inbound_pending(), 0);
}

#[test]
fn disconnect_reasons_read_as_one_line() {
    let refused = DisconnectReason::Refused {
        reason_code: ReasonCode::NotAuthorized,
        properties: Box::default(),
    };
    assert_eq!(
        refused.to_string(),
        "connection refused: Not authorized (0x87)"
    );
    assert_eq!(
        DisconnectReason::Protocol(ProtocolError::ReceiveMaximumExceeded).to_string(),
        "protocol error: receive maximum exceeded (Receive Maximum exceeded (0x93))"
    );
}

/// `poll_transmit` appends to a buffer that holds bytes and swaps with an empty one; either way
/// the caller sees exactly the packets sent, in order, and a reused buffer keeps working.
#[test]
fn poll_transmit_appends_or_swaps_and_keeps_order() {
    let mut sim = connected(Version::V5);
    let expected = |ids: &[u16]| -> BytesMut {
        let mut wire = BytesMut::new();
        for &id in ids {
            let mut p = publish("t", "x", QoS::AtLeastOnce);
            p.packet_id = Some(pid(id));
            codec::encode(&Packet::Publish(p), Version::V5, &mut wire).unwrap();
        }
        wire
    };
    // Appended after what the caller already holds.
    let mut out = BytesMut::from(&b"head"[..]);
    sim.client
        .publish(sim.now, publish("t", "x", QoS::AtLeastOnce))
        .unwrap();
    assert!(sim.client.poll_transmit(sim.now, &mut out));
    assert_eq!(&out[..4], b"head");
    assert_eq!(&out[4..], &expected(&[1])[..]);
    // An empty buffer with room, reused round after round (what an I/O loop does).
    let mut out = BytesMut::with_capacity(4096);
    for round in 0..3u16 {
        out.clear();
        for _ in 0..2 {
            sim.client
                .publish(sim.now, publish("t", "x", QoS::AtLeastOnce))
                .unwrap();
        }
        assert!(sim.client.poll_transmit(sim.now, &mut out));
        assert_eq!(&out[..], &expected(&[2 + 2 * round, 3 + 2 * round])[..]);
        // Nothing is left behind for the next call.
        let mut again = BytesMut::new();
        assert!(!sim.client.poll_transmit(sim.now, &mut again));
        assert!(again.is_empty());
    }
}
