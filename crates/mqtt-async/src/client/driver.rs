//! The background task: connects, runs the protocol core over the transport, routes messages
//! to subscriptions, and reconnects.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::num::NonZeroU16;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use bytes::BytesMut;
use futures_lite::{Stream, future};
use mqtt_proto::ReasonCode;
use mqtt_proto::backoff::Backoff;
use mqtt_proto::connection::{
    AckToken, ClientConnection, ClientEvent, ClientState, DisconnectReason, PublishOutcome,
    Session, UsageError,
};
use mqtt_proto::packet::{ByteString, Disconnect, Publish, QoS, UnsubscribeProperties, Version};
use mqtt_proto::topic::{TopicFilter, TopicName};

use super::ConnectionEvent;
use super::store::{self, StoreThread};
use super::subscription::{Acker, CheckedSubscribe, Message};
use super::transport;
use crate::error::TimedOut;
use crate::runtime::{BoxFuture, BoxTransport, SharedRuntime};
use crate::{ClientOptions, Error};

/// Commands taken in one turn of the loop, so that a burst of publishes goes out in one write.
const COMMAND_BATCH: usize = 64;

/// The Receive Maximum announced to 5.0 brokers unless the options set one.
const DEFAULT_RECEIVE_MAXIMUM: NonZeroU16 = NonZeroU16::new(100).expect("non-zero");

type Reply<T> = Sender<Result<T, Error>>;
pub(crate) type PublishResult = Result<Option<PublishOutcome>, Error>;
/// A publish's answer: a oneshot, far cheaper than a channel per message (one allocation, no
/// event listeners), which matters at hundreds of thousands of publishes a second.
pub(crate) type PublishReply = futures_channel::oneshot::Sender<PublishResult>;
/// What a subscribe resolves to: the subscription's key, its queue, and the granted code.
pub(crate) type Subscribed = (u64, Receiver<Message>, ReasonCode);

/// A request from a `Client` handle.
pub(crate) enum Command {
    Publish {
        publish: Publish,
        done: PublishReply,
    },
    Subscribe {
        options: CheckedSubscribe,
        done: Reply<Subscribed>,
    },
    Ack {
        token: AckToken,
        epoch: u64,
    },
    Disconnect {
        disconnect: Disconnect,
        done: Sender<()>,
    },
}

/// Requests that must never wait (sent from `Drop`).
pub(crate) enum Control {
    Unsubscribe(u64),
    Shutdown,
    /// A manual-ack message was dropped without `ack` (see [`Message`]).
    Unacked {
        token: AckToken,
        epoch: u64,
        key: u64,
        topic: TopicName,
        dup: bool,
    },
}

/// How many recently dropped subscriptions' filters are remembered: a message that arrives for
/// one of them after its subscription was dropped is acknowledged (nobody asked for it), not
/// held for a subscription to come.
const RETIRED_FILTERS: usize = 64;

/// The most messages held while a SUBSCRIBE waits for its SUBACK (see the loop in
/// `run_connection`): the packet identifier space, which bounds a compliant broker's QoS 1/2
/// messages in flight.
const SUBSCRIBING_BACKLOG: usize = 65_535;

/// A message no subscription matched, held unacknowledged for one that will.
struct Unclaimed {
    publish: Publish,
    token: Option<AckToken>,
    epoch: u64,
}

struct LocalSubscription {
    key: u64,
    filter: TopicFilter,
    queue: Sender<Message>,
    manual_ack: bool,
}

impl LocalSubscription {
    fn matches(&self, name: &str) -> bool {
        self.filter.matches(name)
    }
}

/// A message waiting for room in a subscription's queue.
struct Delivery {
    queue: Sender<Message>,
    message: Message,
    /// Acknowledge this once delivered (the last copy of an automatically acknowledged message).
    then_ack: Option<AckToken>,
    epoch: u64,
}

/// A delivery waiting for room, as a future that owns the message (so that racing it against
/// the network and the timers never loses it).
struct Sending {
    future: Pin<Box<dyn Future<Output = bool> + Send>>,
    then_ack: Option<AckToken>,
    epoch: u64,
}

// Lives for one loop turn; boxing the command would cost an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Read(io::Result<usize>),
    Command(Option<Command>),
    Control(Option<Control>),
    Timer,
    Delivered,
}

