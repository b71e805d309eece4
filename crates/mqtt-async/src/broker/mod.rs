//! The async [`Broker`]: listeners (TCP or Unix sockets, TLS, WebSocket) around the sans-I/O
//! broker core.
//!
//! One router task owns the [`mqtt_proto::broker::Broker`]; each connection has one task that
//! only moves bytes, except idle plain TCP connections, which wait without a task in one idle
//! set (see [`BrokerBuilder::idle_after`]). The router appends each connection's packets to its bounded outbox: a
//! client that stops reading fills it and is disconnected, so one slow or malicious client never
//! stalls the others.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures_lite::future;
use mqtt_proto::ReasonCode;
pub use mqtt_proto::broker::{
    AllowAll, AuthDecision, AuthRequest, Authenticator, Authorizer, BrokerConfig, ClientInfo,
    DropReason, Dropped, RestoreReport, Stats,
};
use mqtt_proto::broker::{Broker as Core, BrokerEvent, ConnectionId};
use mqtt_proto::connection::DisconnectReason;
use mqtt_proto::packet::ByteString;
/// The packets an [`Authenticator`] decides on.
pub use mqtt_proto::packet::{Auth, AuthProperties, Connect};
use rustc_hash::FxBuildHasher;
pub use store::{FileStore, MemoryStore, Store, StoreError, SyncPolicy};

use crate::Error;
use crate::runtime::{PeerAddr, Runtime, SharedRuntime};
#[cfg(feature = "tls")]
use crate::tls::ServerTls;

#[cfg(feature = "auth-file")]
mod auth_file;
mod bridge;
pub use bridge::{BridgeOptions, BridgeStatus, BridgeTopic, Direction};
mod connection;
#[cfg(unix)]
mod idle;
mod listener;
mod sys;
pub use listener::{ListenAddr, ListenerConfig};
pub mod store;
#[cfg(feature = "auth-file")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth-file")))]
pub use auth_file::{Access, AclFile, AuthFileError, PasswordFile, PasswordHash};
use connection::Outbox;

/// Chunks of output (one per turn of the router that had something for the connection) it may
/// have waiting before it counts as not reading.
const OUTPUT_QUEUE: usize = 256;

/// Bytes of output a connection may have waiting (beyond what its task is writing), added in
/// more than one go, before it counts as not reading.
const OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// Messages from the inbox the router handles before it hands out what they produced.
const BATCH: usize = 64;

/// What happened to a client's connection, for logs and metrics: see
/// [`BrokerBuilder::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A client was accepted (CONNACK with Success went out).
    Connected {
        /// The client's address.
        peer: PeerAddr,
        /// Its client identifier (assigned by the broker when it sent none).
        client_id: ByteString,
        /// The user name it authenticated with.
        username: Option<ByteString>,
        /// Whether it resumed a session.
        session_present: bool,
    },
    /// A connection ended: the client left, broke the protocol, timed out, or was refused
    /// (`reason` is then [`DisconnectReason::Refused`] with the CONNACK reason code).
    Disconnected {
        /// The client's address.
        peer: PeerAddr,
        /// The client identifier, if the client got as far as sending CONNECT.
        client_id: Option<ByteString>,
        /// The user name from its CONNECT, if any (also when it was refused).
        username: Option<ByteString>,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// A connection was closed at once because the broker has `max_connections` clients.
    Rejected {
        /// The client's address.
        peer: PeerAddr,
    },
    /// A TLS handshake failed (untrusted or invalid certificate, no common protocol, a plain
    /// MQTT client on a TLS port, a client certificate without a name to use as user name) or
    /// did not finish in time; the connection was closed.
    TlsFailed {
        /// The client's address.
        peer: PeerAddr,
        /// What went wrong.
        error: String,
    },
    /// A WebSocket upgrade was refused (not an upgrade, wrong path, the `mqtt` subprotocol not
    /// offered, headers too large: the client got the HTTP status) or did not finish in time;
    /// the connection was closed.
    WebSocketFailed {
        /// The client's address.
        peer: PeerAddr,
        /// What went wrong, with the HTTP status answered.
        error: String,
    },
    /// Messages kept for a disconnected client's session were dropped: its queue limit or the
    /// broker's memory budget was reached. Told at most every few seconds, with the count
    /// since the last time (also counted in [`Stats::dropped`]).
    MessagesDropped {
        /// The session's client identifier.
        client_id: ByteString,
        /// Which limit.
        reason: DropReason,
        /// How many since the last report.
        count: u64,
    },
    /// The broker's state could not be stored (a full disk, a failing write). What depended on
    /// it was not acknowledged: those connections were closed (their publishers send again),
    /// and the store is tried again after a pause.
    StoreFailed {
        /// What the store said.
        error: String,
    },
    /// A bridge connected to its remote broker (see [`BrokerBuilder::bridge`]).
    BridgeConnected {
        /// The bridge's name.
        name: String,
    },
    /// A bridge lost its remote broker, or could not reach it: it tries again with a backoff,
    /// and the out topics' messages wait in its local session meanwhile. Told when the
    /// connection ends and when the first attempts fail, not at every attempt.
    BridgeDisconnected {
        /// The bridge's name.
        name: String,
        /// Why.
        error: String,
    },
    /// A listener could not accept connections (out of file descriptors, typically). It backs
    /// off, up to a second between attempts, and this is told once until it accepts again.
    AcceptFailed {
        /// The address it listens on.
        listener: Option<SocketAddr>,
        /// What went wrong.
        error: String,
    },
}

type EventHook = Box<dyn FnMut(&PeerEvent) + Send>;

