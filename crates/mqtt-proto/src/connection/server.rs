//! The server side of one connection: [`ServerConnection`].

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::inbound::Received;
use super::outbound::Outbound;
use super::timer::Timer;
use super::{
    AckToken, Acked, Core, DisconnectReason, Message, OutboundAliases, ProtocolError,
    PublishOutcome, ServerSession, ServerSide, UsageError, handle_ack,
};
use crate::ReasonCode;
use crate::codec::{DecodeError, Limits};
use crate::packet::{
    Auth, ConnAck, ConnAckProperties, Connect, Disconnect, Packet, PacketId, PacketType, Publish,
    QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};

/// Events decoded ahead of the application: input beyond them waits in the read buffer, as
/// bytes, until they are polled.
const INPUT_BATCH: usize = 16;

/// Limits a [`ServerConnection`] enforces and announces.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The largest packet accepted from the client, announced in 5.0 when below the protocol's
    /// own ceiling. Default: that ceiling (268,435,455 bytes), because a 3.1.1 client cannot
    /// learn a lower one; a broker bounds what partly received packets hold in total instead
    /// (`BrokerConfig::max_incoming_bytes`).
    pub max_packet_size: u32,
    /// How many unacknowledged QoS 1/2 publishes the client may have in flight (default 100).
    pub receive_maximum: u16,
    /// How many topic aliases the client may use (default 16).
    pub topic_alias_maximum: u16,
    /// The longest keep alive allowed, in seconds; a longer or zero one is replaced by this
    /// through Server Keep Alive (5.0). `None` accepts the client's.
    pub max_keep_alive: Option<u16>,
    /// How long the client has to send CONNECT (default 10 s).
    pub connect_timeout: Duration,
    /// The in-flight window towards 3.1.1 clients, which announce no Receive Maximum (default
    /// 100, as many as a 5.0 client may send us). Measured with 10 publishers feeding one 3.1.1
    /// subscriber: a window of 20 relayed 155,000 messages/s (0.57 of rumqttd's rate in the
    /// same run), 100 relayed 407,000 (1.49), 1,000 relayed 846,000; 100 keeps what a client
    /// must hold unacknowledged as modest as a 5.0 client's default.
    pub max_inflight_v311: u16,
    /// How many messages may wait for room in the client's window before the queue counts as
    /// full ([`ServerConnection::is_congested`]; default 1,000). The connection itself queues
    /// without limit: its owner pushes back on whatever feeds it (a broker withholds the
    /// publishers' acknowledgements), so the queue stays near this.
    pub max_queued: usize,
    /// Like `max_queued`, in bytes of messages kept for the client, in flight or queued
    /// (default 4 MiB).
    pub max_queued_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
            receive_maximum: 100,
            topic_alias_maximum: 16,
            max_keep_alive: None,
            connect_timeout: Duration::from_secs(10),
            max_inflight_v311: 100,
            max_queued: 1000,
            max_queued_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Where a [`ServerConnection`] is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Waiting for CONNECT.
    AwaitingConnect,
    /// CONNECT received; the application decides with `accept` or `refuse` (possibly after an
    /// AUTH exchange).
    Authenticating,
    /// CONNACK accepted the client.
    Connected,
    /// The connection ended; `ServerEvent::Disconnected` said why.
    Closed,
}

/// What a [`ServerConnection`] tells the application (the broker).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The client sent CONNECT: answer with [`ServerConnection::accept`] or
    /// [`ServerConnection::refuse`] (or continue an AUTH exchange first).
    Connect(Box<Connect>),
    /// The client sent AUTH: the next step of an exchange, or re-authentication.
    Auth(Auth),
    /// A message from the client; QoS 1/2 carry a token to [`ServerConnection::ack`] once the
    /// message is safely routed.
    Message(Message),
    /// A SUBSCRIBE: answer with [`ServerConnection::suback`].
    Subscribe(Subscribe),
    /// An UNSUBSCRIBE: answer with [`ServerConnection::unsuback`].
    Unsubscribe(Unsubscribe),
    /// A QoS 1/2 message sent to the client completed.
    Delivered(PublishOutcome),
    /// The client's PUBREL completed a QoS 2 message it sent (PUBCOMP went out): its packet
    /// identifier is free again.
    Released(PacketId),
    /// The client's PUBREC accepted a QoS 2 message sent to it (PUBREL went out): from now on
    /// the exchange resumes with PUBREL, never with the message again.
    Releasing(PacketId),
    /// A queued message to the client expired before it could be sent (MQTT-3.3.2-5).
    Expired(Publish),
    /// The connection ended. Always the last event.
    Disconnected(DisconnectReason),
}

