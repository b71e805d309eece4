//! Authorization, enhanced authentication, the broker's limits and statistics.

use bytes::{Bytes, BytesMut};

use super::util::Net;
use crate::ReasonCode;
use crate::broker::{Authorizer, BrokerConfig, ClientInfo};
use crate::codec::{self};
use crate::connection::{ClientEvent, ClientState, DisconnectReason};
use crate::packet::{
    Connect, Packet, Publish, QoS, SubscribeProperties, Subscription, Version, Will,
};
use crate::topic::{valid_filter, valid_name};

struct Acl;

impl Authorizer for Acl {
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        topic.starts_with(client.client_id)
    }
    fn subscribe(&self, _client: ClientInfo<'_>, filter: &str) -> bool {
        !filter.starts_with("secret")
    }
}

#[test]
fn authorization_refuses_subscribe_with_0x87_and_publish_with_0x87() {
    let mut net = Net::with_config(BrokerConfig::default());
    net.broker = crate::broker::Broker::new(BrokerConfig::default()).with_authorizer(Acl);
    let c = net.join(Version::V5, "alice");
    let now = net.now;
    net.clients[c]
        .core
        .subscribe(
            now,
            vec![
                Subscription::new(valid_filter("secret/x"), QoS::AtMostOnce),
                Subscription::new(valid_filter("alice/#"), QoS::AtLeastOnce),
            ],
            SubscribeProperties::default(),
        )
        .unwrap();
    net.pump();
    let suback = net.take(c).into_iter().find_map(|e| match e {
        ClientEvent::Subscribed(s) => Some(s.reason_codes),
        _ => None,
    });
    assert_eq!(
        suback,
        Some(vec![ReasonCode::NotAuthorized, ReasonCode::GrantedQoS1])
    );
    net.publish(c, "bob/x", "no", QoS::AtLeastOnce);
    net.publish(c, "alice/x", "yes", QoS::AtLeastOnce);
    let events = net.take(c);
    let codes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Published(o) => Some(o.reason_code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [ReasonCode::NotAuthorized, ReasonCode::Success]);
    let messages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) => Some(m.publish.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, ["yes"]);
    assert_eq!(net.broker.stats().dropped.not_authorized, 1);
}

#[test]
fn v5_puback_says_no_matching_subscribers() {
    let mut net = Net::new();
    let c = net.join(Version::V5, "c");
    net.publish(c, "nobody", "x", QoS::AtLeastOnce);
    assert!(net.take(c).iter().any(|e| matches!(
        e,
        ClientEvent::Published(o) if o.reason_code == ReasonCode::NoMatchingSubscribers
    )));
}

/// A two-step challenge/response method: the server asks for "proof" and accepts "secret".
struct Challenge;

impl crate::broker::Authenticator for Challenge {
    fn connect(&mut self, connect: &Connect) -> crate::broker::AuthDecision {
        use crate::broker::AuthDecision;
        match connect.properties.authentication_method.as_deref() {
            Some("CHALLENGE") => AuthDecision::Continue(crate::packet::AuthProperties {
                authentication_method: Some("CHALLENGE".into()),
                authentication_data: Some(Bytes::from_static(b"proof?")),
                ..Default::default()
            }),
            Some(_) => AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod),
            None => AuthDecision::Accept,
        }
    }

    fn auth(
        &mut self,
        _client: ClientInfo<'_>,
        auth: &crate::packet::Auth,
    ) -> crate::broker::AuthDecision {
        use crate::broker::AuthDecision;
        if auth.properties.authentication_data.as_deref() == Some(b"secret".as_slice()) {
            AuthDecision::Accept
        } else {
            AuthDecision::Refuse(ReasonCode::NotAuthorized)
        }
    }
}

