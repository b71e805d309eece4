//! What the broker core does for bridges: the bridge bit of mosquitto's `try_private` (no
//! echo, retain as published, under 3.1.1 too), and trusted connections (a bridge's local
//! side: neither authenticated nor authorized, the only ones allowed a `$bridge/` identifier).

use super::util::{Net, payloads};
use crate::ReasonCode;
use crate::broker::{AuthDecision, Authenticator, Authorizer, Broker, BrokerConfig, ClientInfo};
use crate::codec::{self, Limits};
use crate::connection::{ClientState, DisconnectReason};
use crate::packet::{Auth, Connect, Packet, Publish, QoS, TopicName, Version};

struct Nobody;

impl Authenticator for Nobody {
    fn connect(&mut self, _connect: &Connect) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
    fn auth(&mut self, _client: ClientInfo<'_>, _auth: &Auth) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
}

impl Authorizer for Nobody {
    fn publish(&self, _client: ClientInfo<'_>, _topic: &str) -> bool {
        false
    }
    fn subscribe(&self, _client: ClientInfo<'_>, _filter: &str) -> bool {
        false
    }
}

#[test]
fn the_bridge_bit_is_bit_7_of_the_protocol_level_and_survives_a_round_trip() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut connect = Connect::new(version, "edge.cloud");
        connect.bridge = true;
        let mut buf = bytes::BytesMut::new();
        codec::encode(
            &Packet::Connect(Box::new(connect.clone())),
            version,
            &mut buf,
        )
        .unwrap();
        // Fixed header (2), protocol name (6), then the level.
        assert_eq!(buf[8], version.level() | 0x80);
        let decoded = codec::decode(&mut buf, version, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(decoded, Packet::Connect(Box::new(connect)));
    }
}

#[test]
fn a_bridge_gets_none_of_its_own_messages_back_and_retain_flags_as_published() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V3_1_1, "edge.cloud");
    config.bridge = true;
    let bridge = net.connect(config);
    let other = net.join(Version::V3_1_1, "other");
    net.subscribe(bridge, "t/#", QoS::AtLeastOnce);
    net.subscribe(other, "t/#", QoS::AtLeastOnce);
    net.publish(bridge, "t/from-bridge", "bridged", QoS::AtLeastOnce);
    let mut retained = Publish::new(TopicName::new("t/kept").unwrap(), "kept");
    retained.qos = QoS::AtLeastOnce;
    retained.retain = true;
    net.publish_packet(other, retained);
    let to_bridge = net.messages(bridge);
    assert_eq!(
        payloads(&to_bridge),
        ["kept"],
        "the bridge got its own message back"
    );
    assert!(
        to_bridge[0].retain,
        "a bridge keeps the retain flag of live messages"
    );
    // An ordinary 3.1.1 subscriber gets its own messages, and live ones without the flag
    // (MQTT-3.3.1-9).
    let to_other = net.messages(other);
    assert_eq!(payloads(&to_other), ["bridged", "kept"]);
    assert!(!to_other[1].retain);
}

#[test]
fn reserved_client_ids_are_refused_to_clients_and_allowed_to_trusted_connections() {
    let mut net = Net::new();
    let c = net.connect(Net::config(Version::V5, "$bridge/cloud"));
    assert!(
        matches!(net.disconnected(c), Some(DisconnectReason::Refused { reason_code, .. })
            if reason_code == ReasonCode::ClientIdentifierNotValid)
    );
    let c = net.connect_trusted(Net::config(Version::V5, "$bridge/cloud"));
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
}

#[test]
fn a_trusted_connection_is_neither_authenticated_nor_authorized_and_its_session_outlives_the_cap() {
    let mut net = Net::new();
    net.broker = Broker::new(BrokerConfig::default())
        .with_authenticator(Nobody)
        .with_authorizer(Nobody);
    let refused = net.connect(Net::config(Version::V5, "someone"));
    assert!(net.disconnected(refused).is_some());
    let mut config = Net::config(Version::V5, "$bridge/cloud");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(u32::MAX);
    let c = net.connect_trusted(config);
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
    let granted = net.clients[c]
        .core
        .connack_properties()
        .and_then(|p| p.session_expiry_interval);
    assert_eq!(granted, None, "the expiry asked for was cut to the cap");
    net.subscribe(c, "a/#", QoS::ExactlyOnce);
    net.publish(c, "b/1", "through", QoS::ExactlyOnce);
    let d = net.connect_trusted(Net::config(Version::V5, "$bridge/other"));
    net.subscribe(d, "b/#", QoS::ExactlyOnce);
    net.publish(c, "b/2", "through", QoS::ExactlyOnce);
    assert_eq!(payloads(&net.messages(d)), ["through"]);
}
