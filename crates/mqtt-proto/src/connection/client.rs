//! The client side: [`ClientConnection`].

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::inbound::Received;
use super::session::Request;
use super::timer::Timer;
use super::{
    AckToken, Acked, ClientSide, Core, DisconnectReason, OutboundAliases, ProtocolError,
    PublishOutcome, Session, UsageError, handle_ack,
};
use crate::ReasonCode;
use crate::codec::Limits;
use crate::packet::{
    Auth, ConnAck, ConnAckProperties, Connect, ConnectProperties, Disconnect, Packet, PacketId,
    PacketType, Publish, QoS, SubAck, Subscribe, SubscribeProperties, Subscription, UnsubAck,
    Unsubscribe, UnsubscribeProperties, Version, Will,
};
use crate::topic::{self, TopicFilter};

/// How a [`ClientConnection`] connects and behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Protocol version.
    pub version: Version,
    /// Client Identifier; empty asks the server to assign one (reused from the session on
    /// reconnect).
    pub client_id: ByteString,
    /// Clean Start (5.0) / Clean Session (3.1.1). With `false` the server may resume the
    /// session; a client resuming its own [`Session`] sets it to `false`.
    pub clean_start: bool,
    /// Keep Alive in seconds (0 disables it). A 5.0 server may override it in CONNACK.
    pub keep_alive: u16,
    /// The will message.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<ByteString>,
    /// Password.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0), sent as they are. Receive Maximum and Topic Alias Maximum here
    /// are also the limits this connection enforces; Maximum Packet Size defaults to
    /// `max_packet_size`.
    pub properties: ConnectProperties,
    /// The largest packet accepted from the server, announced to 5.0 servers when below the
    /// protocol's ceiling. Default: that ceiling (268,435,455 bytes), because a 3.1.1 server
    /// cannot learn a lower one and would send a larger message again at every reconnect.
    pub max_packet_size: u32,
    /// Hold PUBACK / PUBREC for received messages until [`ClientConnection::ack`].
    pub manual_ack: bool,
    /// The most QoS 1/2 publishes in flight at once. 5.0 servers announce their own Receive
    /// Maximum and the smaller applies; 3.1.1 has none, so this conservative default (10) keeps
    /// below brokers' silent limits (mosquitto's is 20).
    pub max_inflight: u16,
    /// The most QoS 1/2 publishes waiting for room in the in-flight window (default 10,000).
    pub max_queued: usize,
    /// How long to wait for CONNACK (default 30 s). The async client counts it from the start
    /// of the connection attempt: resolving, TCP and TLS take their time out of it.
    pub connect_timeout: Duration,
    /// How long to wait for PINGRESP before declaring the connection dead (default 30 s).
    pub ping_timeout: Duration,
    /// Say in CONNECT that this client is a bridge (default `false`): see [`Connect::bridge`].
    pub bridge: bool,
}

impl ClientConfig {
    /// A configuration with this version and client identifier and the defaults above:
    /// clean start, 60 s keep alive, automatic acknowledgements.
    pub fn new(version: Version, client_id: impl Into<ByteString>) -> Self {
        Self {
            version,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 60,
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
            manual_ack: false,
            max_inflight: 10,
            max_queued: 10_000,
            connect_timeout: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            bridge: false,
        }
    }
}

/// Where a [`ClientConnection`] is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// CONNECT queued or sent, CONNACK awaited (possibly in an AUTH exchange).
    Connecting,
    /// CONNACK accepted the connection.
    Connected,
    /// The connection ended; `ClientEvent::Disconnected` said why.
    Closed,
}

/// A message received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The PUBLISH, its topic restored if it came through a topic alias.
    pub publish: Publish,
    /// With manual acknowledgement, the token to pass to [`ClientConnection::ack`] (QoS 1 and 2).
    pub ack: Option<AckToken>,
}