/// The server side of one MQTT connection, with no I/O.
///
/// Methods are sorted as on [`super::ClientConnection`]: getters, input (`handle_bytes`,
/// `handle_eof`, `handle_timeout`), commands (`accept`, `refuse`, `auth`, `publish`, `ack`,
/// `suback`, `unsuback`, `disconnect`), output (`poll_transmit`, `poll_event`, `poll_timeout`).
#[derive(Debug)]
pub struct ServerConnection {
    config: ServerConfig,
    core: Core<ServerSide>,
    state: ServerState,
    /// Deliveries to the client in flight and queued. `None` while there are none: most of a
    /// broker's connections are idle most of the time, and an empty one is 112 bytes.
    outbound: Option<Box<Outbound>>,
    /// The CONNECT, kept only until `accept` or `refuse`.
    connect: Option<Box<Connect>>,
    /// What later packets are checked against: the authentication method and the Session
    /// Expiry Interval of the CONNECT.
    /// Boxed: rare, and most connections are idle ones (24 bytes each).
    auth_method: Option<Box<str>>,
    connect_session_expiry: u32,
    keep_alive: u16,
    window: usize,
    /// Input is buffered, not processed ([`ServerConnection::pause_input`]).
    input_paused: bool,
    /// The time of the latest input, for the packets decoded as events are polled.
    last_input: Instant,
    /// Whether acknowledged deliveries are reported ([`ServerEvent::Delivered`]); the broker
    /// router has no use for them and gets one per message it relays at QoS 1 or 2.
    pub(crate) report_delivered: bool,
}

