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
    /// PUBLISH packets received from clients.
    pub messages_in: u64,
    /// PUBLISH packets sent (or queued) to clients.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent (or queued).
    pub bytes_out: u64,
    /// What was dropped, by reason.
    pub dropped: Dropped,
}

/// Messages the broker did not deliver, by reason. Nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// A session's queue was full: QoS 0 messages make room first, then new messages are refused.
    pub queue_full: u64,
    /// The Message Expiry Interval ran out before delivery.
    pub expired: u64,
    /// Larger than the receiving client's Maximum Packet Size (MQTT-3.1.2-25).
    pub too_large: u64,
    /// The publisher was not authorized for the topic.
    pub not_authorized: u64,
    /// QoS 0 messages for a disconnected client (not queued, as the specification allows).
    pub offline_qos0: u64,
}
