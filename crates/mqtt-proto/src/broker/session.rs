//! A session as the broker keeps it (section 4.1): subscriptions, delivery state, will, expiry.

use std::collections::HashSet;
use std::time::Instant;

use bytestring::ByteString;

use crate::connection::ServerSession;
use crate::packet::{SubscriptionId, SubscriptionOptions, Version, Will};
use crate::topic::TopicFilter;

/// A subscription as stored in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubValue {
    /// The options, with the QoS as granted.
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<SubscriptionId>,
}

#[derive(Debug)]
pub(crate) struct BrokerSession {
    pub(crate) client_id: ByteString,
    /// The user name it last connected with, for delivery checks.
    pub(crate) username: Option<ByteString>,
    pub(crate) version: Version,
    /// The connection serving it, if connected.
    pub(crate) connection: Option<u64>,
    /// Delivery state while disconnected (inside the connection while connected, when this is
    /// `None`: boxed, so that connected sessions do not carry an empty copy).
    pub(crate) delivery: Option<Box<ServerSession>>,
    /// Filters subscribed, to remove them all when the session ends.
    /// Fx: no per-set random state (16 bytes in every session); a client only slows its own
    /// set with crafted filters.
    pub(crate) filters: HashSet<TopicFilter, rustc_hash::FxBuildHasher>,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub(crate) expiry_interval: u32,
    /// When a disconnected session ends.
    pub(crate) expires_at: Option<Instant>,
    /// A will waiting for its delay to pass (MQTT-3.1.3-9).
    pub(crate) pending_will: Option<Box<(Will, Instant)>>,
    /// It has records in the store (see `persist`).
    pub(crate) stored: bool,
}

impl BrokerSession {
    pub(crate) fn new(client_id: ByteString, version: Version) -> Self {
        Self {
            client_id,
            username: None,
            version,
            connection: None,
            delivery: None,
            filters: HashSet::default(),
            expiry_interval: 0,
            expires_at: None,
            pending_will: None,
            stored: false,
        }
    }
}
