//! Counters the broker keeps: what it holds, what passed through, and what it dropped and why.

/// A snapshot of the broker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Open network connections (CONNECT accepted).
    pub connections: usize,
    /// Sessions, connected or not.
    pub sessions: usize,
    /// Subscriptions, shared ones included.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages kept for sessions, connected or not (in flight and waiting); counting them
    /// takes a pass over the sessions.
    pub queued_messages: usize,
    /// What the retained messages weigh, in bytes (counted against
    /// `BrokerConfig::max_retained_bytes`).
    pub retained_bytes: usize,
    /// What the messages kept for sessions weigh now, in bytes (counted against
    /// `BrokerConfig::max_total_queued_bytes`).
    pub queued_bytes: usize,
    /// Bytes reserved now by large packets being received (counted against
    /// `BrokerConfig::max_incoming_bytes`).
    pub incoming_bytes: usize,
    /// Acknowledgements to publishers held back now because a session they feed has a full
    /// queue.
    pub held_acks: usize,
    /// PUBLISH packets received from clients.
    pub messages_in: u64,
    /// PUBLISH packets sent (or queued) to clients.
    pub messages_out: u64,
    /// `messages_in` by the QoS they were published at (index 0, 1, 2).
    pub messages_in_by_qos: [u64; 3],
    /// `messages_out` by the QoS they were delivered at (index 0, 1, 2).
    pub messages_out_by_qos: [u64; 3],
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent (or queued).
    pub bytes_out: u64,
    /// Clients refused because `BrokerConfig::max_sessions` sessions exist.
    pub refused_sessions: u64,
    /// Clients disconnected because their queue stayed full past
    /// `BrokerConfig::congestion_timeout`.
    pub congestion_disconnects: u64,
    /// What was dropped, by reason.
    pub dropped: Dropped,
}

/// Messages the broker did not deliver, by reason. Nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// A disconnected session's queue was full (`max_session_queue` messages or
    /// `max_session_queue_bytes`): QoS 0 messages make room first, then new messages are
    /// refused. Also messages for a connection that was closing.
    pub queue_full: u64,
    /// A disconnected session's message did not fit `max_total_queued_bytes`, the broker-wide budget.
    pub memory_budget: u64,
    /// The Message Expiry Interval ran out before delivery.
    pub expired: u64,
    /// Larger than the receiving client's Maximum Packet Size (MQTT-3.1.2-25).
    pub too_large: u64,
    /// The publisher was not authorized for the topic.
    pub not_authorized: u64,
    /// Retained messages not kept (`max_retained` or `max_retained_bytes` reached); they were
    /// still delivered to the subscribers there were.
    pub retained: u64,
}

/// Why messages for a session were dropped, in [`BrokerEvent::MessagesDropped`](super::BrokerEvent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The disconnected session's own queue limit.
    QueueFull,
    /// The broker-wide budget of queued bytes.
    MemoryBudget,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropReason::QueueFull => "session queue full",
            DropReason::MemoryBudget => "broker queue memory budget exhausted",
        })
    }
}
