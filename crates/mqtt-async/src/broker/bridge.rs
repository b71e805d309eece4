//! Bridges: this broker connected, as a client, to another broker (mosquitto, EMQX, HiveMQ,
//! another of ours), with messages forwarded both ways under topic rules.
//!
//! A bridge is two of our [`Client`]s. The *remote* one connects to the other broker, with
//! everything a client has (reconnect with backoff, TLS, WebSocket). The *local* one connects to
//! this broker over an in-memory pipe, as a trusted connection, with the persistent session
//! `$bridge/NAME`:
//!
//! - **out**: the local client subscribes to the out topics (No Local, so that what the bridge
//!   brought in does not go back, Retain As Published) with manual acknowledgement; each message
//!   is published to the remote broker and acknowledged locally only once the remote broker
//!   acknowledged it.
//! - **in**: the remote client subscribes to the in topics with manual acknowledgement (5.0:
//!   No Local; 3.1.1: the bridge bit of mosquitto's `try_private`); each message is published
//!   locally and acknowledged to the remote broker only once this broker has taken it (stored,
//!   with a data directory).
//! - **outages**: while the remote broker cannot be reached, the local client is disconnected.
//!   Its session stays, so the broker queues what the out topics receive, as for any persistent
//!   session: bounded by `max_session_queue` and `max_session_queue_bytes`, counted when full
//!   (with the client identifier `$bridge/NAME`), and stored with a data directory. When the
//!   remote broker is back, the local client resumes the session and the backlog flows.
//!   Messages that were on their way to the remote broker when it went down are remembered by
//!   their local packet identifier: their redelivery is not forwarded a second time, so a QoS 2
//!   message reaches the remote broker once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use bytes::{Buf, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future;
use mqtt_proto::backoff::Backoff;
use mqtt_proto::connection::{
    AckToken, ClientConfig, ClientConnection, ClientEvent, ClientState, Session,
};
use mqtt_proto::packet::{
    ByteString, Disconnect, Publish, QoS, RetainHandling, SubscribeProperties, Subscription,
    TopicName, Version,
};
use mqtt_proto::topic::TopicFilter;

use crate::runtime::{BoxFuture, BoxTransport, SharedRuntime};
use crate::{ClientOptions, Error};

/// Which way a bridge forwards the messages of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From this broker to the remote one.
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One topic rule of a bridge, with mosquitto's prefix semantics: out, a local message on
/// `local_prefix` + `filter` is published remotely with `local_prefix` replaced by
/// `remote_prefix`; in, the other way round.
///
/// ```
/// use mqtt_async::broker::{BridgeTopic, Direction};
/// use mqtt_async::QoS;
/// // Local `sensors/kitchen/t` goes to the remote broker as `site-7/sensors/kitchen/t`.
/// let topic = BridgeTopic::new("sensors/#", Direction::Out)
///     .qos(QoS::AtLeastOnce)
///     .remote_prefix("site-7/");
/// assert_eq!(topic.remote_filter(), "site-7/sensors/#");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    filter: String,
    direction: Direction,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
}

impl BridgeTopic {
    /// A rule for `filter` (a topic filter; empty with a prefix: the prefix is the topic), at
    /// QoS 2 (messages keep the QoS they were published with), without prefixes.
    pub fn new(filter: impl Into<String>, direction: Direction) -> Self {
        Self {
            filter: filter.into(),
            direction,
            qos: QoS::ExactlyOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        }
    }

    /// The highest QoS forwarded (default 2): messages published at a higher one are forwarded
    /// at this one, as a subscription at this QoS receives them.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// The prefix of the topics on this broker.
    pub fn local_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.local_prefix = prefix.into();
        self
    }

    /// The prefix of the topics on the remote broker.
    pub fn remote_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.remote_prefix = prefix.into();
        self
    }

    /// The filter subscribed on this broker (out).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.filter)
    }

    /// The filter subscribed on the remote broker (in).
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.filter)
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    fn check(&self) -> Result<(), String> {
        for (what, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#']) {
                return Err(format!("{what} {prefix:?} holds a wildcard"));
            }
        }
        for filter in [self.local_filter(), self.remote_filter()] {
            if TopicFilter::new(filter.clone()).is_err() {
                return Err(format!("{filter:?} is not a valid topic filter"));
            }
        }
        Ok(())
    }

    /// Replaces `from` at the start of `topic` with `to`; `None` if `topic` is not under `from`
    /// or the result is not a topic name.
    fn remap(topic: &str, from: &str, to: &str) -> Option<TopicName> {
        let rest = topic.strip_prefix(from)?;
        TopicName::new(format!("{to}{rest}")).ok()
    }
}