impl ServerConnection {
    /// A new connection, waiting for CONNECT within the connect timeout.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let mut core = Core::<ServerSide>::new(Version::V5, Limits::new(config.max_packet_size));
        core.timers
            .set(Timer::Connect, now + config.connect_timeout);
        core.inbound.manual_ack = true;
        core.inbound.receive_maximum = config.receive_maximum.max(1);
        core.inbound.enforce_receive_maximum = true;
        core.inbound.topic_alias_maximum = config.topic_alias_maximum;
        Self {
            config,
            core,
            state: ServerState::AwaitingConnect,
            outbound: None,
            connect: None,
            auth_method: None,
            connect_session_expiry: 0,
            keep_alive: 0,
            window: 0,
            input_paused: false,
            last_input: now,
            report_delivered: true,
        }
    }

    // ---- getters ----

    /// Where the connection is in its life.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The client's protocol version (5.0 until CONNECT says otherwise).
    pub fn version(&self) -> Version {
        self.core.version
    }

    /// The CONNECT, from its arrival until `accept` or `refuse`.
    pub fn connect_packet(&self) -> Option<&Connect> {
        self.connect.as_deref()
    }

    /// The Authentication Method of the CONNECT (5.0 enhanced authentication), if any.
    pub fn authentication_method(&self) -> Option<&str> {
        self.auth_method.as_deref()
    }

    /// The keep alive in force, in seconds.
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// QoS 1/2 messages to the client in flight.
    pub fn inflight(&self) -> usize {
        self.outbound.as_ref().map_or(0, |o| o.inflight.len())
    }

    /// Messages to the client waiting for room in its window.
    pub fn queued(&self) -> usize {
        self.outbound.as_ref().map_or(0, |o| o.queued.len())
    }

    /// What the messages kept for the client weigh, in bytes, in flight and queued.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.as_ref().map_or(0, |o| o.bytes)
    }

    /// Whether the client's queue is full: `max_queued` messages wait for its window, or the
    /// messages kept for it reach `max_queued_bytes`. Whoever feeds the connection should stop
    /// until it is not ([`ServerConnection::publish`] still queues).
    pub fn is_congested(&self) -> bool {
        self.queued() >= self.config.max_queued
            || self.queued_bytes() >= self.config.max_queued_bytes
    }

    /// Whether `publish` would wait in the queue rather than go out at once: the client's window
    /// is full or others wait before it. A message that waits is kept for a while, and should
    /// not share memory with a large read buffer.
    pub fn would_queue(&self, publish: &Publish) -> bool {
        publish.qos != QoS::AtMostOnce
            && (self.state != ServerState::Connected
                || self.queued() > 0
                || self.inflight() >= self.window
                || publish.properties.message_expiry_interval.is_some())
    }

    /// Whether more input is useful now. It is not while input is paused
    /// ([`ServerConnection::pause_input`]), or while the client waits for authentication and has
    /// already sent a packet that must wait for its outcome: bytes given meanwhile are only
    /// buffered, so a driver should stop reading until this turns true again.
    pub fn wants_input(&self) -> bool {
        if self.core.closed {
            return true;
        }
        let waits_for_auth = self.state == ServerState::Authenticating
            && self
                .core
                .peek_type()
                .is_some_and(|t| t != PacketType::Auth as u8);
        !self.input_paused && !waits_for_auth
    }

    /// Bytes received and not yet processed (part of a packet, or input held while paused).
    pub fn buffered_input(&self) -> usize {
        self.core.buffered()
    }

    /// The size of the packet being received, while only part of it has arrived: what it will
    /// hold in memory once complete.
    pub fn partial_packet_len(&self) -> Option<usize> {
        self.core.partial_packet_len()
    }

    /// How many packets have been received and decoded on this connection.
    pub fn received_packets(&self) -> u64 {
        self.core.decoded
    }

    /// Whether the connection has ended and its transmit queue is drained: close the transport.
    pub fn is_closed(&self) -> bool {
        self.state == ServerState::Closed && !self.core.has_transmit()
    }

    /// Whether there is something to transmit.
    pub fn has_transmit(&self) -> bool {
        self.core.has_transmit()
    }

    // ---- input ----

    /// Feeds bytes read from the transport. While input is paused they are only buffered.
    ///
    /// Packets are decoded a few at a time, as their events are polled: whoever handles the
    /// events can pause the input between two messages, however many one read brought.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.core.closed {
            return;
        }
        self.last_input = now;
        self.core.buffer(bytes);
        if self.input_paused {
            return;
        }
        if self.keep_alive > 0 {
            // MQTT-3.1.2-24: one and a half keep-alive intervals since the last packet.
            let grace = Duration::from_millis(u64::from(self.keep_alive) * 1500);
            self.core.timers.set(Timer::KeepAliveExpiry, now + grace);
        }
        self.process_input(now);
    }

    /// Handles the complete packets in the read buffer, until [`INPUT_BATCH`] events wait.
    fn process_input(&mut self, now: Instant) {
        while !self.core.closed && !self.input_paused && self.core.events.len() < INPUT_BATCH {
            // Until CONNACK, only AUTH is processed after CONNECT (MQTT-3.1.4-6); the rest
            // waits in the buffer.
            if self.state == ServerState::Authenticating
                && self.core.peek_type() != Some(PacketType::Auth as u8)
            {
                return;
            }
            match self.core.next_packet() {
                Ok(Some(packet)) => {
                    if let Err(error) = self.handle_packet(now, packet) {
                        self.fail(error);
                    }
                }
                Ok(None) => return,
                Err(error) => return self.fail_decode(error),
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
        let Some(reason) = self.core.expired(now) else {
            return;
        };
        if reason == DisconnectReason::KeepAliveTimeout && self.core.version == Version::V5 {
            self.core.send(Packet::Disconnect(Disconnect::new(
                ReasonCode::KeepAliveTimeout,
            )));
        }
        self.close(reason);
    }

    // ---- commands ----

    /// Stops processing input: what arrives is buffered until
    /// [`ServerConnection::resume_input`]. The keep-alive timeout is suspended meanwhile (the
    /// client's PINGREQs wait unread). A broker pauses a publisher whose messages it cannot take
    /// yet; the driver should stop reading its transport ([`ServerConnection::wants_input`]).
    pub fn pause_input(&mut self, _now: Instant) {
        if !self.core.closed {
            self.input_paused = true;
            self.core.timers.stop(Timer::KeepAliveExpiry);
        }
    }

    /// Processes what was buffered while input was paused, and whatever comes next.
    pub fn resume_input(&mut self, now: Instant) {
        if !self.input_paused {
            return;
        }
        self.input_paused = false;
        self.last_input = now;
        if self.state == ServerState::Connected && self.keep_alive > 0 {
            let grace = Duration::from_millis(u64::from(self.keep_alive) * 1500);
            self.core.timers.set(Timer::KeepAliveExpiry, now + grace);
        }
        self.process_input(now);
    }

    /// Makes room to receive `additional` more bytes in one allocation (a large packet whose size
    /// its fixed header announced).
    pub fn reserve_input(&mut self, additional: usize) {
        self.core.reserve_input(additional);
    }

    /// Accepts the client: sends CONNACK with `properties` (the limits this connection
    /// enforces are added), resumes `session` (resending its unacknowledged messages, DUP set,
    /// in order), and starts processing what the client sent after CONNECT.
    pub fn accept(
        &mut self,
        now: Instant,
        session_present: bool,
        session: ServerSession,
        mut properties: ConnAckProperties,
    ) -> Result<(), UsageError> {
        if self.state != ServerState::Authenticating {
            return Err(UsageError::Closed);
        }
        let Some(connect) = self.connect.take() else {
            return Err(UsageError::Closed);
        };
        let version = connect.protocol_version;
        self.keep_alive = connect.keep_alive;
        if let Some(max) = self.config.max_keep_alive
            && (self.keep_alive == 0 || self.keep_alive > max)
            && version == Version::V5
        {
            self.keep_alive = max;
            properties.server_keep_alive = Some(max);
        }
        let client_receive_max = connect
            .properties
            .receive_maximum
            .map_or(u16::MAX, |m| m.get());
        self.window = usize::from(match version {
            Version::V5 => client_receive_max,
            Version::V3_1_1 => self.config.max_inflight_v311.max(1),
        });
        self.core.peer_max_packet_size = connect.properties.maximum_packet_size.map(|m| m.get());
        self.core.aliases =
            OutboundAliases::new(connect.properties.topic_alias_maximum.unwrap_or(0));
        if version == Version::V5 {
            properties.receive_maximum =
                NonZeroU16::new(self.config.receive_maximum.max(1)).filter(|m| m.get() != u16::MAX);
            properties.maximum_packet_size =
                Limits::announced_max_packet_size(self.config.max_packet_size);
            properties.topic_alias_maximum =
                Some(self.config.topic_alias_maximum).filter(|m| *m > 0);
        } else {
            properties = ConnAckProperties::default();
        }
        self.core.send(Packet::ConnAck(Box::new(ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties,
        })));
        self.core.timers.stop(Timer::Connect);
        if self.keep_alive > 0 {
            let grace = Duration::from_millis(u64::from(self.keep_alive) * 1500);
            self.core.timers.set(Timer::KeepAliveExpiry, now + grace);
        }
        self.state = ServerState::Connected;
        self.outbound = (!session.outbound.is_idle()).then(|| Box::new(session.outbound));
        self.core.inbound.awaiting_pubrel = session.awaiting_pubrel;
        if let Some(outbound) = self.outbound.as_mut() {
            let core = &mut self.core;
            let mut reported = Vec::new();
            outbound.reconnect(
                session_present,
                |packet| core.send(packet),
                |outcome| reported.push(ServerEvent::Delivered(outcome)),
            );
            core.events.extend(reported);
        }
        self.fill_window(now);
        // Packets the client pipelined behind its CONNECT.
        self.last_input = now;
        self.process_input(now);
        Ok(())
    }

    /// Refuses the client with a CONNACK carrying `reason_code` (3.1.1 return codes are
    /// mapped; a code 3.1.1 lacks becomes "not authorized"), then closes.
    pub fn refuse(
        &mut self,
        _now: Instant,
        reason_code: ReasonCode,
        properties: ConnAckProperties,
    ) -> Result<(), UsageError> {
        if self.state != ServerState::Authenticating {
            return Err(UsageError::Closed);
        }
        let (reason_code, properties) = match self.core.version {
            Version::V5 => (reason_code, properties),
            Version::V3_1_1 => (
                reason_code
                    .to_v311_connack()
                    .map_or(ReasonCode::NotAuthorized, |_| reason_code),
                ConnAckProperties::default(),
            ),
        };
        self.connect = None;
        self.core.send(Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason_code,
            properties: properties.clone(),
        })));
        self.close(DisconnectReason::Refused {
            reason_code,
            properties: Box::new(properties),
        });
        Ok(())
    }

    /// Sends AUTH to the client (5.0): continue an authentication exchange, or confirm a
    /// re-authentication with Success.
    pub fn auth(&mut self, _now: Instant, auth: Auth) -> Result<(), UsageError> {
        if self.core.version != Version::V5
            || matches!(
                self.state,
                ServerState::Closed | ServerState::AwaitingConnect
            )
        {
            return Err(UsageError::AuthNotAllowed);
        }
        let auth = Packet::from(auth);
        self.core.check_size(&auth)?;
        self.core.send(auth);
        Ok(())
    }

    /// Sends a message to the client at the QoS given. QoS 1/2 get a packet identifier and wait
    /// in the queue while the client's window is full; [`ServerEvent::Delivered`] reports the
    /// acknowledgement. A message larger than the client's Maximum Packet Size is refused
    /// (MQTT-3.1.2-25): the broker drops it for this client. The queue has no limit of its own:
    /// stop feeding the connection while [`ServerConnection::is_congested`].
    pub fn publish(
        &mut self,
        now: Instant,
        publish: Publish,
    ) -> Result<Option<PacketId>, UsageError> {
        self.publish_stamped(now, publish, 0)
    }

    /// [`ServerConnection::publish`] for a message that must wait for a broker's store batch
    /// `stamp` before it goes out: [`ServerConnection::take_sent_stamp`] tells when such a
    /// message was written, so that the broker holds the output until the batch is durable.
    pub(crate) fn publish_stamped(
        &mut self,
        now: Instant,
        mut publish: Publish,
        stamp: u64,
    ) -> Result<Option<PacketId>, UsageError> {
        if self.state == ServerState::Closed {
            return Err(UsageError::Closed);
        }
        publish.dup = false;
        publish.packet_id = None;
        if let Some(properties) = publish.properties.get_mut() {
            properties.topic_alias = None;
        }
        self.core.check_publish_size(&publish)?;
        if publish.qos == QoS::AtMostOnce {
            if self.state != ServerState::Connected {
                return Err(UsageError::NotConnected);
            }
            self.core.send(Packet::Publish(publish));
            return Ok(None);
        }
        let packet_id = self.outbound_mut().allocate_id()?;
        publish.packet_id = Some(packet_id);
        let expires_at = publish
            .properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        if expires_at.is_none()
            && self.state == ServerState::Connected
            && self.queued() == 0
            && self.inflight() < self.window
        {
            // What `fill_window` would do with a queue of one, without moving the message
            // through the queue: a broker does this for every delivery.
            self.core.send_publish(&publish);
            let outbound = self.outbound_mut();
            outbound.push_inflight(publish);
            outbound.note_sent(stamp);
        } else {
            self.outbound_mut()
                .enqueue_stamped(publish, expires_at, stamp);
            self.fill_window(now);
        }
        Ok(Some(packet_id))
    }

    /// The highest store batch that a message written since the last call waited for (0:
    /// none): see [`ServerConnection::publish_stamped`].
    pub(crate) fn take_sent_stamp(&mut self) -> u64 {
        self.outbound.as_mut().map_or(0, |o| o.take_sent_stamp())
    }

    /// The deliveries' state, made when the first one comes.
    fn outbound_mut(&mut self) -> &mut Outbound {
        self.outbound.get_or_insert_with(Box::default)
    }

    /// Frees the deliveries' state if nothing is in flight or queued (on PINGREQ: freeing it
    /// as soon as it empties would cost an allocation per delivery).
    fn release_idle_outbound(&mut self) {
        if self.outbound.as_ref().is_some_and(|o| o.is_idle()) {
            self.outbound = None;
        }
    }

    /// Acknowledges a message from the client with this reason code (5.0; 3.1.1 always gets a
    /// plain acknowledgement). Acknowledgements go out in arrival order (MQTT-4.6.0-2).
    pub fn ack(
        &mut self,
        _now: Instant,
        token: AckToken,
        reason_code: ReasonCode,
    ) -> Result<(), UsageError> {
        self.core.ack(token, reason_code).map(|_| ())
    }

    /// Answers a SUBSCRIBE.
    pub fn suback(&mut self, _now: Instant, mut suback: SubAck) -> Result<(), UsageError> {
        if self.state != ServerState::Connected {
            return Err(UsageError::Closed);
        }
        if self.core.version == Version::V3_1_1 {
            suback.properties = Default::default();
        }
        self.send_response(Packet::SubAck(suback))
    }

    /// Answers an UNSUBSCRIBE.
    pub fn unsuback(&mut self, _now: Instant, mut unsuback: UnsubAck) -> Result<(), UsageError> {
        if self.state != ServerState::Connected {
            return Err(UsageError::Closed);
        }
        if self.core.version == Version::V3_1_1 {
            unsuback.properties = Default::default();
        }
        self.send_response(Packet::UnsubAck(unsuback))
    }

    /// Closes the connection; 5.0 clients get a DISCONNECT with this reason first (3.1.1 has no
    /// server DISCONNECT: the connection just closes).
    pub fn disconnect(&mut self, _now: Instant, disconnect: Disconnect) -> Result<(), UsageError> {
        if self.state == ServerState::Closed {
            return Err(UsageError::Closed);
        }
        // 3.1.1 has no server DISCONNECT, and before CONNACK there is no one to send it to.
        if self.core.version == Version::V5 && self.state == ServerState::Connected {
            self.core.send_disconnect(&disconnect)?;
        }
        self.close(DisconnectReason::Local(disconnect));
        Ok(())
    }

    // ---- output ----

    /// Appends every packet ready to send to `buf`. Returns whether anything was written.
    ///
    /// Packets are encoded when they are sent. When `buf` is empty it is replaced by the
    /// connection's own buffer, without a copy (its spare capacity is dropped: an idle
    /// connection holds no buffer); otherwise the bytes are appended.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut BytesMut) -> bool {
        self.core.poll_transmit(buf, false)
    }

    /// Like [`ServerConnection::poll_transmit`], handing out at most `limit` bytes (a broker that
    /// holds output back until what it depends on is durable). Returns how many.
    pub(crate) fn poll_transmit_limited(&mut self, buf: &mut BytesMut, limit: usize) -> usize {
        self.core.poll_transmit_prefix(buf, limit)
    }

    /// Bytes sent and not yet handed out.
    pub(crate) fn transmit_len(&self) -> usize {
        self.core.transmit_len()
    }

    /// Forgets output not handed out beyond its first `keep` bytes (output that told of state
    /// the broker could not make durable).
    pub(crate) fn discard_transmit_after(&mut self, keep: usize) {
        self.core.truncate_transmit(keep);
    }

    /// The next event for the application. Buffered input is decoded as the events are taken
    /// (the packets it answers directly, such as PINGRESP, go to `poll_transmit` then).
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        if self.core.events.is_empty() && self.core.buffered() > 0 {
            self.process_input(self.last_input);
        }
        self.core.poll_event()
    }

    /// When to call [`ServerConnection::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// The session's delivery state, for the next connection of this client. Messages received
    /// but not yet acknowledged are forgotten: the client sends them again.
    pub fn into_session(mut self) -> ServerSession {
        self.take_session()
    }

    /// Like [`ServerConnection::into_session`], leaving the connection able to transmit what it
    /// still has queued (a last DISCONNECT) but with no session state.
    pub fn take_session(&mut self) -> ServerSession {
        self.core.inbound.end_connection();
        ServerSession {
            outbound: self.outbound.take().map(|o| *o).unwrap_or_default(),
            awaiting_pubrel: std::mem::take(&mut self.core.inbound.awaiting_pubrel),
        }
    }

    // ---- internals ----

    fn send_response(&mut self, packet: Packet) -> Result<(), UsageError> {
        packet.encoded_len(self.core.version)?;
        // A response too large for the client loses its properties rather than the response
        // (MQTT-3.1.2-25 lets the server drop reason strings and user properties).
        let packet = match (self.core.check_size(&packet), packet) {
            (Ok(()), packet) => packet,
            (Err(_), Packet::SubAck(mut s)) => {
                s.properties = Default::default();
                Packet::SubAck(s)
            }
            (Err(_), Packet::UnsubAck(mut u)) => {
                u.properties = Default::default();
                Packet::UnsubAck(u)
            }
            (Err(error), _) => return Err(error),
        };
        self.core.send(packet);
        Ok(())
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), ProtocolError> {
        match self.state {
            ServerState::AwaitingConnect => match packet {
                Packet::Connect(connect) => {
                    self.core.version = connect.protocol_version;
                    self.state = ServerState::Authenticating;
                    // Copied out so that nothing long-lived pins the read buffer.
                    self.auth_method = connect
                        .properties
                        .authentication_method
                        .as_deref()
                        .map(Box::from);
                    self.connect_session_expiry =
                        connect.properties.session_expiry_interval.unwrap_or(0);
                    self.connect = Some(connect.clone());
                    self.core.events.push_back(ServerEvent::Connect(connect));
                    Ok(())
                }
                // MQTT-3.1.0-1: the first packet must be CONNECT.
                other => Err(ProtocolError::UnexpectedPacket(other.packet_type())),
            },
            ServerState::Authenticating => match packet {
                Packet::Auth(auth) if self.has_auth_method() => {
                    self.core.events.push_back(ServerEvent::Auth(*auth));
                    Ok(())
                }
                other => Err(ProtocolError::UnexpectedPacket(other.packet_type())),
            },
            ServerState::Connected => self.handle_connected(now, packet),
            ServerState::Closed => Ok(()),
        }
    }

    fn has_auth_method(&self) -> bool {
        self.auth_method.is_some()
    }

    fn handle_connected(&mut self, now: Instant, packet: Packet) -> Result<(), ProtocolError> {
        // Any packet goes through `handle_ack`; one that is no acknowledgement of ours, with
        // nothing in flight, needs no state made for it.
        let mut none = Outbound::default();
        let outbound = self.outbound.as_deref_mut().unwrap_or(&mut none);
        let packet = match handle_ack(&mut self.core, outbound, packet)? {
            Acked::Completed(outcome) => {
                if self.report_delivered {
                    self.core.events.push_back(ServerEvent::Delivered(outcome));
                }
                self.fill_window(now);
                return Ok(());
            }
            Acked::Released(packet_id) => {
                if self.report_delivered {
                    self.core.events.push_back(ServerEvent::Released(packet_id));
                }
                return Ok(());
            }
            Acked::Releasing(packet_id) => {
                if self.report_delivered {
                    self.core
                        .events
                        .push_back(ServerEvent::Releasing(packet_id));
                }
                return Ok(());
            }
            Acked::Other(packet) => packet,
        };
        match packet {
            Packet::Publish(publish) => {
                // MQTT-3.3.4-6: a client never sends Subscription Identifiers.
                if !publish.properties.subscription_identifiers.is_empty() {
                    return Err(ProtocolError::InvalidPublish);
                }
                let core = &mut self.core;
                let mut acks = Vec::new();
                let received = core
                    .inbound
                    .on_publish(publish, core.version, |p| acks.push(p))?;
                for packet in acks {
                    core.send(packet);
                }
                if let Received::Deliver(publish, ack) = received {
                    self.core
                        .events
                        .push_back(ServerEvent::Message(Message { publish, ack }));
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => {
                self.core
                    .events
                    .push_back(ServerEvent::Subscribe(subscribe));
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.core
                    .events
                    .push_back(ServerEvent::Unsubscribe(unsubscribe));
                Ok(())
            }
            Packet::PingReq => {
                self.core.send(Packet::PingResp);
                // A client pings when it has had nothing to send for its keep alive: the
                // moment to give back an empty delivery state (not after every delivery,
                // which would allocate it again for the next one).
                self.release_idle_outbound();
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                // A session expiry of 0 at CONNECT cannot be raised at DISCONNECT (3.14.2.2.2).
                if self.connect_session_expiry == 0
                    && disconnect
                        .properties
                        .session_expiry_interval
                        .is_some_and(|s| s > 0)
                {
                    return Err(ProtocolError::UnexpectedPacket(PacketType::Disconnect));
                }
                self.close(DisconnectReason::Remote(disconnect));
                Ok(())
            }
            Packet::Auth(auth) if self.has_auth_method() => {
                self.core.events.push_back(ServerEvent::Auth(*auth));
                Ok(())
            }
            other => Err(ProtocolError::UnexpectedPacket(other.packet_type())),
        }
    }

    fn fill_window(&mut self, now: Instant) {
        if self.state != ServerState::Connected {
            return;
        }
        let Some(outbound) = self.outbound.as_mut() else {
            return;
        };
        let core = &mut self.core;
        let mut reported = Vec::new();
        outbound.fill_window(
            self.window,
            now,
            |publish| core.send_publish(publish),
            |publish| reported.push(ServerEvent::Expired(publish)),
        );
        core.events.extend(reported);
    }

    /// A CONNECT that cannot be decoded: an unsupported protocol gets its CONNACK (MQTT-3.1.2-2),
    /// anything else just closes.
    fn fail_decode(&mut self, error: DecodeError) {
        if self.state == ServerState::AwaitingConnect {
            if let DecodeError::UnsupportedProtocolVersion(level) = error {
                let version = if level < 5 {
                    Version::V3_1_1
                } else {
                    Version::V5
                };
                self.core.version = version;
                self.core.send(Packet::ConnAck(Box::new(ConnAck {
                    reason_code: ReasonCode::UnsupportedProtocolVersion,
                    ..ConnAck::default()
                })));
            }
            if matches!(error, DecodeError::InvalidProtocolName) {
                self.core.version = Version::V3_1_1;
                self.core.send(Packet::ConnAck(Box::new(ConnAck {
                    reason_code: ReasonCode::UnsupportedProtocolVersion,
                    ..ConnAck::default()
                })));
            }
            return self.close(DisconnectReason::Protocol(ProtocolError::Decode(error)));
        }
        self.fail(ProtocolError::Decode(error));
    }

    /// A protocol violation by the client: DISCONNECT with its reason code first (5.0, once
    /// connected), then the event.
    fn fail(&mut self, error: ProtocolError) {
        let reason = self.core.fail(error, self.state == ServerState::Connected);
        self.close(reason);
    }

    fn close(&mut self, reason: DisconnectReason) {
        self.state = ServerState::Closed;
        self.window = 0;
        self.core.close(reason);
    }
}
