//! The broker: a [`Broker`] router over one [`ServerConnection`] per network connection, with
//! no I/O.
//!
//! The router keeps sessions by client identifier (with session expiry and 3.1.1 clean
//! sessions), a subscription tree (wildcards, `$` topics, shared subscriptions, subscription
//! identifiers, No Local, Retain As Published, Retain Handling), retained messages, wills with
//! their delay, message expiry and bounded per-session queues whose drops are counted.
//!
//! Drive it like every state machine in this crate: feed it (`open`, `handle_bytes`,
//! `handle_eof`, `handle_timeout`), then drain its outputs: `poll_ready` names connections with
//! bytes to write (write what `poll_transmit` gives), `poll_event` says what happened (close the
//! transport on [`BrokerEvent::Close`], then call `handle_eof`), and `poll_timeout` says when to
//! call `handle_timeout`.
//!
//! ```
//! use std::time::Instant;
//! use bytes::{Bytes, BytesMut};
//! use mqtt_proto::broker::{Broker, BrokerConfig};
//! use mqtt_proto::codec;
//! use mqtt_proto::packet::{Connect, Packet, Version};
//!
//! let now = Instant::now();
//! let mut broker = Broker::new(BrokerConfig::default());
//! let conn = broker.open(now).expect("below the connection limit");
//! let mut wire = BytesMut::new();
//! codec::encode(&Packet::Connect(Box::new(Connect::new(Version::V5, "c1"))), Version::V5, &mut wire)?;
//! broker.handle_bytes(conn, now, &wire);
//! assert_eq!(broker.poll_ready(), Some(conn));
//! let mut out = BytesMut::new();
//! broker.poll_transmit(conn, now, &mut out);
//! let connack = codec::decode(&mut out, Version::V5, &Default::default())?;
//! assert!(matches!(connack, Some(Packet::ConnAck(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod flow;
mod retained;
mod session;
mod stats;
pub(crate) mod tree;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

pub use auth::{AllowAll, AuthDecision, Authenticator, Authorizer, ClientInfo};
pub use stats::{DropReason, Dropped, Stats};

use crate::ReasonCode;
use crate::connection::{
    DisconnectReason, Message, ServerConfig, ServerConnection, ServerEvent, UsageError,
};
use crate::packet::{
    AckProperties, Auth, ConnAckProperties, Connect, Disconnect, Publish, PublishProperties, QoS,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};
use crate::topic::{self, TopicName};
use retained::RetainedStore;
use session::{BrokerSession, SubValue};
use tree::SubscriptionTree;

/// Identifies one network connection of a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

