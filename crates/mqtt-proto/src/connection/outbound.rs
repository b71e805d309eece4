//! Publishes this side sends at QoS 1 and 2: packet identifiers, the in-flight window bounded by
//! the peer's Receive Maximum, the bounded queue behind it, and the acknowledgement exchanges.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use crate::ReasonCode;
use crate::packet::{AckProperties, Packet, PacketId, PubComp, PubRel, Publish, QoS};

use super::ProtocolError;
use super::UsageError;

/// A publish whose exchange is not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
// Almost every entry is a `Publish`; boxing it would add an allocation per message in flight.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inflight {
    /// PUBLISH sent, PUBACK (QoS 1) or PUBREC (QoS 2) awaited. Kept whole for resending.
    Publish(Publish),
    /// PUBREL sent, PUBCOMP awaited; the message itself is no longer needed.
    PubRel(PacketId),
}

impl Inflight {
    fn packet_id(&self) -> Option<PacketId> {
        match self {
            Inflight::Publish(publish) => publish.packet_id,
            Inflight::PubRel(packet_id) => Some(*packet_id),
        }
    }
}

/// How a QoS 1 or 2 publish ended: the PUBACK, the refusing PUBREC, or the PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The packet identifier `publish` returned.
    pub packet_id: PacketId,
    /// The peer's reason code: success below 0x80, a refusal at 0x80 and above.
    pub reason_code: ReasonCode,
    /// The acknowledgement's properties (reason string, user properties).
    pub properties: AckProperties,
}

/// A publish waiting for room in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) publish: Publish,
    /// When its Message Expiry Interval runs out (a broker's queue; clients leave it `None`).
    pub(crate) expires_at: Option<Instant>,
    /// What it must wait for before it goes out: a broker's store batch (0: nothing).
    pub(crate) stamp: u64,
}

/// What keeping `publish` costs in memory, roughly: its payload, topic and properties, the
/// queue entry and the allocations behind them. Queue limits and budgets in bytes count this; it
/// depends only on what a message keeps while it is queued and in flight, so adding and removing
/// the same message balance.
pub(crate) fn weight(publish: &Publish) -> usize {
    /// A queue entry, and the allocations of the payload and topic copies (with the shared
    /// header `Bytes` adds once a copy is shared). The broker core bench measures 250 bytes of
    /// heap per queued 64 B message (topic `q/NNNN`) against a weight of 229: the rest is the
    /// queue's spare capacity.
    const ENTRY: usize = std::mem::size_of::<Queued>() + 64;
    let properties = publish.properties.get().map_or(0, |p| {
        std::mem::size_of::<crate::packet::PublishProperties>() + p.weight()
    });
    ENTRY + publish.payload.len() + publish.topic.len() + properties
}

/// Outbound QoS 1/2 state. Lives in the session, so it survives reconnection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outbound {
    /// The identifier to try next.
    next_id: u16,
    /// Identifiers held by in-flight and queued publishes and by pending requests.
    in_use: BTreeSet<u16>,
    /// Sent and unacknowledged, in the order sent.
    pub(crate) inflight: VecDeque<Inflight>,
    /// Waiting for room in the window, in the order published.
    pub(crate) queued: VecDeque<Queued>,
    /// The [`weight`] of every message in `inflight` and `queued`.
    pub(crate) bytes: usize,
    /// The highest stamp of the queued messages sent since [`Outbound::take_sent_stamp`].
    sent_stamp: u64,
}

impl Outbound {
    /// The packet identifiers of unfinished exchanges, in the order they will be resent: in
    /// flight (PUBLISH or PUBREL), then queued.
    pub(crate) fn packet_ids(&self) -> Vec<PacketId> {
        let inflight = self.inflight.iter().filter_map(|entry| match entry {
            Inflight::Publish(p) => p.packet_id,
            Inflight::PubRel(id) => Some(*id),
        });
        let queued = self.queued.iter().filter_map(|q| q.publish.packet_id);
        inflight.chain(queued).collect()
    }

    /// Nothing in flight or queued, no identifier held, no stamp to report: what a new one
    /// holds, but for the identifier to try next.
    pub(crate) fn is_idle(&self) -> bool {
        self.inflight.is_empty()
            && self.queued.is_empty()
            && self.in_use.is_empty()
            && self.bytes == 0
            && self.sent_stamp == 0
    }

