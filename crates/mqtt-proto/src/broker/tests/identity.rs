//! A connection whose transport proved who the client is ([`Broker::set_identity`], the name in
//! a TLS client certificate): that name is its user name for the authorizer and in events, and
//! the authenticator is not asked.

use super::util::Net;
use crate::ReasonCode;
use crate::broker::{
    AuthDecision, Authenticator, Authorizer, Broker, BrokerConfig, BrokerEvent, ClientInfo,
};
use crate::connection::{ClientEvent, ClientState, DisconnectReason};
use crate::packet::{Auth, Connect, QoS, Version};

/// Publishing only under `devices/<user name>/`.
struct PerUser;

impl Authorizer for PerUser {
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        client
            .username
            .is_some_and(|user| topic.starts_with(&format!("devices/{user}/")))
    }
    fn subscribe(&self, _client: ClientInfo<'_>, _filter: &str) -> bool {
        true
    }
}

/// Refuses every password.
struct NoPasswords;

impl Authenticator for NoPasswords {
    fn connect(&mut self, _connect: &Connect) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
    }
    fn auth(&mut self, _client: ClientInfo<'_>, _auth: &Auth) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
}

fn broker() -> Net {
    let mut net = Net::new();
    net.broker = Broker::new(BrokerConfig::default())
        .with_authenticator(NoPasswords)
        .with_authorizer(PerUser);
    net
}

fn published(net: &mut Net, c: usize) -> Vec<ReasonCode> {
    net.take(c)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Published(o) => Some(o.reason_code),
            _ => None,
        })
        .collect()
}

#[test]
fn the_identity_is_the_user_name_and_authenticates() {
    let mut net = broker();
    let mut config = Net::config(Version::V5, "c1");
    // What the CONNECT claims does not count.
    config.username = Some("admin".into());
    config.password = Some("guess".into());
    let c = net.connect_as(config, None, Some("device-7"));
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
    let connected = net.broker_events.iter().find_map(|e| match e {
        BrokerEvent::ClientConnected { username, .. } => Some(username.clone()),
        _ => None,
    });
    assert_eq!(connected, Some(Some("device-7".into())));
    net.take(c);
    net.publish(c, "devices/device-7/t", "mine", QoS::AtLeastOnce);
    net.publish(c, "devices/admin/t", "not mine", QoS::AtLeastOnce);
    assert_eq!(
        published(&mut net, c),
        [ReasonCode::NoMatchingSubscribers, ReasonCode::NotAuthorized]
    );
}

#[test]
fn without_an_identity_the_authenticator_decides() {
    let mut net = broker();
    let mut config = Net::config(Version::V3_1_1, "c2");
    config.username = Some("device-7".into());
    config.password = Some("guess".into());
    let c = net.connect(config);
    assert!(
        matches!(net.disconnected(c), Some(DisconnectReason::Refused { reason_code, .. })
            if reason_code == ReasonCode::BadUserNameOrPassword)
    );
}

#[test]
fn the_identity_authenticates_with_deferred_authentication_too() {
    let mut net = broker();
    net.broker = Broker::new(BrokerConfig::default())
        .with_deferred_authentication()
        .with_authorizer(PerUser);
    let c = net.connect_as(Net::config(Version::V3_1_1, "c3"), None, Some("device-9"));
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
    assert!(
        !net.broker_events
            .iter()
            .any(|e| matches!(e, BrokerEvent::Authenticate { .. })),
        "the driver was asked about a client its certificate authenticated"
    );
}