/// How a connection is let in.
#[derive(Debug, Clone)]
pub(super) enum Admission {
    /// A client: authenticated by the authenticator, or by the identity its certificate proved.
    Client(Option<ByteString>),
    /// The broker's own connection (a bridge's local side): see `Broker::set_trusted`.
    Trusted,
}

enum ToRouter {
    /// A connection, and the identity its certificate proved (`use_identity_as_username`), or
    /// the broker's own (a bridge's local side).
    Open(
        Arc<Outbox>,
        Sender<Option<ConnectionId>>,
        PeerAddr,
        Admission,
    ),
    /// For the event hook.
    Bridge(PeerEvent),
    /// Replace the authenticator (answers whether there is one to replace).
    SetAuthenticator(Box<dyn Authenticator>, Sender<bool>),
    SetAuthorizer(Box<dyn Authorizer>),
    /// Take the limits that can change; answers what changed and what cannot.
    SetLimits(Box<BrokerConfig>, Sender<(Vec<String>, Vec<&'static str>)>),
    /// Reload every TLS listener's files: how many, or the first error.
    #[cfg(feature = "tls")]
    ReloadTls(Sender<Result<usize, Error>>),
    Bridges(Sender<Vec<BridgeStatus>>),
    #[cfg(feature = "tls")]
    TlsFailed(PeerAddr, String),
    #[cfg(feature = "ws")]
    WebSocketFailed(PeerAddr, String),
    AcceptFailed(Option<SocketAddr>, String),
    Authenticated(ConnectionId, AuthDecision),
    /// The store made the batches up to this one durable.
    Stored(u64, StoreTiming),
    /// The store could not commit the batch with this id (and later ones were dropped).
    StoreFailed(u64, String),
    /// The store is ready to try again after a failure: send it what waits.
    StoreRetry,
    Bytes(ConnectionId, Bytes),
    Eof(ConnectionId),
    Stats(Sender<Stats>),
    DriverStats(Sender<DriverStats>),
    Stop,
}

/// Builds a [`Broker`]: listeners, limits, authentication and authorization.
pub struct BrokerBuilder<R> {
    runtime: SharedRuntime,
    listeners: Vec<ListenerConfig>,
    config: BrokerConfig,
    store: Option<StoreChoice>,
    sync_policy: SyncPolicy,
    authenticator: Option<Box<dyn Authenticator>>,
    authorizer: Option<Box<dyn Authorizer>>,
    on_event: Option<EventHook>,
    bridges: Vec<BridgeOptions>,
    sys_interval: std::time::Duration,
    idle_after: std::time::Duration,
    _runtime: PhantomData<fn() -> R>,
}

/// How long a plain TCP connection has nothing to read or write, by default, before the broker
/// parks it (see [`BrokerBuilder::idle_after`]).
pub const DEFAULT_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the `$SYS/broker/…` topics are published by default.
pub const DEFAULT_SYS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl<R> std::fmt::Debug for BrokerBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl<R> BrokerBuilder<R> {
    /// Listens on a TCP address (port 0: the kernel picks one; see [`Broker::local_addrs`]).
    pub fn bind(self, addr: SocketAddr) -> Self {
        self.listener(ListenerConfig::tcp(addr))
    }

    /// Listens on a TCP address with TLS.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn bind_tls(self, addr: SocketAddr, tls: ServerTls) -> Self {
        self.listener(ListenerConfig::tcp(addr).tls(tls))
    }

    /// Serves MQTT over WebSocket on a TCP address, at the path `/mqtt`.
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn bind_ws(self, addr: SocketAddr) -> Self {
        self.listener(ListenerConfig::tcp(addr).websocket())
    }

    /// Listens on a Unix domain socket at `path` (on Unix). A socket file left there by a
    /// broker that did not stop cleanly is replaced; any other file there is an error. The
    /// file is removed when the broker stops.
    pub fn bind_unix(self, path: impl Into<std::path::PathBuf>) -> Self {
        self.listener(ListenerConfig::unix(path))
    }

    /// Adds a listener: any combination of TCP or Unix socket, TLS and WebSocket.
    pub fn listener(mut self, listener: ListenerConfig) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Limits and features (connections, packet size, queues, QoS, retain, …).
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps the broker's state in this directory (a [`FileStore`], created if missing):
    /// persistent sessions, their subscriptions and queued messages, QoS 2 state and retained
    /// messages survive a restart and a crash, and nothing is acknowledged before it is stored
    /// (with [`SyncPolicy::Always`], the default). Clean sessions are never written.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.store = Some(StoreChoice::Dir(dir.into()));
        self
    }

