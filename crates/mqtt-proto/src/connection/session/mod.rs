//! Session state that outlives a network connection (section 4.1), and its saved form, which
//! outlives the process ([`format`]).

mod format;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use bytes::BytesMut;
use bytestring::ByteString;

use super::outbound::Outbound;
use crate::codec::EncodeError;
use crate::packet::{PacketId, Subscribe, Subscription, SubscriptionId, Unsubscribe};

pub(crate) use format::Parts;
pub use format::SessionDecodeError;

/// A subscription the server granted, remembered so it can be restored when the server reports
/// that it kept no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSubscription {
    /// The filter and options as subscribed.
    pub subscription: Subscription,
    /// The Subscription Identifier it was made with.
    pub identifier: Option<SubscriptionId>,
}

/// A SUBSCRIBE or UNSUBSCRIBE sent and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
}

impl Request {
    pub(crate) fn packet_id(&self) -> PacketId {
        match self {
            Request::Subscribe(s) => s.packet_id,
            Request::Unsubscribe(u) => u.packet_id,
        }
    }
}

/// The client's side of a session: everything a new connection needs to carry on where the last
/// one stopped.
///
/// Take it from a finished connection with `into_session` and hand it to the next one. It holds
/// the packet identifiers in use, the QoS 1 and 2 messages not yet acknowledged (resent with DUP
/// set, in order, when the server resumes the session; sent again as new messages when it does
/// not), the publishes still queued, the QoS 2 messages received and awaiting PUBREL (never
/// delivered twice), the unacknowledged SUBSCRIBE and UNSUBSCRIBE requests (sent again), and the
/// active subscriptions (re-issued when the server kept no session).
///
/// [`Session::encode`] saves all of it and [`Session::decode`] restores it, so that a session
/// also outlives the process: a program that saves its session before each write to the
/// network ([`ClientConnection::encode_session`](super::ClientConnection::encode_session)
/// while connected) resends, after a crash, what the server had not acknowledged, and never
/// delivers a QoS 2 message twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub(crate) assigned_client_id: Option<ByteString>,
    pub(crate) outbound: Outbound,
    pub(crate) awaiting_pubrel: BTreeSet<u16>,
    pub(crate) next_token: u64,
    pub(crate) requests: Vec<Request>,
    pub(crate) subscriptions: Vec<ActiveSubscription>,
}

impl Session {
    /// The version of the saved form [`Session::encode`] writes, the only one
    /// [`Session::decode`] reads.
    pub const FORMAT_VERSION: u16 = 1;

    /// A session with no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the saved form of the session to `buf`: a small binary format that starts with a
    /// magic and [`Session::FORMAT_VERSION`] and ends with a checksum, holding the publishes in
    /// flight with their packet identifiers and stage (PUBLISH sent, or PUBREL sent), the queued
    /// ones, the QoS 2 messages received and awaiting PUBREL, the assigned client identifier,
    /// the active subscriptions, the unacknowledged SUBSCRIBE and UNSUBSCRIBE requests and the
    /// packet identifier and token counters. Message expiry deadlines of queued messages, which
    /// a client never sets, are not kept.
    ///
    /// Fails, appending nothing, only for a message that could not be sent either (a property
    /// longer than MQTT allows).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        Parts::of(self).encode(buf)
    }

    /// Restores a session from what [`Session::encode`] wrote. Bytes of anything else, cut
    /// short, changed, or of another version of the format are an error, never a panic; the
    /// input is checked before anything is allocated for it.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use mqtt_proto::connection::{Session, SessionDecodeError};
    ///
    /// let mut saved = BytesMut::new();
    /// Session::new().encode(&mut saved)?;
    /// assert_eq!(Session::decode(&saved)?, Session::new());
    /// assert_eq!(
    ///     Session::decode(&saved[..saved.len() - 1]),
    ///     Err(SessionDecodeError::Truncated)
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Session, SessionDecodeError> {
        format::decode(bytes)
    }

    /// QoS 1 and 2 publishes sent and not yet completed.
    pub fn inflight(&self) -> usize {
        self.outbound.inflight.len()
    }

    /// Publishes waiting to be sent.
    pub fn queued(&self) -> usize {
        self.outbound.queued.len()
    }

    /// Packet identifiers of unfinished outbound exchanges, in the order they will be resent.
    pub fn pending_packet_ids(&self) -> Vec<PacketId> {
        self.outbound.packet_ids()
    }

    /// The subscriptions the server granted.
    pub fn subscriptions(&self) -> &[ActiveSubscription] {
        &self.subscriptions
    }

    /// The client identifier the server assigned, reused on the next connection when the
    /// configured one is empty.
    pub fn assigned_client_id(&self) -> Option<&str> {
        self.assigned_client_id.as_deref()
    }

    /// Records the outcome of a SUBSCRIBE: granted filters become (or replace) active ones.
    pub(crate) fn granted(&mut self, subscribe: &Subscribe, codes: &[crate::ReasonCode]) {
        for (subscription, code) in subscribe.filters.iter().zip(codes) {
            if code.is_error() {
                continue;
            }
            self.subscriptions
                .retain(|s| s.subscription.filter != subscription.filter);
            self.subscriptions.push(ActiveSubscription {
                subscription: subscription.clone(),
                identifier: subscribe.properties.subscription_identifier,
            });
        }
    }

    /// Records an UNSUBSCRIBE.
    pub(crate) fn removed(&mut self, unsubscribe: &Unsubscribe) {
        self.subscriptions
            .retain(|s| !unsubscribe.filters.contains(&s.subscription.filter));
    }
}
