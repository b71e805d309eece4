//! Publishes this side receives: topic aliases, the QoS 2 receive set, our Receive Maximum, and
//! acknowledgements released in arrival order whatever order the application acks in.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU16;

use crate::ReasonCode;
use crate::packet::{Packet, PacketId, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Version};
use crate::topic::TopicName;

use super::ProtocolError;

/// Names one received QoS 1 or 2 message for [`ack`](super::ClientConnection::ack) under manual
/// acknowledgement. Tokens are unique within a session; one from a closed connection is refused
/// (the peer redelivers that message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AckToken(pub(crate) u64);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    token: u64,
    packet_id: PacketId,
    qos: QoS,
    acked: bool,
    /// The reason code the acknowledgement carries (5.0).
    reason: ReasonCode,
}

/// What became of a received PUBLISH.
#[derive(Debug)]
// Short-lived return value, moved once: boxing the PUBLISH would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    /// Deliver it; `Some` token when its acknowledgement waits for the application.
    Deliver(Publish, Option<AckToken>),
    /// A repeat of a QoS 2 message already delivered: not delivered again.
    Duplicate,
}

/// Per-connection inbound state; `awaiting_pubrel` and `next_token` live on in the session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inbound {
    /// Our Receive Maximum (MQTT-3.3.4-9): enforced in 5.0 when `enforce_receive_maximum`
    /// (a server), tolerated and reported otherwise (a client: see [`Inbound::on_publish`]).
    pub(crate) receive_maximum: u16,
    pub(crate) enforce_receive_maximum: bool,
    /// The peer went past our Receive Maximum on this connection; `excess_unreported` until the
    /// role has told its application.
    excess_seen: bool,
    excess_unreported: bool,
    /// Our Topic Alias Maximum.
    pub(crate) topic_alias_maximum: u16,
    pub(crate) manual_ack: bool,
    pub(crate) next_token: u64,
    /// Received QoS 1/2 messages not yet acknowledged on the wire, in arrival order.
    pending: VecDeque<Pending>,
    /// QoS 2 identifiers of messages the application has taken (delivered with automatic
    /// acknowledgement, or acked) whose PUBREL has not arrived. A PUBLISH with one of these
    /// identifiers is a duplicate, on this connection or a later one, whether or not its PUBREC
    /// has gone out yet.
    pub(crate) awaiting_pubrel: BTreeSet<u16>,
    aliases: Vec<Option<TopicName>>,
}

impl Inbound {
    /// Messages counting against our Receive Maximum: those without PUBACK or PUBCOMP sent.
    pub(crate) fn unacknowledged(&self) -> usize {
        let both = self
            .pending
            .iter()
            .filter(|p| {
                p.qos == QoS::ExactlyOnce && self.awaiting_pubrel.contains(&p.packet_id.get())
            })
            .count();
        self.pending.len() + self.awaiting_pubrel.len() - both
    }

    /// Handles a PUBLISH: resolves its topic alias, enforces limits, and decides delivery.
    /// Automatic acknowledgements go out through `send`.
    pub(crate) fn on_publish(
        &mut self,
        mut publish: Publish,
        version: Version,
        send: impl FnMut(Packet),
    ) -> Result<Received, ProtocolError> {
        let alias = publish
            .properties
            .get_mut()
            .and_then(|p| p.topic_alias.take());
        if let Some(alias) = alias {
            if publish.properties.is_empty() {
                // The alias was its only property: a queued message holds no allocation.
                publish.properties.take();
            }
            self.resolve_alias(alias, &mut publish.topic)?;
        }
        let Some(packet_id) = publish.packet_id else {
            return Ok(Received::Deliver(publish, None));
        };
        if self.pending.iter().any(|p| p.packet_id == packet_id) {
            // Redelivered while its acknowledgement is still with the application.
            return Ok(Received::Duplicate);
        }
        if publish.qos == QoS::ExactlyOnce && self.awaiting_pubrel.contains(&packet_id.get()) {
            // Already taken by the application: acknowledge again, in turn, but never deliver
            // twice (section 4.3.3).
            self.pending.push_back(Pending {
                token: u64::MAX,
                packet_id,
                qos: QoS::ExactlyOnce,
                acked: true,
                reason: ReasonCode::Success,
            });
            self.release(send);
            return Ok(Received::Duplicate);
        }
        let unacknowledged = self.unacknowledged();
        if version == Version::V5 && unacknowledged >= usize::from(self.receive_maximum) {
            // A client keeps what a broker sends past its Receive Maximum (mosquitto 2.0 does,
            // resuming a session with a backlog): dropping the connection would lose a clean
            // session's messages. Its acknowledgements still go out in order and throttle a
            // broker that counts them; the packet identifier space is the hard limit.
            if self.enforce_receive_maximum || unacknowledged >= usize::from(u16::MAX) {
                return Err(ProtocolError::ReceiveMaximumExceeded);
            }
            if !self.excess_seen {
                self.excess_seen = true;
                self.excess_unreported = true;
            }
        }
        let token = self.next_token;
        self.next_token += 1;
        self.pending.push_back(Pending {
            token,
            packet_id,
            qos: publish.qos,
            acked: !self.manual_ack,
            reason: ReasonCode::Success,
        });
        if !self.manual_ack && publish.qos == QoS::ExactlyOnce {
            self.awaiting_pubrel.insert(packet_id.get());
        }
        if self.manual_ack {
            Ok(Received::Deliver(publish, Some(AckToken(token))))
        } else {
            self.release(send);
            Ok(Received::Deliver(publish, None))
        }
    }

