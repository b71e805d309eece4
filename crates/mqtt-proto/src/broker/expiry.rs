//! What a closed connection leaves behind: its will (published now, or after its delay), and
//! its session until that expires.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::detach::detach_publish;
use super::{Broker, BrokerEvent, ConnectionId, TimerKey};
use crate::ReasonCode;
use crate::connection::{DisconnectReason, ServerSession};
use crate::packet::{Publish, PublishProperties, Will};

impl Broker {
    /// Connection `id` ended: its session (if it got one) is kept or ended, its will is due,
    /// and the driver is told.
    pub(super) fn on_closed(&mut self, id: u64, now: Instant, reason: DisconnectReason) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closed {
            return;
        }
        conn.closed = true;
        let client_id = conn.client_id.clone();
        let username = conn.username.clone();
        let will = conn.will.take();
        let key = conn.session.take();
        let delivery = conn.server.take_session();
        // Its messages leave the connection's count; they are counted again below if the
        // session keeps them, each with bytes of its own now that it may wait for long.
        self.flow.queued_bytes = self
            .flow
            .queued_bytes
            .saturating_sub(std::mem::take(&mut conn.accounted));
        self.connection_closed(id, now);
        // The will is published unless the client disconnected normally (MQTT-3.1.2-8,
        // MQTT-3.14.4-3); reason 0x04 asks for it.
        let publish_will = match &reason {
            DisconnectReason::Remote(d) => d.reason_code == ReasonCode::DisconnectWithWillMessage,
            DisconnectReason::Refused { .. } => false,
            _ => true,
        };
        if let Some(key) = key {
            let will = will.filter(|_| publish_will);
            self.session_disconnected(id, key, now, &reason, delivery, will);
        }
        self.events.push_back(BrokerEvent::ClientDisconnected {
            connection: ConnectionId(id),
            client_id,
            username,
            reason,
        });
        self.events.push_back(BrokerEvent::Close(ConnectionId(id)));
    }

    /// Session `key` lost its connection `id`: it keeps `delivery` until it expires (or ends
    /// now, with an expiry of 0), and `will`, if any, is published now or after its delay.
    fn session_disconnected(
        &mut self,
        id: u64,
        key: u32,
        now: Instant,
        reason: &DisconnectReason,
        delivery: ServerSession,
        will: Option<Box<Will>>,
    ) {
        let max_expiry = self.config.max_session_expiry;
        let Some(session) = self.session_mut(key).filter(|s| s.connection == Some(id)) else {
            return;
        };
        session.connection = None;
        let kept_bytes = delivery.queued_bytes();
        session.delivery = Some(Box::new(delivery));
        if let DisconnectReason::Remote(d) = reason
            && let Some(expiry) = d.properties.session_expiry_interval
        {
            session.expiry_interval = expiry.min(max_expiry);
        }
        let expiry = session.expiry_interval;
        if expiry != 0
            && let Some(delivery) = &mut session.delivery
        {
            // What it kept in flight may now wait for long.
            delivery.for_each_publish_mut(detach_publish);
        }
        let mut will_now = None;
        if let Some(will) = will {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            if delay == 0 || expiry == 0 {
                will_now = Some(will);
            } else {
                // MQTT-3.1.3-9: at the end of the delay or of the session, whichever comes
                // first.
                let at = now + Duration::from_secs(u64::from(delay.min(expiry)));
                session.pending_will = Some(Box::new((*will, at)));
                self.timers.push(Reverse((at, TimerKey::Will(key))));
            }
        }
        self.flow.queued_bytes += kept_bytes;
        if expiry != 0 {
            let at = now + Duration::from_secs(u64::from(expiry));
            if let Some(session) = self.session_mut(key) {
                session.expires_at = Some(at);
            }
            self.timers
                .push(Reverse((at, TimerKey::SessionExpiry(key))));
            // Disconnected now, with its delayed will if any.
            self.store_session(key, now);
        }
        if let Some(will) = will_now {
            self.route(now, None, will_publish(*will));
        }
        if expiry == 0 {
            self.end_session(now, key);
        }
    }

    /// The will timer of session `key` fired: its will is published if still due.
    pub(super) fn will_timeout(&mut self, key: u32, now: Instant) {
        let due = self
            .session_mut(key)
            .and_then(|s| s.pending_will.take_if(|pending| pending.1 <= now));
        if let Some(pending) = due {
            let (will, _) = *pending;
            self.route(now, None, will_publish(will));
            self.store_session(key, now);
        }
    }

    /// The expiry timer of session `key` fired: it ends if it is still disconnected and due
    /// (a reconnect meanwhile cleared its deadline).
    pub(super) fn session_expiry_timeout(&mut self, key: u32, now: Instant) {
        let expired = self
            .session_mut(key)
            .is_some_and(|s| s.connection.is_none() && s.expires_at.is_some_and(|at| at <= now));
        if expired {
            self.end_session(now, key);
        }
    }

    /// Removes a session: its subscriptions, queue and pending will (published now, if any).
    pub(super) fn end_session(&mut self, now: Instant, key: u32) {
        let Some(mut session) = self.sessions.get_mut(key as usize).and_then(Option::take) else {
            return;
        };
        self.unstore_session(&mut session);
        for filter in &session.filters {
            self.tree.remove(filter, key);
        }
        if let Some(delivery) = &session.delivery {
            self.flow.queued_bytes = self
                .flow
                .queued_bytes
                .saturating_sub(delivery.queued_bytes());
        }
        self.by_client_id.remove(&session.client_id);
        self.free_sessions.push(key);
        if let Some(pending) = session.pending_will {
            let (will, _) = *pending;
            self.route(now, None, will_publish(will));
        }
    }
}

/// The PUBLISH a will becomes.
pub(super) fn will_publish(will: Will) -> Publish {
    let p = will.properties;
    Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: None,
        properties: PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..PublishProperties::default()
        }
        .into(),
        payload: will.payload,
    }
}