/// The broker's limits and features. Every limit has a safe default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Per-connection limits (packet size, receive maximum, topic aliases, keep alive, queue).
    pub connection: ServerConfig,
    /// The most simultaneous connections (default 10,000); `open` refuses more.
    pub max_connections: usize,
    /// The highest QoS accepted and granted (default 2).
    pub max_qos: QoS,
    /// Whether retained messages are supported (default true).
    pub retain_available: bool,
    /// Whether shared subscriptions are supported (default true).
    pub shared_subscriptions: bool,
    /// The most messages queued for a disconnected session (default 100,000). QoS 0 messages
    /// make room first; beyond that new messages are dropped, counted in [`Dropped::queue_full`]
    /// and reported ([`BrokerEvent::MessagesDropped`]).
    pub max_session_queue: usize,
    /// Like `max_session_queue`, in bytes of messages kept for one disconnected session
    /// (default 64 MiB; a message weighs its payload, topic and properties plus about 170 bytes
    /// of bookkeeping).
    pub max_session_queue_bytes: usize,
    /// Bytes of messages kept for all sessions together, connected or not (default 2 GiB). A
    /// disconnected session's message that does not fit is dropped and counted in
    /// [`Dropped::memory_budget`]; for a connected one, the publishers feeding it are held back
    /// as when its own queue is full.
    pub max_total_queued_bytes: usize,
    /// The most sessions, connected or not (default 1,000,000). A client that would start one
    /// more is refused (5.0: 0x97 Quota exceeded; 3.1.1: server unavailable).
    pub max_sessions: usize,
    /// How long a connected client's full queue may hold back the publishers that feed it
    /// before the client is disconnected (5.0: 0x97 Quota exceeded) and its messages stay in
    /// its session, if the session persists (default 30 s).
    ///
    /// When a client's queue is full (`connection.max_queued` messages, or
    /// `connection.max_queued_bytes`), the broker does not drop what it acknowledged: it keeps
    /// the message and withholds the PUBACK/PUBREC of the publishers feeding that client until
    /// the queue has room again (3.1.1 publishers with more than `connection.receive_maximum`
    /// messages held back are not read at all meanwhile). One slow subscriber slows down the
    /// publishers that feed it, for at most this long at a stretch.
    pub congestion_timeout: Duration,
    /// Bytes that packets being received may take in total (default 256 MiB). Packets above
    /// 16 KiB reserve their announced size when their fixed header arrives; a connection whose
    /// packet does not fit is not read until others complete. A packet larger than this is
    /// refused as too large, whatever `connection.max_packet_size` says.
    pub max_incoming_bytes: usize,
    /// The longest Session Expiry Interval granted, in seconds (default: one day). 3.1.1
    /// sessions without Clean Session get this.
    pub max_session_expiry: u32,
    /// The most retained messages (default 100,000); new topics beyond it are not retained
    /// (the message is still delivered; counted in [`Dropped::retained`]).
    pub max_retained: usize,
    /// The most bytes retained messages may take (default 256 MiB; each weighs its topic,
    /// payload and properties plus 256 bytes of bookkeeping); a message that would go beyond is
    /// not retained, like one beyond `max_retained`.
    pub max_retained_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            connection: ServerConfig::default(),
            max_connections: 10_000,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            shared_subscriptions: true,
            max_session_queue: 100_000,
            max_session_queue_bytes: 64 * 1024 * 1024,
            max_total_queued_bytes: 2 * 1024 * 1024 * 1024,
            max_sessions: 1_000_000,
            congestion_timeout: Duration::from_secs(30),
            max_incoming_bytes: 256 * 1024 * 1024,
            max_session_expiry: 24 * 60 * 60,
            max_retained: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the broker tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerEvent {
    /// A client was accepted.
    ClientConnected {
        /// Its connection.
        connection: ConnectionId,
        /// Its client identifier.
        client_id: ByteString,
        /// The user name it authenticated with.
        username: Option<ByteString>,
        /// Whether it resumed a session.
        session_present: bool,
    },
    /// A connection ended.
    ClientDisconnected {
        /// The connection.
        connection: ConnectionId,
        /// The client identifier, if the client got that far.
        client_id: Option<ByteString>,
        /// The user name from its CONNECT, if any (also when it was refused).
        username: Option<ByteString>,
        /// Why.
        reason: DisconnectReason,
    },
    /// Close this connection's transport once `poll_transmit` has nothing more for it, then
    /// call [`Broker::handle_eof`].
    Close(ConnectionId),
    /// Stop reading this connection's transport until [`BrokerEvent::ResumeReading`]: the
    /// broker cannot take its input yet (its publisher is held back, or its next packet waits
    /// for room in `max_incoming_bytes`). Bytes already read may still be given.
    PauseReading(ConnectionId),
    /// Read this connection's transport again.
    ResumeReading(ConnectionId),
    /// Messages for a client were dropped (counted in [`Stats::dropped`] too). Reported at
    /// most every few seconds, with the count since the last report, so that a log stays
    /// readable under a flood.
    MessagesDropped {
        /// The client whose session lost them.
        client_id: ByteString,
        /// Why.
        reason: DropReason,
        /// How many since the last report.
        count: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Connection(u64),
    Will(u32),
    SessionExpiry(u32),
    /// A connection's queue has been full since the deadline minus `congestion_timeout`.
    Congestion(u64),
    /// Drops to report.
    DropReport,
}

/// Hashes the connection numbers the broker assigns itself (sequential, never chosen by a peer,
/// so there is no flooding to defend against): one multiplication instead of SipHash, several
/// times per packet.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[derive(Debug)]
struct Conn {
    server: ServerConnection,
    session: Option<u32>,
    client_id: Option<ByteString>,
    username: Option<ByteString>,
    will: Option<Box<Will>>,
    /// The deadline this connection has in the timer heap, if any.
    timer: Option<Instant>,
    ready: bool,
    closed: bool,
    /// Acknowledgements of this client's messages held back (see [`flow`]).
    held: u32,
    /// Why its input is held back: a set of `flow::PAUSED_*` bits.
    paused: u8,
    /// Whether the driver was last told to read it.
    reading: bool,
    /// Bytes reserved in `max_incoming_bytes` for the packet it is receiving, and the count of
    /// its received packets when they were: the packet is complete once that count moves.
    reserved: usize,
    reserved_at: u64,
    /// The weight of its queue as last counted in the broker-wide total.
    accounted: usize,
}

/// A complete small MQTT broker with no I/O: see the [module documentation](self).
pub struct Broker {
    config: BrokerConfig,
    authenticator: Box<dyn Authenticator>,
    authorizer: Box<dyn Authorizer>,
    // Boxed so the maps hold pointers: idle connections and sessions are what a broker has most
    // of, and hash tables keep spare capacity.
    conns: HashMap<u64, Box<Conn>, BuildHasherDefault<IdHasher>>,
    next_conn: u64,
    sessions: Vec<Option<Box<BrokerSession>>>,
    free_sessions: Vec<u32>,
    by_client_id: HashMap<ByteString, u32>,
    tree: SubscriptionTree<SubValue>,
    retained: RetainedStore,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    ready: VecDeque<u64>,
    events: VecDeque<BrokerEvent>,
    stats: Stats,
    next_assigned_id: u64,
    targets: Vec<(u32, SubValue)>,
    /// Flow control: held acknowledgements, congested queues, the incoming budget.
    flow: flow::Flow,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with this configuration, anonymous access and no topic restrictions.
    pub fn new(mut config: BrokerConfig) -> Self {
        // A packet that could never fit the incoming budget is refused from its fixed header.
        let budget = u32::try_from(config.max_incoming_bytes).unwrap_or(u32::MAX);
        config.connection.max_packet_size = config.connection.max_packet_size.min(budget).max(2);
        Self {
            config,
            authenticator: Box::new(AllowAll),
            authorizer: Box::new(AllowAll),
            conns: HashMap::default(),
            next_conn: 0,
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_client_id: HashMap::new(),
            tree: SubscriptionTree::new(),
            retained: RetainedStore::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_assigned_id: 0,
            targets: Vec::new(),
            flow: flow::Flow::default(),
        }
    }

    /// Uses `authenticator` to decide who may connect.
    pub fn with_authenticator(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.authenticator = Box::new(authenticator);
        self
    }

    /// Uses `authorizer` to decide who may publish and subscribe where.
    pub fn with_authorizer(mut self, authorizer: impl Authorizer + 'static) -> Self {
        self.authorizer = Box::new(authorizer);
        self
    }

    /// Like [`Broker::with_authenticator`], for an authenticator chosen at run time.
    pub fn with_boxed_authenticator(mut self, authenticator: Box<dyn Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    /// Like [`Broker::with_authorizer`], for an authorizer chosen at run time.
    pub fn with_boxed_authorizer(mut self, authorizer: Box<dyn Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    // ---- getters ----

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.values().filter(|c| c.session.is_some()).count(),
            sessions: self.by_client_id.len(),
            subscriptions: self.tree.len(),
            retained: self.retained.len(),
            retained_bytes: self.retained.bytes(),
            queued_bytes: self.flow.queued_bytes,
            incoming_bytes: self.flow.incoming,
            held_acks: self.flow.held_count(),
            ..self.stats
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    // ---- input ----

    /// A transport connected. `None` when the connection limit is reached: close it.
    pub fn open(&mut self, now: Instant) -> Option<ConnectionId> {
        if self.conns.len() >= self.config.max_connections {
            return None;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Box::new(Conn {
                server: {
                    let mut server = ServerConnection::new(self.config.connection.clone(), now);
                    server.report_delivered = false;
                    server
                },
                session: None,
                client_id: None,
                username: None,
                will: None,
                timer: None,
                ready: false,
                closed: false,
                held: 0,
                paused: 0,
                reading: true,
                reserved: 0,
                reserved_at: 0,
                accounted: 0,
            }),
        );
        self.after(id, now);
        Some(ConnectionId(id))
    }

    /// Bytes arrived on a connection.
    pub fn handle_bytes(&mut self, connection: ConnectionId, now: Instant, bytes: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&connection.0) {
            conn.server.handle_bytes(now, bytes);
            self.after(connection.0, now);
            self.settle(now);
        }
    }

    /// The connection's transport is gone (end of file, error, or closed after
    /// [`BrokerEvent::Close`]). The connection is forgotten; its session lives on as configured.
    pub fn handle_eof(&mut self, connection: ConnectionId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&connection.0) {
            conn.server.handle_eof(now);
            self.after(connection.0, now);
        }
        if let Some(conn) = self.conns.remove(&connection.0) {
            self.forget_connection(connection.0, &conn, now);
        }
        self.settle(now);
    }

    /// Time passed: keep-alive and connect timeouts, delayed wills, session expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((deadline, key))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Connection(id) => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        if conn.timer == Some(deadline) {
                            conn.timer = None;
                        }
                        conn.server.handle_timeout(now);
                        self.after(id, now);
                    }
                }
                TimerKey::Will(key) => {
                    let due = self
                        .session_mut(key)
                        .and_then(|s| s.pending_will.take_if(|pending| pending.1 <= now));
                    if let Some(pending) = due {
                        let (will, _) = *pending;
                        self.route(now, None, will_publish(will));
                    }
                }
                TimerKey::SessionExpiry(key) => {
                    let expired = self.session_mut(key).is_some_and(|s| {
                        s.connection.is_none() && s.expires_at.is_some_and(|at| at <= now)
                    });
                    if expired {
                        self.end_session(now, key);
                    }
                }
                TimerKey::Congestion(id) => self.congestion_timeout(id, now),
                TimerKey::DropReport => self.report_drops(now),
            }
        }
        self.settle(now);
    }

    // ---- commands ----

    /// Publishes a message from the broker itself (for example under `$SYS/`), routed like a
    /// client's. Returns how many sessions it reached.
    pub fn publish(&mut self, now: Instant, publish: Publish) -> Result<usize, UsageError> {
        if publish.topic.is_empty() {
            return Err(UsageError::InvalidTopic(topic::TopicError::Empty));
        }
        Ok(self.route(now, None, publish))
    }

    /// Disconnects a client (5.0 clients get a DISCONNECT with `reason_code` first).
    pub fn disconnect(&mut self, connection: ConnectionId, now: Instant, reason_code: ReasonCode) {
        if let Some(conn) = self.conns.get_mut(&connection.0) {
            // Refused only once the connection is closed, which is what was asked.
            let _ = conn.server.disconnect(now, Disconnect::new(reason_code));
            self.after(connection.0, now);
        }
        self.settle(now);
    }

    /// Whether the driver should read this connection's transport now (see
    /// [`BrokerEvent::PauseReading`]).
    pub fn wants_read(&self, connection: ConnectionId) -> bool {
        self.conns.get(&connection.0).is_none_or(|c| c.reading)
    }

    // ---- output ----

    /// A connection with bytes to write, if any.
    pub fn poll_ready(&mut self) -> Option<ConnectionId> {
        while let Some(id) = self.ready.pop_front() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.ready = false;
                if conn.server.has_transmit() {
                    return Some(ConnectionId(id));
                }
            }
        }
        None
    }

    /// Appends the connection's pending packets to `buf`. Returns whether anything was written.
    ///
    /// Packets are encoded when they are sent. When `buf` is empty it is replaced by the
    /// connection's own buffer, without a copy (its spare capacity is dropped: an idle
    /// connection holds no buffer); otherwise the bytes are appended.
    pub fn poll_transmit(
        &mut self,
        connection: ConnectionId,
        now: Instant,
        buf: &mut BytesMut,
    ) -> bool {
        self.conns
            .get_mut(&connection.0)
            .is_some_and(|conn| conn.server.poll_transmit(now, buf))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<BrokerEvent> {
        self.events.pop_front()
    }

    /// When to call [`Broker::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    // ---- internals ----

    fn session_mut(&mut self, key: u32) -> Option<&mut BrokerSession> {
        self.sessions
            .get_mut(key as usize)
            .and_then(Option::as_mut)
            .map(|s| &mut **s)
    }

    fn session(&self, key: u32) -> Option<&BrokerSession> {
        self.sessions
            .get(key as usize)
            .and_then(Option::as_ref)
            .map(|s| &**s)
    }

    /// After anything touched connection `id`: handle its events, note pending output, keep its
    /// timer registered.
    fn after(&mut self, id: u64, now: Instant) {
        loop {
            let Some(event) = self.conns.get_mut(&id).and_then(|c| c.server.poll_event()) else {
                break;
            };
            self.on_event(id, now, event);
        }
        self.flow_after(id, now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.server.has_transmit() && !conn.ready {
            conn.ready = true;
            self.ready.push_back(id);
        }
        if let Some(deadline) = conn.server.poll_timeout()
            && conn.timer.is_none_or(|registered| deadline < registered)
        {
            // Later deadlines need no new entry: the earlier one fires, does nothing, and
            // registers the current deadline then.
            conn.timer = Some(deadline);
            self.timers
                .push(Reverse((deadline, TimerKey::Connection(id))));
        }
    }

    fn mark_ready(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id)
            && !conn.ready
            && conn.server.has_transmit()
        {
            conn.ready = true;
            self.ready.push_back(id);
        }
    }

    fn on_event(&mut self, id: u64, now: Instant, event: ServerEvent) {
        match event {
            ServerEvent::Connect(connect) => self.on_connect(id, now, *connect),
            ServerEvent::Auth(auth) => self.on_auth(id, now, auth),
            ServerEvent::Message(message) => self.on_message(id, now, message),
            ServerEvent::Subscribe(subscribe) => self.on_subscribe(id, now, subscribe),
            ServerEvent::Unsubscribe(unsubscribe) => self.on_unsubscribe(id, now, unsubscribe),
            ServerEvent::Delivered(_) => {}
            ServerEvent::Expired(_) => self.stats.dropped.expired += 1,
            ServerEvent::Disconnected(reason) => self.on_closed(id, now, reason),
        }
    }

    fn client_info(&self, id: u64) -> Option<(ByteString, Option<ByteString>)> {
        let conn = self.conns.get(&id)?;
        Some((conn.client_id.clone()?, conn.username.clone()))
    }

    fn on_connect(&mut self, id: u64, now: Instant, connect: Connect) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
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
        conn.client_id = Some(client_id);
        conn.username = connect.username.as_ref().map(detach);
        match self.authenticator.connect(&connect) {
            AuthDecision::Accept => self.complete_connect(id, now),
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

    fn on_auth(&mut self, id: u64, now: Instant, auth: Auth) {
        let Some((client_id, username)) = self.client_info(id) else {
            return;
        };
        let info = ClientInfo {
            client_id: &client_id,
            username: username.as_deref(),
        };
        let decision = self.authenticator.auth(info, &auth);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let connected = conn.session.is_some();
        match decision {
            AuthDecision::Accept if connected => {
                let mut done = Auth::default();
                done.properties.authentication_method = auth.properties.authentication_method;
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

    fn complete_connect(&mut self, id: u64, now: Instant) {
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

        // A will is a publish made in advance: it needs the same permission, checked now (as
        // mosquitto does) rather than when nobody is left to tell.
        if let Some(will) = &connect.will {
            let username = conn.username.clone();
            let info = ClientInfo {
                client_id: &client_id,
                username: username.as_deref(),
            };
            if !self.authorizer.publish(info, &will.topic) {
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
            None => {
                let session = Box::new(BrokerSession::new(client_id.clone(), version));
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
                self.by_client_id.insert(client_id.clone(), key);
                key
            }
        };
        let max_expiry = self.config.max_session_expiry;
        let expiry = match version {
            Version::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            Version::V3_1_1 if connect.clean_start => 0,
            Version::V3_1_1 => max_expiry,
        };
        let mut properties = ConnAckProperties::default();
        let Some(session) = self.session_mut(key) else {
            return;
        };
        session.version = version;
        session.connection = Some(id);
        session.expires_at = None;
        // A reconnect within the will delay cancels the will (section 3.1.3.2.2).
        session.pending_will = None;
        session.expiry_interval = expiry.min(max_expiry);
        if expiry > max_expiry {
            properties.session_expiry_interval = Some(max_expiry);
        }
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
    }

    fn on_message(&mut self, id: u64, now: Instant, message: Message) {
        let Message { publish, ack } = message;
        let Some((client_id, username)) = self.client_info(id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        self.stats.messages_in += 1;
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
            let _ = conn.server.disconnect(now, Disconnect::new(code));
            return;
        }
        let info = ClientInfo {
            client_id: &client_id,
            username: username.as_deref(),
        };
        if !self.authorizer.publish(info, &publish.topic) {
            self.stats.dropped.not_authorized += 1;
            if let Some(token) = ack {
                let _ = conn.server.ack(now, token, ReasonCode::NotAuthorized);
            }
            return;
        }
        let publisher = conn.session;
        self.flow.jammed.clear();
        let reached = self.route(now, publisher, publish);
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
    fn route(&mut self, now: Instant, publisher: Option<u32>, publish: Publish) -> usize {
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
            self.deliver(now, key, out, &mut owned);
            reached += 1;
        }
        self.targets = targets;
        reached
    }

    fn retain(&mut self, now: Instant, publish: &Publish) {
        if publish.payload.is_empty() {
            // MQTT-3.3.1-6: an empty retained message deletes the topic's retained message.
            self.retained.remove(&publish.topic);
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
        self.retained.insert(stored, expires_at);
    }

    /// Hands one message to a session: its connection if connected, its queue if it persists.
    ///
    /// A message that waits (in a queue, or for a disconnected client) gets its own copy of its
    /// bytes first, shared through `owned` by every session of this routing that keeps it: a
    /// zero-copy slice would pin the whole read buffer it arrived in for as long as it waits.
    fn deliver(
        &mut self,
        now: Instant,
        key: u32,
        mut publish: Publish,
        owned: &mut Option<(TopicName, Bytes)>,
    ) {
        let payload = publish.payload.len() as u64;
        let Some(session) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(id) = session.connection {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.server.would_queue(&publish) {
                own_bytes(&mut publish, owned);
            }
            match conn.server.publish(now, publish) {
                Ok(_) => {
                    self.stats.messages_out += 1;
                    self.stats.bytes_out += payload;
                    self.mark_ready(id);
                    self.note_delivered(id, now);
                }
                Err(UsageError::PacketTooLarge { .. }) => self.stats.dropped.too_large += 1,
                // The connection is closing: it can take nothing more.
                Err(_) => self.stats.dropped.queue_full += 1,
            }
            return;
        }
        own_bytes(&mut publish, owned);
        let size = crate::connection::weight(&publish);
        let delivery = session.delivery.get_or_insert_with(Box::default);
        let before = delivery.queued_bytes();
        let result =
            if self.flow.queued_bytes.saturating_add(size) > self.config.max_total_queued_bytes {
                Err(DropReason::MemoryBudget)
            } else {
                delivery
                    .enqueue(
                        now,
                        publish,
                        self.config.max_session_queue,
                        self.config.max_session_queue_bytes,
                    )
                    .map_err(|_| DropReason::QueueFull)
            };
        let after = delivery.queued_bytes();
        self.flow.queued_bytes = (self.flow.queued_bytes + after).saturating_sub(before);
        let client_id = session.client_id.clone();
        match result {
            Ok(dropped) => {
                self.stats.messages_out += 1;
                self.stats.bytes_out += payload;
                if dropped > 0 {
                    self.note_drop(now, &client_id, DropReason::QueueFull, dropped as u64);
                }
            }
            Err(reason) => self.note_drop(now, &client_id, reason, 1),
        }
    }

    fn on_subscribe(&mut self, id: u64, now: Instant, subscribe: Subscribe) {
        let Some((client_id, username)) = self.client_info(id) else {
            return;
        };
        let Some(key) = self.conns.get(&id).and_then(|c| c.session) else {
            return;
        };
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained_for = Vec::new();
        for subscription in &subscribe.filters {
            let filter = &subscription.filter;
            let shared = filter.shared();
            let info = ClientInfo {
                client_id: &client_id,
                username: username.as_deref(),
            };
            if !self.authorizer.subscribe(info, filter) {
                reason_codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            if shared.is_some() && !self.config.shared_subscriptions {
                reason_codes.push(ReasonCode::SharedSubscriptionsNotSupported);
                continue;
            }
            let mut options = subscription.options;
            options.qos = options.qos.min(self.config.max_qos);
            let value = SubValue {
                options,
                identifier: subscribe.properties.subscription_identifier,
            };
            let existed = self.tree.insert(filter, key, value).is_some();
            if let Some(session) = self.session_mut(key) {
                session.filters.insert(filter.clone());
            }
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
            let _ = conn.server.suback(
                now,
                SubAck {
                    packet_id: subscribe.packet_id,
                    properties: AckProperties::default(),
                    reason_codes,
                },
            );
        }
        for (filter, value) in retained_for {
            self.send_retained(now, key, &filter, value);
        }
    }

    /// Sends the retained messages matching `filter`, RETAIN set (MQTT-3.3.1-9).
    fn send_retained(&mut self, now: Instant, key: u32, filter: &str, value: SubValue) {
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
        for publish in matching {
            // Retained messages own their bytes already: a session that keeps one shares them.
            let mut owned = Some((publish.topic.clone(), publish.payload.clone()));
            self.deliver(now, key, publish, &mut owned);
        }
    }

    fn on_unsubscribe(&mut self, id: u64, now: Instant, unsubscribe: Unsubscribe) {
        let Some(key) = self.conns.get(&id).and_then(|c| c.session) else {
            return;
        };
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let removed = self.tree.remove(filter, key).is_some();
            if let Some(session) = self.session_mut(key) {
                session.filters.remove(filter);
            }
            reason_codes.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            let _ = conn.server.unsuback(
                now,
                UnsubAck {
                    packet_id: unsubscribe.packet_id,
                    properties: AckProperties::default(),
                    reason_codes,
                },
            );
        }
    }

    fn on_closed(&mut self, id: u64, now: Instant, reason: DisconnectReason) {
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
    fn end_session(&mut self, now: Instant, key: u32) {
        let Some(session) = self.sessions.get_mut(key as usize).and_then(Option::take) else {
            return;
        };
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

/// A copy of a string that shares no memory with a read buffer. Zero-copy slices are right for
/// messages passing through; state that lives as long as a session must not pin whole buffers.
fn detach(s: &ByteString) -> ByteString {
    ByteString::from(&**s)
}

/// Makes a message own its bytes (see [`detach`]).
fn detach_publish(publish: &mut Publish) {
    publish.topic = detach_name(&publish.topic);
    publish.payload = Bytes::copy_from_slice(&publish.payload);
    detach_properties(publish);
}

/// Makes a message's property strings and binary data own their bytes.
fn detach_properties(publish: &mut Publish) {
    if let Some(p) = publish.properties.get_mut() {
        p.content_type = p.content_type.as_ref().map(detach);
        p.response_topic = p.response_topic.as_ref().map(detach);
        p.correlation_data = p
            .correlation_data
            .as_ref()
            .map(|d| Bytes::copy_from_slice(d));
        for property in &mut p.user_properties {
            property.name = detach(&property.name);
            property.value = detach(&property.value);
        }
    }
}

/// Gives a message that a session keeps bytes of its own: the topic and payload copied once
/// per routing into `owned` and shared by every session that keeps it.
fn own_bytes(publish: &mut Publish, owned: &mut Option<(TopicName, Bytes)>) {
    let (topic, payload) = owned.get_or_insert_with(|| {
        (
            detach_name(&publish.topic),
            Bytes::copy_from_slice(&publish.payload),
        )
    });
    publish.topic = topic.clone();
    publish.payload = payload.clone();
    detach_properties(publish);
}

/// [`detach`] for a topic name.
fn detach_name(name: &TopicName) -> TopicName {
    TopicName::new_unchecked(ByteString::from(name.as_str()))
}

/// A will whose strings and payload share no memory with a read buffer.
fn detach_will(will: Will) -> Will {
    let mut p = will.properties;
    p.content_type = p.content_type.as_ref().map(detach);
    p.response_topic = p.response_topic.as_ref().map(detach);
    p.correlation_data = p.correlation_data.map(|d| Bytes::copy_from_slice(&d));
    for property in &mut p.user_properties {
        property.name = detach(&property.name);
        property.value = detach(&property.value);
    }
    Will {
        topic: detach_name(&will.topic),
        payload: Bytes::copy_from_slice(&will.payload),
        properties: p,
        ..will
    }
}

/// The PUBLISH a will becomes.
fn will_publish(will: Will) -> Publish {
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

#[cfg(test)]
mod tests;