    /// Rebuilds the state a saved session describes (see `session::format`): the exchanges in
    /// flight and the queue, in order, and the identifiers `requests` hold. The identifiers in
    /// use and the weight follow from them. `Err` names an identifier held twice, or a publish
    /// without one.
    pub(crate) fn restore(
        next_id: u16,
        inflight: VecDeque<Inflight>,
        queued: VecDeque<Publish>,
        requests: impl IntoIterator<Item = PacketId>,
    ) -> Result<Self, Option<PacketId>> {
        let mut out = Self {
            next_id,
            ..Self::default()
        };
        let held = inflight
            .iter()
            .map(Inflight::packet_id)
            .chain(queued.iter().map(|publish| publish.packet_id));
        for id in held.chain(requests.into_iter().map(Some)) {
            let id = id.ok_or(None)?;
            if !out.in_use.insert(id.get()) {
                return Err(Some(id));
            }
        }
        for entry in &inflight {
            if let Inflight::Publish(publish) = entry {
                out.bytes += weight(publish);
            }
        }
        out.inflight = inflight;
        for publish in queued {
            out.enqueue(publish, None);
        }
        Ok(out)
    }

    /// The identifier [`Outbound::allocate_id`] tries after the last one it gave.
    pub(crate) fn next_id(&self) -> u16 {
        self.next_id
    }