/// What a [`ClientConnection`] tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// CONNACK accepted the connection.
    Connected {
        /// The server resumed the session.
        session_present: bool,
        /// The CONNACK properties (server limits, assigned identifier, …).
        properties: Box<ConnAckProperties>,
    },
    /// A message arrived.
    Message(Message),
    /// A QoS 1 or 2 publish completed: acknowledged, or refused with an error reason code.
    Published(PublishOutcome),
    /// A publish queued before CONNACK could not be sent under the server's limits.
    PublishDropped {
        /// Its packet identifier.
        packet_id: PacketId,
        /// Why.
        error: UsageError,
    },
    /// The SUBACK of a `subscribe`.
    Subscribed(SubAck),
    /// The UNSUBACK of an `unsubscribe`.
    Unsubscribed(UnsubAck),
    /// The server sent AUTH: continue the exchange with [`ClientConnection::auth`], or (reason
    /// Success) re-authentication succeeded.
    Auth(Auth),
    /// The server sent more unacknowledged QoS 1/2 messages than our Receive Maximum (5.0),
    /// which it must not (MQTT-3.3.4-9). Told once per connection. The messages are kept and
    /// acknowledged in order as usual: mosquitto 2.0 does this when it resumes a session with
    /// a backlog, and disconnecting would lose a clean session's messages. Only a server past
    /// the packet identifier space (65,535 unacknowledged) is disconnected.
    ReceiveMaximumExceeded {
        /// Our Receive Maximum.
        receive_maximum: u16,
    },
    /// The connection ended. Always the last event.
    Disconnected(DisconnectReason),
}

/// The client side of one MQTT connection, with no I/O.
///
/// Methods come in four kinds, in this order below: getters; input (`handle_bytes`,
/// `handle_eof`, `handle_timeout`); commands (`publish`, `subscribe`, `unsubscribe`, `ack`,
/// `auth`, `disconnect`), which return at once and never break the connection; and output
/// (`poll_transmit`, `poll_event`, `poll_timeout`). After any input or command, drain the three
/// outputs.
///
/// The CONNECT is queued by [`ClientConnection::new`]; write it once the transport is up. When
/// the connection ends, [`ClientConnection::into_session`] hands the session to the next one.
#[derive(Debug)]
pub struct ClientConnection {
    config: ClientConfig,
    core: Core<ClientSide>,
    session: Session,
    state: ClientState,
    session_present: bool,
    connack: Option<Box<ConnAckProperties>>,
    /// The keep alive in force (the server's, if it sent one).
    keep_alive: u16,
    /// The in-flight window: min(server Receive Maximum, `max_inflight`); 0 until CONNACK.
    window: usize,
    max_qos: QoS,
    retain_available: bool,
    wildcards: bool,
    shared: bool,
    subscription_ids: bool,
    /// Moves whenever the state [`ClientConnection::encode_session`] writes changes.
    session_changes: u64,
}

impl ClientConnection {
    /// Starts a connection: queues the CONNECT and arms the connect timeout.
    ///
    /// With `session`, the state of an earlier connection carries over; send the CONNECT with
    /// `clean_start: false` for the server to resume its side too.
    pub fn new(config: ClientConfig, session: Option<Session>, now: Instant) -> Self {
        let mut session = session.unwrap_or_default();
        let mut core = Core::<ClientSide>::new(config.version, Limits::new(config.max_packet_size));
        core.inbound.receive_maximum = config
            .properties
            .receive_maximum
            .map_or(u16::MAX, |max| max.get());
        core.inbound.topic_alias_maximum = match config.version {
            Version::V5 => config.properties.topic_alias_maximum.unwrap_or(0),
            Version::V3_1_1 => 0,
        };
        core.inbound.manual_ack = config.manual_ack;
        core.inbound.next_token = session.next_token;
        core.inbound.awaiting_pubrel = std::mem::take(&mut session.awaiting_pubrel);

        let mut connect = Connect::new(config.version, config.client_id.clone());
        if connect.client_id.is_empty()
            && let Some(assigned) = &session.assigned_client_id
        {
            connect.client_id = assigned.clone();
        }
        connect.clean_start = config.clean_start;
        connect.keep_alive = config.keep_alive;
        connect.will = config.will.clone();
        connect.username = config.username.clone();
        connect.password = config.password.clone();
        connect.bridge = config.bridge;
        if config.version == Version::V5 {
            connect.properties = config.properties.clone();
            if connect.properties.maximum_packet_size.is_none() {
                connect.properties.maximum_packet_size =
                    Limits::announced_max_packet_size(config.max_packet_size);
            }
        }
        core.send(Packet::Connect(Box::new(connect)));
        core.timers
            .set(Timer::Connect, now + config.connect_timeout);
        Self {
            keep_alive: config.keep_alive,
            config,
            core,
            session,
            state: ClientState::Connecting,
            session_present: false,
            connack: None,
            window: 0,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcards: true,
            shared: true,
            subscription_ids: true,
            session_changes: 0,
        }
    }