/// A bridge: see [`BrokerBuilder::bridge`](super::BrokerBuilder::bridge).
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    name: String,
    remote: ClientOptions,
    topics: Vec<BridgeTopic>,
    try_private: bool,
    max_inflight: u16,
}

impl BridgeOptions {
    /// A bridge called `name` (its local session is `$bridge/NAME`) to the broker `remote`
    /// describes: address, transport, TLS, version, client identifier, credentials, clean start,
    /// session expiry, keep alive, reconnect backoff, in-flight window, all as for a client.
    /// Give it a client identifier and a persistent session (3.1.1: `clean_start(false)`; 5.0:
    /// also a [session expiry](ClientOptions::session_expiry)) so that the remote broker keeps
    /// what is on its way while the bridge is down; without an identifier it is
    /// `HOSTNAME.NAME`, as mosquitto's.
    pub fn new(name: impl Into<String>, remote: ClientOptions) -> Self {
        Self {
            name: name.into(),
            remote,
            topics: Vec::new(),
            try_private: true,
            max_inflight: REMOTE_WINDOW,
        }
    }

    /// The most QoS 1/2 messages on their way to the remote broker at once (default 100, where a
    /// client's default is 10: a bridge carries many clients' traffic over one connection). A
    /// 5.0 remote broker's Receive Maximum lowers it; mosquitto takes 20 from 3.1.1 clients
    /// unless configured otherwise, and queues the rest.
    pub fn max_inflight(mut self, max: u16) -> Self {
        self.max_inflight = max.max(1);
        self
    }

    /// Adds a topic rule.
    pub fn topic(mut self, topic: BridgeTopic) -> Self {
        self.topics.push(topic);
        self
    }

    /// With 3.1.1, tell the remote broker that this client is a bridge (default on), as
    /// mosquitto's `try_private` does: the protocol level has bit 7 set, and mosquitto and this
    /// broker then send the bridge none of its own messages back (3.1.1 has no No Local) and
    /// keep retain flags. Turn it off for a broker that refuses the connection for it.
    pub fn try_private(mut self, on: bool) -> Self {
        self.try_private = on;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '+', '#']) {
            return Err(format!(
                "bridge name {:?} must be non-empty, without '/', '+' or '#'",
                self.name
            ));
        }
        if self.topics.is_empty() {
            return Err(format!("bridge {}: no topics", self.name));
        }
        for topic in &self.topics {
            topic
                .check()
                .map_err(|e| format!("bridge {}: {e}", self.name))?;
        }
        Ok(())
    }
}

/// A bridge's state, from [`BrokerHandle::bridges`](super::BrokerHandle::bridges).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStatus {
    /// The bridge's name.
    pub name: String,
    /// Connected to the remote broker now.
    pub connected: bool,
    /// Why the last connection ended or the last attempt failed.
    pub last_error: Option<String>,
    /// Messages forwarded to the remote broker (acknowledged by it, for QoS 1 and 2).
    pub sent: u64,
    /// Messages forwarded from the remote broker (taken by this one).
    pub received: u64,
    /// Messages the remote broker refused (a negative PUBACK or PUBREC): not forwarded.
    pub refused: u64,
}

/// What a bridge tells the broker's event hook.
pub(super) enum Report {
    Connected(String),
    Disconnected(String, String),
}

/// Opens an in-memory connection to this broker, trusted.
pub(super) type LocalConnector =
    Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<BoxTransport>> + Send + Sync>;

/// A running bridge, as the broker holds it.
pub(super) struct Running {
    pub(super) status: Arc<Mutex<BridgeStatus>>,
    /// Closed to stop the bridge.
    pub(super) stop: Sender<()>,
    /// Closed when it has stopped.
    pub(super) done: Receiver<()>,
}

/// Starts a bridge on `runtime`: one task that runs both connections.
pub(super) fn spawn(
    runtime: SharedRuntime,
    options: BridgeOptions,
    local: LocalConnector,
    ready: Sender<()>,
    report: impl Fn(Report) + Send + Sync + 'static,
) -> Running {
    let status = Arc::new(Mutex::new(BridgeStatus {
        name: options.name.clone(),
        connected: false,
        last_error: None,
        sent: 0,
        received: 0,
        refused: 0,
    }));
    let (stop, stopped) = async_channel::bounded(1);
    let (done_tx, done) = async_channel::bounded::<()>(1);
    let seed = options
        .name
        .bytes()
        .fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
        });
    let backoff = Backoff::new(options.remote.reconnect.unwrap_or_default(), seed);
    let bridge = Bridge {
        runtime: runtime.clone(),
        options,
        local_connector: local,
        status: status.clone(),
        report: Box::new(report),
        remote: None,
        local: None,
        remote_session: None,
        local_session: None,
        out: Forwarding::default(),
        inward: Forwarding::default(),
        waiting: VecDeque::new(),
        connected: false,
        told_down: false,
        backoff,
        read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
    };
    runtime.spawn(Box::pin(async move {
        let _done = done_tx;
        bridge.run(stopped, ready).await;
    }));
    Running { status, stop, done }
}

