//! Messages through the broker: a client's PUBLISH routed to every matching session, retained
//! messages kept and sent at SUBSCRIBE, subscriptions made and removed.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::closed_already;
use super::detach::{detach_publish, own_bytes};
use super::session::SubValue;
use super::{Broker, ClientInfo, DropReason, retained};
use crate::ReasonCode;
use crate::connection::{Message, UsageError};
use crate::packet::{
    AckProperties, Disconnect, Publish, QoS, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Version,
};
use crate::topic::TopicName;

/// Counts one more at `index` (a QoS, always in range).
fn bump(counts: &mut [u64; 3], index: usize) {
    if let Some(count) = counts.get_mut(index) {
        *count += 1;
    }
}

/// The broker's own topics: only [`Broker::publish`] publishes there.
pub const SYS_PREFIX: &str = "$SYS/";

impl Broker {
    pub(super) fn on_message(&mut self, id: u64, now: Instant, message: Message) {
        let Message { publish, ack } = message;
        let Some((client_id, username)) = self.client_info(id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        self.stats.messages_in += 1;
        bump(&mut self.stats.messages_in_by_qos, publish.qos as usize);
        self.stats.bytes_in += publish.payload.len() as u64;
        let version = conn.server.version();
        // Limits announced in CONNACK that the client broke.
        let violation = if publish.qos > self.config.max_qos {
            Some(ReasonCode::QoSNotSupported)
        } else if publish.retain && !self.config.retain_available {
            Some(ReasonCode::RetainNotSupported)
        } else {
            None
        };
        if let Some(code) = violation {
            closed_already(conn.server.disconnect(now, Disconnect::new(code)));
            return;
        }
        let info = ClientInfo {
            client_id: &client_id,
            username: username.as_deref(),
        };
        // `$SYS/…` is the broker's own (MQTT-4.7.2-1: topics starting with `$` are not for
        // clients to exchange messages on): refused like a topic the client may not publish to.
        let sys = publish.topic.starts_with(SYS_PREFIX);
        if sys || (!conn.trusted && !self.authorizer.publish(info, &publish.topic)) {
            self.stats.dropped.not_authorized += 1;
            if let Some(token) = ack {
                let result = conn.server.ack(now, token, ReasonCode::NotAuthorized);
                self.answered(id, now, result);
            }
            return;
        }
        let publisher = conn.session;
        let qos2 = (publish.qos == QoS::ExactlyOnce)
            .then_some(publish.packet_id)
            .flatten();
        self.flow.jammed.clear();
        let ops = self.store_ops();
        let reached = self.route(now, publisher, publish);
        if let (Some(key), Some(packet_id)) = (publisher, qos2) {
            // Awaiting PUBREL: a resend after a restart must not be routed again.
            self.store_pubrel(key, packet_id, true);
        }
        if self.store_ops() != ops {
            // Its acknowledgement waits until what it caused is durable.
            let current = self.current_batch();
            self.hold_until(Some(id), current);
        }
        if let Some(token) = ack {
            let code = if reached == 0 && version == Version::V5 {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::Success
            };
            // Acknowledged once every session it reached has room for it: until then the
            // publisher is held back (see `flow`).
            self.acknowledge(id, now, token, code);
        }
    }

    /// Stores or clears the retained message, then delivers to every matching session once, at
    /// the highest QoS of its matching subscriptions, with all their identifiers
    /// (MQTT-3.3.4-2, MQTT-3.3.4-4). Returns how many sessions it reached.
    pub(super) fn route(
        &mut self,
        now: Instant,
        publisher: Option<u32>,
        publish: Publish,
    ) -> usize {
        if publish.retain && self.config.retain_available {
            self.retain(now, &publish);
        }
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        {
            let Self {
                tree,
                sessions,
                conns,
                ..
            } = self;
            // A shared group prefers a member that is connected and has room in its window.
            let available = |key: u32| {
                sessions
                    .get(key as usize)
                    .and_then(Option::as_ref)
                    .and_then(|s| s.connection)
                    .and_then(|c| conns.get(&c))
                    .is_some_and(|c| c.server.queued() == 0)
            };
            tree.for_each_match(&publish.topic, available, |key, value| {
                targets.push((key, *value));
            });
        }
        targets.sort_unstable_by_key(|(key, _)| *key);
        // The message's own copy of its topic and payload, made once for all the sessions that
        // keep it (see `deliver`).
        let mut owned = None;
        let mut reached = 0;
        let mut index = 0;
        let check_delivery = self.authorizer.checks_delivery();
        while let Some(&(key, _)) = targets.get(index) {
            let mut qos = QoS::AtMostOnce;
            let mut retain_as_published = false;
            let mut identifiers = Vec::new();
            let mut any = false;
            while let Some(&(k, value)) = targets.get(index) {
                if k != key {
                    break;
                }
                index += 1;
                // MQTT-3.8.3-3: No Local keeps a client's own messages from it.
                if value.options.no_local && publisher == Some(key) {
                    continue;
                }
                any = true;
                qos = qos.max(value.options.qos);
                retain_as_published |= value.options.retain_as_published;
                identifiers.extend(value.identifier);
            }
            if !any {
                continue;
            }
            let mut out = publish.clone();
            out.qos = qos.min(publish.qos);
            // MQTT-3.3.1-12/-13: RETAIN is kept only with Retain As Published.
            out.retain = publish.retain && retain_as_published;
            if !identifiers.is_empty() || out.properties.get().is_some() {
                out.properties.subscription_identifiers = identifiers;
            }
            if check_delivery && !self.may_deliver(key, &out.topic) {
                self.stats.dropped.not_authorized += 1;
                continue;
            }
            self.deliver(now, key, out, &mut owned);
            reached += 1;
        }
        self.targets = targets;
        reached
    }

    pub(super) fn retain(&mut self, now: Instant, publish: &Publish) {
        if publish.payload.is_empty() {
            // MQTT-3.3.1-6: an empty retained message deletes the topic's retained message.
            if self.retained.remove(&publish.topic).is_some() {
                self.store_retained(&publish.topic, None);
            }
            return;
        }
        // Expired messages must not keep a new topic out.
        self.retained.purge_expired(now);
        let replaced = self
            .retained
            .get(&publish.topic)
            .map_or(0, |old| retained::weight(&old.publish));
        let over_count = self.retained.len() >= self.config.max_retained
            && !self.retained.contains(&publish.topic);
        let over_bytes = (self.retained.bytes() + retained::weight(publish))
            .saturating_sub(replaced)
            > self.config.max_retained_bytes;
        if over_count || over_bytes {
            // Still delivered, as published; only not kept.
            self.stats.dropped.retained += 1;
            return;
        }
        let mut stored = publish.clone();
        // Retained messages live long: their own copy frees the read buffer they arrived in.
        detach_publish(&mut stored);
        stored.dup = false;
        stored.packet_id = None;
        if let Some(properties) = stored.properties.get_mut() {
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
        }
        let expires_at = stored
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        if self.persisting() {
            self.store_retained(&stored.topic.clone(), Some((&stored, expires_at)));
        }
        self.retained.insert(stored, expires_at);
    }

    /// Hands one message to a session: its connection if connected, its queue if it persists.
    ///
    /// A message that waits (in a queue, or for a disconnected client) gets its own copy of its
    /// bytes first, shared through `owned` by every session of this routing that keeps it: a
    /// zero-copy slice would pin the whole read buffer it arrived in for as long as it waits.
    pub(super) fn deliver(
        &mut self,
        now: Instant,
        key: u32,
        publish: Publish,
        owned: &mut Option<(TopicName, Bytes)>,
    ) {
        let Some(session) = self.session(key) else {
            return;
        };
        match session.connection {
            Some(id) => self.deliver_connected(now, key, id, publish, owned),
            None => self.deliver_offline(now, key, publish, owned),
        }
    }

    /// Hands a message to the connection of session `key`.
    fn deliver_connected(
        &mut self,
        now: Instant,
        key: u32,
        id: u64,
        mut publish: Publish,
        owned: &mut Option<(TopicName, Bytes)>,
    ) {
        let payload = publish.payload.len() as u64;
        let qos = publish.qos as usize;
        let Some(session) = self.sessions.get(key as usize).and_then(Option::as_ref) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.server.would_queue(&publish) {
            own_bytes(&mut publish, owned);
        }
        let stored = session.stored && publish.qos != QoS::AtMostOnce;
        let copy = stored.then(|| publish.clone());
        // A message for a stored session goes out once its record is durable.
        let stamp = if stored {
            self.persist.as_deref().map_or(0, |p| p.next_batch())
        } else {
            0
        };
        match conn.server.publish_stamped(now, publish, stamp) {
            Ok(packet_id) => {
                self.stats.messages_out += 1;
                bump(&mut self.stats.messages_out_by_qos, qos);
                self.stats.bytes_out += payload;
                if let Some(mut copy) = copy {
                    // Recorded before the PUBLISH may go out (see `persist`).
                    copy.packet_id = packet_id;
                    self.store_queued(key, now, &copy);
                }
                self.mark_ready(id);
                self.note_delivered(id, now);
            }
            Err(UsageError::PacketTooLarge { .. }) => self.stats.dropped.too_large += 1,
            // The connection is closing: it can take nothing more.
            Err(_) => self.stats.dropped.queue_full += 1,
        }
    }

    /// Queues a message in disconnected session `key`, if its limits and the broker's allow.
    fn deliver_offline(
        &mut self,
        now: Instant,
        key: u32,
        mut publish: Publish,
        owned: &mut Option<(TopicName, Bytes)>,
    ) {
        let payload = publish.payload.len() as u64;
        let qos = publish.qos as usize;
        let Some(session) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        own_bytes(&mut publish, owned);
        let stored = session.stored && publish.qos != QoS::AtMostOnce;
        let copy = stored.then(|| publish.clone());
        let stamp = if stored {
            self.persist.as_deref().map_or(0, |p| p.next_batch())
        } else {
            0
        };
        let size = crate::connection::weight(&publish);
        let delivery = session.delivery.get_or_insert_with(Box::default);
        let before = delivery.queued_bytes();
        let result =
            if self.flow.queued_bytes.saturating_add(size) > self.config.max_total_queued_bytes {
                Err(DropReason::MemoryBudget)
            } else {
                delivery
                    .enqueue_stamped(
                        now,
                        publish,
                        self.config.max_session_queue,
                        self.config.max_session_queue_bytes,
                        stamp,
                    )
                    .map_err(|_| DropReason::QueueFull)
            };
        let after = delivery.queued_bytes();
        self.flow.queued_bytes = (self.flow.queued_bytes + after).saturating_sub(before);
        let client_id = session.client_id.clone();
        match result {
            Ok(enqueued) => {
                self.stats.messages_out += 1;
                bump(&mut self.stats.messages_out_by_qos, qos);
                self.stats.bytes_out += payload;
                if let Some(mut copy) = copy {
                    copy.packet_id = enqueued.packet_id;
                    self.store_queued(key, now, &copy);
                }
                if enqueued.dropped > 0 {
                    let dropped = enqueued.dropped as u64;
                    self.note_drop(now, &client_id, DropReason::QueueFull, dropped);
                }
            }
            Err(reason) => self.note_drop(now, &client_id, reason, 1),
        }
    }

    pub(super) fn on_subscribe(&mut self, id: u64, now: Instant, subscribe: Subscribe) {
        let Some((client_id, username)) = self.client_info(id) else {
            return;
        };
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let Some(key) = conn.session else {
            return;
        };
        let trusted = conn.trusted;
        // A bridge (mosquitto's `try_private`) gets none of its own messages back, with their
        // retain flag as published, whatever it asked.
        let bridge = conn.bridge;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained_for = Vec::new();
        for subscription in &subscribe.filters {
            let filter = &subscription.filter;
            let shared = filter.shared();
            let info = ClientInfo {
                client_id: &client_id,
                username: username.as_deref(),
            };
            if !trusted && !self.authorizer.subscribe(info, filter) {
                reason_codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            if shared.is_some() && !self.config.shared_subscriptions {
                reason_codes.push(ReasonCode::SharedSubscriptionsNotSupported);
                continue;
            }
            let mut options = subscription.options;
            options.qos = options.qos.min(self.config.max_qos);
            if bridge {
                options.no_local = true;
                options.retain_as_published = true;
            }
            let value = SubValue {
                options,
                identifier: subscribe.properties.subscription_identifier,
            };
            let existed = self.tree.insert(filter, key, value).is_some();
            if let Some(session) = self.session_mut(key) {
                session.filters.insert(filter.clone());
            }
            self.store_subscription(key, filter, &value);
            reason_codes.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages are not sent for shared subscriptions (section 4.8.2).
            let send_retained = shared.is_none()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtSubscribeIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained_for.push((filter.clone(), value));
            }
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            let result = conn.server.suback(
                now,
                SubAck {
                    packet_id: subscribe.packet_id,
                    properties: AckProperties::default(),
                    reason_codes,
                },
            );
            self.answered(id, now, result);
        }
        for (filter, value) in retained_for {
            self.send_retained(now, key, &filter, value);
        }
    }

    /// Whether the authorizer lets session `key` receive a message on `topic`.
    fn may_deliver(&self, key: u32, topic: &str) -> bool {
        let Some(session) = self.sessions.get(key as usize).and_then(Option::as_ref) else {
            return false;
        };
        let info = ClientInfo {
            client_id: &session.client_id,
            username: session.username.as_deref(),
        };
        self.authorizer.deliver(info, topic)
    }

    /// Sends the retained messages matching `filter`, RETAIN set (MQTT-3.3.1-9).
    pub(super) fn send_retained(&mut self, now: Instant, key: u32, filter: &str, value: SubValue) {
        self.retained.purge_expired(now);
        let mut matching = Vec::new();
        self.retained.for_each_match(filter, now, |r| {
            let mut publish = r.publish.clone();
            if let Some(at) = r.expires_at {
                let left = at.saturating_duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                publish.properties.message_expiry_interval =
                    Some(u32::try_from(secs).unwrap_or(u32::MAX));
            }
            publish.qos = publish.qos.min(value.options.qos);
            publish.retain = true;
            if value.identifier.is_some() || publish.properties.get().is_some() {
                publish.properties.subscription_identifiers =
                    value.identifier.into_iter().collect();
            }
            matching.push(publish);
        });
        if self.authorizer.checks_delivery() {
            matching.retain(|publish| self.may_deliver(key, &publish.topic));
        }
        for publish in matching {
            // Retained messages own their bytes already: a session that keeps one shares them.
            let mut owned = Some((publish.topic.clone(), publish.payload.clone()));
            self.deliver(now, key, publish, &mut owned);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, id: u64, now: Instant, unsubscribe: Unsubscribe) {
        let Some(key) = self.conns.get(&id).and_then(|c| c.session) else {
            return;
        };
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let removed = self.tree.remove(filter, key).is_some();
            if let Some(session) = self.session_mut(key) {
                session.filters.remove(filter);
            }
            if removed {
                self.unstore_subscription(key, filter);
            }
            reason_codes.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            let result = conn.server.unsuback(
                now,
                UnsubAck {
                    packet_id: unsubscribe.packet_id,
                    properties: AckProperties::default(),
                    reason_codes,
                },
            );
            self.answered(id, now, result);
        }
    }
}