    /// Like [`BrokerBuilder::data_dir`], with a store of your own.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(StoreChoice::Custom(Box::new(store)));
        self
    }

    /// When commits reach the disk (default [`SyncPolicy::Always`]: before anything they hold
    /// is acknowledged).
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync_policy = policy;
        self
    }

    /// Decides who may connect (default: everyone). It runs on a thread of its own, one
    /// request at a time, so that a slow check (a password hash, a lookup) delays only the
    /// clients waiting to connect, never the routing of messages.
    pub fn authenticator(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.authenticator = Some(Box::new(authenticator));
        self
    }

    /// Decides who may publish and subscribe where (default: everyone everywhere).
    pub fn authorizer(mut self, authorizer: impl Authorizer + 'static) -> Self {
        self.authorizer = Some(Box::new(authorizer));
        self
    }

    /// Calls `hook` for each client that connects, disconnects or is refused (see
    /// [`PeerEvent`]). It runs on the broker's routing task, between packets: it should be quick
    /// (write a log line, bump a counter) and must not block.
    pub fn on_event(mut self, hook: impl FnMut(&PeerEvent) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(hook));
        self
    }

    /// How often the broker publishes its counters under `$SYS/broker/…`, retained (default
    /// [`DEFAULT_SYS_INTERVAL`], 10 s; zero turns them off): mosquitto's names where the meaning
    /// is the same (`version`, `uptime`, `clients/connected`, `clients/maximum`,
    /// `clients/total`, `messages/received`, `messages/sent`, `publish/messages/dropped`,
    /// `subscriptions/count`, `retained messages/count`, `load/messages/received/1min`, …), and
    /// ours: drops by cause (`publish/messages/dropped/queue-full`, …), bytes held
    /// (`store/queued/bytes`), each bridge's `bridges/NAME/state`. Clients cannot publish there.
    pub fn sys_interval(mut self, interval: std::time::Duration) -> Self {
        self.sys_interval = interval;
        self
    }

    /// How long a plain TCP connection (not TLS, WebSocket or a Unix socket) reads and writes
    /// nothing, with nothing waiting to be written, before the broker parks it (default
    /// [`DEFAULT_IDLE_AFTER`], 2 s; zero turns parking off). A parked connection has no task
    /// and is not registered with the runtime: its socket waits, with every other parked one,
    /// in one epoll set on a thread of the broker's own (`mqtt-idle`), which costs a few dozen
    /// bytes per connection where a task and a runtime registration cost about a kilobyte. When
    /// the client sends something, or the broker has something for it (a message, a
    /// DISCONNECT, closing on keep-alive expiry), it gets a task again, within microseconds;
    /// nothing is lost or reordered. The connection parks between one and two such periods
    /// after its last byte; a client that just connected parks as soon as its CONNACK is out
    /// and nothing else is pending. On Unix, with a runtime that implements
    /// [`Runtime::take_std_tcp`] (tokio, smol and
    /// async-std here); elsewhere connections keep their tasks.
    pub fn idle_after(mut self, idle_after: std::time::Duration) -> Self {
        self.idle_after = idle_after;
        self
    }

    /// Connects this broker to another one (see [`BridgeOptions`]): messages on the out topics
    /// are forwarded to it, those on its in topics are brought here. Any number of bridges.
    pub fn bridge(mut self, bridge: BridgeOptions) -> Self {
        self.bridges.push(bridge);
        self
    }

    /// Binds the listeners.
    ///
    /// A bridge with no topic, an invalid filter or prefix, or a bad name is
    /// [`Error::InvalidConfig`].
    pub async fn build(self) -> Result<Broker<R>, Error> {
        for bridge in &self.bridges {
            bridge.check().map_err(Error::InvalidConfig)?;
        }
        let mut core = Core::new(self.config);
        // As the core settled it (within the incoming budget): what WebSocket frames may carry.
        let max_packet_size = core.config().connection.max_packet_size;
        let mut listeners = Vec::new();
        for config in self.listeners {
            listeners.push(listener::bind(&self.runtime, config, max_packet_size).await?);
        }
        if self.authenticator.is_some() {
            core = core.with_deferred_authentication();
        }
        let (store, restored) = match self.store {
            None => (None, None),
            Some(choice) => {
                let (mut store, dir): (Box<dyn Store>, _) = match choice {
                    StoreChoice::Dir(dir) => {
                        let store = blocking(move || FileStore::open(&dir).map(|s| (s, dir)))?;
                        (Box::new(store.0), store.1)
                    }
                    StoreChoice::Custom(store) => (store, std::path::PathBuf::new()),
                };
                let (store, records) = blocking(move || {
                    let mut records = Vec::new();
                    store.load(&mut |k, v| records.push((k.to_vec(), v.to_vec())))?;
                    Ok::<_, StoreError>((store, records))
                })?;
                let now = self.runtime.now();
                let report = core.restore(
                    now,
                    std::time::SystemTime::now(),
                    records.iter().map(|(k, v)| (&k[..], &v[..])),
                )?;
                (Some(store), Some((dir, report)))
            }
        };
        if let Some(authorizer) = self.authorizer {
            core = core.with_boxed_authorizer(authorizer);
        }
        let (to_router, inbox) = async_channel::bounded(1024);
        let (done_tx, done) = async_channel::bounded(1);
        Ok(Broker {
            runtime: self.runtime,
            listeners,
            core,
            store,
            sync_policy: self.sync_policy,
            restored,
            authenticator: self.authenticator,
            on_event: self.on_event,
            bridges: self.bridges,
            sys_interval: self.sys_interval,
            idle_after: self.idle_after,
            to_router,
            inbox,
            done_tx,
            done,
            _runtime: PhantomData,
        })
    }
}

/// An MQTT broker on the runtime `R`.
pub struct Broker<R> {
    runtime: SharedRuntime,
    listeners: Vec<listener::Bound>,
    core: Core,
    /// Run on a thread of its own.
    store: Option<Box<dyn Store>>,
    sync_policy: SyncPolicy,
    restored: Option<(std::path::PathBuf, RestoreReport)>,
    /// Run on a thread of its own (see [`BrokerBuilder::authenticator`]).
    authenticator: Option<Box<dyn Authenticator>>,
    on_event: Option<EventHook>,
    bridges: Vec<BridgeOptions>,
    sys_interval: std::time::Duration,
    idle_after: std::time::Duration,
    to_router: Sender<ToRouter>,
    inbox: Receiver<ToRouter>,
    /// Dropped when the router ends, which is what handles wait for.
    done_tx: Sender<()>,
    done: Receiver<()>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: 'static> std::fmt::Debug for Broker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("local_addrs", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

/// Controls a running broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    to_router: Sender<ToRouter>,
    done: Receiver<()>,
}