pub(crate) struct Driver {
    runtime: SharedRuntime,
    options: ClientOptions,
    /// Pinned: polled as streams, which keep their listeners between turns.
    commands: Pin<Box<Receiver<Command>>>,
    control: Pin<Box<Receiver<Control>>>,
    control_tx: Sender<Control>,
    command_tx: Sender<Command>,
    events: Sender<ConnectionEvent>,
    ready: Option<Sender<Result<ByteString, Error>>>,
    session: Option<Session>,
    backoff: Backoff,
    epoch: u64,
    next_key: u64,
    subscriptions: Vec<LocalSubscription>,
    pending_publishes: HashMap<u16, PublishReply>,
    /// Publishes that completed this turn, answered once the session store holds the outcome
    /// (at once without a store).
    completed: Vec<(PublishReply, PublishResult)>,
    /// The session store's thread, with [`ClientOptions::session_store`].
    store: Option<StoreThread>,
    pending_subscribes: HashMap<u16, (u64, Receiver<Message>, Reply<Subscribed>)>,
    /// Publishes made while no connection could take them, in order.
    offline: VecDeque<(Publish, PublishReply)>,
    offline_subscribes: Vec<(CheckedSubscribe, Reply<Subscribed>)>,
    offline_unsubscribes: Vec<TopicFilter>,
    written: Vec<PublishReply>,
    deliveries: VecDeque<Delivery>,
    sending: Option<Sending>,
    /// Messages no subscription matched, held unacknowledged for the next subscription that
    /// does: a resumed session's queued messages arrive right after CONNACK, before the
    /// application could subscribe again. Never acknowledged then dropped: at `queue_capacity`
    /// of them the client stops reading until a subscription takes them (a 5.0 broker stops
    /// earlier, at our Receive Maximum, since they count against it).
    unclaimed: VecDeque<Unclaimed>,
    /// Filters of subscriptions the application dropped, most recent last.
    retired: VecDeque<TopicFilter>,
    /// Reconnect without waiting: a dropped manual-ack message is to be redelivered.
    reconnect_now: bool,
    disconnect_done: Vec<Sender<()>>,
    shutdown: bool,
}

