//! Bridges: this broker connected, as a client, to another broker (mosquitto, EMQX, HiveMQ,
//! another of ours), with messages forwarded both ways under topic rules.
//!
//! One task per bridge runs two client cores ([`ClientConnection`]s): the *remote* one over a
//! transport to the other broker (TCP, TLS, WebSocket or a Unix socket, as a client opens it,
//! reconnecting with backoff), the *local* one over an in-memory pipe to this broker, as a
//! trusted connection with the persistent session `$bridge/NAME`. No channel or task sits
//! between them: a message read from one core is published into the other in the same turn.
//!
//! - **out**: the local core subscribes to the out topics (No Local, so that what the bridge
//!   brought in does not go back, Retain As Published) with manual acknowledgement; each message
//!   is published to the remote broker and acknowledged here only once the remote broker
//!   acknowledged it.
//! - **in**: the remote core subscribes to the in topics with manual acknowledgement (5.0:
//!   No Local; 3.1.1: the bridge bit of mosquitto's `try_private`); each message is published
//!   here and acknowledged to the remote broker only once this broker has taken it (stored,
//!   with a data directory).
//! - **outages**: while the remote broker cannot be reached, the local connection is closed.
//!   Its session stays, so this broker queues what the out topics receive, as for any persistent
//!   session: bounded by `max_session_queue` and `max_session_queue_bytes`, counted when full
//!   (with the client identifier `$bridge/NAME`), and stored with a data directory. When the
//!   remote broker is back, the local connection resumes the session and the backlog flows.
//!   Messages on their way when a connection broke are remembered by their packet identifier at
//!   the source: their redelivery is not forwarded a second time, so a QoS 2 message arrives once.
//!
//! [`ClientConnection`]: mqtt_proto::connection::ClientConnection

use std::sync::Arc;

use mqtt_proto::packet::{Publish, QoS, TopicName};
use mqtt_proto::topic::TopicFilter;

use crate::ClientOptions;
use crate::runtime::{BoxFuture, BoxTransport};

mod driver;
mod forwarding;
mod link;

pub(super) use driver::{Running, spawn};

/// The remote client's default in-flight window (see [`BridgeOptions::max_inflight`]).
const REMOTE_WINDOW: u16 = 100;

/// Which way a bridge forwards the messages of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From this broker to the remote one.
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One topic rule of a bridge, with mosquitto's prefix semantics: out, a local message on
/// `local_prefix` + `filter` is published remotely with `local_prefix` replaced by
/// `remote_prefix`; in, the other way round.
///
/// ```
/// use mqtt_async::broker::{BridgeTopic, Direction};
/// use mqtt_async::QoS;
/// // Local `sensors/kitchen/t` goes to the remote broker as `site-7/sensors/kitchen/t`.
/// let topic = BridgeTopic::new("sensors/#", Direction::Out)
///     .qos(QoS::AtLeastOnce)
///     .remote_prefix("site-7/");
/// assert_eq!(topic.remote_filter(), "site-7/sensors/#");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    filter: String,
    direction: Direction,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
}

impl BridgeTopic {
    /// A rule for `filter` (a topic filter; empty with a prefix: the prefix is the topic), at
    /// QoS 2 (messages keep the QoS they were published with), without prefixes.
    pub fn new(filter: impl Into<String>, direction: Direction) -> Self {
        Self {
            filter: filter.into(),
            direction,
            qos: QoS::ExactlyOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        }
    }

    /// The highest QoS forwarded (default 2): messages published at a higher one are forwarded
    /// at this one, as a subscription at this QoS receives them.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// The prefix of the topics on this broker.
    pub fn local_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.local_prefix = prefix.into();
        self
    }

    /// The prefix of the topics on the remote broker.
    pub fn remote_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.remote_prefix = prefix.into();
        self
    }

    /// The filter subscribed on this broker (out).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.filter)
    }

    /// The filter subscribed on the remote broker (in).
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.filter)
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    fn check(&self) -> Result<(), String> {
        for (what, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#']) {
                return Err(format!("{what} {prefix:?} holds a wildcard"));
            }
        }
        for filter in [self.local_filter(), self.remote_filter()] {
            if TopicFilter::new(filter.clone()).is_err() {
                return Err(format!("{filter:?} is not a valid topic filter"));
            }
        }
        Ok(())
    }

    /// Replaces `from` at the start of `topic` with `to`; `None` if `topic` is not under `from`
    /// or the result is not a topic name.
    fn remap(topic: &str, from: &str, to: &str) -> Option<TopicName> {
        let rest = topic.strip_prefix(from)?;
        TopicName::new(format!("{to}{rest}")).ok()
    }
}

/// A bridge: see [`BrokerBuilder::bridge`](super::BrokerBuilder::bridge).
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    name: String,
    remote: ClientOptions,
    topics: Vec<BridgeTopic>,
    try_private: bool,
    max_inflight: u16,
}

impl BridgeOptions {
    /// A bridge called `name` (its local session is `$bridge/NAME`) to the broker `remote`
    /// describes: address, transport, TLS, version, client identifier, credentials, clean start,
    /// session expiry, keep alive, reconnect backoff, in-flight window, all as for a client.
    /// Give it a client identifier and a persistent session (3.1.1: `clean_start(false)`; 5.0:
    /// also a [session expiry](ClientOptions::session_expiry)) so that the remote broker keeps
    /// what is on its way while the bridge is down; without an identifier it is
    /// `HOSTNAME.NAME`, as mosquitto's.
    pub fn new(name: impl Into<String>, remote: ClientOptions) -> Self {
        Self {
            name: name.into(),
            remote,
            topics: Vec::new(),
            try_private: true,
            max_inflight: REMOTE_WINDOW,
        }
    }