impl std::fmt::Debug for ToRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToRouter")
    }
}

impl BrokerHandle {
    /// Stops the broker: listeners close, clients are disconnected (5.0: Server shutting down).
    /// Returns once it has stopped.
    pub async fn stop(&self) {
        let _ = self.to_router.send(ToRouter::Stop).await;
        let _ = self.done.recv().await;
    }

    /// Replaces the authenticator (a reloaded password file): clients that connect from now on
    /// are checked by it; connected ones stay. Returns `false`, and changes nothing, when the
    /// broker was built without one (it then authenticates nobody, and cannot start to).
    pub async fn set_authenticator(&self, authenticator: impl Authenticator + 'static) -> bool {
        let (reply, replaced) = async_channel::bounded(1);
        let message = ToRouter::SetAuthenticator(Box::new(authenticator), reply);
        if self.to_router.send(message).await.is_err() {
            return false;
        }
        replaced.recv().await.unwrap_or(false)
    }

    /// Replaces the authorizer (a reloaded ACL file): every PUBLISH and SUBSCRIBE from now on,
    /// connected clients' too, is judged by it.
    pub async fn set_authorizer(&self, authorizer: impl Authorizer + 'static) {
        let message = ToRouter::SetAuthorizer(Box::new(authorizer));
        let _ = self.to_router.send(message).await;
    }

    /// Takes the limits of `config` that can change while the broker runs (connections,
    /// sessions, queues, retained messages, congestion timeout, session expiry, per-connection
    /// windows for new connections: see [`mqtt_proto::broker::Broker::set_limits`]). Returns
    /// what changed (`"max_connections: 10000 -> 200"`) and the settings that differ but need a
    /// restart.
    pub async fn set_limits(&self, config: BrokerConfig) -> (Vec<String>, Vec<&'static str>) {
        let (reply, answer) = async_channel::bounded(1);
        let message = ToRouter::SetLimits(Box::new(config), reply);
        if self.to_router.send(message).await.is_err() {
            return (Vec::new(), Vec::new());
        }
        answer.recv().await.unwrap_or_default()
    }

    /// Reads every TLS listener's certificate, key and client CA files again (renewed
    /// certificates): new connections use them, established ones keep theirs. A listener
    /// whose files do not load keeps its configuration, and the first such error is returned.
    /// Returns how many listeners reloaded.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub async fn reload_tls(&self) -> Result<usize, Error> {
        let (reply, reloaded) = async_channel::bounded(1);
        self.to_router
            .send(ToRouter::ReloadTls(reply))
            .await
            .map_err(|_| Error::Closed)?;
        reloaded.recv().await.map_err(|_| Error::Closed)?
    }

    /// Each bridge's state: connected or not, the last error, messages forwarded.
    pub async fn bridges(&self) -> Vec<BridgeStatus> {
        let (reply, statuses) = async_channel::bounded(1);
        if self.to_router.send(ToRouter::Bridges(reply)).await.is_err() {
            return Vec::new();
        }
        statuses.recv().await.unwrap_or_default()
    }

    /// The driver's counters: router batches, store commits and their latency.
    pub async fn driver_stats(&self) -> Option<DriverStats> {
        let (reply, stats) = async_channel::bounded(1);
        self.to_router
            .send(ToRouter::DriverStats(reply))
            .await
            .ok()?;
        stats.recv().await.ok()
    }

    /// The broker's counters.
    pub async fn stats(&self) -> Option<Stats> {
        let (reply, stats) = async_channel::bounded(1);
        self.to_router.send(ToRouter::Stats(reply)).await.ok()?;
        stats.recv().await.ok()
    }
}

impl<R: Runtime + Default> Broker<R> {
    /// A builder on the runtime `R`.
    pub fn builder() -> BrokerBuilder<R> {
        Self::builder_with(Arc::new(R::default()))
    }

    /// Builds and starts a broker on a thread of its own, with its own runtime: for tests and
    /// for programs that are not async. Returns its handle and listening addresses.
    pub fn start_in_thread(
        builder: BrokerBuilder<R>,
    ) -> Result<(BrokerHandle, Vec<SocketAddr>), Error> {
        let runtime = builder.runtime.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let inner = runtime.clone();
                runtime.block_on(Box::pin(async move {
                    let _ = inner;
                    match builder.build().await {
                        Ok(broker) => {
                            let handle = broker.handle();
                            let addrs = broker.local_addrs();
                            let _ = ready_tx.send(Ok((handle, addrs)));
                            broker.serve().await;
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                }));
            })?;
        ready_rx.recv().map_err(|_| Error::Closed)?
    }
}

