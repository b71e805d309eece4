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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::{StreamExt, future};
use mqtt_proto::packet::{ByteString, Publish, QoS, RetainHandling, TopicName, Version};
use mqtt_proto::topic::TopicFilter;

use crate::client::{ConnectionEvent, Message, SubscribeOptions};
use crate::runtime::{BoxFuture, BoxTransport, SharedRuntime};
use crate::{Client, ClientOptions, Error};

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

/// Starts a bridge on `runtime`.
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
    let (inputs_tx, inputs) = async_channel::bounded(1024);
    let bridge = Bridge {
        runtime: runtime.clone(),
        options,
        local_connector: local,
        status: status.clone(),
        report: Box::new(report),
        inputs_tx,
        remote: None,
        local: None,
        epoch: 0,
        pending: HashMap::new(),
        generation: 0,
        waiting: VecDeque::new(),
        connected: false,
    };
    runtime.spawn(Box::pin(async move {
        let _done = done_tx;
        bridge.run(inputs, stopped, ready).await;
    }));
    Running { status, stop, done }
}

enum Input {
    /// From the remote client's event stream.
    Remote(ConnectionEvent),
    /// A message from the remote broker, for the rule with this index.
    FromRemote(usize, Message),
    /// A message from this broker, on the local connection of this epoch, for the rule with
    /// this index.
    FromLocal(u64, usize, Message),
    /// The local connection of this epoch ended.
    LocalEnded(u64),
    /// The remote broker acknowledged the message with this local packet identifier (or
    /// refused it: `false`).
    Forwarded((u64, u16), bool),
    /// A message from the remote broker was taken by this one (or not: `false`).
    Received(bool),
}

/// An out message on its way to the remote broker, by its local packet identifier.
struct Pending {
    /// The local delivery to acknowledge; `None` after the local connection ended, until the
    /// broker redelivers it on the resumed session.
    message: Option<Message>,
    /// The remote broker acknowledged it.
    done: bool,
}

/// `Client` is generic over the runtime only as a marker: the bridge runs on the broker's
/// runtime handle.
type BridgeClient = Client<()>;

struct Bridge {
    runtime: SharedRuntime,
    options: BridgeOptions,
    local_connector: LocalConnector,
    status: Arc<Mutex<BridgeStatus>>,
    report: Box<dyn Fn(Report) + Send + Sync>,
    inputs_tx: Sender<Input>,
    remote: Option<BridgeClient>,
    /// The local client, while the remote broker is connected.
    local: Option<BridgeClient>,
    /// Counts local connections.
    epoch: u64,
    /// By local session generation and packet identifier.
    pending: HashMap<(u64, u16), Pending>,
    /// Counts local sessions started anew: packet identifiers of one are not those of another.
    generation: u64,
    /// Messages from the remote broker that came before the local connection was up.
    waiting: VecDeque<(usize, Message)>,
    connected: bool,
}

/// The first wait between two attempts to reach the remote broker the first time; it doubles
/// up to [`FIRST_CONNECT_MAX`]. After the first connection, the remote client's own backoff
/// applies.
const FIRST_CONNECT_MIN: Duration = Duration::from_millis(250);
const FIRST_CONNECT_MAX: Duration = Duration::from_secs(30);

/// How long a stopping bridge waits for the remote broker to take its DISCONNECT.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The local client's Receive Maximum: how many out messages may be on their way at once.
const LOCAL_WINDOW: u16 = 1000;

/// The remote client's default in-flight window (see [`BridgeOptions::max_inflight`]).
const REMOTE_WINDOW: u16 = 100;