    /// The most QoS 1/2 messages on their way to the remote broker at once (default 100, where a
    /// client's default is 10: a bridge carries many clients' traffic over one connection). A
    /// 5.0 remote broker's Receive Maximum lowers it; mosquitto takes 20 from 3.1.1 clients
    /// unless configured otherwise, and queues the rest.
    pub fn max_inflight(mut self, max: u16) -> Self {
        self.max_inflight = max.max(1);
        self
    }

    /// Adds a topic rule.
    pub fn topic(mut self, topic: BridgeTopic) -> Self {
        self.topics.push(topic);
        self
    }

    /// With 3.1.1, tell the remote broker that this client is a bridge (default on), as
    /// mosquitto's `try_private` does: the protocol level has bit 7 set, and mosquitto and this
    /// broker then send the bridge none of its own messages back (3.1.1 has no No Local) and
    /// keep retain flags. Turn it off for a broker that refuses the connection for it.
    pub fn try_private(mut self, on: bool) -> Self {
        self.try_private = on;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '+', '#']) {
            return Err(format!(
                "bridge name {:?} must be non-empty, without '/', '+' or '#'",
                self.name
            ));
        }
        if self.topics.is_empty() {
            return Err(format!("bridge {}: no topics", self.name));
        }
        for topic in &self.topics {
            topic
                .check()
                .map_err(|e| format!("bridge {}: {e}", self.name))?;
        }
        Ok(())
    }
}

/// A bridge's state, from [`BrokerHandle::bridges`](super::BrokerHandle::bridges).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStatus {
    /// The bridge's name.
    pub name: String,
    /// Connected to the remote broker now.
    pub connected: bool,
    /// Why the last connection ended or the last attempt failed.
    pub last_error: Option<String>,
    /// Messages forwarded to the remote broker (acknowledged by it, for QoS 1 and 2).
    pub sent: u64,
    /// Messages forwarded from the remote broker (taken by this one).
    pub received: u64,
    /// Messages the remote broker refused (a negative PUBACK or PUBREC): not forwarded.
    pub refused: u64,
}

/// What a bridge tells the broker's event hook.
pub(crate) enum Report {
    Connected(String),
    Disconnected(String, String),
}

/// Opens an in-memory connection to this broker, trusted.
pub(crate) type LocalConnector =
    Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<BoxTransport>> + Send + Sync>;

/// The message to forward: the same payload, QoS, retain flag and 5.0 properties (user
/// properties, content type, response topic, correlation data, payload format, and the message
/// expiry the sending broker counted down), under its new topic. Subscription identifiers and
/// topic aliases belong to the connection it came on and are dropped.
fn forwarded(received: &Publish, topic: TopicName) -> Publish {
    let mut publish = Publish::new(topic, received.payload.clone());
    publish.qos = received.qos;
    publish.retain = received.retain;
    publish.properties = received.properties.clone();
    publish.properties.topic_alias = None;
    publish.properties.subscription_identifiers.clear();
    publish
}

/// This machine's name, for default client identifiers (`HOSTNAME.BRIDGE`, as mosquitto's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "mqtt".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_replaced_both_ways_as_mosquitto_does() {
        let topic = BridgeTopic::new("sensors/#", Direction::Both)
            .local_prefix("edge/")
            .remote_prefix("site-7/");
        assert_eq!(topic.local_filter(), "edge/sensors/#");
        assert_eq!(topic.remote_filter(), "site-7/sensors/#");
        let out = BridgeTopic::remap("edge/sensors/t", &topic.local_prefix, &topic.remote_prefix);
        assert_eq!(out.as_deref(), Some("site-7/sensors/t"));
        let inward = BridgeTopic::remap(
            "site-7/sensors/t",
            &topic.remote_prefix,
            &topic.local_prefix,
        );
        assert_eq!(inward.as_deref(), Some("edge/sensors/t"));
        assert_eq!(BridgeTopic::remap("other/t", "edge/", "site-7/"), None);
        // An empty filter: the prefix is the topic.
        let exact = BridgeTopic::new("", Direction::Out)
            .local_prefix("a/b")
            .remote_prefix("c/d");
        assert!(exact.check().is_ok());
        assert_eq!(
            BridgeTopic::remap("a/b", "a/b", "c/d").as_deref(),
            Some("c/d")
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let remote = ClientOptions::new("127.0.0.1", 1883);
        let no_topics = BridgeOptions::new("cloud", remote.clone());
        assert!(no_topics.check().unwrap_err().contains("no topics"));
        let wildcard_prefix = BridgeOptions::new("cloud", remote.clone())
            .topic(BridgeTopic::new("t/#", Direction::Out).local_prefix("a/+/"));
        assert!(wildcard_prefix.check().unwrap_err().contains("wildcard"));
        let bad_filter = BridgeOptions::new("cloud", remote.clone())
            .topic(BridgeTopic::new("t/#/x", Direction::In));
        assert!(bad_filter.check().unwrap_err().contains("not a valid"));
        let bad_name =
            BridgeOptions::new("a/b", remote).topic(BridgeTopic::new("t", Direction::In));
        assert!(bad_name.check().unwrap_err().contains("name"));
    }
}