    fn resolve_alias(
        &mut self,
        alias: NonZeroU16,
        topic: &mut TopicName,
    ) -> Result<(), ProtocolError> {
        let invalid = ProtocolError::TopicAliasInvalid(alias.get());
        if alias.get() > self.topic_alias_maximum {
            return Err(invalid);
        }
        let index = usize::from(alias.get() - 1);
        if topic.is_empty() {
            *topic = self.aliases.get(index).cloned().flatten().ok_or(invalid)?;
        } else {
            if self.aliases.len() <= index {
                self.aliases.resize(index + 1, None);
            }
            if let Some(slot) = self.aliases.get_mut(index) {
                *slot = Some(topic.clone());
            }
        }
        Ok(())
    }

    /// Acknowledges with a reason code (5.0; 3.1.1 acknowledgements carry none). A refusal
    /// (0x80 or above) of a QoS 2 message ends its exchange at the PUBREC.
    pub(crate) fn ack_with(
        &mut self,
        token: AckToken,
        reason: ReasonCode,
        send: impl FnMut(Packet),
    ) -> bool {
        let Some(entry) = self
            .pending
            .iter_mut()
            .find(|p| p.token == token.0 && !p.acked)
        else {
            return false;
        };
        entry.acked = true;
        entry.reason = reason;
        if entry.qos == QoS::ExactlyOnce && reason.is_success() {
            self.awaiting_pubrel.insert(entry.packet_id.get());
        }
        self.release(send);
        true
    }

    /// Sends the acknowledgements at the head of the arrival order that are ready
    /// (MQTT-4.6.0-2: PUBACKs in the order the PUBLISHes arrived; likewise PUBRECs).
    fn release(&mut self, mut send: impl FnMut(Packet)) {
        while self.pending.front().is_some_and(|p| p.acked) {
            let Some(done) = self.pending.pop_front() else {
                break;
            };
            match done.qos {
                QoS::ExactlyOnce => {
                    let mut rec = PubRec::new(done.packet_id);
                    rec.reason_code = done.reason;
                    send(Packet::PubRec(rec));
                }
                _ => {
                    let mut ack = PubAck::new(done.packet_id);
                    ack.reason_code = done.reason;
                    send(Packet::PubAck(ack));
                }
            }
        }
        if self.pending.is_empty() {
            // Idle connections keep no queue memory.
            self.pending = VecDeque::new();
        }
    }

