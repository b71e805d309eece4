//! Authentication decided by the driver ([`Broker::with_deferred_authentication`]): the broker
//! goes on routing while a decision is pending, and a waiting client's input is not read.

use bytes::BytesMut;

use super::util::Net;
use crate::ReasonCode;
use crate::broker::{AuthDecision, AuthRequest, Broker, BrokerConfig, BrokerEvent, ConnectionId};
use crate::codec;
use crate::connection::{ClientState, DisconnectReason, UsageError};
use crate::packet::{Packet, Publish, QoS, Version};
use crate::topic::valid_name;

fn deferred() -> Net {
    let mut net = Net::new();
    net.broker = Broker::new(BrokerConfig::default()).with_deferred_authentication();
    net
}

/// The connections whose authentication waits, with what they asked.
fn requests(net: &mut Net) -> Vec<(ConnectionId, AuthRequest)> {
    let events = std::mem::take(&mut net.broker_events);
    let (requests, rest): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| matches!(e, BrokerEvent::Authenticate { .. }));
    net.broker_events = rest;
    requests
        .into_iter()
        .filter_map(|e| match e {
            BrokerEvent::Authenticate {
                connection,
                request,
            } => Some((connection, request)),
            _ => None,
        })
        .collect()
}

fn decide(net: &mut Net, connection: ConnectionId, decision: AuthDecision) {
    let now = net.now;
    net.broker
        .authenticated(connection, now, decision)
        .expect("a request waits");
    net.pump();
}

#[test]
fn routing_goes_on_while_a_decision_is_pending() {
    let mut net = deferred();
    let mut pair = Vec::new();
    for id in ["sub", "pub"] {
        let c = net.connect(Net::config(Version::V5, id));
        let (conn, request) = requests(&mut net).pop().expect("asked");
        assert!(matches!(&request, AuthRequest::Connect(c) if c.client_id == id));
        decide(&mut net, conn, AuthDecision::Accept);
        assert_eq!(net.clients[c].core.state(), ClientState::Connected);
        net.take(c);
        pair.push(c);
    }
    net.subscribe(pair[0], "t", QoS::AtLeastOnce);
    // A third client waits for its decision...
    let slow = net.connect(Net::config(Version::V3_1_1, "slow"));
    let (slow_conn, _) = requests(&mut net).pop().expect("asked");
    assert_ne!(net.clients[slow].core.state(), ClientState::Connected);
    // ...while the others exchange messages.
    for n in 0..3 {
        net.publish(pair[1], "t", "m", QoS::AtLeastOnce);
        assert_eq!(net.messages(pair[0]).len(), 1, "message {n}");
    }
    decide(
        &mut net,
        slow_conn,
        AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword),
    );
    let refused = net.disconnected(slow);
    assert!(
        matches!(&refused, Some(DisconnectReason::Refused { reason_code, .. })
            if *reason_code == ReasonCode::BadUserNameOrPassword),
        "{refused:?}"
    );
    // No request waits any more: a second decision is refused.
    let now = net.now;
    assert_eq!(
        net.broker
            .authenticated(slow_conn, now, AuthDecision::Accept)
            .unwrap_err(),
        UsageError::Closed
    );
}

#[test]
fn input_behind_a_pending_connect_is_not_read() {
    let mut net = deferred();
    let c = net.connect(Net::config(Version::V5, "eager"));
    let (conn, _) = requests(&mut net).pop().expect("asked");
    // The client pipelines a PUBLISH behind its CONNECT: the broker stops reading.
    let mut publish = Publish::new(valid_name("t"), "x");
    publish.qos = QoS::AtMostOnce;
    let mut wire = BytesMut::new();
    codec::encode(&Packet::Publish(publish), Version::V5, &mut wire).expect("encodes");
    let now = net.now;
    net.broker.handle_bytes(conn, now, &wire);
    net.pump();
    assert!(!net.broker.wants_read(conn));
    assert!(
        net.broker_events
            .iter()
            .any(|e| *e == BrokerEvent::PauseReading(conn))
    );
    decide(&mut net, conn, AuthDecision::Accept);
    assert!(net.broker.wants_read(conn));
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
    assert_eq!(net.broker.stats().messages_in, 1, "processed once accepted");
}

#[test]
fn a_decision_nobody_asked_for_is_refused() {
    let mut net = deferred();
    let c = net.connect(Net::config(Version::V5, "a"));
    let (conn, _) = requests(&mut net).pop().expect("asked");
    decide(&mut net, conn, AuthDecision::Accept);
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
    let now = net.now;
    assert_eq!(
        net.broker.authenticated(conn, now, AuthDecision::Accept),
        Err(UsageError::AuthNotAllowed)
    );
}
