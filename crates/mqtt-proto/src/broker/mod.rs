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
//! use bytes::BytesMut;
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
mod connect;
mod detach;
mod flow;
mod persist;
mod retained;
mod route;
mod session;
mod stats;
pub(crate) mod tree;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;

pub use auth::{AllowAll, AuthDecision, AuthRequest, Authenticator, Authorizer, ClientInfo};
pub use persist::{RestoreError, RestoreReport, STORE_FORMAT, StoreBatch, StoreOp};
pub use route::SYS_PREFIX;
pub use stats::{DropReason, Dropped, Stats};

use crate::ReasonCode;
use crate::connection::{
    DisconnectReason, ServerConfig, ServerConnection, ServerEvent, UsageError,
};
use crate::packet::{Disconnect, Publish, QoS, Will};
use crate::topic;
use connect::will_publish;
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
    /// Bytes of messages kept for all sessions together, connected or not (default 3 GiB:
    /// enough for 100,000 disconnected sessions holding 100 messages of 64 B each, which weigh
    /// 229 bytes apiece here and take 250 bytes of heap, 2.5 GB in all). A
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
            max_total_queued_bytes: 3 * 1024 * 1024 * 1024,
            max_sessions: 1_000_000,
            congestion_timeout: Duration::from_secs(30),
            max_incoming_bytes: 256 * 1024 * 1024,
            max_session_expiry: 24 * 60 * 60,
            max_retained: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Client identifiers that start with this are the broker's own (its bridges' local sessions,
/// `$bridge/NAME`): a client that is not [trusted](Broker::set_trusted) and asks for one is
/// refused with Client Identifier not valid, so that it cannot take such a session over.
pub const RESERVED_CLIENT_ID_PREFIX: &str = "$bridge/";

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
    /// Decide whether this client may connect (or go on with its AUTH exchange), then call
    /// [`Broker::authenticated`]. Only with [`Broker::with_deferred_authentication`]; meanwhile
    /// the client waits (its connect timeout runs).
    Authenticate {
        /// The connection.
        connection: ConnectionId,
        /// What to decide.
        request: AuthRequest,
    },
    /// Stop reading this connection's transport until [`BrokerEvent::ResumeReading`]: the
    /// broker cannot take its input yet (its publisher is held back, or its next packet waits
    /// for room in `max_incoming_bytes`). Bytes already read may still be given.
    PauseReading(ConnectionId),
    /// Read this connection's transport again.
    ResumeReading(ConnectionId),
    /// A batch could not be stored ([`Broker::handle_store_failed`]): the connections whose
    /// output depended on it were closed, and its changes wait for the next batch.
    StoreFailed,
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
    /// The identity its transport proved (a TLS client certificate's name): its user name,
    /// whatever its CONNECT says, and authentication enough (see [`Broker::set_identity`]).
    identity: Option<ByteString>,
    /// A connection of the driver's own (a bridge's local side): see [`Broker::set_trusted`].
    trusted: bool,
    /// Its CONNECT said it is a bridge ([`Connect::bridge`](crate::packet::Connect::bridge)).
    bridge: bool,
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
    /// A deferred authentication step waits for [`Broker::authenticated`].
    auth_pending: bool,
    /// Output bytes handed out so far, and how far output may go (with persistence on: output
    /// waits for what it tells of to be durable).
    handed_out: u64,
    released: u64,
    /// Its output depends on changes not yet sealed into a batch.
    dep: bool,
    /// Sealed batches its output waits for.
    holds: u32,
}

/// A complete small MQTT broker with no I/O: see the [module documentation](self).
pub struct Broker {
    config: BrokerConfig,
    authenticator: Box<dyn Authenticator>,
    /// Authentication steps go to the driver ([`BrokerEvent::Authenticate`]).
    defer_auth: bool,
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
    /// Durability, when on (see `persist`).
    persist: Option<Box<persist::Persist>>,
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
            defer_auth: false,
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
            persist: None,
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

    /// Hands every authentication step to the driver as [`BrokerEvent::Authenticate`], to be
    /// answered with [`Broker::authenticated`], instead of calling the authenticator in the
    /// broker's loop: a slow check (a password hash, a lookup over the network) then stalls only
    /// the client it concerns.
    pub fn with_deferred_authentication(mut self) -> Self {
        self.defer_auth = true;
        self
    }

