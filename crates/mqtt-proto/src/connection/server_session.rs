//! What a broker keeps of a session between its connections: [`ServerSession`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::UsageError;
use super::outbound::{Inflight, Outbound};
use crate::packet::{PacketId, Publish, QoS};

/// The delivery state of a session that a broker keeps between connections: outbound QoS 1/2
/// messages (with their packet identifiers) and inbound QoS 2 identifiers awaiting PUBREL.
#[derive(Debug, Clone, Default)]
pub struct ServerSession {
    pub(crate) outbound: Outbound,
    pub(crate) awaiting_pubrel: BTreeSet<u16>,
}

impl ServerSession {
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.outbound.inflight.len()
    }

    /// Messages waiting to be sent.
    pub fn queued(&self) -> usize {
        self.outbound.queued.len()
    }

    /// What the messages kept for the client weigh, in bytes (payload, topic, properties and
    /// bookkeeping), in flight and queued.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.bytes
    }

    /// Queues a message for the client while it is offline; it is sent when the client resumes
    /// the session. When it would take the queue past `max_messages` messages or `max_bytes`
    /// bytes, the oldest queued QoS 0 messages make room; returns how many were dropped for it.
    /// When they cannot make enough room, the new message is refused with
    /// [`UsageError::QueueFull`] and nothing is dropped.
    pub fn enqueue(
        &mut self,
        now: Instant,
        publish: Publish,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Enqueued, UsageError> {
        self.enqueue_stamped(now, publish, max_messages, max_bytes, 0)
    }

    /// [`ServerSession::enqueue`] for a message that must wait for a broker's store batch
    /// `stamp` before it goes out.
    pub(crate) fn enqueue_stamped(
        &mut self,
        now: Instant,
        mut publish: Publish,
        max_messages: usize,
        max_bytes: usize,
        stamp: u64,
    ) -> Result<Enqueued, UsageError> {
        let size = super::outbound::weight(&publish);
        let fits = |messages: usize, bytes: usize| {
            messages < max_messages && bytes.saturating_add(size) <= max_bytes
        };
        let mut dropped = 0;
        if !fits(self.outbound.queued.len(), self.outbound.bytes) {
            // Only QoS 0 messages make room; check they can make enough before dropping any.
            let (mut messages, mut bytes) = (self.outbound.queued.len(), self.outbound.bytes);
            let mut qos0 = Vec::new();
            for (index, queued) in self.outbound.queued.iter().enumerate() {
                if fits(messages, bytes) {
                    break;
                }
                if queued.publish.qos == QoS::AtMostOnce {
                    qos0.push(index);
                    messages -= 1;
                    bytes = bytes.saturating_sub(super::outbound::weight(&queued.publish));
                }
            }
            if !fits(messages, bytes) {
                return Err(UsageError::QueueFull);
            }
            for index in qos0.into_iter().rev() {
                self.outbound.remove_queued(index);
                dropped += 1;
            }
        }
        publish.dup = false;
        if let Some(properties) = publish.properties.get_mut() {
            properties.topic_alias = None;
        }
        publish.packet_id = None;
        if publish.qos != QoS::AtMostOnce {
            publish.packet_id = Some(self.outbound.allocate_id()?);
        }
        let packet_id = publish.packet_id;
        let expires_at = publish
            .properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        self.outbound.enqueue_stamped(publish, expires_at, stamp);
        Ok(Enqueued { dropped, packet_id })
    }

    /// Puts back a QoS 1/2 message that was queued or in flight before a restart, with the
    /// packet identifier it had (a QoS 2 receiver recognises it by that identifier), after the
    /// ones already there. Refused when the identifier is in use or missing.
    pub(crate) fn restore(
        &mut self,
        publish: Publish,
        expires_at: Option<Instant>,
    ) -> Result<(), UsageError> {
        let packet_id = publish.packet_id.ok_or(UsageError::UnknownAck)?;
        if !self.outbound.claim_id(packet_id) {
            return Err(UsageError::PacketIdsExhausted);
        }
        self.outbound.enqueue(publish, expires_at);
        Ok(())
    }

    /// Puts back a QoS 2 message the client had accepted (PUBREC) before a restart: PUBREL is
    /// sent again when it resumes the session.
    pub(crate) fn restore_pubrel(&mut self, packet_id: PacketId) -> Result<(), UsageError> {
        if !self.outbound.claim_id(packet_id) {
            return Err(UsageError::PacketIdsExhausted);
        }
        self.outbound
            .inflight
            .push_back(Inflight::PubRel(packet_id));
        Ok(())
    }

    /// Marks a QoS 2 message of the client's as received and awaiting its PUBREL (restored).
    pub(crate) fn restore_awaiting_pubrel(&mut self, packet_id: PacketId) {
        self.awaiting_pubrel.insert(packet_id.get());
    }

    /// The packet identifiers of every exchange with the client under way: messages in flight
    /// and queued, and QoS 2 messages awaiting PUBCOMP.
    pub(crate) fn packet_ids(&self) -> Vec<PacketId> {
        self.outbound.packet_ids()
    }

    /// Calls `f` on every message kept for the client, in flight and queued (a broker makes them
    /// own their bytes before keeping them for long).
    pub(crate) fn for_each_publish_mut(&mut self, mut f: impl FnMut(&mut Publish)) {
        for entry in &mut self.outbound.inflight {
            if let Inflight::Publish(publish) = entry {
                f(publish);
            }
        }
        for queued in &mut self.outbound.queued {
            f(&mut queued.publish);
        }
    }
}

/// What [`ServerSession::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Enqueued {
    /// Queued QoS 0 messages dropped to make room.
    pub dropped: usize,
    /// The packet identifier the message got (QoS 1 and 2).
    pub packet_id: Option<PacketId>,
}
