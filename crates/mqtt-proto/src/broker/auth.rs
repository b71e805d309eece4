//! Hooks the application plugs into the broker: who may connect, publish and subscribe.

use bytestring::ByteString;

use crate::ReasonCode;
use crate::packet::{Auth, AuthProperties, Connect};

/// Who a connected client is, as the hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The client identifier (assigned by the broker when the client sent none).
    pub client_id: &'a str,
    /// The user name the client authenticated with.
    pub username: Option<&'a str>,
}

/// The outcome of one authentication step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Let the client in.
    Accept,
    /// Refuse it with this CONNACK reason code (for example 0x86 Bad User Name or Password,
    /// 0x87 Not authorized, 0x8C Bad authentication method).
    Refuse(ReasonCode),
    /// Enhanced authentication (5.0): send an AUTH with Continue authentication and these
    /// properties, and wait for the client's next step.
    Continue(AuthProperties),
}

/// A step of authentication to decide, when the broker defers them to its driver
/// ([`Broker::with_deferred_authentication`](super::Broker::with_deferred_authentication)):
/// hand it to an [`Authenticator`] (or anything else), then give the decision to
/// [`Broker::authenticated`](super::Broker::authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRequest {
    /// A client sent CONNECT: see [`Authenticator::connect`].
    Connect(Box<Connect>),
    /// A client sent AUTH: see [`Authenticator::auth`].
    Auth {
        /// The client identifier (assigned by the broker when the client sent none).
        client_id: ByteString,
        /// The user name from its CONNECT.
        username: Option<ByteString>,
        /// The AUTH packet.
        auth: Box<Auth>,
    },
}

impl AuthRequest {
    /// Asks `authenticator`.
    pub fn decide(&self, authenticator: &mut dyn Authenticator) -> AuthDecision {
        match self {
            AuthRequest::Connect(connect) => authenticator.connect(connect),
            AuthRequest::Auth {
                client_id,
                username,
                auth,
            } => authenticator.auth(
                ClientInfo {
                    client_id,
                    username: username.as_deref(),
                },
                auth,
            ),
        }
    }
}

/// Decides whether a client may connect. By default the broker calls it in its own loop, so it
/// must be quick; one that waits (a database, a slow password hash) belongs behind
/// [`Broker::with_deferred_authentication`](super::Broker::with_deferred_authentication), as the
/// async broker does with every authenticator it is given.
pub trait Authenticator: Send {
    /// A client sent CONNECT (user name, password, authentication method and data are in it).
    fn connect(&mut self, connect: &Connect) -> AuthDecision;

    /// The client sent AUTH: the next step of an exchange `connect` continued, or a
    /// re-authentication. The default refuses enhanced authentication.
    fn auth(&mut self, client: ClientInfo<'_>, auth: &Auth) -> AuthDecision {
        // Named for the documentation, unused by this default.
        let _ = (client, auth);
        AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod)
    }
}

/// Decides what a connected client may do with which topic.
pub trait Authorizer: Send {
    /// May `client` publish to `topic`? A refused QoS 1/2 publish is acknowledged with 0x87
    /// Not authorized (5.0) and not delivered.
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool;
    /// May `client` subscribe to `filter`? A refused filter gets SUBACK 0x87 (3.1.1: 0x80).
    fn subscribe(&self, client: ClientInfo<'_>, filter: &str) -> bool;
    /// May `client` receive a message on `topic` through a subscription it was allowed (a
    /// `deny` rule inside a granted filter, as mosquitto's ACL files have them)? Asked for each
    /// delivery, retained messages included, only when [`Authorizer::checks_delivery`] says so;
    /// a refused delivery is dropped and counted in `Dropped::not_authorized`. Default: yes.
    /// A disconnected session's user name is the one it last connected with (none after a
    /// restart of the broker, until it connects again).
    fn deliver(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        // Named for the documentation, unused by this default.
        let _ = (client, topic);
        true
    }
    /// Whether [`Authorizer::deliver`] must be asked (default `false`: no cost per delivery).
    fn checks_delivery(&self) -> bool {
        false
    }
}

/// Lets every client in (anonymous access): the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn connect(&mut self, _connect: &Connect) -> AuthDecision {
        AuthDecision::Accept
    }
}

impl Authorizer for AllowAll {
    fn publish(&self, _client: ClientInfo<'_>, _topic: &str) -> bool {
        true
    }
    fn subscribe(&self, _client: ClientInfo<'_>, _filter: &str) -> bool {
        true
    }
}