impl<R: 'static> Broker<R> {
    /// A builder on this runtime handle.
    pub fn builder_with(runtime: SharedRuntime) -> BrokerBuilder<R> {
        BrokerBuilder {
            runtime,
            listeners: Vec::new(),
            config: BrokerConfig::default(),
            store: None,
            sync_policy: SyncPolicy::Always,
            authenticator: None,
            authorizer: None,
            on_event: None,
            bridges: Vec::new(),
            sys_interval: DEFAULT_SYS_INTERVAL,
            idle_after: DEFAULT_IDLE_AFTER,
            _runtime: PhantomData,
        }
    }

    /// With a store: its directory (empty for a store of your own) and what was restored from
    /// it.
    pub fn restored(&self) -> Option<(&std::path::Path, &RestoreReport)> {
        self.restored
            .as_ref()
            .map(|(dir, report)| (dir.as_path(), report))
    }

    /// The addresses it listens on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.listener.local_addr().ok())
            .collect()
    }

    /// A handle to stop it or read its counters.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle {
            to_router: self.to_router.clone(),
            done: self.done.clone(),
        }
    }

    /// Spawns the broker on its runtime and returns its handle.
    pub fn spawn(self) -> BrokerHandle {
        let handle = self.handle();
        let runtime = self.runtime.clone();
        runtime.spawn(Box::pin(self.serve()));
        handle
    }

    /// Runs the broker until [`BrokerHandle::stop`].
    pub async fn serve(self) {
        let Broker {
            runtime,
            listeners,
            core,
            store,
            sync_policy,
            authenticator,
            on_event,
            bridges,
            sys_interval,
            idle_after,
            to_router,
            inbox,
            done_tx,
            ..
        } = self;
        let serving = connection::Serving::start(&runtime, &to_router, idle_after);
        #[cfg(feature = "tls")]
        let tls: Vec<_> = listeners.iter().filter_map(listener::Bound::tls).collect();
        let mut stop_listeners = Vec::new();
        // Each accept loop holds a sender, dropped once its listener is closed.
        let (listening, all_closed) = async_channel::bounded::<()>(1);
        // Closed once every bridge's local session exists: no client is accepted before, so
        // that none publishes to an out topic before a bridge's session keeps its messages.
        let (bridges_ready, gate) = async_channel::bounded::<()>(1);
        for bound in listeners {
            let (stop, stopped) = async_channel::bounded::<()>(1);
            stop_listeners.push(stop);
            let accepting = listener::accept_loop(serving.clone(), bound, stopped);
            let listening = listening.clone();
            let gate = gate.clone();
            runtime.spawn(Box::pin(async move {
                let _ = gate.recv().await;
                accepting.await;
                drop(listening);
            }));
        }
        let auth = authenticator.and_then(|a| spawn_authenticator(a, to_router.clone()));
        let store = store.map(|s| spawn_store(s, sync_policy, to_router.clone()));
        let store_done = store.as_ref().map(|s| s.done.clone());
        let bridges: Vec<_> = bridges
            .into_iter()
            .map(|options| start_bridge(&serving, options, bridges_ready.clone()))
            .collect();
        drop(bridges_ready);
        let bridges_done: Vec<_> = bridges.iter().map(|b| b.done.clone()).collect();
        drop((to_router, listening));
        Router {
            runtime: runtime.clone(),
            serving: serving.clone(),
            core,
            auth,
            store,
            outputs: HashMap::default(),
            on_event,
            peers: HashMap::default(),
            sys: sys::SysTopics::new(sys_interval, runtime.now()),
            #[cfg(feature = "tls")]
            tls,
            driver: DriverStats::default(),
            bridges,
        }
        .run(inbox)
        .await;
        // Every outbox is closed: parked connections are handed back to be closed.
        #[cfg(unix)]
        if let Some(idle) = &serving.idle {
            idle.stop();
        }
        drop(serving);
        // Bridges were told to stop with the router; each takes at most a few seconds.
        for done in bridges_done {
            let _ = done.recv().await;
        }
        if let Some(done) = store_done {
            // The store's thread commits what it was given, then ends.
            let deadline = runtime.now() + STORE_SHUTDOWN;
            let sleep = runtime.sleep_until(deadline);
            future::or(
                async {
                    let _ = done.recv().await;
                },
                sleep,
            )
            .await;
        }
        drop(stop_listeners);
        // `stop` returns only once the ports are free again, so that a new broker can bind them.
        let _ = all_closed.recv().await;
        drop(done_tx);
    }
}

impl Router {
    /// Hands every sealed batch of changes to the store's thread.
    fn commit_batches(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        while let Some(batch) = self.core.poll_store() {
            if store.batches.send(batch).is_err() {
                // The thread is gone: nothing more will be durable, so nothing it holds is
                // acknowledged.
                return;
            }
        }
    }
}

/// Runs `authenticator` on a thread of its own: requests come from the router, decisions go
/// back to it. The thread ends when the router drops the sender. `None` when no thread can be
/// started (the broker then refuses the clients it cannot ask about).
fn spawn_authenticator(
    mut authenticator: Box<dyn Authenticator>,
    to_router: Sender<ToRouter>,
) -> Option<Sender<AuthWork>> {
    let (requests, incoming) = async_channel::unbounded::<AuthWork>();
    std::thread::Builder::new()
        .name("mqtt-auth".into())
        .spawn(move || {
            while let Ok(work) = incoming.recv_blocking() {
                let (connection, request) = match work {
                    AuthWork::Request(connection, request) => (connection, request),
                    AuthWork::Replace(new) => {
                        authenticator = new;
                        continue;
                    }
                };
                // An authenticator that panics refuses that client; the others are still asked.
                let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    request.decide(authenticator.as_mut())
                }))
                .unwrap_or(AuthDecision::Refuse(ReasonCode::UnspecifiedError));
                let answer = ToRouter::Authenticated(connection, decision);
                if to_router.send_blocking(answer).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(requests)
}