    // ---- getters ----

    /// Where the connection is in its life.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.config.version
    }

    /// Whether the server resumed the session (valid once connected).
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// The CONNACK properties, once connected.
    pub fn connack_properties(&self) -> Option<&ConnAckProperties> {
        self.connack.as_deref()
    }

    /// The keep alive in force, in seconds: the server's if it overrode ours.
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// The session state as it stands.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A counter that moves whenever the session state that
    /// [`ClientConnection::encode_session`] writes changes (the token counter aside): save the
    /// session when it differs from the value at the last save. It starts at 0 with each
    /// connection, whose session is then the one it was given.
    pub fn session_changes(&self) -> u64 {
        self.session_changes
    }

    /// Appends the session as it stands to `buf`, in the saved form of [`Session::encode`]:
    /// what [`ClientConnection::into_session`] would return, without ending the connection.
    ///
    /// To survive a crash, save it whenever [`ClientConnection::session_changes`] moved, before
    /// the bytes of the next [`ClientConnection::poll_transmit`] are written, and before the
    /// application learns that a publish completed. Then no PUBLISH leaves before it is saved,
    /// no PUBREL before its stage is, no PUBREC or PUBCOMP before the QoS 2 receive set is, and
    /// a restart resends exactly what the server may not have, with its packet identifier.
    pub fn encode_session(&self, buf: &mut BytesMut) -> Result<(), crate::codec::EncodeError> {
        super::session::Parts {
            assigned_client_id: self.session.assigned_client_id.as_ref(),
            outbound: &self.session.outbound,
            awaiting_pubrel: &self.core.inbound.awaiting_pubrel,
            next_token: self.core.inbound.next_token,
            requests: &self.session.requests,
            subscriptions: &self.session.subscriptions,
        }
        .encode(buf)
    }

    /// QoS 1/2 publishes in flight.
    pub fn inflight(&self) -> usize {
        self.session.outbound.inflight.len()
    }

    /// The in-flight window in force: at most this many QoS 1/2 publishes are unacknowledged.
    pub fn send_window(&self) -> usize {
        self.window
    }

    /// Received QoS 1 and 2 messages whose exchange is not finished: acknowledgement not yet
    /// sent, or (QoS 2) PUBREL not yet received. Zero means a disconnect now leaves the server
    /// nothing to redeliver.
    pub fn inbound_pending(&self) -> usize {
        self.core.inbound.unacknowledged()
    }

    /// Whether the connection has ended and its transmit queue is drained: close the transport.
    pub fn is_closed(&self) -> bool {
        self.state == ClientState::Closed && !self.core.has_transmit()
    }

    // ---- input ----

    /// Feeds bytes read from the transport.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.core.closed {
            return;
        }
        self.core.buffer(bytes);
        // The server is alive: anything it sends answers an outstanding PINGREQ.
        self.core.timers.stop(Timer::KeepAliveExpiry);
        loop {
            match self.core.next_packet() {
                Ok(Some(packet)) => {
                    if let Err(error) = self.handle_packet(now, packet) {
                        self.fail(error);
                    }
                    if self.core.closed {
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => return self.fail(error.into()),
            }
        }
    }

    /// The transport reached end of file.
    pub fn handle_eof(&mut self, _now: Instant) {
        if !self.core.closed {
            self.close(DisconnectReason::ConnectionLost);
        }
    }

    /// Time passed: fires the timers that are due. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(reason) = self.core.expired(now) {
            return self.close(reason);
        }
        if !self.core.closed && self.core.timers.expired(Timer::KeepAliveSend, now) {
            self.core.send(Packet::PingReq);
            // The first unanswered PINGREQ starts the clock: a keep alive shorter than the ping
            // timeout must not push it back with every PINGREQ (a dead server would then never
            // time out).
            if self.core.timers.get(Timer::KeepAliveExpiry).is_none() {
                self.core
                    .timers
                    .set(Timer::KeepAliveExpiry, now + self.config.ping_timeout);
            }
        }
    }

    // ---- commands ----

    /// Publishes a message. QoS 1 and 2 get a packet identifier (returned) and complete with
    /// [`ClientEvent::Published`]; they wait in a bounded queue while the in-flight window is
    /// full or the connection is not yet up. QoS 0 goes out with the next transmit, and only
    /// once connected ([`UsageError::NotConnected`] before).
    pub fn publish(
        &mut self,
        now: Instant,
        mut publish: Publish,
    ) -> Result<Option<PacketId>, UsageError> {
        if self.state == ClientState::Closed {
            return Err(UsageError::Closed);
        }
        // The name was checked when it was made; the empty one is for the aliases this
        // connection applies itself.
        if publish.topic.is_empty() {
            return Err(UsageError::InvalidTopic(topic::TopicError::Empty));
        }
        if self.config.version == Version::V3_1_1 {
            // 3.1.1 cannot carry them; dropping them silently would surprise the caller.
            if !publish.properties.is_empty() {
                return Err(UsageError::Encode(crate::codec::EncodeError::NotInV311(
                    crate::codec::V5Only::Properties(PacketType::Publish),
                )));
            }
        }
        publish.dup = false;
        if let Some(properties) = publish.properties.get_mut() {
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
        }
        publish.packet_id = None;
        if self.state == ClientState::Connected {
            self.check_publish(&publish)?;
        } else {
            // What cannot be encoded (a property longer than MQTT allows) could neither be sent
            // nor saved with the session; connected, the check above sizes it.
            publish.wire_len(self.config.version)?;
        }
        if publish.qos == QoS::AtMostOnce {
            if self.state != ClientState::Connected {
                return Err(UsageError::NotConnected);
            }
            self.core.send(Packet::Publish(publish));
            return Ok(None);
        }
        if self.session.outbound.queued.len() >= self.config.max_queued {
            return Err(UsageError::QueueFull);
        }
        let packet_id = self.session.outbound.allocate_id()?;
        publish.packet_id = Some(packet_id);
        self.session.outbound.enqueue(publish, None);
        self.session_changes += 1;
        self.fill_window(now);
        Ok(Some(packet_id))
    }

    /// Subscribes to one or more filters (5.0 properties may carry a Subscription Identifier).
    /// Returns the packet identifier the [`ClientEvent::Subscribed`] event will carry.
    pub fn subscribe(
        &mut self,
        _now: Instant,
        filters: Vec<Subscription>,
        properties: SubscribeProperties,
    ) -> Result<PacketId, UsageError> {
        if self.state == ClientState::Closed {
            return Err(UsageError::Closed);
        }
        if self.state == ClientState::Connected {
            for subscription in &filters {
                self.check_subscription(subscription, &properties)?;
            }
        }
        let packet_id = self.session.outbound.allocate_id()?;
        let subscribe = Subscribe {
            packet_id,
            properties,
            filters,
        };
        if let Err(error) = self.check_request(&Packet::Subscribe(subscribe.clone())) {
            self.session.outbound.release_id(packet_id);
            return Err(error);
        }
        self.request(Request::Subscribe(subscribe));
        Ok(packet_id)
    }

    /// Unsubscribes from one or more filters. Returns the packet identifier the
    /// [`ClientEvent::Unsubscribed`] event will carry.
    pub fn unsubscribe(
        &mut self,
        _now: Instant,
        filters: Vec<TopicFilter>,
        properties: UnsubscribeProperties,
    ) -> Result<PacketId, UsageError> {
        if self.state == ClientState::Closed {
            return Err(UsageError::Closed);
        }
        let packet_id = self.session.outbound.allocate_id()?;
        let unsubscribe = Unsubscribe {
            packet_id,
            properties,
            filters,
        };
        if let Err(error) = self.check_request(&Packet::Unsubscribe(unsubscribe.clone())) {
            self.session.outbound.release_id(packet_id);
            return Err(error);
        }
        self.request(Request::Unsubscribe(unsubscribe));
        Ok(packet_id)
    }

    /// Acknowledges a message received under manual acknowledgement. Its PUBACK / PUBREC goes
    /// out once every message that arrived before it is acknowledged too (MQTT-4.6.0-2).
    pub fn ack(&mut self, _now: Instant, token: AckToken) -> Result<(), UsageError> {
        if self.core.ack(token, ReasonCode::Success)? {
            self.session_changes += 1;
        }
        Ok(())
    }

    /// Sends AUTH: the next step of an enhanced authentication exchange (reason Continue
    /// authentication) or the start of re-authentication (reason Re-authenticate, once
    /// connected). The method must be the one given at connect (MQTT-4.12.0-5).
    pub fn auth(&mut self, _now: Instant, auth: Auth) -> Result<(), UsageError> {
        let method = self.config.properties.authentication_method.as_ref();
        let allowed = match auth.reason_code {
            ReasonCode::ContinueAuthentication => self.state != ClientState::Closed,
            ReasonCode::ReAuthenticate => self.state == ClientState::Connected,
            _ => false,
        };
        if self.config.version != Version::V5
            || !allowed
            || method.is_none()
            || auth.properties.authentication_method.as_ref() != method
        {
            return Err(UsageError::AuthNotAllowed);
        }
        let auth = Packet::from(auth);
        self.core.check_size(&auth)?;
        self.core.send(auth);
        Ok(())
    }

    /// Closes the connection with a DISCONNECT (3.1.1: the reason must be Normal disconnection
    /// and no properties). Reason 0x04 asks a 5.0 server to publish the will.
    pub fn disconnect(&mut self, _now: Instant, disconnect: Disconnect) -> Result<(), UsageError> {
        if self.state == ClientState::Closed {
            return Err(UsageError::Closed);
        }
        self.core.send_disconnect(&disconnect)?;
        self.close(DisconnectReason::Local(disconnect));
        Ok(())
    }

    // ---- output ----

    /// Appends every packet ready to send to `buf`. Returns whether anything was written.
    ///
    /// Packets are encoded when they are sent. When `buf` is empty the two buffers are swapped:
    /// no copy, and `buf`'s spare capacity is kept for the next packets, so reusing one buffer
    /// costs no allocation.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut BytesMut) -> bool {
        let wrote = self.core.poll_transmit(buf, true);
        if wrote && self.state == ClientState::Connected && self.keep_alive > 0 {
            self.core.timers.set(
                Timer::KeepAliveSend,
                now + Duration::from_secs(u64::from(self.keep_alive)),
            );
        }
        wrote
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.core.poll_event()
    }

    /// When to call [`ClientConnection::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Ends this connection's life and returns its session for the next one. Messages received
    /// but not acknowledged are forgotten: the server redelivers them.
    pub fn into_session(mut self) -> Session {
        self.core.inbound.end_connection();
        self.session.awaiting_pubrel = std::mem::take(&mut self.core.inbound.awaiting_pubrel);
        self.session.next_token = self.core.inbound.next_token;
        self.session
    }

    // ---- internals ----

    fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), ProtocolError> {
        if self.state == ClientState::Connecting {
            return match packet {
                Packet::ConnAck(connack) => self.on_connack(now, *connack),
                Packet::Auth(auth) if self.config.properties.authentication_method.is_some() => {
                    self.on_auth(*auth)
                }
                other => Err(ProtocolError::UnexpectedPacket(other.packet_type())),
            };
        }
        let packet = match handle_ack(&mut self.core, &mut self.session.outbound, packet)? {
            Acked::Completed(outcome) => {
                self.session_changes += 1;
                self.core.events.push_back(ClientEvent::Published(outcome));
                self.fill_window(now);
                return Ok(());
            }
            // A PUBREC moved a publish to its PUBREL stage, or a PUBREL ended a QoS 2 receipt
            // (or either was repeated, and changed nothing: a save too many).
            Acked::Released(_) | Acked::Releasing(_) => {
                self.session_changes += 1;
                return Ok(());
            }
            Acked::Other(packet) => packet,
        };
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::SubAck(ack) => {
                let Some(Request::Subscribe(subscribe)) = self.take_request(ack.packet_id) else {
                    return Err(ProtocolError::UnknownPacketId(ack.packet_id.get()));
                };
                if ack.reason_codes.len() != subscribe.filters.len() {
                    return Err(ProtocolError::UnexpectedPacket(PacketType::SubAck));
                }
                self.session.granted(&subscribe, &ack.reason_codes);
                self.core.events.push_back(ClientEvent::Subscribed(ack));
                Ok(())
            }
            Packet::UnsubAck(ack) => {
                let Some(Request::Unsubscribe(unsubscribe)) = self.take_request(ack.packet_id)
                else {
                    return Err(ProtocolError::UnknownPacketId(ack.packet_id.get()));
                };
                self.session.removed(&unsubscribe);
                self.core.events.push_back(ClientEvent::Unsubscribed(ack));
                Ok(())
            }
            Packet::PingResp => Ok(()),
            Packet::Disconnect(disconnect) if self.config.version == Version::V5 => {
                self.close(DisconnectReason::Remote(disconnect));
                Ok(())
            }
            Packet::Auth(auth) if self.config.properties.authentication_method.is_some() => {
                self.on_auth(*auth)
            }
            other => Err(ProtocolError::UnexpectedPacket(other.packet_type())),
        }
    }

    fn on_connack(&mut self, now: Instant, connack: ConnAck) -> Result<(), ProtocolError> {
        let ConnAck {
            session_present,
            reason_code,
            properties,
        } = connack;
        if reason_code.is_error() {
            self.close(DisconnectReason::Refused {
                reason_code,
                properties: Box::new(properties),
            });
            return Ok(());
        }
        if session_present && self.config.clean_start {
            return Err(ProtocolError::UnexpectedSessionPresent);
        }
        self.core.timers.stop(Timer::Connect);
        self.state = ClientState::Connected;
        self.session_present = session_present;
        // Resumed or not, the exchanges start again (and an identifier may be assigned).
        self.session_changes += 1;

        let server_receive_max = properties.receive_maximum.map_or(u16::MAX, |m| m.get());
        let own_max = self.config.max_inflight.max(1);
        self.window = usize::from(match self.config.version {
            Version::V5 => server_receive_max.min(own_max),
            Version::V3_1_1 => own_max,
        });
        self.max_qos = properties.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        self.retain_available = properties.retain_available.unwrap_or(true);
        self.wildcards = properties.wildcard_subscription_available.unwrap_or(true);
        self.shared = properties.shared_subscription_available.unwrap_or(true);
        self.subscription_ids = properties
            .subscription_identifiers_available
            .unwrap_or(true);
        self.core.peer_max_packet_size = properties.maximum_packet_size.map(|m| m.get());
        self.core.aliases = OutboundAliases::new(properties.topic_alias_maximum.unwrap_or(0));
        if let Some(keep_alive) = properties.server_keep_alive {
            // The server's value replaces ours (MQTT-3.2.2-21).
            self.keep_alive = keep_alive;
        }
        if let Some(assigned) = &properties.assigned_client_identifier {
            self.session.assigned_client_id = Some(assigned.clone());
        }
        if self.keep_alive > 0 {
            self.core.timers.set(
                Timer::KeepAliveSend,
                now + Duration::from_secs(u64::from(self.keep_alive)),
            );
        }

        // Session state, as section 4.1 and MQTT-3.2.2-5 require: resumed, or started anew.
        if !session_present {
            self.core.inbound.awaiting_pubrel.clear();
        }
        let core = &mut self.core;
        let mut reported = Vec::new();
        self.session.outbound.reconnect(
            session_present,
            |packet| core.send(packet),
            |outcome| reported.push(ClientEvent::Published(outcome)),
        );
        core.events.extend(reported);
        for request in self.session.requests.clone() {
            core.send(match request {
                Request::Subscribe(s) => Packet::Subscribe(s),
                Request::Unsubscribe(u) => Packet::Unsubscribe(u),
            });
        }
        if !session_present {
            self.restore_subscriptions();
        }
        self.core.events.push_back(ClientEvent::Connected {
            session_present,
            properties: Box::new(properties.clone()),
        });
        self.connack = Some(Box::new(properties));
        self.drop_unsendable();
        self.fill_window(now);
        Ok(())
    }

    /// Re-issues the granted subscriptions, one SUBSCRIBE per Subscription Identifier.
    fn restore_subscriptions(&mut self) {
        let mut groups: Vec<(Option<crate::packet::SubscriptionId>, Vec<Subscription>)> =
            Vec::new();
        for active in &self.session.subscriptions {
            match groups.iter_mut().find(|(id, _)| *id == active.identifier) {
                Some((_, filters)) => filters.push(active.subscription.clone()),
                None => groups.push((active.identifier, vec![active.subscription.clone()])),
            }
        }
        for (identifier, filters) in groups {
            let Ok(packet_id) = self.session.outbound.allocate_id() else {
                return;
            };
            let mut properties = SubscribeProperties::default();
            if self.config.version == Version::V5 {
                properties.subscription_identifier = identifier;
            }
            self.request(Request::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            }));
        }
    }

    /// Fails the queued publishes that the server's limits, learnt from CONNACK, forbid.
    fn drop_unsendable(&mut self) {
        let (max_qos, retain_available) = (self.max_qos, self.retain_available);
        let version = self.config.version;
        let max_size = self.core.peer_max_packet_size;
        let mut errors = Vec::new();
        let dropped = self.session.outbound.drain_queued_where(|publish| {
            let error = check_publish(publish, version, max_qos, retain_available, max_size);
            let rejected = error.is_err();
            if let Err(error) = error {
                errors.push(error);
            }
            rejected
        });
        for (publish, error) in dropped.into_iter().zip(errors) {
            if let Some(packet_id) = publish.packet_id {
                self.core
                    .events
                    .push_back(ClientEvent::PublishDropped { packet_id, error });
            }
        }
    }

    fn check_publish(&self, publish: &Publish) -> Result<(), UsageError> {
        check_publish(
            publish,
            self.config.version,
            self.max_qos,
            self.retain_available,
            self.core.peer_max_packet_size,
        )
    }

    fn check_subscription(
        &self,
        subscription: &Subscription,
        properties: &SubscribeProperties,
    ) -> Result<(), UsageError> {
        let filter = &subscription.filter;
        if !self.wildcards && filter.contains(['+', '#']) {
            return Err(UsageError::SubscriptionFeatureNotSupported(
                "wildcard subscriptions",
            ));
        }
        if !self.shared && filter.is_shared() {
            return Err(UsageError::SubscriptionFeatureNotSupported(
                "shared subscriptions",
            ));
        }
        if !self.subscription_ids && properties.subscription_identifier.is_some() {
            return Err(UsageError::SubscriptionFeatureNotSupported(
                "subscription identifiers",
            ));
        }
        Ok(())
    }

    fn check_request(&self, packet: &Packet) -> Result<(), UsageError> {
        self.core.check_size(packet)
    }

    /// Records a SUBSCRIBE / UNSUBSCRIBE and sends it now if connected (else on CONNACK).
    fn request(&mut self, request: Request) {
        self.session_changes += 1;
        if self.state == ClientState::Connected {
            self.core.send(match &request {
                Request::Subscribe(s) => Packet::Subscribe(s.clone()),
                Request::Unsubscribe(u) => Packet::Unsubscribe(u.clone()),
            });
        }
        self.session.requests.push(request);
    }

    fn take_request(&mut self, packet_id: PacketId) -> Option<Request> {
        let index = self
            .session
            .requests
            .iter()
            .position(|r| r.packet_id() == packet_id)?;
        self.session_changes += 1;
        self.session.outbound.release_id(packet_id);
        Some(self.session.requests.remove(index))
    }

    fn on_publish(&mut self, publish: Publish) -> Result<(), ProtocolError> {
        let core = &mut self.core;
        let mut acks = Vec::new();
        let receiving = core.inbound.awaiting_pubrel.len();
        let received = core
            .inbound
            .on_publish(publish, self.config.version, |p| acks.push(p))?;
        if core.inbound.awaiting_pubrel.len() != receiving {
            self.session_changes += 1;
        }
        for packet in acks {
            core.send(packet);
        }
        if core.inbound.take_excess() {
            core.events.push_back(ClientEvent::ReceiveMaximumExceeded {
                receive_maximum: core.inbound.receive_maximum,
            });
        }
        if let Received::Deliver(publish, ack) = received {
            core.events
                .push_back(ClientEvent::Message(super::Message { publish, ack }));
        }
        Ok(())
    }

    fn on_auth(&mut self, auth: Auth) -> Result<(), ProtocolError> {
        if auth.properties.authentication_method != self.config.properties.authentication_method {
            return Err(ProtocolError::UnexpectedPacket(PacketType::Auth));
        }
        if self.state == ClientState::Connecting
            && auth.reason_code != ReasonCode::ContinueAuthentication
        {
            return Err(ProtocolError::UnexpectedPacket(PacketType::Auth));
        }
        self.core.events.push_back(ClientEvent::Auth(auth));
        Ok(())
    }

    fn fill_window(&mut self, now: Instant) {
        if self.state != ClientState::Connected {
            return;
        }
        let core = &mut self.core;
        self.session.outbound.fill_window(
            self.window,
            now,
            |publish| core.send_publish(publish),
            |_| {},
        );
    }

    /// A protocol violation by the server: DISCONNECT with its reason code first (5.0), then
    /// the event.
    fn fail(&mut self, error: ProtocolError) {
        let reason = self.core.fail(error, self.state == ClientState::Connected);
        self.close(reason);
    }

    fn close(&mut self, reason: DisconnectReason) {
        self.state = ClientState::Closed;
        self.window = 0;
        self.core.close(reason);
    }
}

fn check_publish(
    publish: &Publish,
    version: Version,
    max_qos: QoS,
    retain_available: bool,
    max_size: Option<u32>,
) -> Result<(), UsageError> {
    if publish.qos > max_qos {
        return Err(UsageError::QoSNotSupported {
            requested: publish.qos,
            max: max_qos,
        });
    }
    if publish.retain && !retain_available {
        return Err(UsageError::RetainNotSupported);
    }
    // Sized whether or not the server set a maximum: what cannot be encoded is refused here.
    let size = publish.wire_len(version)?;
    match max_size {
        Some(max) if size > max as usize => Err(UsageError::PacketTooLarge { size, max }),
        _ => Ok(()),
    }
}