    /// PUBREL: the QoS 2 exchange ends with PUBCOMP; in 5.0 an unknown identifier is answered
    /// with Packet Identifier not found.
    pub(crate) fn on_pubrel(&mut self, pubrel: &PubRel, version: Version) -> PubComp {
        let mut comp = PubComp::new(pubrel.packet_id);
        if !self.awaiting_pubrel.remove(&pubrel.packet_id.get()) && version == Version::V5 {
            comp.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        comp
    }

    /// Whether the peer went past our Receive Maximum since this was last asked (once per
    /// connection).
    pub(crate) fn take_excess(&mut self) -> bool {
        std::mem::take(&mut self.excess_unreported)
    }

    /// Forgets what belongs to the connection: unacknowledged messages (the peer redelivers
    /// them) and topic aliases. The QoS 2 receive set stays with the session.
    pub(crate) fn end_connection(&mut self) {
        self.pending.clear();
        self.aliases.clear();
        self.excess_seen = false;
        self.excess_unreported = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::valid_name;

    fn publish(id: u16, qos: QoS) -> Publish {
        let mut p = Publish::new(valid_name("t"), "x");
        p.qos = qos;
        p.packet_id = PacketId::new(id);
        p
    }

    fn acked_ids(sent: &[Packet]) -> Vec<u16> {
        sent.iter()
            .map(|p| match p {
                Packet::PubAck(a) => a.packet_id.get(),
                Packet::PubRec(r) => r.packet_id.get(),
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn mqtt_4_6_0_2_manual_acks_leave_in_arrival_order() {
        let mut inbound = Inbound {
            receive_maximum: 10,
            manual_ack: true,
            ..Inbound::default()
        };
        let mut sent = Vec::new();
        let mut tokens = Vec::new();
        for id in 1..=3 {
            match inbound
                .on_publish(publish(id, QoS::AtLeastOnce), Version::V5, |p| sent.push(p))
                .unwrap()
            {
                Received::Deliver(_, Some(token)) => tokens.push(token),
                other => panic!("{other:?}"),
            }
        }
        assert!(inbound.ack_with(tokens[2], ReasonCode::Success, |p| sent.push(p)));
        assert!(inbound.ack_with(tokens[1], ReasonCode::Success, |p| sent.push(p)));
        assert!(
            sent.is_empty(),
            "nothing may pass the unacknowledged first message"
        );
        assert!(inbound.ack_with(tokens[0], ReasonCode::Success, |p| sent.push(p)));
        assert_eq!(acked_ids(&sent), [1, 2, 3]);
        assert!(!inbound.ack_with(tokens[0], ReasonCode::Success, |p| sent.push(p)));
    }

    #[test]
    fn qos2_duplicate_is_not_delivered_twice() {
        let mut inbound = Inbound {
            receive_maximum: 10,
            ..Inbound::default()
        };
        let mut sent = Vec::new();
        let first = inbound
            .on_publish(publish(7, QoS::ExactlyOnce), Version::V5, |p| sent.push(p))
            .unwrap();
        assert!(matches!(first, Received::Deliver(_, None)));
        let mut again = publish(7, QoS::ExactlyOnce);
        again.dup = true;
        let second = inbound
            .on_publish(again, Version::V5, |p| sent.push(p))
            .unwrap();
        assert!(matches!(second, Received::Duplicate));
        assert_eq!(acked_ids(&sent), [7, 7]);
        let comp = inbound.on_pubrel(&PubRel::new(PacketId::new(7).unwrap()), Version::V5);
        assert_eq!(comp.reason_code, ReasonCode::Success);
        let unknown = inbound.on_pubrel(&PubRel::new(PacketId::new(7).unwrap()), Version::V5);
        assert_eq!(unknown.reason_code, ReasonCode::PacketIdentifierNotFound);
    }

    #[test]
    fn mqtt_3_3_4_9_receive_maximum_is_enforced() {
        let mut inbound = Inbound {
            receive_maximum: 2,
            enforce_receive_maximum: true,
            manual_ack: true,
            ..Inbound::default()
        };
        for id in 1..=2 {
            inbound
                .on_publish(publish(id, QoS::AtLeastOnce), Version::V5, |_| {})
                .unwrap();
        }
        let third = inbound.on_publish(publish(3, QoS::AtLeastOnce), Version::V5, |_| {});
        assert!(matches!(third, Err(ProtocolError::ReceiveMaximumExceeded)));
    }

    #[test]
    fn a_peer_past_our_receive_maximum_is_tolerated_and_reported_once() {
        let mut inbound = Inbound {
            receive_maximum: 2,
            manual_ack: true,
            ..Inbound::default()
        };
        for id in 1..=5 {
            let received = inbound.on_publish(publish(id, QoS::AtLeastOnce), Version::V5, |_| {});
            assert!(matches!(received, Ok(Received::Deliver(..))), "{id}");
        }
        assert!(inbound.take_excess());
        assert!(!inbound.take_excess(), "once per connection");
        assert_eq!(inbound.unacknowledged(), 5);
    }

    #[test]
    fn topic_aliases_are_learned_and_bounded() {
        let mut inbound = Inbound {
            topic_alias_maximum: 2,
            ..Inbound::default()
        };
        let mut first = Publish::new(valid_name("a/b"), "1");
        first.properties.topic_alias = NonZeroU16::new(2);
        match inbound.on_publish(first, Version::V5, |_| {}).unwrap() {
            Received::Deliver(p, _) => assert_eq!(p.topic, "a/b"),
            other => panic!("{other:?}"),
        }
        let mut second = Publish::new(TopicName::empty(), "2");
        second.properties.topic_alias = NonZeroU16::new(2);
        match inbound.on_publish(second, Version::V5, |_| {}).unwrap() {
            Received::Deliver(p, _) => {
                assert_eq!(p.topic, "a/b");
                // The alias was its only property: the message keeps no allocation for them.
                assert!(p.properties.get().is_none());
            }
            other => panic!("{other:?}"),
        }
        let mut unknown = Publish::new(TopicName::empty(), "3");
        unknown.properties.topic_alias = NonZeroU16::new(1);
        assert!(matches!(
            inbound.on_publish(unknown, Version::V5, |_| {}),
            Err(ProtocolError::TopicAliasInvalid(1))
        ));
        let mut too_big = Publish::new(valid_name("c"), "4");
        too_big.properties.topic_alias = NonZeroU16::new(3);
        assert!(matches!(
            inbound.on_publish(too_big, Version::V5, |_| {}),
            Err(ProtocolError::TopicAliasInvalid(3))
        ));
    }
}