    /// Takes the limits of `new` that can change while the broker runs, and says what changed
    /// (`"max_connections: 10000 -> 200"`) and what needs a restart to change. They apply from
    /// now on: to connections opened from now on (`connection.receive_maximum`, `max_queued`,
    /// `max_queued_bytes`, `max_inflight_v311`, `max_keep_alive`, `connect_timeout`,
    /// `topic_alias_maximum`), to connections and sessions counted from now on
    /// (`max_connections`, `max_sessions`), and to messages queued or retained from now on
    /// (`max_session_queue`, `max_session_queue_bytes`, `max_total_queued_bytes`,
    /// `max_retained`, `max_retained_bytes`, `congestion_timeout`, `max_session_expiry`).
    /// What sessions were granted and announced stays (`max_qos`, `retain_available`,
    /// `shared_subscriptions`), and so does what sizes the incoming budget
    /// (`max_incoming_bytes`, `connection.max_packet_size`): those are reported in the second
    /// list and not changed.
    pub fn set_limits(&mut self, new: &BrokerConfig) -> (Vec<String>, Vec<&'static str>) {
        let mut changed = Vec::new();
        let mut fixed = Vec::new();
        macro_rules! take {
            ($($field:ident).+) => {
                if self.config.$($field).+ != new.$($field).+ {
                    changed.push(format!(
                        "{}: {:?} -> {:?}",
                        stringify!($($field).+).replace(' ', ""),
                        self.config.$($field).+,
                        new.$($field).+
                    ));
                    self.config.$($field).+ = new.$($field).+.clone();
                }
            };
        }
        macro_rules! keep {
            ($($field:ident).+) => {
                if self.config.$($field).+ != new.$($field).+ {
                    fixed.push(stringify!($($field).+));
                }
            };
        }
        take!(max_connections);
        take!(max_sessions);
        take!(max_session_queue);
        take!(max_session_queue_bytes);
        take!(max_total_queued_bytes);
        take!(max_retained);
        take!(max_retained_bytes);
        take!(congestion_timeout);
        take!(max_session_expiry);
        take!(connection.receive_maximum);
        take!(connection.max_queued);
        take!(connection.max_queued_bytes);
        take!(connection.max_inflight_v311);
        take!(connection.max_keep_alive);
        take!(connection.connect_timeout);
        take!(connection.topic_alias_maximum);
        keep!(max_qos);
        keep!(retain_available);
        keep!(shared_subscriptions);
        keep!(max_incoming_bytes);
        let packet_size = new
            .connection
            .max_packet_size
            .min(u32::try_from(self.config.max_incoming_bytes).unwrap_or(u32::MAX));
        if packet_size.max(2) != self.config.connection.max_packet_size {
            fixed.push("connection.max_packet_size");
        }
        (changed, fixed)
    }

