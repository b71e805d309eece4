//! The broker's limits ([`BrokerConfig`]) and changing them while it runs.

use std::time::Duration;

use super::Broker;
use crate::connection::ServerConfig;
use crate::packet::QoS;

/// The broker's limits and features. Every limit has a safe default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Per-connection limits (packet size, receive maximum, topic aliases, keep alive, queue).
    pub connection: ServerConfig,
    /// The most simultaneous connections (default 10,000); `open` refuses more.
    pub max_connections: usize,
    /// The highest QoS accepted and granted (default 2).
    pub max_qos: QoS,
    /// Whether retained messages are supported (default true).
    pub retain_available: bool,
    /// Whether shared subscriptions are supported (default true).
    pub shared_subscriptions: bool,
    /// The most messages queued for a disconnected session (default 100,000). QoS 0 messages
    /// make room first; beyond that new messages are dropped, counted in [`Dropped::queue_full`](super::Dropped::queue_full)
    /// and reported ([`BrokerEvent::MessagesDropped`](super::BrokerEvent::MessagesDropped)).
    pub max_session_queue: usize,
    /// Like `max_session_queue`, in bytes of messages kept for one disconnected session
    /// (default 64 MiB; a message weighs its payload, topic and properties plus about 170 bytes
    /// of bookkeeping).
    pub max_session_queue_bytes: usize,
    /// Bytes of messages kept for all sessions together, connected or not (default 3 GiB:
    /// enough for 100,000 disconnected sessions holding 100 messages of 64 B each, which weigh
    /// 229 bytes apiece here and take 250 bytes of heap, 2.5 GB in all). A
    /// disconnected session's message that does not fit is dropped and counted in
    /// [`Dropped::memory_budget`](super::Dropped::memory_budget); for a connected one, the publishers feeding it are held back
    /// as when its own queue is full.
    pub max_total_queued_bytes: usize,
    /// The most sessions, connected or not (default 1,000,000). A client that would start one
    /// more is refused (5.0: 0x97 Quota exceeded; 3.1.1: server unavailable).
    pub max_sessions: usize,
    /// How long a connected client's full queue may hold back the publishers that feed it
    /// before the client is disconnected (5.0: 0x97 Quota exceeded) and its messages stay in
    /// its session, if the session persists (default 30 s).
    ///
    /// When a client's queue is full (`connection.max_queued` messages, or
    /// `connection.max_queued_bytes`), the broker does not drop what it acknowledged: it keeps
    /// the message and withholds the PUBACK/PUBREC of the publishers feeding that client until
    /// the queue has room again (3.1.1 publishers with more than `connection.receive_maximum`
    /// messages held back are not read at all meanwhile). One slow subscriber slows down the
    /// publishers that feed it, for at most this long at a stretch.
    pub congestion_timeout: Duration,
    /// Bytes that packets being received may take in total (default 256 MiB). Packets above
    /// 16 KiB reserve their announced size when their fixed header arrives; a connection whose
    /// packet does not fit is not read until others complete. A packet larger than this is
    /// refused as too large, whatever `connection.max_packet_size` says.
    pub max_incoming_bytes: usize,
    /// The longest Session Expiry Interval granted, in seconds (default: one day). 3.1.1
    /// sessions without Clean Session get this.
    pub max_session_expiry: u32,
    /// The most retained messages (default 100,000); new topics beyond it are not retained
    /// (the message is still delivered; counted in [`Dropped::retained`](super::Dropped::retained)).
    pub max_retained: usize,
    /// The most bytes retained messages may take (default 256 MiB; each weighs its topic,
    /// payload and properties plus 256 bytes of bookkeeping); a message that would go beyond is
    /// not retained, like one beyond `max_retained`.
    pub max_retained_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            connection: ServerConfig::default(),
            max_connections: 10_000,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            shared_subscriptions: true,
            max_session_queue: 100_000,
            max_session_queue_bytes: 64 * 1024 * 1024,
            max_total_queued_bytes: 3 * 1024 * 1024 * 1024,
            max_sessions: 1_000_000,
            congestion_timeout: Duration::from_secs(30),
            max_incoming_bytes: 256 * 1024 * 1024,
            max_session_expiry: 24 * 60 * 60,
            max_retained: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Broker {
    /// Takes the limits of `new` that can change while the broker runs, and says what changed
    /// (`"max_connections: 10000 -> 200"`) and what needs a restart to change. They apply from
    /// now on: to connections opened from now on (`connection.receive_maximum`, `max_queued`,
    /// `max_queued_bytes`, `max_inflight_v311`, `max_keep_alive`, `connect_timeout`,
    /// `topic_alias_maximum`), to connections and sessions counted from now on
    /// (`max_connections`, `max_sessions`), and to messages queued or retained from now on
    /// (`max_session_queue`, `max_session_queue_bytes`, `max_total_queued_bytes`,
    /// `max_retained`, `max_retained_bytes`, `congestion_timeout`, `max_session_expiry`).
    /// What sessions were granted and announced stays (`max_qos`, `retain_available`,
    /// `shared_subscriptions`), and so does what sizes the incoming budget
    /// (`max_incoming_bytes`, `connection.max_packet_size`): those are reported in the second
    /// list and not changed.
    pub fn set_limits(&mut self, new: &BrokerConfig) -> (Vec<String>, Vec<&'static str>) {
        let mut changed = Vec::new();
        let mut fixed = Vec::new();
        macro_rules! take {
            ($($field:ident).+) => {
                if self.config.$($field).+ != new.$($field).+ {
                    changed.push(format!(
                        "{}: {:?} -> {:?}",
                        stringify!($($field).+).replace(' ', ""),
                        self.config.$($field).+,
                        new.$($field).+
                    ));
                    self.config.$($field).+ = new.$($field).+.clone();
                }
            };
        }
        macro_rules! keep {
            ($($field:ident).+) => {
                if self.config.$($field).+ != new.$($field).+ {
                    fixed.push(stringify!($($field).+));
                }
            };
        }
        take!(max_connections);
        take!(max_sessions);
        take!(max_session_queue);
        take!(max_session_queue_bytes);
        take!(max_total_queued_bytes);
        take!(max_retained);
        take!(max_retained_bytes);
        take!(congestion_timeout);
        take!(max_session_expiry);
        take!(connection.receive_maximum);
        take!(connection.max_queued);
        take!(connection.max_queued_bytes);
        take!(connection.max_inflight_v311);
        take!(connection.max_keep_alive);
        take!(connection.connect_timeout);
        take!(connection.topic_alias_maximum);
        keep!(max_qos);
        keep!(retain_available);
        keep!(shared_subscriptions);
        keep!(max_incoming_bytes);
        let packet_size = new
            .connection
            .max_packet_size
            .min(u32::try_from(self.config.max_incoming_bytes).unwrap_or(u32::MAX));
        if packet_size.max(2) != self.config.connection.max_packet_size {
            fixed.push("connection.max_packet_size");
        }
        (changed, fixed)
    }
}