/// Starts a bridge whose local client reaches the router through an in-memory pipe.
fn start_bridge(
    serving: &Arc<connection::Serving>,
    options: BridgeOptions,
    ready: Sender<()>,
) -> bridge::Running {
    let runtime = &serving.runtime;
    let to_router = &serving.to_router;
    let connect_serving = serving.clone();
    let local: bridge::LocalConnector = Arc::new(move || {
        let (client, server) = crate::pipe::pair();
        let task = connection::serve(
            &connect_serving,
            Box::new(server),
            PeerAddr::Internal,
            Admission::Trusted,
            false,
        );
        connect_serving.runtime.spawn(Box::pin(task));
        Box::pin(async move { Ok(Box::new(client) as crate::runtime::BoxTransport) })
    });
    let report_router = to_router.clone();
    bridge::spawn(runtime.clone(), options, local, ready, move |report| {
        let event = match report {
            bridge::Report::Connected(name) => PeerEvent::BridgeConnected { name },
            bridge::Report::Disconnected(name, error) => {
                PeerEvent::BridgeDisconnected { name, error }
            }
        };
        let _ = report_router.try_send(ToRouter::Bridge(event));
    })
}

/// What the authentication thread is given: a request to decide, or a new authenticator (a
/// reloaded password file) for the requests after it.
enum AuthWork {
    Request(ConnectionId, AuthRequest),
    Replace(Box<dyn Authenticator>),
}

/// Where a broker keeps its state.
enum StoreChoice {
    Dir(std::path::PathBuf),
    Custom(Box<dyn Store>),
}

/// Runs `f`, which blocks (disk I/O), on a thread of its own, so that building a broker does
/// not block an executor's thread.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Error> {
    let handle = std::thread::Builder::new()
        .name("mqtt-store-open".into())
        .spawn(f)?;
    handle
        .join()
        .map_err(|_| Error::Closed)?
        .map_err(Error::Store)
}

/// The store's thread: commits the batches the router sends, merged when several wait (one
/// fsync for them all), and says when they are durable.
struct StoreThread {
    batches: std::sync::mpsc::Sender<mqtt_proto::broker::StoreBatch>,
    /// Ends when the thread does.
    done: Receiver<()>,
}

/// How long a stopping broker waits for its store to commit what it has.
const STORE_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the store's thread waits after a failed commit before the next.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

