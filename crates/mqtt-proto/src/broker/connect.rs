//! Clients arriving and leaving: CONNECT and authentication, sessions taken over, resumed or
//! started, and what a closed connection leaves behind (its will, its session's expiry).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::detach::{detach, detach_publish, detach_will};
use super::session::BrokerSession;
use super::{AuthDecision, AuthRequest, Broker, BrokerEvent, ClientInfo, ConnectionId, TimerKey};
use crate::ReasonCode;
use crate::connection::DisconnectReason;
use crate::packet::{
    Auth, ConnAckProperties, Connect, Disconnect, Publish, PublishProperties, QoS, Version, Will,
};

impl Broker {
    pub(super) fn on_connect(&mut self, id: u64, now: Instant, mut connect: Connect) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(identity) = &conn.identity {
            connect.username = Some(identity.clone());
            connect.password = None;
        }
        let client_id = if connect.client_id.is_empty() {
            // 3.1.1 accepts an empty identifier only with Clean Session (MQTT-3.1.3-8).
            if connect.protocol_version == Version::V3_1_1 && !connect.clean_start {
                let _ = conn.server.refuse(
                    now,
                    ReasonCode::ClientIdentifierNotValid,
                    ConnAckProperties::default(),
                );
                return;
            }
            self.next_assigned_id += 1;
            ByteString::from(format!("auto-{:016x}", self.next_assigned_id))
        } else {
            detach(&connect.client_id)
        };
        if !conn.trusted && client_id.starts_with(super::RESERVED_CLIENT_ID_PREFIX) {
            let _ = conn.server.refuse(
                now,
                ReasonCode::ClientIdentifierNotValid,
                ConnAckProperties::default(),
            );
            return;
        }
        conn.client_id = Some(client_id);
        conn.bridge = connect.bridge;
        conn.username = connect.username.as_ref().map(detach);
        if conn.identity.is_some() || conn.trusted {
            self.apply_auth_decision(id, now, AuthDecision::Accept);
            return;
        }
        if self.defer_auth {
            conn.auth_pending = true;
            self.events.push_back(BrokerEvent::Authenticate {
                connection: ConnectionId(id),
                request: AuthRequest::Connect(Box::new(connect)),
            });
            return;
        }
        let decision = self.authenticator.connect(&connect);
        self.apply_auth_decision(id, now, decision);
    }

    pub(super) fn on_auth(&mut self, id: u64, now: Instant, auth: Auth) {
        let Some((client_id, username)) = self.client_info(id) else {
            return;
        };
        if self.defer_auth {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.auth_pending = true;
            }
            self.events.push_back(BrokerEvent::Authenticate {
                connection: ConnectionId(id),
                request: AuthRequest::Auth {
                    client_id,
                    username,
                    auth: Box::new(auth),
                },
            });
            return;
        }
        let info = ClientInfo {
            client_id: &client_id,
            username: username.as_deref(),
        };
        let decision = self.authenticator.auth(info, &auth);
        self.apply_auth_decision(id, now, decision);
    }

    /// Carries out an authentication step's decision: CONNACK (after the session is set up) or
    /// a refusal, the next AUTH of an exchange, or the outcome of a re-authentication.
    pub(super) fn apply_auth_decision(&mut self, id: u64, now: Instant, decision: AuthDecision) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let connected = conn.session.is_some();
        // Each refused command below means the connection closed meanwhile: nothing to answer.
        match decision {
            AuthDecision::Accept if connected => {
                let mut done = Auth::default();
                done.properties.authentication_method =
                    conn.server.authentication_method().map(ByteString::from);
                let _ = conn.server.auth(now, done);
            }
            AuthDecision::Accept => self.complete_connect(id, now),
            AuthDecision::Refuse(code) if connected => {
                let _ = conn.server.disconnect(now, Disconnect::new(code));
            }
            AuthDecision::Refuse(code) => {
                let _ = conn.server.refuse(now, code, ConnAckProperties::default());
            }
            AuthDecision::Continue(properties) => {
                let _ = conn.server.auth(
                    now,
                    Auth {
                        reason_code: ReasonCode::ContinueAuthentication,
                        properties,
                    },
                );
            }
        }
    }

    pub(super) fn complete_connect(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let Some(connect) = conn.server.connect_packet().cloned() else {
            return;
        };
        let Some(client_id) = conn.client_id.clone() else {
            return;
        };
        let version = connect.protocol_version;
        let trusted = conn.trusted;

        // A will is a publish made in advance: it needs the same permission, checked now (as
        // mosquitto does) rather than when nobody is left to tell.
        if let Some(will) = &connect.will {
            let username = conn.username.clone();
            let info = ClientInfo {
                client_id: &client_id,
                username: username.as_deref(),
            };
            if !trusted && !self.authorizer.publish(info, &will.topic) {
                if let Some(conn) = self.conns.get_mut(&id) {
                    let _ = conn.server.refuse(
                        now,
                        ReasonCode::NotAuthorized,
                        ConnAckProperties::default(),
                    );
                }
                return;
            }
        }

        // Session takeover (MQTT-3.1.4-3): the old connection is told and closed first.
        if let Some(&key) = self.by_client_id.get(&client_id)
            && let Some(old) = self.session(key).and_then(|s| s.connection)
        {
            self.disconnect(ConnectionId(old), now, ReasonCode::SessionTakenOver);
        }
        let existing = self.by_client_id.get(&client_id).copied();
        if connect.clean_start
            && let Some(key) = existing
        {
            // MQTT-3.1.2-4: Clean Start discards the old session.
            self.end_session(now, key);
        }
        let existing = self.by_client_id.get(&client_id).copied();
        let session_present = existing.is_some();
        if existing.is_none() && self.by_client_id.len() >= self.config.max_sessions {
            let code = match version {
                Version::V5 => ReasonCode::QuotaExceeded,
                Version::V3_1_1 => ReasonCode::ServerUnavailable,
            };
            self.stats.refused_sessions += 1;
            if let Some(conn) = self.conns.get_mut(&id) {
                let _ = conn.server.refuse(now, code, ConnAckProperties::default());
            }
            return;
        }
        let key = match existing {
            Some(key) => key,
            None => self.insert_session(BrokerSession::new(client_id.clone(), version)),
        };
        let max_expiry = if trusted {
            u32::MAX
        } else {
            self.config.max_session_expiry
        };
        let expiry = match version {
            Version::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            Version::V3_1_1 if connect.clean_start => 0,
            Version::V3_1_1 => max_expiry,
        };
        let mut properties = ConnAckProperties::default();
        let username = self.conns.get(&id).and_then(|c| c.username.clone());
        let Some(session) = self.session_mut(key) else {
            return;
        };
        session.version = version;
        session.username = username;
        session.connection = Some(id);
        session.expires_at = None;
        // A reconnect within the will delay cancels the will (section 3.1.3.2.2).
        session.pending_will = None;
        session.expiry_interval = expiry.min(max_expiry);
        if expiry > max_expiry {
            properties.session_expiry_interval = Some(max_expiry);
        }
        let persistent = session.expiry_interval != 0;
        if !persistent && session.stored {
            // It ends with this connection now: a crash must not bring it back.
            let mut taken =
                std::mem::replace(session, BrokerSession::new(client_id.clone(), version));
            self.unstore_session(&mut taken);
            if let Some(session) = self.session_mut(key) {
                *session = taken;
            }
            let current = self.current_batch();
            self.hold_until(Some(id), current);
        }
        let Some(session) = self.session_mut(key) else {
            return;
        };
        let delivery = session.delivery.take().map(|d| *d).unwrap_or_default();
        // Counted again, by the connection, once it has them.
        self.flow.queued_bytes = self
            .flow
            .queued_bytes
            .saturating_sub(delivery.queued_bytes());
        if connect.client_id.is_empty() {
            properties.assigned_client_identifier = Some(client_id.clone());
        }
        if self.config.max_qos < QoS::ExactlyOnce {
            properties.maximum_qos = Some(self.config.max_qos);
        }
        if !self.config.retain_available {
            properties.retain_available = Some(false);
        }
        if !self.config.shared_subscriptions {
            properties.shared_subscription_available = Some(false);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.session = Some(key);
        conn.will = connect.will.clone().map(|will| Box::new(detach_will(will)));
        // A stored session's acknowledgements change what is stored.
        conn.server.report_delivered = persistent && self.persist.is_some();
        if conn
            .server
            .accept(now, session_present, delivery, properties)
            .is_ok()
        {
            self.events.push_back(BrokerEvent::ClientConnected {
                connection: ConnectionId(id),
                client_id,
                username: conn.username.clone(),
                session_present,
            });
        }
        if persistent {
            // Its CONNACK waits until this is durable.
            self.store_session(key, now);
        }
    }

    /// Gives a new session a slot and its client id.
    pub(super) fn insert_session(&mut self, session: BrokerSession) -> u32 {
        let client_id = session.client_id.clone();
        let session = Box::new(session);
        let key = match self.free_sessions.pop() {
            Some(key) => {
                if let Some(slot) = self.sessions.get_mut(key as usize) {
                    *slot = Some(session);
                }
                key
            }
            None => {
                self.sessions.push(Some(session));
                u32::try_from(self.sessions.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.by_client_id.insert(client_id, key);
        key
    }

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
            let max_expiry = self.config.max_session_expiry;
            if let Some(session) = self.session_mut(key)
                && session.connection == Some(id)
            {
                session.connection = None;
                let kept_bytes = delivery.queued_bytes();
                session.delivery = Some(Box::new(delivery));
                if let DisconnectReason::Remote(d) = &reason
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
                if let Some(will) = will.filter(|_| publish_will) {
                    let delay = will.properties.will_delay_interval.unwrap_or(0);
                    if delay == 0 || expiry == 0 {
                        will_now = Some(will);
                    } else {
                        // MQTT-3.1.3-9: at the end of the delay or of the session, whichever
                        // comes first.
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
        }
        self.events.push_back(BrokerEvent::ClientDisconnected {
            connection: ConnectionId(id),
            client_id,
            username,
            reason,
        });
        self.events.push_back(BrokerEvent::Close(ConnectionId(id)));
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
