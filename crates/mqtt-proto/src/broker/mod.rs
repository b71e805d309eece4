//! The broker: a [`Broker`] router over one
//! [`ServerConnection`](crate::connection::ServerConnection) per network connection, with no
//! I/O.
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
mod config;
mod conn;
mod connect;
mod detach;
mod expiry;
mod flow;
mod persist;
mod retained;
mod route;
mod session;
mod small_map;
mod stats;
pub(crate) mod tree;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use bytes::BytesMut;
use bytestring::ByteString;
use rustc_hash::FxBuildHasher;

pub use auth::{AllowAll, AuthDecision, AuthRequest, Authenticator, Authorizer, ClientInfo};
pub use config::BrokerConfig;
pub use persist::{RestoreError, RestoreReport, STORE_FORMAT, StoreBatch, StoreOp};
pub use route::SYS_PREFIX;
pub use stats::{DropReason, Dropped, Stats};

use crate::ReasonCode;
use crate::connection::{DisconnectReason, UsageError};
use crate::packet::{Disconnect, Publish};
use crate::topic;
use conn::Conn;
use retained::RetainedStore;
use session::{BrokerSession, SubValue};
use tree::SubscriptionTree;

/// Identifies one network connection of a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

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

/// A complete small MQTT broker with no I/O: see the [module documentation](self).
pub struct Broker {
    config: BrokerConfig,
    authenticator: Box<dyn Authenticator>,
    /// Authentication steps go to the driver ([`BrokerEvent::Authenticate`]).
    defer_auth: bool,
    authorizer: Box<dyn Authorizer>,
    // Boxed so the maps hold pointers: idle connections and sessions are what a broker has most
    // of, and hash tables keep spare capacity.
    conns: HashMap<u64, Box<Conn>, FxBuildHasher>,
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
        self.conns
            .insert(id, Box::new(Conn::new(&self.config.connection, now)));
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
            conn.identity = Some(Box::new(identity));
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
                TimerKey::Will(key) => self.will_timeout(key, now),
                TimerKey::SessionExpiry(key) => self.session_expiry_timeout(key, now),
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
            conn::closed_already(conn.server.disconnect(now, Disconnect::new(reason_code)));
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
}

#[cfg(test)]
mod tests;