fn spawn_store(
    mut store: Box<dyn Store>,
    policy: SyncPolicy,
    to_router: Sender<ToRouter>,
) -> StoreThread {
    use std::sync::mpsc::RecvTimeoutError;
    let (batches, incoming) = std::sync::mpsc::channel::<mqtt_proto::broker::StoreBatch>();
    let (done_tx, done) = async_channel::bounded::<()>(1);
    let thread = std::thread::Builder::new()
        .name("mqtt-store".into())
        .spawn(move || {
            let _done = done_tx;
            let mut last_sync = std::time::Instant::now();
            loop {
                let first = match policy {
                    SyncPolicy::Always => match incoming.recv() {
                        Ok(batch) => batch,
                        Err(_) => return,
                    },
                    SyncPolicy::Periodic(interval) => {
                        let wait = interval.saturating_sub(last_sync.elapsed());
                        match incoming.recv_timeout(wait) {
                            Ok(batch) => batch,
                            Err(RecvTimeoutError::Timeout) => {
                                if let Err(error) = store.sync() {
                                    let report = ToRouter::StoreFailed(0, error.to_string());
                                    let _ = to_router.send_blocking(report);
                                }
                                last_sync = std::time::Instant::now();
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => {
                                let _ = store.sync();
                                return;
                            }
                        }
                    }
                };
                // Group commit: everything already waiting goes in the same commit.
                let first_id = first.id;
                let mut last_id = first.id;
                let mut ops = first.ops;
                while let Ok(batch) = incoming.try_recv() {
                    last_id = batch.id;
                    ops.extend(batch.ops);
                }
                let started = std::time::Instant::now();
                let result = store.commit(&ops, policy.syncs_each_commit());
                let timing = StoreTiming {
                    ops: ops.len() as u64,
                    time: started.elapsed(),
                };
                match result {
                    Ok(()) => {
                        if to_router
                            .send_blocking(ToRouter::Stored(last_id, timing))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        let report = ToRouter::StoreFailed(first_id, error.to_string());
                        if to_router.send_blocking(report).is_err() {
                            return;
                        }
                        // The router takes these changes (and those of the batches after them)
                        // back, and sends them again when told to. Batches already on their
                        // way are committed as they come: their ops are idempotent.
                        std::thread::sleep(STORE_RETRY);
                        if to_router.send_blocking(ToRouter::StoreRetry).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    if thread.is_err() {
        // No thread: nothing will ever be durable, and nothing acknowledged.
    }
    StoreThread { batches, done }
}

struct Router {
    runtime: SharedRuntime,
    /// What the connections share (the idle set's counters).
    serving: Arc<connection::Serving>,
    core: Core,
    /// The store's thread, when there is a store.
    store: Option<StoreThread>,
    /// Where authentication requests go, when there is an authenticator.
    auth: Option<Sender<AuthWork>>,
    outputs: HashMap<ConnectionId, Arc<Outbox>, FxBuildHasher>,
    on_event: Option<EventHook>,
    /// Each connection's address, kept only when there is a hook to tell.
    peers: HashMap<ConnectionId, PeerAddr, FxBuildHasher>,
    bridges: Vec<bridge::Running>,
    /// The `$SYS` topics, unless turned off.
    sys: Option<sys::SysTopics>,
    /// Each TLS listener's configuration, for reloads.
    #[cfg(feature = "tls")]
    tls: Vec<Arc<listener::ReloadableTls>>,
    driver: DriverStats,
}

/// One commit of the store's thread.
#[derive(Debug, Clone, Copy)]
struct StoreTiming {
    ops: u64,
    time: std::time::Duration,
}

/// Counters of the broker's driver, beside the core's [`Stats`]: how the router batches its
/// work and how long the store takes (see [`BrokerHandle::driver_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Turns of the router: each handles a batch of messages from connections (up to 64),
    /// then hands out what they produced.
    pub router_turns: u64,
    /// Messages the router handled (bytes read, connections opened and closed, store
    /// confirmations, …); divided by `router_turns`, the mean batch size.
    pub router_messages: u64,
    /// Commits of the store (with a data directory): each covers every change waiting.
    pub store_commits: u64,
    /// Changes written by those commits.
    pub store_ops: u64,
    /// Time spent in commits (sync included); divided by `store_commits`, the mean latency.
    pub store_commit_time: std::time::Duration,
    /// The longest commit.
    pub store_commit_max: std::time::Duration,
    /// Idle connections parked now, without a task (see [`BrokerBuilder::idle_after`]).
    pub parked: u64,
    /// Times a connection was parked since the broker started.
    pub parks: u64,
}

impl Router {
    fn bridge_statuses(&self) -> Vec<BridgeStatus> {
        self.bridges
            .iter()
            .map(|b| {
                b.status
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_else(|p| p.into_inner().clone())
            })
            .collect()
    }

    async fn run(mut self, inbox: Receiver<ToRouter>) {
        loop {
            let now = self.runtime.now();
            let sys_due = self.sys.as_ref().map(sys::SysTopics::deadline);
            if sys_due.is_some_and(|at| at <= now) {
                let bridges = self.bridge_statuses();
                if let Some(sys) = &mut self.sys {
                    sys.publish_due(&mut self.core, now, &bridges);
                }
                self.flush(now);
                continue;
            }
            let deadline = self.core.poll_timeout();
            if deadline.is_some_and(|at| at <= now) {
                // Checked before the inbox so that a busy inbox cannot starve keep-alive and
                // expiry.
                self.core.handle_timeout(now);
                self.flush(now);
                continue;
            }
            let deadline = deadline.into_iter().chain(sys_due).min();
            let runtime = self.runtime.clone();
            let message = future::or(async { inbox.recv().await.ok() }, async move {
                match deadline {
                    Some(at) => runtime.sleep_until(at).await,
                    None => future::pending::<()>().await,
                }
                None
            })
            .await;
            let now = self.runtime.now();
            let Some(message) = message else {
                if inbox.is_closed() {
                    return;
                }
                // The deadline passed: handled at the top of the loop.
                continue;
            };
            if self.handle(message, now, &inbox).is_break() {
                return;
            }
            self.driver.router_turns += 1;
            self.driver.router_messages += 1;
            // Whatever else is already waiting is handled before the output goes out: under
            // load, one flush (and one wake-up of each connection's task) covers many packets.
            for _ in 1..BATCH {
                let Ok(message) = inbox.try_recv() else {
                    break;
                };
                self.driver.router_messages += 1;
                if self.handle(message, now, &inbox).is_break() {
                    return;
                }
            }
            self.flush(now);
        }
    }

    /// Handles one message from a connection's task or a handle.
    fn handle(
        &mut self,
        message: ToRouter,
        now: std::time::Instant,
        inbox: &Receiver<ToRouter>,
    ) -> ControlFlow<()> {
        match message {
            ToRouter::Open(output, reply, peer, admission) => {
                let id = self.core.open(now);
                if let Some(id) = id {
                    match admission {
                        Admission::Client(Some(identity)) => self.core.set_identity(id, identity),
                        Admission::Client(None) => {}
                        Admission::Trusted => self.core.set_trusted(id),
                    }
                    self.outputs.insert(id, output);
                    if self.on_event.is_some() {
                        self.peers.insert(id, peer);
                    }
                } else if let Some(hook) = &mut self.on_event {
                    hook(&PeerEvent::Rejected { peer });
                }
                let _ = reply.try_send(id);
            }
            ToRouter::Bytes(id, bytes) => self.core.handle_bytes(id, now, &bytes),
            #[cfg(feature = "tls")]
            ToRouter::TlsFailed(peer, error) => {
                if let Some(hook) = &mut self.on_event {
                    hook(&PeerEvent::TlsFailed { peer, error });
                }
            }
            #[cfg(feature = "ws")]
            ToRouter::WebSocketFailed(peer, error) => {
                if let Some(hook) = &mut self.on_event {
                    hook(&PeerEvent::WebSocketFailed { peer, error });
                }
            }
            ToRouter::Stored(batch, timing) => {
                self.driver.store_commits += 1;
                self.driver.store_ops += timing.ops;
                self.driver.store_commit_time += timing.time;
                self.driver.store_commit_max = self.driver.store_commit_max.max(timing.time);
                self.core.handle_stored(batch, now);
            }
            // The flush that follows every message sends the store what waits.
            ToRouter::StoreRetry => {}
            ToRouter::StoreFailed(batch, error) => {
                if batch > 0 {
                    self.core.handle_store_failed(batch, now);
                }
                if let Some(hook) = &mut self.on_event {
                    hook(&PeerEvent::StoreFailed { error });
                }
            }
            ToRouter::Authenticated(id, decision) => {
                // Refused only when the client left meanwhile: nothing to do then.
                let _ = self.core.authenticated(id, now, decision);
            }
            ToRouter::AcceptFailed(listener, error) => {
                if let Some(hook) = &mut self.on_event {
                    hook(&PeerEvent::AcceptFailed { listener, error });
                }
            }
            ToRouter::Eof(id) => {
                self.core.handle_eof(id, now);
                self.outputs.remove(&id);
            }
            ToRouter::Stats(reply) => {
                let _ = reply.try_send(self.core.stats());
            }
            ToRouter::DriverStats(reply) => {
                #[cfg(unix)]
                if let Some(idle) = &self.serving.idle {
                    (self.driver.parked, self.driver.parks) = idle.counts();
                }
                let _ = reply.try_send(self.driver);
            }
            ToRouter::Bridge(event) => {
                if let Some(hook) = &mut self.on_event {
                    hook(&event);
                }
            }
            ToRouter::SetAuthenticator(authenticator, reply) => {
                let replaced = self
                    .auth
                    .as_ref()
                    .is_some_and(|auth| auth.try_send(AuthWork::Replace(authenticator)).is_ok());
                let _ = reply.try_send(replaced);
            }
            ToRouter::SetAuthorizer(authorizer) => self.core.set_authorizer(authorizer),
            ToRouter::SetLimits(config, reply) => {
                let _ = reply.try_send(self.core.set_limits(&config));
            }
            #[cfg(feature = "tls")]
            ToRouter::ReloadTls(reply) => {
                let mut reloaded = Ok(0);
                for tls in &self.tls {
                    match (tls.reload(), &mut reloaded) {
                        (Ok(()), Ok(n)) => *n += 1,
                        (Err(error), Ok(_)) => reloaded = Err(error),
                        (_, Err(_)) => {}
                    }
                }
                let _ = reply.try_send(reloaded);
            }
            ToRouter::Bridges(reply) => {
                let _ = reply.try_send(self.bridge_statuses());
            }
            ToRouter::Stop => {
                // Bridges disconnect from their remote brokers meanwhile (`serve` waits).
                for bridge in &self.bridges {
                    bridge.stop.close();
                }
                let ids: Vec<_> = self.outputs.keys().copied().collect();
                for id in ids {
                    self.core
                        .disconnect(id, now, ReasonCode::ServerShuttingDown);
                }
                self.flush(now);
                // The last changes go to the store, whose thread ends once they are committed
                // (`serve` waits for it). Output they held (a last DISCONNECT) is not sent.
                self.store = None;
                for output in self.outputs.values() {
                    output.close();
                }
                self.outputs.clear();
                inbox.close();
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Passes connects and disconnects to the hook, with the peer's address.
    fn tell(&mut self, event: &BrokerEvent) {
        let Some(hook) = &mut self.on_event else {
            return;
        };
        match event {
            BrokerEvent::ClientConnected {
                connection,
                client_id,
                username,
                session_present,
            } => {
                if let Some(&peer) = self.peers.get(connection) {
                    hook(&PeerEvent::Connected {
                        peer,
                        client_id: client_id.clone(),
                        username: username.clone(),
                        session_present: *session_present,
                    });
                }
            }
            BrokerEvent::ClientDisconnected {
                connection,
                client_id,
                username,
                reason,
            } => {
                if let Some(peer) = self.peers.remove(connection) {
                    hook(&PeerEvent::Disconnected {
                        peer,
                        client_id: client_id.clone(),
                        username: username.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            BrokerEvent::Close(connection) => {
                self.peers.remove(connection);
            }
            BrokerEvent::MessagesDropped {
                client_id,
                reason,
                count,
            } => hook(&PeerEvent::MessagesDropped {
                client_id: client_id.clone(),
                reason: *reason,
                count: *count,
            }),
            _ => {}
        }
    }

    /// Hands every ready connection its bytes; a connection whose outbox is full is not reading
    /// and is disconnected.
    fn flush(&mut self, now: std::time::Instant) {
        self.commit_batches();
        loop {
            while let Some(id) = self.core.poll_ready() {
                let Some(output) = self.outputs.get(&id) else {
                    continue;
                };
                if output.is_full(OUTPUT_QUEUE, OUTPUT_BYTES) {
                    // The client stopped reading: (5.0) a DISCONNECT with Quota Exceeded goes
                    // out after what is queued, and the `Close` event that follows closes it.
                    self.core.disconnect(id, now, ReasonCode::QuotaExceeded);
                }
                let core = &mut self.core;
                output.fill(|bytes| core.poll_transmit(id, now, bytes));
            }
            let mut any = false;
            while let Some(event) = self.core.poll_event() {
                any = true;
                if let Some(sys) = &mut self.sys {
                    sys.note(&event);
                }
                self.tell(&event);
                if let BrokerEvent::PauseReading(id) | BrokerEvent::ResumeReading(id) = event
                    && let Some(output) = self.outputs.get(&id)
                {
                    output.set_reading(matches!(event, BrokerEvent::ResumeReading(_)));
                }
                if let BrokerEvent::Authenticate {
                    connection,
                    request,
                } = event
                {
                    let asked = self.auth.as_ref().is_some_and(|auth| {
                        auth.try_send(AuthWork::Request(connection, request))
                            .is_ok()
                    });
                    if !asked {
                        let refuse = AuthDecision::Refuse(ReasonCode::ServerUnavailable);
                        let _ = self.core.authenticated(connection, now, refuse);
                    }
                    continue;
                }
                if let BrokerEvent::Close(id) = event {
                    // Send what is left, then let the task close the transport.
                    if let Some(output) = self.outputs.remove(&id) {
                        let core = &mut self.core;
                        output.fill(|bytes| core.poll_transmit(id, now, bytes));
                        output.close();
                    }
                    self.core.handle_eof(id, now);
                }
            }
            if !any {
                return;
            }
        }
    }
}
