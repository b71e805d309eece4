//! Session state that outlives a network connection (section 4.1).

use std::collections::BTreeSet;

use bytestring::ByteString;

use super::outbound::{Inflight, Outbound};
use crate::packet::{PacketId, Subscribe, Subscription, SubscriptionId, Unsubscribe};

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
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub(crate) assigned_client_id: Option<ByteString>,
    pub(crate) outbound: Outbound,
    pub(crate) awaiting_pubrel: BTreeSet<u16>,
    pub(crate) next_token: u64,
    pub(crate) requests: Vec<Request>,
    pub(crate) subscriptions: Vec<ActiveSubscription>,
}

impl Session {
    /// A session with no state.
    pub fn new() -> Self {
        Self::default()
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
        let inflight = self
            .outbound
            .inflight
            .iter()
            .filter_map(|entry| match entry {
                Inflight::Publish(p) => p.packet_id,
                Inflight::PubRel(id) => Some(*id),
            });
        let queued = self
            .outbound
            .queued
            .iter()
            .filter_map(|q| q.publish.packet_id);
        inflight.chain(queued).collect()
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
