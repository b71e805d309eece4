//! Clients arriving: CONNECT and authentication, then sessions taken over, resumed or started.
//! What a closed connection leaves behind is in `expiry`.

use std::time::Instant;

use bytestring::ByteString;

use super::detach::{detach, detach_will};
use super::session::BrokerSession;
use super::{AuthDecision, AuthRequest, Broker, BrokerEvent, ClientInfo, ConnectionId};
use crate::ReasonCode;
use crate::connection::ServerSession;
use crate::packet::{Auth, ConnAckProperties, Connect, Disconnect, QoS, Version};

impl Broker {
    pub(super) fn on_connect(&mut self, id: u64, now: Instant, mut connect: Connect) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(identity) = &conn.identity {
            connect.username = Some(ByteString::clone(identity));
            connect.password = None;
        }
        let client_id = if connect.client_id.is_empty() {
            // 3.1.1 accepts an empty identifier only with Clean Session (MQTT-3.1.3-8).
            if connect.protocol_version == Version::V3_1_1 && !connect.clean_start {
                self.refuse_connect(id, now, ReasonCode::ClientIdentifierNotValid);
                return;
            }
            self.next_assigned_id += 1;
            ByteString::from(format!("auto-{:016x}", self.next_assigned_id))
        } else {
            detach(&connect.client_id)
        };
        if !conn.trusted && client_id.starts_with(super::RESERVED_CLIENT_ID_PREFIX) {
            self.refuse_connect(id, now, ReasonCode::ClientIdentifierNotValid);
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
        let result = match decision {
            AuthDecision::Accept if connected => {
                let mut done = Auth::default();
                done.properties.authentication_method =
                    conn.server.authentication_method().map(ByteString::from);
                conn.server.auth(now, done)
            }
            AuthDecision::Accept => return self.complete_connect(id, now),
            AuthDecision::Refuse(code) if connected => {
                conn.server.disconnect(now, Disconnect::new(code))
            }
            AuthDecision::Refuse(code) => {
                conn.server.refuse(now, code, ConnAckProperties::default())
            }
            AuthDecision::Continue(properties) => conn.server.auth(
                now,
                Auth {
                    reason_code: ReasonCode::ContinueAuthentication,
                    properties,
                },
            ),
        };
        self.answered(id, now, result);
    }

    /// Refuses a client that sent CONNECT (CONNACK with `code`, then the connection closes).
    fn refuse_connect(&mut self, id: u64, now: Instant, code: ReasonCode) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let result = conn.server.refuse(now, code, ConnAckProperties::default());
            self.answered(id, now, result);
        }
    }

    /// Accepts a client whose authentication succeeded: its session taken over, resumed or
    /// started, then CONNACK.
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
        if !self.will_allowed(id, &client_id, &connect) {
            self.refuse_connect(id, now, ReasonCode::NotAuthorized);
            return;
        }
        let Some((key, session_present)) = self.open_session(id, now, &client_id, &connect) else {
            return;
        };
        let mut properties = self.connack_properties(&client_id, &connect);
        let Some((delivery, persistent)) = self.attach_session(id, key, &connect, &mut properties)
        else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.session = Some(key);
        conn.will = connect.will.map(|will| Box::new(detach_will(will)));
        // A stored session's acknowledgements change what is stored.
        conn.server.report_delivered = persistent && self.persist.is_some();
        match conn
            .server
            .accept(now, session_present, delivery, properties)
        {
            Ok(()) => self.events.push_back(BrokerEvent::ClientConnected {
                connection: ConnectionId(id),
                client_id,
                username: conn.username.clone(),
                session_present,
            }),
            // Closed meanwhile: the Disconnected event that said so gives the session back.
            Err(error) => self.answered(id, now, Err(error)),
        }
        if persistent {
            // Its CONNACK waits until this is durable.
            self.store_session(key, now);
        }
    }

    /// Whether the client may publish its will, if it has one. A will is a publish made in
    /// advance: it needs the same permission, checked now (as mosquitto does) rather than when
    /// nobody is left to tell.
    fn will_allowed(&self, id: u64, client_id: &ByteString, connect: &Connect) -> bool {
        let (Some(will), Some(conn)) = (&connect.will, self.conns.get(&id)) else {
            return true;
        };
        let info = ClientInfo {
            client_id,
            username: conn.username.as_deref(),
        };
        conn.trusted || self.authorizer.publish(info, &will.topic)
    }

    /// The session the client gets: the old one's connection is closed (takeover), Clean Start
    /// ends it, and a new one is made if none is left and `max_sessions` allows (else the client
    /// is refused, and `None`). Returns its key and whether it was present.
    fn open_session(
        &mut self,
        id: u64,
        now: Instant,
        client_id: &ByteString,
        connect: &Connect,
    ) -> Option<(u32, bool)> {
        // Session takeover (MQTT-3.1.4-3): the old connection is told and closed first.
        if let Some(&key) = self.by_client_id.get(client_id)
            && let Some(old) = self.session(key).and_then(|s| s.connection)
        {
            self.disconnect(ConnectionId(old), now, ReasonCode::SessionTakenOver);
        }
        let existing = self.by_client_id.get(client_id).copied();
        if connect.clean_start
            && let Some(key) = existing
        {
            // MQTT-3.1.2-4: Clean Start discards the old session.
            self.end_session(now, key);
        }
        if let Some(&key) = self.by_client_id.get(client_id) {
            return Some((key, true));
        }
        if self.by_client_id.len() >= self.config.max_sessions {
            self.stats.refused_sessions += 1;
            let code = match connect.protocol_version {
                Version::V5 => ReasonCode::QuotaExceeded,
                Version::V3_1_1 => ReasonCode::ServerUnavailable,
            };
            self.refuse_connect(id, now, code);
            return None;
        }
        let session = BrokerSession::new(client_id.clone(), connect.protocol_version);
        Some((self.insert_session(session), false))
    }

    /// Binds session `key` to connection `id` with the expiry granted (noted in `properties`
    /// when it is less than asked for), and takes the delivery state it kept. Returns that
    /// state and whether the session outlives the connection.
    fn attach_session(
        &mut self,
        id: u64,
        key: u32,
        connect: &Connect,
        properties: &mut ConnAckProperties,
    ) -> Option<(ServerSession, bool)> {
        let version = connect.protocol_version;
        let conn = self.conns.get(&id)?;
        let max_expiry = if conn.trusted {
            u32::MAX
        } else {
            self.config.max_session_expiry
        };
        let username = conn.username.clone();
        let expiry = match version {
            Version::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            Version::V3_1_1 if connect.clean_start => 0,
            Version::V3_1_1 => max_expiry,
        };
        let session = self.session_mut(key)?;
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
            let fresh = BrokerSession::new(session.client_id.clone(), version);
            let mut taken = std::mem::replace(session, fresh);
            self.unstore_session(&mut taken);
            if let Some(session) = self.session_mut(key) {
                *session = taken;
            }
            let current = self.current_batch();
            self.hold_until(Some(id), current);
        }
        let delivery = self.session_mut(key)?.delivery.take().map(|d| *d);
        let delivery = delivery.unwrap_or_default();
        // Counted again, by the connection, once it has them.
        self.flow.queued_bytes = self
            .flow
            .queued_bytes
            .saturating_sub(delivery.queued_bytes());
        Some((delivery, persistent))
    }

    /// What the CONNACK says of the broker: an assigned client identifier, and the features
    /// it lacks.
    fn connack_properties(&self, client_id: &ByteString, connect: &Connect) -> ConnAckProperties {
        let mut properties = ConnAckProperties::default();
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
        properties
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
}