impl Bridge {
    fn status(&self) -> std::sync::MutexGuard<'_, BridgeStatus> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remote_options(&self) -> ClientOptions {
        let mut remote = self.options.remote.clone();
        let config = remote.config_mut();
        if config.client_id.is_empty() {
            config.client_id = ByteString::from(format!("{}.{}", hostname(), self.options.name));
        }
        config.max_inflight = self.options.max_inflight;
        config.bridge = self.options.try_private && config.version == Version::V3_1_1;
        remote
    }

    fn local_options(&self) -> ClientOptions {
        let connector = self.local_connector.clone();
        let mut local = ClientOptions::new("local", 0)
            .transport(move || connector())
            .version(Version::V5)
            .client_id(format!(
                "{}{}",
                mqtt_proto::broker::RESERVED_CLIENT_ID_PREFIX,
                self.options.name
            ))
            .clean_start(false)
            .reconnect(None);
        let config = local.config_mut();
        config.properties.session_expiry_interval = Some(u32::MAX);
        config.properties.receive_maximum = std::num::NonZeroU16::new(LOCAL_WINDOW);
        config.max_inflight = LOCAL_WINDOW;
        local.queue_capacity(usize::from(LOCAL_WINDOW))
    }

    /// Runs the bridge; `ready` is dropped once the local session and its subscriptions exist,
    /// which the broker waits for before it accepts clients.
    async fn run(mut self, inputs: Receiver<Input>, stopped: Receiver<()>, ready: Sender<()>) {
        // The local session and its subscriptions first: from now on this broker keeps what the
        // out topics receive, even if the remote broker is never reached.
        if self.connect_local().await.is_err() {
            return;
        }
        self.disconnect_local();
        drop(ready);
        let stop = async {
            let _ = stopped.recv().await;
            None
        };
        let Some(remote) = future::or(async { Some(self.connect_remote().await) }, stop).await
        else {
            return;
        };
        self.remote = Some(remote);
        self.on_remote_up().await;
        loop {
            let input = future::or(async { inputs.recv().await.ok() }, async {
                let _ = stopped.recv().await;
                None
            })
            .await;
            let Some(input) = input else { break };
            self.handle(input).await;
        }
        if let Some(remote) = self.remote.take() {
            let deadline = self.runtime.now() + STOP_TIMEOUT;
            future::or(
                async {
                    let _ = remote.disconnect().await;
                },
                self.runtime.sleep_until(deadline),
            )
            .await;
        }
    }

    /// Connects to the remote broker, trying again with a backoff until it answers.
    async fn connect_remote(&mut self) -> BridgeClient {
        let mut backoff = FIRST_CONNECT_MIN;
        loop {
            let options = self.remote_options();
            match Client::connect_with(self.runtime.clone(), options).await {
                Ok(client) => return client,
                Err(error) => {
                    self.went_down(error.to_string());
                    let deadline = self.runtime.now() + backoff;
                    self.runtime.sleep_until(deadline).await;
                    backoff = (backoff * 2).min(FIRST_CONNECT_MAX);
                }
            }
        }
    }

    /// The remote client is connected for the first time: its event stream and in topics.
    async fn on_remote_up(&mut self) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let events = remote.events();
        let tx = self.inputs_tx.clone();
        self.runtime.spawn(Box::pin(async move {
            while let Ok(event) = events.recv().await {
                if tx.send(Input::Remote(event)).await.is_err() {
                    return;
                }
            }
        }));
        let v5 = self.options.remote.config.version == Version::V5;
        for (index, topic) in self.options.topics.iter().enumerate() {
            if !topic.direction.inward() {
                continue;
            }
            let mut subscribe = SubscribeOptions::new(topic.remote_filter())
                .qos(topic.qos)
                .manual_ack();
            if v5 {
                subscribe = subscribe.no_local().retain_as_published();
            }
            match remote.subscribe_with(subscribe).await {
                Ok(subscription) => {
                    let tx = self.inputs_tx.clone();
                    self.runtime.spawn(Box::pin(async move {
                        let mut subscription = subscription;
                        while let Some(message) = subscription.next().await {
                            if tx.send(Input::FromRemote(index, message)).await.is_err() {
                                return;
                            }
                        }
                    }));
                }
                Err(error) => {
                    let error = format!("subscribing to {:?}: {error}", topic.remote_filter());
                    self.status().last_error = Some(error);
                }
            }
        }
        self.came_up().await;
    }

    async fn came_up(&mut self) {
        if self.local.is_none() && self.connect_local().await.is_err() {
            // This broker is stopping: the stop comes next.
            return;
        }
        if !self.connected {
            self.connected = true;
            {
                let mut status = self.status();
                status.connected = true;
            }
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
        if was || self.epoch <= 1 {
            (self.report)(Report::Disconnected(self.options.name.clone(), error));
        }
        self.disconnect_local();
    }

    /// Connects the local client (resuming the bridge's session) and subscribes to the out
    /// topics.
    async fn connect_local(&mut self) -> Result<(), Error> {
        let local = Client::connect_with(self.runtime.clone(), self.local_options()).await?;
        self.epoch += 1;
        let epoch = self.epoch;
        if !local_session_present(&local) {
            // A new session (the broker lost it): nothing will be redelivered, and its packet
            // identifiers start afresh, so what is remembered by identifier is forgotten.
            self.pending.clear();
            self.generation += 1;
        }
        for (index, topic) in self.options.topics.iter().enumerate() {
            if !topic.direction.out() {
                continue;
            }
            let subscribe = SubscribeOptions::new(topic.local_filter())
                .qos(topic.qos)
                .manual_ack()
                .no_local()
                .retain_as_published()
                .retain_handling(RetainHandling::SendAtSubscribeIfNew);
            let subscription = local.subscribe_with(subscribe).await?;
            let tx = self.inputs_tx.clone();
            self.runtime.spawn(Box::pin(async move {
                let mut subscription = subscription;
                while let Some(message) = subscription.next().await {
                    if tx
                        .send(Input::FromLocal(epoch, index, message))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send(Input::LocalEnded(epoch)).await;
            }));
        }
        self.local = Some(local);
        while let Some((index, message)) = self.waiting.pop_front() {
            self.forward_in(index, message);
        }
        Ok(())
    }

    /// Ends the local connection (its session stays and queues what comes meanwhile).
    fn disconnect_local(&mut self) {
        for pending in self.pending.values_mut() {
            // Their acknowledgement would go nowhere; the redelivery brings them back.
            pending.message = None;
        }
        if let Some(local) = self.local.take() {
            self.runtime.spawn(Box::pin(async move {
                let _ = local.disconnect().await;
            }));
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Remote(ConnectionEvent::Connected { .. }) => self.came_up().await,
            Input::Remote(ConnectionEvent::Disconnected(reason)) => {
                self.went_down(format!("disconnected: {reason}"));
            }
            Input::Remote(ConnectionEvent::ConnectFailed(error)) => self.went_down(error),
            Input::Remote(_) => {}
            Input::FromLocal(epoch, index, message) => {
                if epoch == self.epoch && self.local.is_some() {
                    self.forward_out(index, message).await;
                }
            }
            Input::LocalEnded(epoch) => {
                if epoch == self.epoch && self.local.take().is_some() && self.connected {
                    // The local connection ended without us: this broker is stopping.
                    for pending in self.pending.values_mut() {
                        pending.message = None;
                    }
                }
            }
            Input::Forwarded(packet_id, accepted) => {
                {
                    let mut status = self.status();
                    if accepted {
                        status.sent += 1;
                    } else {
                        status.refused += 1;
                    }
                }
                let Some(pending) = self.pending.get_mut(&packet_id) else {
                    return;
                };
                match pending.message.take() {
                    Some(message) => {
                        self.pending.remove(&packet_id);
                        let _ = message.ack().await;
                    }
                    None => pending.done = true,
                }
            }
            Input::Received(taken) => {
                if taken {
                    self.status().received += 1;
                }
            }
            Input::FromRemote(index, message) => self.forward_in(index, message),
        }
    }

    /// A message from this broker: publish it remotely, then acknowledge it here.
    async fn forward_out(&mut self, index: usize, message: Message) {
        let Some(topic) = self.options.topics.get(index) else {
            return;
        };
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let Some(name) =
            BridgeTopic::remap(message.topic(), &topic.local_prefix, &topic.remote_prefix)
        else {
            let _ = message.ack().await;
            return;
        };
        let publish = forwarded(message.publish(), name);
        let Some(packet_id) = message
            .publish()
            .packet_id
            .map(|id| (self.generation, id.get()))
        else {
            // QoS 0: nothing to acknowledge, nothing to remember.
            let tx = self.inputs_tx.clone();
            self.runtime.spawn(Box::pin(async move {
                let _ = remote.publish_with(publish).await;
                let _ = tx.send(Input::Received(false)).await;
            }));
            self.status().sent += 1;
            return;
        };
        if let Some(pending) = self.pending.get_mut(&packet_id) {
            // A redelivery of a message already on its way: not forwarded again.
            if pending.done {
                self.pending.remove(&packet_id);
                let _ = message.ack().await;
            } else {
                pending.message = Some(message);
            }
            return;
        }
        self.pending.insert(
            packet_id,
            Pending {
                message: Some(message),
                done: false,
            },
        );
        let tx = self.inputs_tx.clone();
        self.runtime.spawn(Box::pin(async move {
            let accepted = match remote.publish_with(publish).await {
                Ok(_) => true,
                // Refused (not authorized, quota): acknowledged here all the same, or it would
                // be retried forever.
                Err(Error::Rejected { .. }) => false,
                // The bridge is stopping: the local session keeps the message.
                Err(_) => return,
            };
            let _ = tx.send(Input::Forwarded(packet_id, accepted)).await;
        }));
    }

    /// A message from the remote broker: publish it here, then acknowledge it there.
    fn forward_in(&mut self, index: usize, message: Message) {
        let Some(local) = self.local.clone() else {
            self.waiting.push_back((index, message));
            return;
        };
        let Some(topic) = self.options.topics.get(index) else {
            return;
        };
        let name = BridgeTopic::remap(message.topic(), &topic.remote_prefix, &topic.local_prefix);
        let tx = self.inputs_tx.clone();
        self.runtime.spawn(Box::pin(async move {
            let Some(name) = name else {
                let _ = message.ack().await;
                return;
            };
            let publish = forwarded(message.publish(), name);
            let taken = match local.publish_with(publish).await {
                Ok(_) | Err(Error::Rejected { .. }) => true,
                // Not taken: not acknowledged either, so the remote broker sends it again.
                Err(_) => return,
            };
            let _ = message.ack().await;
            let _ = tx.send(Input::Received(taken)).await;
        }));
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

/// Whether the broker resumed the local client's session: its first event says so (it is sent
/// before `connect` returns).
fn local_session_present(local: &BridgeClient) -> bool {
    let events = local.events();
    while let Ok(event) = events.try_recv() {
        if let ConnectionEvent::Connected { session_present } = event {
            return session_present;
        }
    }
    false
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