/// Bytes read from a connection in one go.
const READ_CHUNK: usize = 16 * 1024;

/// One side of the bridge: a client core and its transport.
struct Link {
    conn: ClientConnection,
    io: BoxTransport,
    /// Encoded, not yet taken by the transport.
    out: BytesMut,
    /// Taken by the transport, not yet flushed.
    unflushed: bool,
    /// Since when the transport has taken nothing of `out`.
    stuck_since: Option<Instant>,
}

impl Link {
    fn new(conn: ClientConnection, io: BoxTransport) -> Self {
        Self {
            conn,
            io,
            out: BytesMut::new(),
            unflushed: false,
            stuck_since: None,
        }
    }

    /// Moves what the core has to send behind what waits.
    fn fill(&mut self, now: Instant) {
        self.conn.poll_transmit(now, &mut self.out);
    }

    /// Writes what waits as far as the transport takes it: `Ready(Err)` when it failed,
    /// `Pending` otherwise (everything written and flushed, or the transport pushes back).
    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<std::io::Error> {
        while !self.out.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.unflushed = true;
                    self.stuck_since = None;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(error),
                Poll::Pending => {
                    self.stuck_since.get_or_insert(now);
                    return Poll::Pending;
                }
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Poll::Ready(error),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Sends what the core has and waits until it is written (at most `within`).
    async fn drain(&mut self, runtime: &SharedRuntime, within: Duration) {
        let now = runtime.now();
        self.fill(now);
        let written = future::poll_fn(|cx| {
            if self.poll_write(cx, now).is_ready() {
                return Poll::Ready(());
            }
            if self.out.is_empty() && !self.unflushed {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        future::or(written, runtime.sleep_until(now + within)).await;
    }
}

/// What woke the bridge.
enum Wake {
    Stop,
    /// Bytes from the remote broker (`true`) or this one, in `read_buf`; 0 for the end.
    Read(bool, usize),
    /// A transport failed: the remote one (`true`) or the local one.
    Failed(bool, std::io::Error),
    Timer,
}

/// The messages of one direction on their way, by their packet identifier at the source (with
/// the source session's generation: a session started anew numbers from scratch), so that a
/// redelivery of one still on its way is not forwarded again (QoS 2 arrives once), and by their
/// packet identifier at the destination, whose acknowledgement settles them.
#[derive(Default)]
struct Forwarding {
    pending: HashMap<(u64, u16), Pending>,
    by_destination: HashMap<u16, (u64, u16)>,
    generation: u64,
}

/// A message on its way.
struct Pending {
    /// To acknowledge at the source; `None` once the source connection it came on ended, until
    /// the source redelivers it.
    token: Option<AckToken>,
    /// The destination acknowledged it.
    done: bool,
}

impl Forwarding {
    /// A new source session: nothing will be redelivered.
    fn source_started_anew(&mut self) {
        self.generation += 1;
        self.pending.retain(|_, p| !p.done);
    }

    /// The source connection ended: its tokens are void.
    fn source_lost(&mut self) {
        for pending in self.pending.values_mut() {
            pending.token = None;
        }
    }

    /// A message from the source with this packet identifier: `Some(token to ack now)` when it
    /// was already delivered, `None` when it is on its way (its token is kept) or new (`Err`:
    /// forward it).
    fn arrived(&mut self, source_id: u16, token: Option<AckToken>) -> Result<Option<AckToken>, ()> {
        let key = (self.generation, source_id);
        match self.pending.get_mut(&key) {
            Some(pending) if pending.done => {
                self.pending.remove(&key);
                Ok(token)
            }
            Some(pending) => {
                pending.token = token;
                Ok(None)
            }
            None => Err(()),
        }
    }

    fn sent(&mut self, source_id: u16, token: Option<AckToken>, destination_id: u16) {
        let key = (self.generation, source_id);
        self.pending.insert(key, Pending { token, done: false });
        self.by_destination.insert(destination_id, key);
    }

    /// The destination acknowledged: the token to acknowledge at the source, if it is known.
    fn completed(&mut self, destination_id: u16) -> Option<AckToken> {
        let key = self.by_destination.remove(&destination_id)?;
        let pending = self.pending.get_mut(&key)?;
        match pending.token.take() {
            Some(token) => {
                self.pending.remove(&key);
                Some(token)
            }
            None => {
                pending.done = true;
                None
            }
        }
    }
}

struct Bridge {
    runtime: SharedRuntime,
    options: BridgeOptions,
    local_connector: LocalConnector,
    status: Arc<Mutex<BridgeStatus>>,
    report: Box<dyn Fn(Report) + Send + Sync>,
    remote: Option<Link>,
    /// The local connection, while the remote one is up.
    local: Option<Link>,
    remote_session: Option<Session>,
    local_session: Option<Session>,
    /// Local → remote.
    out: Forwarding,
    /// Remote → local.
    inward: Forwarding,
    /// Messages from the remote broker that came before the local connection was up.
    waiting: VecDeque<(Publish, Option<AckToken>)>,
    connected: bool,
    /// The outage was told (once per outage).
    told_down: bool,
    backoff: Backoff,
    read_buf: Box<[u8]>,
}

/// How long a stopping bridge waits for each broker to take its DISCONNECT.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The local client's Receive Maximum and in-flight window: how many messages may be on their
/// way in each direction at once through this broker.
const LOCAL_WINDOW: u16 = 1000;

/// The remote client's default in-flight window (see [`BridgeOptions::max_inflight`]).
const REMOTE_WINDOW: u16 = 100;

impl Bridge {
    fn status(&self) -> std::sync::MutexGuard<'_, BridgeStatus> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remote_config(&self) -> ClientConfig {
        let mut config = self.options.remote.config.clone();
        if config.client_id.is_empty() {
            config.client_id = ByteString::from(format!("{}.{}", hostname(), self.options.name));
        }
        config.max_inflight = self.options.max_inflight;
        config.manual_ack = true;
        config.bridge = self.options.try_private && config.version == Version::V3_1_1;
        // Resuming needs the session the broker kept for us.
        if self.remote_session.is_some() {
            config.clean_start = false;
        }
        config
    }

    fn local_config(&self) -> ClientConfig {
        let client_id = format!(
            "{}{}",
            mqtt_proto::broker::RESERVED_CLIENT_ID_PREFIX,
            self.options.name
        );
        let mut config = ClientConfig::new(Version::V5, client_id);
        config.clean_start = false;
        config.keep_alive = 0;
        config.manual_ack = true;
        config.properties.session_expiry_interval = Some(u32::MAX);
        config.properties.receive_maximum = std::num::NonZeroU16::new(LOCAL_WINDOW);
        config.max_inflight = LOCAL_WINDOW;
        config
    }

    /// The out topics, as one SUBSCRIBE for this broker.
    fn out_subscriptions(&self) -> Vec<Subscription> {
        self.options
            .topics
            .iter()
            .filter(|t| t.direction.out())
            .filter_map(|t| {
                let mut subscription =
                    Subscription::new(TopicFilter::new(t.local_filter()).ok()?, t.qos);
                subscription.options.no_local = true;
                subscription.options.retain_as_published = true;
                subscription.options.retain_handling = RetainHandling::SendAtSubscribeIfNew;
                Some(subscription)
            })
            .collect()
    }

    /// The in topics, as one SUBSCRIBE for the remote broker.
    fn in_subscriptions(&self) -> Vec<Subscription> {
        let v5 = self.options.remote.config.version == Version::V5;
        self.options
            .topics
            .iter()
            .filter(|t| t.direction.inward())
            .filter_map(|t| {
                let mut subscription =
                    Subscription::new(TopicFilter::new(t.remote_filter()).ok()?, t.qos);
                if v5 {
                    subscription.options.no_local = true;
                    subscription.options.retain_as_published = true;
                    subscription.options.retain_handling = RetainHandling::SendAtSubscribeIfNew;
                }
                Some(subscription)
            })
            .collect()
    }

    /// Runs the bridge; `ready` is dropped once the local session and its subscriptions exist,
    /// which the broker waits for before it accepts clients.
    async fn run(mut self, stopped: Receiver<()>, ready: Sender<()>) {
        // The local session and its subscriptions first: from now on this broker keeps what the
        // out topics receive, even if the remote broker is never reached.
        if self.set_up_local_session().await.is_err() {
            return;
        }
        drop(ready);
        let mut stop = Box::pin(async move {
            let _ = stopped.recv().await;
        });
        loop {
            let connected = future::or(async { Some(self.connect_remote().await) }, async {
                (&mut stop).await;
                None
            })
            .await;
            match connected {
                None => return,
                Some(Err(error)) => self.went_down(error.to_string()),
                Some(Ok(link)) => {
                    self.remote = Some(link);
                    if self.pump(&mut stop).await.is_break() {
                        self.stop().await;
                        return;
                    }
                }
            }
            let delay = self.backoff.next_delay();
            let sleep = self.runtime.sleep_until(self.runtime.now() + delay);
            let stopped = future::or(
                async {
                    sleep.await;
                    false
                },
                async {
                    (&mut stop).await;
                    true
                },
            )
            .await;
            if stopped {
                return;
            }
        }
    }

    /// Connects the local client once, subscribes to the out topics, and leaves.
    async fn set_up_local_session(&mut self) -> Result<(), ()> {
        let io = (self.local_connector)().await.map_err(|_| ())?;
        let now = self.runtime.now();
        let mut link = Link::new(ClientConnection::new(self.local_config(), None, now), io);
        let mut subscribed = false;
        loop {
            link.drain(&self.runtime, STOP_TIMEOUT).await;
            let n = futures_lite::AsyncReadExt::read(&mut link.io, &mut self.read_buf)
                .await
                .map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            let now = self.runtime.now();
            link.conn.handle_bytes(now, &self.read_buf[..n]);
            while let Some(event) = link.conn.poll_event() {
                match event {
                    ClientEvent::Connected { .. } => {
                        let subscriptions = self.out_subscriptions();
                        if !subscriptions.is_empty() {
                            let properties = SubscribeProperties::default();
                            link.conn
                                .subscribe(now, subscriptions, properties)
                                .map_err(|_| ())?;
                        } else {
                            subscribed = true;
                        }
                    }
                    ClientEvent::Subscribed(_) => subscribed = true,
                    ClientEvent::Disconnected(_) => return Err(()),
                    // A backlog, sent at once: the next connection gets it again.
                    _ => {}
                }
            }
            if subscribed {
                break;
            }
        }
        let _ = link
            .conn
            .disconnect(self.runtime.now(), Disconnect::default());
        link.drain(&self.runtime, STOP_TIMEOUT).await;
        let _ = futures_lite::AsyncWriteExt::close(&mut link.io).await;
        self.local_session = Some(link.conn.into_session());
        Ok(())
    }

    /// Opens the transport to the remote broker (TCP, TLS, WebSocket, as its options say);
    /// CONNECT goes out with the next write.
    async fn connect_remote(&mut self) -> Result<Link, Error> {
        let now = self.runtime.now();
        let deadline = now + self.options.remote.config.connect_timeout;
        let io =
            crate::client::transport::open(&self.runtime, &self.options.remote, deadline).await?;
        let config = self.remote_config();
        let session = self.remote_session.take();
        let conn = ClientConnection::new(config, session, self.runtime.now());
        Ok(Link::new(conn, io))
    }

    /// Runs both connections until the remote one ends (`Continue`) or the bridge is told to
    /// stop (`Break`).
    async fn pump(&mut self, stop: &mut (impl Future<Output = ()> + Unpin)) -> ControlFlow<()> {
        let write_timeout = self.options.remote.write_timeout;
        let mut timer: Option<(Instant, BoxFuture<'static, ()>)> = None;
        // Why the remote transport failed, for the status.
        let mut io_error = None;
        loop {
            let now = self.runtime.now();
            if let Some(link) = &mut self.remote {
                link.fill(now);
            }
            if let Some(link) = &mut self.local {
                link.fill(now);
            }
            // The next deadline: the cores' timers, and a write that makes no progress.
            let stuck = self
                .remote
                .as_ref()
                .and_then(|l| l.stuck_since)
                .zip(write_timeout)
                .map(|(since, timeout)| since + timeout);
            let deadline = [
                self.remote.as_ref().and_then(|l| l.conn.poll_timeout()),
                self.local.as_ref().and_then(|l| l.conn.poll_timeout()),
                stuck,
            ]
            .into_iter()
            .flatten()
            .min();
            if timer.as_ref().map(|t| t.0) != deadline {
                timer = deadline.map(|at| (at, self.runtime.sleep_until(at)));
            }
            let read_buf = &mut self.read_buf;
            let remote = &mut self.remote;
            let local = &mut self.local;
            let wake = future::poll_fn(|cx| {
                if Pin::new(&mut *stop).poll(cx).is_ready() {
                    return Poll::Ready(Wake::Stop);
                }
                for (is_remote, link) in [(true, &mut *remote), (false, &mut *local)] {
                    let Some(link) = link else { continue };
                    if let Poll::Ready(error) = link.poll_write(cx, now) {
                        return Poll::Ready(Wake::Failed(is_remote, error));
                    }
                    match Pin::new(&mut link.io).poll_read(cx, read_buf) {
                        Poll::Ready(Ok(n)) => return Poll::Ready(Wake::Read(is_remote, n)),
                        Poll::Ready(Err(error)) => {
                            return Poll::Ready(Wake::Failed(is_remote, error));
                        }
                        Poll::Pending => {}
                    }
                }
                if let Some((_, sleep)) = &mut timer
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            let now = self.runtime.now();
            match wake {
                Wake::Stop => return ControlFlow::Break(()),
                Wake::Read(true, 0) => {
                    if let Some(link) = &mut self.remote {
                        link.conn.handle_eof(now);
                    }
                }
                Wake::Failed(true, error) => {
                    io_error = Some(error.to_string());
                    if let Some(link) = &mut self.remote {
                        link.conn.handle_eof(now);
                    }
                }
                Wake::Read(false, 0) | Wake::Failed(false, _) => {
                    if let Some(link) = &mut self.local {
                        link.conn.handle_eof(now);
                    }
                }
                Wake::Read(true, n) => {
                    if let Some(link) = &mut self.remote {
                        link.conn.handle_bytes(now, &self.read_buf[..n]);
                    }
                }
                Wake::Read(false, n) => {
                    if let Some(link) = &mut self.local {
                        link.conn.handle_bytes(now, &self.read_buf[..n]);
                    }
                }
                Wake::Timer => {
                    timer = None;
                    if let Some(link) = &mut self.remote {
                        if link
                            .stuck_since
                            .zip(write_timeout)
                            .is_some_and(|(since, timeout)| {
                                now.saturating_duration_since(since) >= timeout
                            })
                        {
                            link.conn.handle_eof(now);
                        } else {
                            link.conn.handle_timeout(now);
                        }
                    }
                    if let Some(link) = &mut self.local {
                        link.conn.handle_timeout(now);
                    }
                }
            }
            if let ControlFlow::Break(reason) = self.process(now) {
                let reason = io_error
                    .take()
                    .map_or(reason, |error| format!("connection lost: {error}"));
                self.remote_ended(reason).await;
                return ControlFlow::Continue(());
            }
            if self.local.is_none() && self.connected {
                // The remote broker accepted us: this broker's side comes up.
                if self.open_local().await.is_err() {
                    // This broker is stopping: the stop comes next.
                    return ControlFlow::Break(());
                }
            }
        }
    }

    /// Handles what both cores have to say; `Break` with the reason when the remote connection
    /// ended.
    fn process(&mut self, now: Instant) -> ControlFlow<String> {
        loop {
            let mut any = false;
            while let Some(event) = self.remote.as_mut().and_then(|l| l.conn.poll_event()) {
                any = true;
                self.on_remote(now, event)?;
            }
            while let Some(event) = self.local.as_mut().and_then(|l| l.conn.poll_event()) {
                any = true;
                self.on_local(now, event);
            }
            if !any {
                return ControlFlow::Continue(());
            }
        }
    }

    fn on_remote(&mut self, now: Instant, event: ClientEvent) -> ControlFlow<String> {
        match event {
            ClientEvent::Connected {
                session_present, ..
            } => {
                self.backoff.connected(now);
                if !session_present {
                    self.inward.source_started_anew();
                }
                let subscriptions = self.in_subscriptions();
                if let Some(link) = &mut self.remote
                    && !subscriptions.is_empty()
                {
                    let _ = link
                        .conn
                        .subscribe(now, subscriptions, SubscribeProperties::default());
                }
                self.came_up();
            }
            ClientEvent::Message(message) => self.forward_in(now, message.publish, message.ack),
            ClientEvent::Published(outcome) => self.out_completed(
                now,
                outcome.packet_id.get(),
                !outcome.reason_code.is_error(),
            ),
            ClientEvent::PublishDropped { packet_id, .. } => {
                self.out_completed(now, packet_id.get(), false)
            }
            ClientEvent::Subscribed(suback) => {
                if let Some(code) = suback.reason_codes.iter().find(|c| c.is_error()) {
                    self.status().last_error =
                        Some(format!("the remote broker refused an in topic: {code}"));
                }
            }
            ClientEvent::Disconnected(reason) => {
                return ControlFlow::Break(format!("disconnected: {reason}"));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn on_local(&mut self, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::Connected {
                session_present, ..
            } => {
                if !session_present {
                    // This broker lost the bridge's session: subscribe again.
                    self.out.source_started_anew();
                    let subscriptions = self.out_subscriptions();
                    if let Some(link) = &mut self.local
                        && !subscriptions.is_empty()
                    {
                        let _ =
                            link.conn
                                .subscribe(now, subscriptions, SubscribeProperties::default());
                    }
                }
                while let Some((publish, token)) = self.waiting.pop_front() {
                    self.forward_in_now(now, publish, token);
                }
            }
            ClientEvent::Message(message) => self.forward_out(now, message.publish, message.ack),
            ClientEvent::Published(outcome) => self.in_completed(now, outcome.packet_id.get()),
            ClientEvent::PublishDropped { packet_id, .. } => {
                self.in_completed(now, packet_id.get())
            }
            ClientEvent::Disconnected(_) => {
                // This broker closed the connection: it is stopping.
                self.local = None;
            }
            _ => {}
        }
    }

    /// A message from this broker: publish it remotely; it is acknowledged here when the remote
    /// broker acknowledged it.
    fn forward_out(&mut self, now: Instant, received: Publish, token: Option<AckToken>) {
        let rule = self.options.topics.iter().find(|t| {
            t.direction.out() && mqtt_proto::topic::matches(&t.local_filter(), &received.topic)
        });
        let name = rule
            .and_then(|t| BridgeTopic::remap(&received.topic, &t.local_prefix, &t.remote_prefix));
        let (Some(name), Some(remote)) = (name, self.remote.as_mut()) else {
            self.ack_local(now, token);
            return;
        };
        let source_id = received.packet_id.map(|id| id.get());
        if let Some(id) = source_id
            && let Ok(ack) = self.out.arrived(id, token)
        {
            self.ack_local(now, ack);
            return;
        }
        match remote.conn.publish(now, forwarded(&received, name)) {
            Ok(Some(destination_id)) => {
                if let Some(id) = source_id {
                    self.out.sent(id, token, destination_id.get());
                }
            }
            Ok(None) => {
                self.status().sent += 1;
                self.ack_local(now, token);
            }
            Err(_) => {
                self.status().refused += 1;
                self.ack_local(now, token);
            }
        }
    }

    fn out_completed(&mut self, now: Instant, destination_id: u16, accepted: bool) {
        {
            let mut status = self.status();
            if accepted {
                status.sent += 1;
            } else {
                status.refused += 1;
            }
        }
        let token = self.out.completed(destination_id);
        self.ack_local(now, token);
    }

    fn ack_local(&mut self, now: Instant, token: Option<AckToken>) {
        if let (Some(token), Some(local)) = (token, &mut self.local) {
            let _ = local.conn.ack(now, token);
        }
    }

    /// A message from the remote broker: publish it here; it is acknowledged there when this
    /// broker took it.
    fn forward_in(&mut self, now: Instant, received: Publish, token: Option<AckToken>) {
        let local_up = self
            .local
            .as_ref()
            .is_some_and(|l| l.conn.state() == ClientState::Connected);
        if local_up {
            self.forward_in_now(now, received, token);
        } else {
            self.waiting.push_back((received, token));
        }
    }

    fn forward_in_now(&mut self, now: Instant, received: Publish, token: Option<AckToken>) {
        let rule = self.options.topics.iter().find(|t| {
            t.direction.inward() && mqtt_proto::topic::matches(&t.remote_filter(), &received.topic)
        });
        let name = rule
            .and_then(|t| BridgeTopic::remap(&received.topic, &t.remote_prefix, &t.local_prefix));
        let (Some(name), Some(local)) = (name, self.local.as_mut()) else {
            self.ack_remote(now, token);
            return;
        };
        let source_id = received.packet_id.map(|id| id.get());
        if let Some(id) = source_id
            && let Ok(ack) = self.inward.arrived(id, token)
        {
            self.ack_remote(now, ack);
            return;
        }
        match local.conn.publish(now, forwarded(&received, name)) {
            Ok(Some(destination_id)) => {
                if let Some(id) = source_id {
                    self.inward.sent(id, token, destination_id.get());
                }
            }
            Ok(None) | Err(_) => {
                self.status().received += 1;
                self.ack_remote(now, token);
            }
        }
    }

    fn in_completed(&mut self, now: Instant, destination_id: u16) {
        self.status().received += 1;
        let token = self.inward.completed(destination_id);
        self.ack_remote(now, token);
    }

    fn ack_remote(&mut self, now: Instant, token: Option<AckToken>) {
        if let (Some(token), Some(remote)) = (token, &mut self.remote) {
            let _ = remote.conn.ack(now, token);
        }
    }

    /// The local connection, resuming the bridge's session.
    async fn open_local(&mut self) -> Result<(), ()> {
        let io = (self.local_connector)().await.map_err(|_| ())?;
        let now = self.runtime.now();
        let session = self.local_session.take();
        self.local = Some(Link::new(
            ClientConnection::new(self.local_config(), session, now),
            io,
        ));
        Ok(())
    }

    fn came_up(&mut self) {
        self.told_down = false;
        if !self.connected {
            self.connected = true;
            self.status().connected = true;
            (self.report)(Report::Connected(self.options.name.clone()));
        }
    }

    fn went_down(&mut self, error: String) {
        let was = std::mem::replace(&mut self.connected, false);
        {
            let mut status = self.status();
            status.connected = false;
            status.last_error = Some(error.clone());
        }
        if was || !self.told_down {
            self.told_down = true;
            (self.report)(Report::Disconnected(self.options.name.clone(), error));
        }
    }

    /// The remote connection ended: its session is kept for the next one, and the local
    /// connection is closed (its session keeps what the out topics receive meanwhile).
    async fn remote_ended(&mut self, reason: String) {
        let now = self.runtime.now();
        self.backoff.disconnected(now);
        if let Some(link) = self.remote.take() {
            self.remote_session = Some(link.conn.into_session());
        }
        self.inward.source_lost();
        self.went_down(reason);
        self.close_local().await;
    }

    async fn close_local(&mut self) {
        self.out.source_lost();
        if let Some(mut link) = self.local.take() {
            let _ = link
                .conn
                .disconnect(self.runtime.now(), Disconnect::default());
            link.drain(&self.runtime, STOP_TIMEOUT).await;
            let _ = futures_lite::AsyncWriteExt::close(&mut link.io).await;
            self.local_session = Some(link.conn.into_session());
        }
    }

    /// Says goodbye to both brokers.
    async fn stop(&mut self) {
        if let Some(mut link) = self.remote.take() {
            let _ = link
                .conn
                .disconnect(self.runtime.now(), Disconnect::default());
            link.drain(&self.runtime, STOP_TIMEOUT).await;
            let _ = futures_lite::AsyncWriteExt::close(&mut link.io).await;
        }
        self.close_local().await;
    }
}

/// The message to forward: the same payload, QoS, retain flag and 5.0 properties (user
/// properties, content type, response topic, correlation data, payload format, and the message
/// expiry the sending broker counted down), under its new topic. Subscription identifiers and
/// topic aliases belong to the connection it came on and are dropped.
fn forwarded(received: &Publish, topic: TopicName) -> Publish {
    let mut publish = Publish::new(topic, received.payload.clone());
    publish.qos = received.qos;
    publish.retain = received.retain;
    publish.properties = received.properties.clone();
    publish.properties.topic_alias = None;
    publish.properties.subscription_identifiers.clear();
    publish
}

/// This machine's name, for default client identifiers (`HOSTNAME.BRIDGE`, as mosquitto's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "mqtt".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_replaced_both_ways_as_mosquitto_does() {
        let topic = BridgeTopic::new("sensors/#", Direction::Both)
            .local_prefix("edge/")
            .remote_prefix("site-7/");
        assert_eq!(topic.local_filter(), "edge/sensors/#");
        assert_eq!(topic.remote_filter(), "site-7/sensors/#");
        let out = BridgeTopic::remap("edge/sensors/t", &topic.local_prefix, &topic.remote_prefix);
        assert_eq!(out.as_deref(), Some("site-7/sensors/t"));
        let inward = BridgeTopic::remap(
            "site-7/sensors/t",
            &topic.remote_prefix,
            &topic.local_prefix,
        );
        assert_eq!(inward.as_deref(), Some("edge/sensors/t"));
        assert_eq!(BridgeTopic::remap("other/t", "edge/", "site-7/"), None);
        // An empty filter: the prefix is the topic.
        let exact = BridgeTopic::new("", Direction::Out)
            .local_prefix("a/b")
            .remote_prefix("c/d");
        assert!(exact.check().is_ok());
        assert_eq!(
            BridgeTopic::remap("a/b", "a/b", "c/d").as_deref(),
            Some("c/d")
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let remote = ClientOptions::new("127.0.0.1", 1883);
        let no_topics = BridgeOptions::new("cloud", remote.clone());
        assert!(no_topics.check().unwrap_err().contains("no topics"));
        let wildcard_prefix = BridgeOptions::new("cloud", remote.clone())
            .topic(BridgeTopic::new("t/#", Direction::Out).local_prefix("a/+/"));
        assert!(wildcard_prefix.check().unwrap_err().contains("wildcard"));
        let bad_filter = BridgeOptions::new("cloud", remote.clone())
            .topic(BridgeTopic::new("t/#/x", Direction::In));
        assert!(bad_filter.check().unwrap_err().contains("not a valid"));
        let bad_name =
            BridgeOptions::new("a/b", remote).topic(BridgeTopic::new("t", Direction::In));
        assert!(bad_name.check().unwrap_err().contains("name"));
    }
}