fn auth_step(reason_code: ReasonCode, data: &'static [u8]) -> crate::packet::Auth {
    crate::packet::Auth {
        reason_code,
        properties: crate::packet::AuthProperties {
            authentication_method: Some("CHALLENGE".into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..Default::default()
        },
    }
}

#[test]
fn mqtt_4_12_enhanced_authentication_and_reauthentication_through_the_authenticator() {
    let mut net = Net::new();
    net.broker = crate::broker::Broker::new(BrokerConfig::default()).with_authenticator(Challenge);
    let mut config = Net::config(Version::V5, "scram");
    config.properties.authentication_method = Some("CHALLENGE".into());
    let c = net.connect(config.clone());
    // The server's challenge reaches the application, which answers it.
    let challenge = net.take(c).into_iter().find_map(|e| match e {
        ClientEvent::Auth(auth) => Some(auth),
        _ => None,
    });
    assert_eq!(
        challenge.and_then(|a| a.properties.authentication_data),
        Some(Bytes::from_static(b"proof?"))
    );
    let now = net.now;
    net.clients[c]
        .core
        .auth(
            now,
            auth_step(ReasonCode::ContinueAuthentication, b"secret"),
        )
        .unwrap();
    net.pump();
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);

    // Re-authentication (section 4.12.1): accepted with an AUTH Success.
    net.clients[c]
        .core
        .auth(now, auth_step(ReasonCode::ReAuthenticate, b"secret"))
        .unwrap();
    net.pump();
    assert!(net.take(c).iter().any(|e| matches!(
        e,
        ClientEvent::Auth(a) if a.reason_code == ReasonCode::Success
    )));

    // A wrong answer is refused with the authenticator's reason code.
    config.client_id = "intruder".into();
    let bad = net.connect(config);
    let now = net.now;
    net.clients[bad]
        .core
        .auth(now, auth_step(ReasonCode::ContinueAuthentication, b"guess"))
        .unwrap();
    net.pump();
    assert!(matches!(
        net.disconnected(bad),
        Some(DisconnectReason::Refused {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));
}

#[test]
fn mqtt_3_2_2_15_packet_larger_than_the_broker_maximum_is_disconnected_with_0x95() {
    let mut config = BrokerConfig::default();
    config.connection.max_packet_size = 256;
    let mut net = Net::with_config(config);
    let c = net.join(Version::V5, "big");
    // The client learnt the limit from CONNACK and refuses locally...
    let now = net.now;
    let big = Publish::new(valid_name("t"), vec![0u8; 1000]);
    assert!(net.clients[c].core.publish(now, big).is_err());
    // ...and a peer that ignores it is disconnected with Packet too large.
    let mut wire = BytesMut::new();
    codec::encode(
        &Packet::Publish(Publish::new(valid_name("t"), vec![0u8; 1000])),
        Version::V5,
        &mut wire,
    )
    .unwrap();
    let conn = net.clients[c].conn;
    net.broker.handle_bytes(conn, now, &wire);
    net.pump();
    assert!(net.broker_events.iter().any(|e| matches!(
        e,
        crate::broker::BrokerEvent::ClientDisconnected {
            reason: DisconnectReason::Protocol(crate::connection::ProtocolError::Decode(
                crate::codec::DecodeError::PacketTooLarge { .. }
            )),
            ..
        }
    )));
    assert!(matches!(
        net.disconnected(c),
        Some(DisconnectReason::Remote(d)) if d.reason_code == ReasonCode::PacketTooLarge
    ));
}

#[test]
fn a_will_on_a_forbidden_topic_is_refused_at_connect() {
    let mut net = Net::new();
    net.broker = crate::broker::Broker::new(BrokerConfig::default()).with_authorizer(Acl);
    let mut config = Net::config(Version::V5, "alice");
    config.will = Some(Will::new(
        valid_name("bob/status"),
        "spoofed",
        QoS::AtMostOnce,
    ));
    let c = net.connect(config.clone());
    assert!(matches!(
        net.disconnected(c),
        Some(DisconnectReason::Refused {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));
    config.will = Some(Will::new(
        valid_name("alice/status"),
        "offline",
        QoS::AtMostOnce,
    ));
    let ok = net.connect(config);
    assert_eq!(net.clients[ok].core.state(), ClientState::Connected);
}

#[test]
fn mqtt_3_1_2_25_messages_larger_than_the_client_accepts_are_dropped_and_counted() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "small");
    // A QoS 1 PUBLISH to "t" with an n-byte payload is 2 + 3 + 2 + 1 + n bytes (fixed header,
    // topic, packet identifier, empty properties).
    config.max_packet_size = 8 + 20;
    let small = net.connect(config);
    net.subscribe(small, "t", QoS::AtLeastOnce);
    let publisher = net.join(Version::V5, "pub");
    let fits = Publish {
        qos: QoS::AtLeastOnce,
        ..Publish::new(valid_name("t"), vec![b'x'; 20])
    };
    // One byte more does not fit once the packet identifier is counted.
    let too_big = Publish {
        qos: QoS::AtLeastOnce,
        ..Publish::new(valid_name("t"), vec![b'y'; 21])
    };
    net.publish_packet(publisher, too_big);
    net.publish_packet(publisher, fits);
    let got = net.messages(small);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.len(), 20);
    assert_eq!(net.broker.stats().dropped.too_large, 1);
    assert_eq!(net.clients[small].core.state(), ClientState::Connected);
}

#[test]
fn limits_change_while_the_broker_runs_and_what_cannot_is_reported() {
    let mut net = Net::new();
    let first = net.join(Version::V5, "first");
    let mut config = net.broker.config().clone();
    config.max_connections = 1;
    config.max_qos = QoS::AtMostOnce;
    let (changed, fixed) = net.broker.set_limits(&config);
    assert_eq!(changed, ["max_connections: 10000 -> 1"]);
    assert_eq!(fixed, ["max_qos"]);
    assert_eq!(
        net.broker.config().max_qos,
        QoS::ExactlyOnce,
        "granted QoS stays"
    );
    assert!(
        net.broker.open(net.now).is_none(),
        "the new limit refuses a second"
    );
    assert_eq!(net.clients[first].core.state(), ClientState::Connected);
    config.max_connections = 10;
    config.max_qos = QoS::ExactlyOnce;
    let (changed, fixed) = net.broker.set_limits(&config);
    assert_eq!((changed.len(), fixed.len()), (1, 0));
    assert!(net.broker.open(net.now).is_some());
}

/// Continues every exchange, whatever the client can take part in.
struct AlwaysContinue;

impl crate::broker::Authenticator for AlwaysContinue {
    fn connect(&mut self, _connect: &Connect) -> crate::broker::AuthDecision {
        crate::broker::AuthDecision::Continue(crate::packet::AuthProperties::default())
    }
}

#[test]
fn an_auth_step_the_client_cannot_take_is_refused_not_left_waiting() {
    // 3.1.1 has no AUTH packet: the broker cannot send the step, so it refuses the client at
    // once (CONNACK Not authorized) instead of leaving it to its connect timeout.
    let mut net = Net::new();
    net.broker =
        crate::broker::Broker::new(BrokerConfig::default()).with_authenticator(AlwaysContinue);
    let c = net.connect(Net::config(Version::V3_1_1, "c"));
    assert!(matches!(
        net.disconnected(c),
        Some(DisconnectReason::Refused {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));
}