    /// Replaces the authorizer while the broker runs (a reloaded ACL file): from the next
    /// PUBLISH, SUBSCRIBE or will on, connected clients too are judged by it. Subscriptions
    /// made before stay.
    pub fn set_authorizer(&mut self, authorizer: Box<dyn Authorizer>) {
        self.authorizer = authorizer;
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
            queued_messages: self.queued_messages(),
            ..self.stats
        }
    }

    /// Messages kept for sessions, connected or not: in flight and waiting. One pass over the
    /// sessions.
    fn queued_messages(&self) -> usize {
        self.sessions
            .iter()
            .flatten()
            .map(|session| {
                let connected = session
                    .connection
                    .and_then(|id| self.conns.get(&id))
                    .map(|conn| conn.server.inflight() + conn.server.queued());
                let offline = session.delivery.as_ref().map(|d| d.inflight() + d.queued());
                connected.unwrap_or(0) + offline.unwrap_or(0)
            })
            .sum()
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
                identity: None,
                trusted: false,
                bridge: false,
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
                auth_pending: false,
                handed_out: 0,
                released: 0,
                dep: false,
                holds: 0,
            }),
        );
        self.after(id, now);
        Some(ConnectionId(id))
    }

    /// The transport of `connection` proved who the client is (the name in a verified TLS
    /// client certificate, as mosquitto's `use_identity_as_username`): that is its user name
    /// for the [`Authorizer`], in events and in the CONNECT the hooks see, whatever user name its
    /// CONNECT carries, and it is authenticated by it: the [`Authenticator`] is not asked, and a
    /// password in the CONNECT is ignored. Call it before the connection's first bytes.
    pub fn set_identity(&mut self, connection: ConnectionId, identity: ByteString) {
        if let Some(conn) = self.conns.get_mut(&connection.0) {
            conn.identity = Some(identity);
        }
    }

    /// `connection` is the driver's own (the local side of a bridge, over an in-memory
    /// transport): it is not authenticated (the [`Authenticator`] is not asked) nor authorized
    /// (the [`Authorizer`] is not asked), its session may last longer than
    /// [`BrokerConfig::max_session_expiry`], and it may use a client identifier that starts
    /// with [`RESERVED_CLIENT_ID_PREFIX`], which other clients are refused. Call it before the
    /// connection's first bytes.
    pub fn set_trusted(&mut self, connection: ConnectionId) {
        if let Some(conn) = self.conns.get_mut(&connection.0) {
            conn.trusted = true;
        }
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
                        self.store_session(key, now);
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

    /// Publishes a message from the broker itself (its `$SYS/…` statistics, say), routed like
    /// a client's: kept as the topic's retained message if `retain` is set, delivered to every
    /// matching subscription. Returns how many sessions it reached. Clients cannot publish to
    /// `$SYS/…` ([`SYS_PREFIX`]): the broker refuses it as not authorized.
    pub fn publish(&mut self, now: Instant, mut publish: Publish) -> Result<usize, UsageError> {
        if publish.topic.is_empty() {
            return Err(UsageError::InvalidTopic(topic::TopicError::Empty));
        }
        detach::detach_publish(&mut publish);
        publish.dup = false;
        publish.packet_id = None;
        let reached = self.route(now, None, publish);
        self.settle(now);
        Ok(reached)
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

    /// The decision on a [`BrokerEvent::Authenticate`] request. Fails with
    /// [`UsageError::Closed`] when the connection has ended meanwhile (nothing to do), and with
    /// [`UsageError::AuthNotAllowed`] when no request of this connection waits.
    pub fn authenticated(
        &mut self,
        connection: ConnectionId,
        now: Instant,
        decision: AuthDecision,
    ) -> Result<(), UsageError> {
        let conn = self
            .conns
            .get_mut(&connection.0)
            .filter(|c| !c.closed)
            .ok_or(UsageError::Closed)?;
        if !std::mem::take(&mut conn.auth_pending) {
            return Err(UsageError::AuthNotAllowed);
        }
        self.apply_auth_decision(connection.0, now, decision);
        self.after(connection.0, now);
        self.settle(now);
        Ok(())
    }

    /// Turns persistence on, starting from `records`: everything a store holds (nothing, the
    /// first time). `wall` is the wall-clock time at `now`: stored times are wall-clock, so that
    /// expiry counts the time the broker was down. Call it on a new broker, before any
    /// connection. What could not be read is skipped and listed in the report; a store in a
    /// newer format is refused. See [`StoreOp`] for the records and what waits for them.
    pub fn restore<'a>(
        &mut self,
        now: Instant,
        wall: std::time::SystemTime,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<RestoreReport, RestoreError> {
        let report = self.restore_records(now, wall, records)?;
        self.settle(now);
        Ok(report)
    }

    /// The batches up to `batch` are durable: the output that waited for them goes out.
    pub fn handle_stored(&mut self, batch: u64, now: Instant) {
        self.stored(batch);
        self.settle(now);
    }

    /// Batch `batch` (and so every later one) could not be stored: the output that told of its
    /// changes is withdrawn and those connections are closed (publishers send again; a
    /// persistent subscriber gets its messages on its next connection); the changes come back
    /// in the next [`Broker::poll_store`]. A [`BrokerEvent::StoreFailed`] follows.
    pub fn handle_store_failed(&mut self, batch: u64, now: Instant) {
        self.store_failed(batch, now);
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
        let limit = self.releasable(connection.0);
        let Some(conn) = self.conns.get_mut(&connection.0) else {
            return false;
        };
        if limit == usize::MAX {
            let before = buf.len();
            let wrote = conn.server.poll_transmit(now, buf);
            conn.handed_out += buf.len().saturating_sub(before) as u64;
            return wrote;
        }
        let n = conn.server.poll_transmit_limited(buf, limit);
        conn.handed_out += n as u64;
        n > 0
    }

    /// The changes made since the last call, to make durable (with persistence on; `None` when
    /// there are none). Output that tells of them waits for [`Broker::handle_stored`].
    pub fn poll_store(&mut self) -> Option<StoreBatch> {
        self.seal_batch()
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
        if self.persist.is_some() && conn.server.has_transmit() {
            self.note_output(id);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
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
            && conn.server.has_transmit()
        {
            if !conn.ready {
                conn.ready = true;
                self.ready.push_back(id);
            }
            if self.persist.is_some() {
                self.note_output(id);
            }
        }
    }

    fn on_event(&mut self, id: u64, now: Instant, event: ServerEvent) {
        match event {
            ServerEvent::Connect(connect) => self.on_connect(id, now, *connect),
            ServerEvent::Auth(auth) => self.on_auth(id, now, auth),
            ServerEvent::Message(message) => self.on_message(id, now, message),
            ServerEvent::Subscribe(subscribe) => self.on_subscribe(id, now, subscribe),
            ServerEvent::Unsubscribe(unsubscribe) => self.on_unsubscribe(id, now, unsubscribe),
            ServerEvent::Delivered(outcome) => {
                if let Some(key) = self.conns.get(&id).and_then(|c| c.session) {
                    self.unstore_queued(key, outcome.packet_id);
                }
            }
            ServerEvent::Released(packet_id) => {
                if let Some(key) = self.conns.get(&id).and_then(|c| c.session) {
                    self.store_pubrel(key, packet_id, false);
                }
            }
            ServerEvent::Releasing(packet_id) => {
                if let Some(key) = self.conns.get(&id).and_then(|c| c.session) {
                    self.store_releasing(key, packet_id);
                }
            }
            ServerEvent::Expired(publish) => {
                self.stats.dropped.expired += 1;
                if let (Some(key), Some(packet_id)) = (
                    self.conns.get(&id).and_then(|c| c.session),
                    publish.packet_id,
                ) {
                    self.unstore_queued(key, packet_id);
                }
            }
            ServerEvent::Disconnected(reason) => self.on_closed(id, now, reason),
        }
    }

    fn client_info(&self, id: u64) -> Option<(ByteString, Option<ByteString>)> {
        let conn = self.conns.get(&id)?;
        Some((conn.client_id.clone()?, conn.username.clone()))
    }
}

#[cfg(test)]
mod tests;