/// A driver dropped without finishing (its runtime shut down) leaves no caller waiting: the
/// queue closes, and the commands still in it are dropped with their answers' senders, so that
/// each waiting [`PublishHandle`](super::PublishHandle) sees the client closed.
impl Drop for Driver {
    fn drop(&mut self) {
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)] // one constructor, called once, by `Client`
    pub(crate) fn new(
        runtime: SharedRuntime,
        options: ClientOptions,
        commands: Receiver<Command>,
        control: Receiver<Control>,
        control_tx: Sender<Control>,
        command_tx: Sender<Command>,
        events: Sender<ConnectionEvent>,
        ready: Sender<Result<ByteString, Error>>,
        store: Option<StoreThread>,
        session: Option<Session>,
    ) -> Self {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write(options.config.client_id.as_bytes());
            hasher.finish()
        };
        let backoff = Backoff::new(options.reconnect.unwrap_or_default(), seed);
        let mut options = options;
        // The driver acknowledges once a message is in its subscription's queue (or, with
        // manual acknowledgement, when the application says so).
        options.config.manual_ack = true;
        // Backpressure reaches a 5.0 broker only through our Receive Maximum. Without one
        // (65,535) it may send more than the socket buffers hold while a subscription is full,
        // and a broker that disconnects clients which stop reading (ours does, once their output
        // queue is full) would lose a clean session's messages.
        options
            .config
            .properties
            .receive_maximum
            .get_or_insert(DEFAULT_RECEIVE_MAXIMUM);
        Self {
            runtime,
            options,
            commands: Box::pin(commands),
            control: Box::pin(control),
            control_tx,
            command_tx,
            events,
            ready: Some(ready),
            session,
            backoff,
            epoch: 0,
            next_key: 0,
            subscriptions: Vec::new(),
            pending_publishes: HashMap::new(),
            completed: Vec::new(),
            store,
            pending_subscribes: HashMap::new(),
            offline: VecDeque::new(),
            offline_subscribes: Vec::new(),
            offline_unsubscribes: Vec::new(),
            written: Vec::new(),
            deliveries: VecDeque::new(),
            sending: None,
            unclaimed: VecDeque::new(),
            retired: VecDeque::new(),
            reconnect_now: false,
            disconnect_done: Vec::new(),
            shutdown: false,
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        // Nobody listening, or a slow listener: the oldest events give way.
        let _ = self.events.force_send(event);
    }

    pub(crate) async fn run(mut self) {
        let mut last_reason = DisconnectReason::ConnectionLost;
        let mut last_failure = None;
        loop {
            // Resolving, TCP, TLS and CONNACK together: one deadline for the attempt.
            let deadline = self.runtime.now() + self.options.config.connect_timeout;
            match transport::open(&self.runtime, &self.options, deadline).await {
                Ok(transport) => {
                    (last_reason, last_failure) = self.run_connection(transport, deadline).await;
                    self.emit(ConnectionEvent::Disconnected(last_reason.clone()));
                    if let Some(ready) = self.ready.take() {
                        let error = last_failure.unwrap_or_else(|| refusal(&last_reason));
                        let _ = ready.try_send(Err(error));
                        return self.finish(last_reason, None);
                    }
                }
                Err(error) => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.try_send(Err(error));
                        return self.finish(last_reason, None);
                    }
                    self.emit(ConnectionEvent::ConnectFailed(error.to_string()));
                }
            }
            if self.shutdown || self.options.reconnect.is_none() {
                return self.finish(last_reason, last_failure);
            }
            if std::mem::take(&mut self.reconnect_now) {
                // To have a dropped message redelivered: no reason to wait.
                continue;
            }
            let delay = self.backoff.next_delay();
            self.emit(ConnectionEvent::Reconnecting(delay));
            let deadline = self.runtime.now() + delay;
            if !self.wait_offline(deadline).await {
                return self.finish(last_reason, None);
            }
        }
    }

    /// Everything still waiting fails, with the local error that ended the last connection (a
    /// write timeout) if one did, else as disconnected; subscription streams end.
    fn finish(mut self, reason: DisconnectReason, failure: Option<Error>) {
        let error = || match &failure {
            Some(failure) => copy_error(failure),
            None => Error::Disconnected(reason.clone()),
        };
        // Everything waiting is answered before the queue closes: a handle that sees it closed
        // finds its answer there already (see `Client::reply`). Commands that arrive meanwhile
        // are answered after.
        let answer_queued = |this: &mut Self| {
            while let Ok(command) = this.commands.try_recv() {
                match command {
                    Command::Publish { done, .. } => {
                        let _ = done.send(Err(error()));
                    }
                    Command::Subscribe { done, .. } => {
                        let _ = done.try_send(Err(error()));
                    }
                    Command::Ack { .. } => {}
                    Command::Disconnect { done, .. } => this.disconnect_done.push(done),
                }
            }
        };
        answer_queued(&mut self);
        for (_, done) in self.pending_publishes.drain() {
            let _ = done.send(Err(error()));
        }
        // Their completion could not be saved (the store failed).
        for (done, _) in self.completed.drain(..) {
            let _ = done.send(Err(error()));
        }
        for (_, _, done) in std::mem::take(&mut self.pending_subscribes).into_values() {
            let _ = done.try_send(Err(error()));
        }
        for (_, done) in self.offline.drain(..) {
            let _ = done.send(Err(error()));
        }
        for (_, done) in self.offline_subscribes.drain(..) {
            let _ = done.try_send(Err(error()));
        }
        self.commands.close();
        answer_queued(&mut self);
        for done in self.disconnect_done.drain(..) {
            let _ = done.try_send(());
        }
    }

    /// Waits out a reconnect delay while taking commands. Returns false to stop.
    async fn wait_offline(&mut self, deadline: Instant) -> bool {
        loop {
            let wake = future::or(
                async { Wake::Command(self.commands.recv().await.ok()) },
                future::or(
                    async { Wake::Control(self.control.recv().await.ok()) },
                    async {
                        self.runtime.sleep_until(deadline).await;
                        Wake::Timer
                    },
                ),
            )
            .await;
            match wake {
                Wake::Timer => return true,
                Wake::Command(Some(command)) => self.offline_command(command),
                Wake::Control(Some(Control::Unsubscribe(key))) => {
                    if let Some(filter) = self.remove_subscription(key) {
                        self.offline_unsubscribes.push(filter);
                    }
                }
                // Its connection is gone: a persistent session gets it again, a clean one
                // lost it with the connection.
                Wake::Control(Some(Control::Unacked { .. })) => {}
                Wake::Command(None) | Wake::Control(Some(Control::Shutdown) | None) => {
                    self.shutdown = true;
                }
                Wake::Read(_) | Wake::Delivered => {}
            }
            if self.shutdown {
                return false;
            }
        }
    }

    fn offline_command(&mut self, command: Command) {
        match command {
            Command::Publish { publish, done } => {
                if self.offline.len() >= self.options.max_offline {
                    let _ = done.send(Err(Error::Usage(UsageError::QueueFull)));
                } else {
                    self.offline.push_back((publish, done));
                }
            }
            Command::Subscribe { options, done } => self.offline_subscribes.push((options, done)),
            // That message's connection is gone; the broker redelivers it.
            Command::Ack { .. } => {}
            Command::Disconnect { done, .. } => {
                self.shutdown = true;
                self.disconnect_done.push(done);
            }
        }
    }

    fn config(&self) -> mqtt_proto::connection::ClientConfig {
        let mut config = self.options.config.clone();
        if self.session.is_some()
            && (config.version == Version::V5 || !self.options.config.clean_start)
        {
            // Resume what the broker kept; 3.1.1 clean sessions stay clean.
            config.clean_start = false;
        }
        config
    }

    /// Runs one connection until it ends: why it ended, and the local error that ended it (a
    /// write that failed or timed out), if one did.
    async fn run_connection(
        &mut self,
        mut transport: BoxTransport,
        connect_deadline: Instant,
    ) -> (DisconnectReason, Option<Error>) {
        self.epoch += 1;
        let now = self.runtime.now();
        let mut config = self.config();
        // CONNACK gets what resolving, TCP and TLS left of the connect timeout.
        config.connect_timeout = connect_deadline.saturating_duration_since(now);
        let mut conn = ClientConnection::new(config, self.session.take(), now);
        let mut reason = None;
        let mut failure = None;
        let write_timeout = self.options.write_timeout;
        let mut read_buf = vec![0u8; 16 * 1024];
        let mut out = BytesMut::with_capacity(16 * 1024);
        // The session as given is the one the store holds (or there is no store).
        let mut saved = conn.session_changes();
        let mut timer: Option<(Instant, BoxFuture<'static, ()>)> = None;
        let mut read_first = false;
        loop {
            self.dispatch(&mut conn, &mut reason);
            // Durable before it shows: the store holds what changed before anything of this
            // turn is written and before a publish is reported complete.
            if let Err(error) = self.save(&conn, &mut saved).await {
                // The file can no longer be kept up to date: nothing more goes out, and the
                // client stops rather than break the promise of the store.
                self.shutdown = true;
                failure = Some(error);
                break;
            }
            for (done, outcome) in self.completed.drain(..) {
                let _ = done.send(outcome);
            }
            out.clear();
            let now = self.runtime.now();
            if conn.poll_transmit(now, &mut out) {
                let written =
                    transport::write_all(&self.runtime, &mut transport, &out, write_timeout).await;
                match written {
                    Ok(()) => {
                        for done in self.written.drain(..) {
                            let _ = done.send(Ok(None));
                        }
                    }
                    Err(error) => {
                        // The QoS 0 publishes of this write may not have reached the server.
                        for done in self.written.drain(..) {
                            let _ = done.send(Err(copy_error(&error)));
                        }
                        if let Error::Timeout(what) = error {
                            self.emit(ConnectionEvent::TimedOut(what));
                        }
                        failure = Some(error);
                        conn.handle_eof(self.runtime.now());
                    }
                }
                continue;
            }
            if conn.is_closed() {
                break;
            }
            self.start_delivery(&mut conn);
            // The timer is armed at the earliest deadline and kept across turns: the keep
            // alive's deadline moves with every packet sent, and re-arming it each turn would
            // cost a timer registration per turn. When it fires early, the core finds nothing
            // due and the next turn arms the new deadline.
            if let Some(at) = conn.poll_timeout()
                && timer.as_ref().is_none_or(|(armed, _)| at < *armed)
            {
                timer = Some((at, self.runtime.sleep_until(at)));
            }
            // Backpressure: while a subscription's queue is full, the messages behind it wait
            // here, unacknowledged; a broker that respects our Receive Maximum stops sending,
            // and the connection goes on reading, so that PINGRESP and the acknowledgements of
            // our own publishes are seen while the application is busy. Only when this backlog
            // (or the messages held for a subscription to come) reaches `queue_capacity`
            // (QoS 0 messages, which no window bounds, or a broker past our Receive Maximum)
            // does it stop reading.
            //
            // Except while a SUBSCRIBE waits for its SUBACK: the application gets the
            // subscription (and empties its queue) only once the SUBACK is read, and it may be
            // behind the very messages that fill the queue (a resumed session's backlog, sent
            // by a broker that bounds nothing for 3.1.1 clients). Up to `SUBSCRIBING_BACKLOG`
            // messages are held then.
            let backlog = self.deliveries.len() + self.unclaimed.len();
            let backlog_full = (self.deliveries.len() >= self.options.queue_capacity
                || self.unclaimed.len() >= self.options.queue_capacity)
                && (self.pending_subscribes.is_empty() || backlog >= SUBSCRIBING_BACKLOG);
            // One future polled in place, with no allocation: the queues are polled as streams
            // (each keeps its listener between turns). Reading and taking commands alternate
            // in priority, so that neither a stream of commands nor one of input starves the
            // other.
            let (control, commands, sending) =
                (&mut self.control, &mut self.commands, &mut self.sending);
            let wake = future::poll_fn(|cx| {
                if let Poll::Ready(control) = control.as_mut().poll_next(cx) {
                    return Poll::Ready(Wake::Control(control));
                }
                if read_first
                    && !backlog_full
                    && let Poll::Ready(read) =
                        Pin::new(&mut *transport).poll_read(cx, &mut read_buf)
                {
                    return Poll::Ready(Wake::Read(read));
                }
                if let Poll::Ready(command) = commands.as_mut().poll_next(cx) {
                    return Poll::Ready(Wake::Command(command));
                }
                if let Some((_, sleep)) = &mut timer
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    timer = None;
                    return Poll::Ready(Wake::Timer);
                }
                if let Some(sending) = sending
                    && sending.future.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Wake::Delivered);
                }
                if !read_first
                    && !backlog_full
                    && let Poll::Ready(read) =
                        Pin::new(&mut *transport).poll_read(cx, &mut read_buf)
                {
                    return Poll::Ready(Wake::Read(read));
                }
                Poll::Pending
            })
            .await;
            read_first = matches!(wake, Wake::Command(_));
            let now = self.runtime.now();
            match wake {
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => conn.handle_eof(now),
                Wake::Read(Ok(n)) => conn.handle_bytes(now, read_buf.get(..n).unwrap_or_default()),
                Wake::Timer => conn.handle_timeout(now),
                Wake::Command(Some(command)) => {
                    self.command(&mut conn, command);
                    // Whatever else is already waiting joins the same write.
                    let taken = 1 + self.take_commands(&mut conn, COMMAND_BATCH - 1);
                    if taken < COMMAND_BATCH {
                        // Let the tasks that are ready to publish run first, once: a runtime
                        // that runs the task it just woke next (tokio's LIFO slot) would
                        // otherwise have this task write each command alone, one system call
                        // per message, while hundreds of publishers wait their turn.
                        future::yield_now().await;
                        self.take_commands(&mut conn, COMMAND_BATCH - taken);
                    }
                }
                Wake::Command(None)
                | Wake::Control(None)
                | Wake::Control(Some(Control::Shutdown)) => {
                    self.shutdown = true;
                    let _ = conn.disconnect(now, Disconnect::default());
                }
                Wake::Control(Some(Control::Unsubscribe(key))) => self.unsubscribe(&mut conn, key),
                Wake::Control(Some(Control::Unacked {
                    token,
                    epoch,
                    key,
                    topic,
                    dup,
                })) => self.unacked(&mut conn, token, epoch, key, topic, dup),
                Wake::Delivered => {
                    if let Some(done) = self.sending.take()
                        && let Some(token) = done.then_ack
                        && done.epoch == self.epoch
                    {
                        let _ = conn.ack(now, token);
                    }
                }
            }
        }
        if failure.is_none() {
            transport::close(&self.runtime, &mut transport, write_timeout).await;
        }
        // Else the transport takes nothing (a TLS close_notify would wait for it): dropped.
        let reason = reason.unwrap_or(DisconnectReason::ConnectionLost);
        // Accepted by the core but never written: the connection closed first.
        for done in self.written.drain(..) {
            let _ = done.send(Err(Error::Disconnected(reason.clone())));
        }
        self.session = Some(conn.into_session());
        self.backoff.disconnected(self.runtime.now());
        for done in self.disconnect_done.drain(..) {
            let _ = done.try_send(());
        }
        if self.persistent() {
            // Messages stuck behind a full queue, or held for a subscription to come, came on
            // this connection: their acknowledgements are void, and the broker redelivers them.
            self.deliveries.clear();
            self.sending = None;
            self.unclaimed.clear();
        } else {
            // A clean session's broker will not send them again: they are delivered still,
            // with nothing left to acknowledge.
            for delivery in &mut self.deliveries {
                delivery.then_ack = None;
            }
            if let Some(sending) = &mut self.sending {
                sending.then_ack = None;
            }
            for held in &mut self.unclaimed {
                held.token = None;
            }
        }
        (reason, failure)
    }

    /// Takes up to `limit` commands that are already queued; how many it took.
    fn take_commands(&mut self, conn: &mut ClientConnection, limit: usize) -> usize {
        let mut taken = 0;
        while taken < limit {
            let Ok(command) = self.commands.try_recv() else {
                break;
            };
            self.command(conn, command);
            taken += 1;
        }
        taken
    }

    /// Brings the session store up to date if the session changed since the last save
    /// (`saved`: the connection's change count then). Without a store, nothing to do.
    ///
    /// `&mut self` although it only reads: a shared borrow of the driver, which is not `Sync`,
    /// held across the wait would make the connection's future not `Send`.
    async fn save(&mut self, conn: &ClientConnection, saved: &mut u64) -> Result<(), Error> {
        let changes = conn.session_changes();
        if self.store.is_none() || changes == *saved {
            return Ok(());
        }
        // The file names its client: the configured identifier, or the one the broker assigned.
        let client_id = match &*self.options.config.client_id {
            "" => conn.session().assigned_client_id().unwrap_or_default(),
            id => id,
        };
        let mut file = BytesMut::new();
        store::encode(client_id, &mut file, |buf| conn.encode_session(buf))
            .map_err(|error| Error::Usage(UsageError::Encode(error)))?;
        if let Some(store) = &self.store {
            store.save(file.freeze()).await?;
        }
        *saved = changes;
        Ok(())
    }

    /// Moves waiting deliveries into their queues until one is full; that one becomes the
    /// future the loop waits on instead of reading.
    fn start_delivery(&mut self, conn: &mut ClientConnection) {
        while self.sending.is_none() {
            let Some(Delivery {
                queue,
                message,
                then_ack,
                epoch,
            }) = self.deliveries.pop_front()
            else {
                return;
            };
            match queue.try_send(message) {
                // A closed queue is a dropped subscription: nobody wants the message.
                Ok(()) | Err(async_channel::TrySendError::Closed(_)) => {
                    if let Some(token) = then_ack
                        && epoch == self.epoch
                    {
                        let _ = conn.ack(self.runtime.now(), token);
                    }
                }
                Err(async_channel::TrySendError::Full(message)) => {
                    self.sending = Some(Sending {
                        future: Box::pin(async move {
                            // Err means the subscription was dropped meanwhile.
                            queue.send(message).await.is_ok()
                        }),
                        then_ack,
                        epoch,
                    });
                }
            }
        }
    }

    fn dispatch(&mut self, conn: &mut ClientConnection, reason: &mut Option<DisconnectReason>) {
        while let Some(event) = conn.poll_event() {
            let now = self.runtime.now();
            match event {
                ClientEvent::Connected {
                    session_present, ..
                } => {
                    self.backoff.connected(now);
                    self.emit(ConnectionEvent::Connected { session_present });
                    if let Some(ready) = self.ready.take() {
                        let id = conn
                            .session()
                            .assigned_client_id()
                            .map(ByteString::from)
                            .unwrap_or_else(|| self.options.config.client_id.clone());
                        let _ = ready.try_send(Ok(id));
                    }
                    for filter in std::mem::take(&mut self.offline_unsubscribes) {
                        if !self.subscriptions.iter().any(|s| s.filter == filter) {
                            let _ = conn.unsubscribe(
                                now,
                                vec![filter],
                                UnsubscribeProperties::default(),
                            );
                        }
                    }
                    for (options, done) in std::mem::take(&mut self.offline_subscribes) {
                        self.subscribe(conn, options, done);
                    }
                    for (publish, done) in std::mem::take(&mut self.offline) {
                        self.publish(conn, publish, done);
                    }
                }
                ClientEvent::Message(message) => self.route(conn, message.publish, message.ack),
                // A publish restored from the session store has no future to complete.
                ClientEvent::Published(outcome) => {
                    if let Some(done) = self.pending_publishes.remove(&outcome.packet_id.get()) {
                        self.completed.push((done, Ok(Some(outcome))));
                    }
                }
                ClientEvent::PublishDropped { packet_id, error } => {
                    if let Some(done) = self.pending_publishes.remove(&packet_id.get()) {
                        self.completed.push((done, Err(Error::Usage(error))));
                    }
                }
                ClientEvent::Subscribed(suback) => {
                    if let Some((key, messages, done)) =
                        self.pending_subscribes.remove(&suback.packet_id.get())
                    {
                        let code = suback
                            .reason_codes
                            .first()
                            .copied()
                            .unwrap_or(ReasonCode::UnspecifiedError);
                        if code.is_error() {
                            self.remove_subscription(key);
                        }
                        let _ = done.try_send(Ok((key, messages, code)));
                    }
                }
                ClientEvent::ReceiveMaximumExceeded { receive_maximum } => {
                    self.emit(ConnectionEvent::ReceiveMaximumExceeded { receive_maximum });
                }
                ClientEvent::Disconnected(why) => *reason = Some(why),
                _ => {}
            }
        }
    }

    /// Hands a message to every local subscription it matches, in arrival order; acknowledges
    /// it once queued, unless a manual subscription takes over the acknowledgement.
    fn route(&mut self, conn: &mut ClientConnection, publish: Publish, token: Option<AckToken>) {
        let targets: Vec<(Sender<Message>, bool, u64)> = self
            .subscriptions
            .iter()
            .filter(|s| s.matches(&publish.topic))
            .map(|s| (s.queue.clone(), s.manual_ack, s.key))
            .collect();
        let manual_index = token.and_then(|_| targets.iter().position(|(_, manual, _)| *manual));
        let keys: Vec<u64> = targets.iter().map(|(_, _, key)| *key).collect();
        let key_of = |index: usize| keys.get(index).copied().unwrap_or(u64::MAX);
        let auto_ack = if manual_index.is_none() { token } else { None };
        if targets.is_empty() {
            if self.retired.iter().any(|f| f.matches(&publish.topic)) {
                // For a subscription the application dropped: nobody asked for it any more.
                if let Some(token) = token {
                    let _ = conn.ack(self.runtime.now(), token);
                }
                return;
            }
            self.unclaimed.push_back(Unclaimed {
                publish,
                token,
                epoch: self.epoch,
            });
            return;
        }
        let last = targets.len() - 1;
        for (index, (queue, _, _)) in targets.into_iter().enumerate() {
            let acker = match (manual_index, token) {
                (Some(m), Some(token)) if m == index => {
                    Some(self.acker(key_of(m), token, &publish))
                }
                _ => None,
            };
            let message = Message {
                publish: publish.clone(),
                acker,
            };
            let then_ack = if index == last { auto_ack } else { None };
            if self.deliveries.is_empty() && self.sending.is_none() {
                match queue.try_send(message) {
                    Ok(()) | Err(async_channel::TrySendError::Closed(_)) => {
                        if let Some(token) = then_ack {
                            let _ = conn.ack(self.runtime.now(), token);
                        }
                        continue;
                    }
                    Err(async_channel::TrySendError::Full(message)) => {
                        self.deliveries.push_back(Delivery {
                            queue,
                            message,
                            then_ack,
                            epoch: self.epoch,
                        });
                    }
                }
            } else {
                self.deliveries.push_back(Delivery {
                    queue,
                    message,
                    then_ack,
                    epoch: self.epoch,
                });
            }
        }
    }

    fn command(&mut self, conn: &mut ClientConnection, command: Command) {
        let now = self.runtime.now();
        match command {
            Command::Publish { publish, done } => self.publish(conn, publish, done),
            Command::Subscribe { options, done } => self.subscribe(conn, options, done),
            Command::Ack { token, epoch } => {
                if epoch == self.epoch {
                    let _ = conn.ack(now, token);
                }
            }
            Command::Disconnect { disconnect, done } => {
                self.shutdown = true;
                self.disconnect_done.push(done);
                if conn.disconnect(now, disconnect).is_err() {
                    // Already closed: nothing to send.
                }
            }
        }
    }

    fn publish(&mut self, conn: &mut ClientConnection, publish: Publish, done: PublishReply) {
        if publish.qos == QoS::AtMostOnce && conn.state() == ClientState::Connecting {
            // QoS 0 goes out only once connected; QoS 1 and 2 wait in the core's queue.
            self.offline.push_back((publish, done));
            return;
        }
        match conn.publish(self.runtime.now(), publish) {
            Ok(Some(packet_id)) => {
                self.pending_publishes.insert(packet_id.get(), done);
            }
            Ok(None) => self.written.push(done),
            Err(error) => {
                let _ = done.send(Err(Error::Usage(error)));
            }
        }
    }

    fn subscribe(
        &mut self,
        conn: &mut ClientConnection,
        options: CheckedSubscribe,
        done: Reply<Subscribed>,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        let capacity = options.capacity.unwrap_or(self.options.queue_capacity);
        let filter = options.subscription.filter.clone();
        match conn.subscribe(
            self.runtime.now(),
            vec![options.subscription],
            options.properties,
        ) {
            Ok(packet_id) => {
                self.retired.retain(|f| *f != filter);
                let mut claimed = Vec::new();
                let mut kept = VecDeque::with_capacity(self.unclaimed.len());
                for held in self.unclaimed.drain(..) {
                    if filter.matches(&held.publish.topic) {
                        claimed.push(held);
                    } else {
                        kept.push_back(held);
                    }
                }
                self.unclaimed = kept;
                let (queue, messages) = async_channel::bounded(capacity.max(claimed.len()));
                let now = self.runtime.now();
                for held in claimed {
                    let token = held.token.filter(|_| held.epoch == self.epoch);
                    let acker = match token {
                        Some(token) if options.manual_ack => {
                            Some(self.acker(key, token, &held.publish))
                        }
                        Some(token) => {
                            let _ = conn.ack(now, token);
                            None
                        }
                        None => None,
                    };
                    let _ = queue.try_send(Message {
                        publish: held.publish,
                        acker,
                    });
                }
                self.subscriptions.push(LocalSubscription {
                    key,
                    filter,
                    queue,
                    manual_ack: options.manual_ack,
                });
                self.pending_subscribes
                    .insert(packet_id.get(), (key, messages, done));
            }
            Err(error) => {
                let _ = done.try_send(Err(Error::Usage(error)));
            }
        }
    }

    fn remove_subscription(&mut self, key: u64) -> Option<TopicFilter> {
        let index = self.subscriptions.iter().position(|s| s.key == key)?;
        let filter = self.subscriptions.remove(index).filter;
        if !self.subscriptions.iter().any(|s| s.filter == filter) {
            self.retired.retain(|f| *f != filter);
            if self.retired.len() >= RETIRED_FILTERS {
                self.retired.pop_front();
            }
            self.retired.push_back(filter.clone());
        }
        Some(filter)
    }

    /// Whether the broker keeps the session after this connection, and so redelivers what we
    /// did not acknowledge.
    fn persistent(&self) -> bool {
        let config = &self.options.config;
        match config.version {
            Version::V3_1_1 => !config.clean_start,
            Version::V5 => config.properties.session_expiry_interval.unwrap_or(0) > 0,
        }
    }

    /// The acknowledgement handle of a manual-ack message.
    fn acker(&self, key: u64, token: AckToken, publish: &Publish) -> Acker {
        Acker {
            commands: self.command_tx.clone(),
            control: self.control_tx.clone(),
            token,
            epoch: self.epoch,
            key,
            topic: publish.topic.clone(),
            dup: publish.dup,
            settled: false,
        }
    }

    /// A manual-ack message was dropped without `ack`: see [`Message`] for what this does.
    fn unacked(
        &mut self,
        conn: &mut ClientConnection,
        token: AckToken,
        epoch: u64,
        key: u64,
        topic: TopicName,
        dup: bool,
    ) {
        if epoch != self.epoch {
            // Its connection is gone: nothing to acknowledge on this one.
            return;
        }
        let now = self.runtime.now();
        if !self.subscriptions.iter().any(|s| s.key == key) {
            // Queued in a subscription the application dropped.
            let _ = conn.ack(now, token);
            return;
        }
        let redeliver = self.persistent() && self.options.reconnect.is_some() && !dup;
        if redeliver {
            self.reconnect_now = true;
            let _ = conn.disconnect(now, Disconnect::default());
        } else {
            let _ = conn.ack(now, token);
        }
        self.emit(ConnectionEvent::DroppedUnacked {
            topic,
            redelivered: redeliver,
        });
    }

    fn unsubscribe(&mut self, conn: &mut ClientConnection, key: u64) {
        if let Some(filter) = self.remove_subscription(key)
            && !self.subscriptions.iter().any(|s| s.filter == filter)
        {
            let _ = conn.unsubscribe(
                self.runtime.now(),
                vec![filter],
                UnsubscribeProperties::default(),
            );
        }
    }
}

/// The error for a first connection that ended before it was accepted.
fn refusal(reason: &DisconnectReason) -> Error {
    match reason {
        DisconnectReason::ConnectTimeout => Error::Timeout(TimedOut::ConnAck),
        DisconnectReason::Refused {
            reason_code,
            properties,
        } => Error::Refused {
            reason_code: *reason_code,
            reason_string: properties.reason_string.as_ref().map(|s| s.to_string()),
        },
        other => Error::Disconnected(other.clone()),
    }
}

/// The error of a failed write, once more for each publish that was in it.
fn copy_error(error: &Error) -> Error {
    match error {
        Error::Io(io) => Error::Io(io::Error::new(io.kind(), io.to_string())),
        Error::Timeout(what) => Error::Timeout(*what),
        Error::SessionStore(store) => Error::SessionStore(store.clone()),
        other => Error::Io(io::Error::other(other.to_string())),
    }
}
