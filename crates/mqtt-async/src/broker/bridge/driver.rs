//! The bridge's task: both client cores, their transports and the forwarding between them.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_io::AsyncRead;
use futures_lite::future;
use mqtt_proto::backoff::Backoff;
use mqtt_proto::connection::{AckToken, ClientConfig, ClientConnection, ClientEvent, Session};
use mqtt_proto::packet::{
    ByteString, Publish, RetainHandling, SubscribeProperties, Subscription, Version,
};
use mqtt_proto::topic::TopicFilter;

use super::forwarding::Forwarding;
use super::link::{Link, READ_CHUNK};
use super::{BridgeOptions, BridgeStatus, BridgeTopic, LocalConnector, Report, hostname};
use crate::Error;
use crate::runtime::{BoxFuture, SharedRuntime};

mod events;

/// A running bridge, as the broker holds it.
pub(crate) struct Running {
    pub(crate) status: Arc<Mutex<BridgeStatus>>,
    /// Closed to stop the bridge.
    pub(crate) stop: Sender<()>,
    /// Closed when it has stopped.
    pub(crate) done: Receiver<()>,
}
/// Starts a bridge on `runtime`: one task that runs both connections.
pub(crate) fn spawn(
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
        filters: RuleFilters::of(&options.topics),
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

/// One rule's filters, computed once: they are matched against every message.
pub(super) struct RuleFilters {
    pub(super) rule: BridgeTopic,
    pub(super) local: TopicFilter,
    pub(super) remote: TopicFilter,
}

impl RuleFilters {
    /// The rules' filters (checked when the broker was built, so none is invalid).
    fn of(rules: &[BridgeTopic]) -> Vec<Self> {
        rules
            .iter()
            .filter_map(|rule| {
                Some(Self {
                    rule: rule.clone(),
                    local: TopicFilter::new(rule.local_filter()).ok()?,
                    remote: TopicFilter::new(rule.remote_filter()).ok()?,
                })
            })
            .collect()
    }
}

/// One SUBSCRIBE's subscriptions for `rules`, with the bridge's loop protection (No Local,
/// Retain As Published, retained messages only for a new subscription) when `protect`.
fn subscriptions<'a>(
    rules: impl Iterator<Item = &'a RuleFilters>,
    filter: impl Fn(&RuleFilters) -> &TopicFilter,
    protect: bool,
) -> Vec<Subscription> {
    rules
        .map(|rule| {
            let mut subscription = Subscription::new(filter(rule).clone(), rule.rule.qos);
            if protect {
                subscription.options.no_local = true;
                subscription.options.retain_as_published = true;
                subscription.options.retain_handling = RetainHandling::SendAtSubscribeIfNew;
            }
            subscription
        })
        .collect()
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

struct Bridge {
    /// The rules, with their filters parsed once.
    filters: Vec<RuleFilters>,
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
    out: Forwarding<AckToken>,
    /// Remote → local.
    inward: Forwarding<AckToken>,
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
        let out = self.filters.iter().filter(|f| f.rule.direction.out());
        subscriptions(out, |f| &f.local, true)
    }

    /// The in topics, as one SUBSCRIBE for the remote broker (5.0 options only with 5.0).
    fn in_subscriptions(&self) -> Vec<Subscription> {
        let v5 = self.options.remote.config.version == Version::V5;
        let inward = self.filters.iter().filter(|f| f.rule.direction.inward());
        subscriptions(inward, |f| &f.remote, v5)
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
        self.local_session = Some(link.close(&self.runtime, STOP_TIMEOUT).await);
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
        if let Some(link) = self.local.take() {
            self.local_session = Some(link.close(&self.runtime, STOP_TIMEOUT).await);
        }
    }

    /// Says goodbye to both brokers.
    async fn stop(&mut self) {
        if let Some(link) = self.remote.take() {
            self.remote_session = Some(link.close(&self.runtime, STOP_TIMEOUT).await);
        }
        self.close_local().await;
    }
}