    /// A free packet identifier, now marked in use.
    pub(crate) fn allocate_id(&mut self) -> Result<PacketId, UsageError> {
        if self.in_use.len() >= usize::from(u16::MAX) {
            return Err(UsageError::PacketIdsExhausted);
        }
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(self.next_id)
                && self.in_use.insert(id.get())
            {
                return Ok(id);
            }
        }
    }

    /// Puts a QoS 1/2 publish that was just sent in flight.
    pub(crate) fn push_inflight(&mut self, publish: Publish) {
        self.bytes += weight(&publish);
        self.inflight.push_back(Inflight::Publish(publish));
    }

    /// Removes a queued publish (to make room), returning it.
    pub(crate) fn remove_queued(&mut self, index: usize) -> Option<Publish> {
        let queued = self.queued.remove(index)?;
        self.forget(&queued.publish);
        if let Some(id) = queued.publish.packet_id {
            self.release_id(id);
        }
        Some(queued.publish)
    }

    /// A message leaves the state.
    fn forget(&mut self, publish: &Publish) {
        self.bytes = self.bytes.saturating_sub(weight(publish));
    }

    /// Marks a given identifier in use; false when it already is.
    pub(crate) fn claim_id(&mut self, packet_id: PacketId) -> bool {
        self.in_use.insert(packet_id.get())
    }

    /// Returns an identifier to the pool.
    pub(crate) fn release_id(&mut self, packet_id: PacketId) {
        self.in_use.remove(&packet_id.get());
        self.shrink_if_idle();
    }

    /// Queues a publish; QoS 1/2 ones already hold their identifier.
    pub(crate) fn enqueue(&mut self, publish: Publish, expires_at: Option<Instant>) {
        self.enqueue_stamped(publish, expires_at, 0);
    }

    /// Queues a publish that must wait for `stamp` (see [`Queued::stamp`]) before it goes out.
    pub(crate) fn enqueue_stamped(
        &mut self,
        publish: Publish,
        expires_at: Option<Instant>,
        stamp: u64,
    ) {
        self.bytes += weight(&publish);
        self.queued.push_back(Queued {
            publish,
            expires_at,
            stamp,
        });
    }

    /// A message that waited for `stamp` was sent without going through the queue.
    pub(crate) fn note_sent(&mut self, stamp: u64) {
        self.sent_stamp = self.sent_stamp.max(stamp);
    }

    /// The highest stamp of the queued messages sent since the last call (0: none).
    pub(crate) fn take_sent_stamp(&mut self) -> u64 {
        std::mem::take(&mut self.sent_stamp)
    }

    /// Moves queued publishes into the window while it has room; each goes out via `send`
    /// (QoS 0 ones without taking room). A message whose expiry has passed is handed to
    /// `expired` instead; the others carry the expiry interval that remains (MQTT-3.3.2-6).
    pub(crate) fn fill_window(
        &mut self,
        window: usize,
        now: Instant,
        mut send: impl FnMut(&Publish),
        mut expired: impl FnMut(Publish),
    ) {
        while self.inflight.len() < window
            || self
                .queued
                .front()
                .is_some_and(|q| q.publish.qos == QoS::AtMostOnce)
        {
            let Some(Queued {
                mut publish,
                expires_at,
                stamp,
            }) = self.queued.pop_front()
            else {
                break;
            };
            self.sent_stamp = self.sent_stamp.max(stamp);
            if let Some(deadline) = expires_at {
                let Some(left) = deadline
                    .checked_duration_since(now)
                    .filter(|d| !d.is_zero())
                else {
                    self.forget(&publish);
                    if let Some(id) = publish.packet_id {
                        self.release_id(id);
                    }
                    expired(publish);
                    continue;
                };
                // Round up: a message with time left must not arrive saying it has none.
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                publish.properties.message_expiry_interval =
                    Some(u32::try_from(secs).unwrap_or(u32::MAX));
            }
            send(&publish);
            if publish.qos == QoS::AtMostOnce {
                self.forget(&publish);
            } else {
                self.inflight.push_back(Inflight::Publish(publish));
            }
        }
    }

    /// Frees the queues' memory once they are empty, so idle sessions stay small.
    fn shrink_if_idle(&mut self) {
        if self.inflight.is_empty() && self.inflight.capacity() > 0 {
            self.inflight = VecDeque::new();
        }
        if self.queued.is_empty() && self.queued.capacity() > 0 {
            self.queued = VecDeque::new();
        }
        if self.queued.is_empty() && self.inflight.is_empty() {
            debug_assert_eq!(self.bytes, 0, "weights added and removed balance");
            self.bytes = 0;
        }
    }

    fn position(&self, packet_id: PacketId) -> Option<usize> {
        self.inflight
            .iter()
            .position(|entry| entry.packet_id() == Some(packet_id))
    }

    /// PUBACK: completes a QoS 1 publish.
    pub(crate) fn on_puback(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
        properties: AckProperties,
    ) -> Result<PublishOutcome, ProtocolError> {
        match self.position(packet_id) {
            Some(index)
                if matches!(
                    self.inflight.get(index),
                    Some(Inflight::Publish(p)) if p.qos == QoS::AtLeastOnce
                ) =>
            {
                if let Some(Inflight::Publish(publish)) = self.inflight.remove(index) {
                    self.forget(&publish);
                }
                self.release_id(packet_id);
                Ok(PublishOutcome {
                    packet_id,
                    reason_code,
                    properties,
                })
            }
            _ => Err(ProtocolError::UnknownPacketId(packet_id.get())),
        }
    }

    /// PUBREC: a refusal completes the publish; acceptance moves it to the PUBREL stage and
    /// returns the PUBREL to send.
    pub(crate) fn on_pubrec(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
        properties: AckProperties,
    ) -> Result<Result<PubRel, PublishOutcome>, ProtocolError> {
        let index = self
            .position(packet_id)
            .ok_or(ProtocolError::UnknownPacketId(packet_id.get()))?;
        match self.inflight.get_mut(index) {
            Some(entry @ Inflight::Publish(_)) => {
                if let Inflight::Publish(publish) = entry
                    && publish.qos != QoS::ExactlyOnce
                {
                    return Err(ProtocolError::UnknownPacketId(packet_id.get()));
                }
                if reason_code.is_error() {
                    // A refusing PUBREC ends the exchange; no PUBREL follows (section 4.3.3).
                    if let Some(Inflight::Publish(publish)) = self.inflight.remove(index) {
                        self.forget(&publish);
                    }
                    self.release_id(packet_id);
                    return Ok(Err(PublishOutcome {
                        packet_id,
                        reason_code,
                        properties,
                    }));
                }
                if let Inflight::Publish(publish) =
                    std::mem::replace(entry, Inflight::PubRel(packet_id))
                {
                    self.bytes = self.bytes.saturating_sub(weight(&publish));
                }
                Ok(Ok(PubRel::new(packet_id)))
            }
            // A repeated PUBREC: answer it again.
            Some(Inflight::PubRel(_)) => Ok(Ok(PubRel::new(packet_id))),
            None => Err(ProtocolError::UnknownPacketId(packet_id.get())),
        }
    }

    /// PUBCOMP: completes a QoS 2 publish.
    pub(crate) fn on_pubcomp(&mut self, comp: PubComp) -> Result<PublishOutcome, ProtocolError> {
        let packet_id = comp.packet_id;
        match self.position(packet_id) {
            Some(index) if matches!(self.inflight.get(index), Some(Inflight::PubRel(_))) => {
                self.inflight.remove(index);
                self.release_id(packet_id);
                // 0x92 Packet Identifier not found answers a PUBREL sent again (after a
                // reconnect, or a restart of the peer) for an exchange the peer had completed
                // and forgotten: it took the message with its PUBREC, so the publish succeeded.
                let reason_code = match comp.reason_code {
                    ReasonCode::PacketIdentifierNotFound => ReasonCode::Success,
                    other => other,
                };
                Ok(PublishOutcome {
                    packet_id,
                    reason_code,
                    properties: comp.properties,
                })
            }
            _ => Err(ProtocolError::UnknownPacketId(packet_id.get())),
        }
    }

    /// Prepares the state for a new connection.
    ///
    /// With the session resumed, unacknowledged PUBLISHes go back to the head of the queue with
    /// DUP set, in their original order, and PUBRELs are re-sent in theirs (MQTT-4.4.0-1,
    /// MQTT-4.6.0-1, MQTT-4.6.0-3). Without it, the peer forgot every exchange: PUBLISHes are
    /// sent again as new messages, and QoS 2 messages already at the PUBREL stage (the peer had
    /// accepted them) are reported complete rather than risk a duplicate.
    pub(crate) fn reconnect(
        &mut self,
        resumed: bool,
        mut send: impl FnMut(Packet),
        mut completed: impl FnMut(PublishOutcome),
    ) {
        let mut requeue = Vec::new();
        let mut pubrels = VecDeque::new();
        for entry in self.inflight.drain(..) {
            match entry {
                Inflight::Publish(mut publish) => {
                    publish.dup = resumed;
                    requeue.push(publish);
                }
                Inflight::PubRel(packet_id) if resumed => {
                    pubrels.push_back(Inflight::PubRel(packet_id))
                }
                Inflight::PubRel(packet_id) => {
                    self.in_use.remove(&packet_id.get());
                    completed(PublishOutcome {
                        packet_id,
                        reason_code: ReasonCode::Success,
                        properties: AckProperties::default(),
                    });
                }
            }
        }
        for entry in &pubrels {
            if let Inflight::PubRel(packet_id) = entry {
                send(Packet::PubRel(PubRel::new(*packet_id)));
            }
        }
        self.inflight = pubrels;
        for publish in requeue.into_iter().rev() {
            // Sent once already: what it waited for, it waited for then.
            self.queued.push_front(Queued {
                publish,
                expires_at: None,
                stamp: 0,
            });
        }
    }

    /// Removes queued publishes that `keep` rejects, returning them.
    pub(crate) fn drain_queued_where(
        &mut self,
        mut reject: impl FnMut(&Publish) -> bool,
    ) -> Vec<Publish> {
        let mut rejected = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queued.len());
        for queued in self.queued.drain(..) {
            if reject(&queued.publish) {
                rejected.push(queued.publish);
            } else {
                kept.push_back(queued);
            }
        }
        self.queued = kept;
        for publish in &rejected {
            self.forget(publish);
            if let Some(id) = publish.packet_id {
                self.in_use.remove(&id.get());
            }
        }
        rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::valid_name;

    fn qos1(id: u16) -> Publish {
        let mut p = Publish::new(valid_name("t"), "x");
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(id);
        p
    }

    #[test]
    fn ids_are_unique_and_reused_after_release() {
        let mut out = Outbound::default();
        let a = out.allocate_id().unwrap();
        let b = out.allocate_id().unwrap();
        assert_ne!(a, b);
        out.release_id(a);
        assert_eq!(out.in_use.len(), 1);
    }

    #[test]
    fn ids_wrap_and_skip_those_in_use() {
        let mut out = Outbound {
            next_id: u16::MAX - 1,
            ..Outbound::default()
        };
        let last = out.allocate_id().unwrap();
        assert_eq!(last.get(), u16::MAX);
        out.in_use.insert(1);
        assert_eq!(out.allocate_id().unwrap().get(), 2);
    }

    #[test]
    fn ids_run_out_at_65535() {
        let mut out = Outbound::default();
        for _ in 0..u16::MAX {
            out.allocate_id().unwrap();
        }
        assert_eq!(out.allocate_id(), Err(UsageError::PacketIdsExhausted));
    }

    #[test]
    fn window_limits_inflight_and_queue_keeps_order() {
        let mut out = Outbound::default();
        for id in 1..=5 {
            out.enqueue(qos1(id), None);
        }
        let now = Instant::now();
        let mut sent = Vec::new();
        out.fill_window(2, now, |p| sent.push(p.clone()), |_| panic!("expired"));
        assert_eq!(sent.len(), 2);
        assert_eq!(out.inflight.len(), 2);
        let done = out
            .on_puback(
                PacketId::new(1).unwrap(),
                ReasonCode::Success,
                AckProperties::default(),
            )
            .unwrap();
        assert_eq!(done.packet_id.get(), 1);
        out.fill_window(2, now, |p| sent.push(p.clone()), |_| panic!("expired"));
        let ids: Vec<_> = sent.iter().map(|p| p.packet_id.unwrap().get()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }
}
