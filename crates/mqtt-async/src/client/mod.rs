//! The async [`Client`]: a cheap, cloneable handle to a background task that drives the
//! protocol core, reconnects, and routes messages to subscriptions.

mod driver;
mod store;
mod subscription;
pub(crate) mod transport;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use mqtt_proto::ReasonCode;
use mqtt_proto::connection::{DisconnectReason, UsageError};
use mqtt_proto::packet::{ByteString, Disconnect, PacketId, Publish, QoS, TopicName, Version};

pub use store::{SessionStore, SessionStoreError};
pub use subscription::{Message, SubscribeOptions, Subscription};

use crate::runtime::{Runtime, SharedRuntime};
use crate::{ClientOptions, Error, TimedOut};
use driver::{Command, Control, Driver, PublishResult};
use store::StoreThread;

/// What happened to the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Connected; `session_present` says whether the broker resumed the session.
    Connected {
        /// The broker kept the session.
        session_present: bool,
    },
    /// The connection ended.
    Disconnected(DisconnectReason),
    /// A connection attempt failed (network or TLS error, refusal, a step of connecting that
    /// did not finish within the connect timeout).
    ConnectFailed(String),
    /// A write made no progress for the write timeout ([`TimedOut::Write`]), so the client
    /// dropped the connection; `Disconnected(ConnectionLost)` follows. Timeouts while
    /// connecting show as `ConnectFailed` (resolving, TCP, TLS) or as
    /// `Disconnected(ConnectTimeout)` (no CONNACK).
    TimedOut(TimedOut),
    /// The next attempt starts after this delay.
    Reconnecting(Duration),
    /// A message received under manual acknowledgement was dropped without
    /// [`Message::ack`](crate::Message::ack) (see [`Message`](crate::Message) for the rules).
    DroppedUnacked {
        /// Its topic.
        topic: TopicName,
        /// `true`: the client reconnected so that the broker redelivers it (persistent
        /// session). `false`: it was acknowledged and is lost to the application (a clean
        /// session, or it was already a redelivery).
        redelivered: bool,
    },
    /// The broker sent more unacknowledged QoS 1/2 messages than our Receive Maximum, which
    /// MQTT-3.3.4-9 forbids and mosquitto 2.0 does (resuming a session with a backlog). The
    /// messages are kept and acknowledged as usual; told once per connection.
    ReceiveMaximumExceeded {
        /// Our Receive Maximum.
        receive_maximum: u16,
    },
}

/// A publish started with [`Client::start_publish`]: [`PublishHandle::wait`] for its outcome.
#[derive(Debug)]
pub struct PublishHandle<R> {
    result: futures_channel::oneshot::Receiver<PublishResult>,
    runtime: PhantomData<fn() -> R>,
}

impl<R> PublishHandle<R> {
    /// Waits until the broker acknowledged the message (QoS 1 and 2) or it was written (QoS 0),
    /// as [`Client::publish`] does.
    pub async fn wait(self) -> Result<Published, Error> {
        // The client's task answers every publish it took, or drops the answer's sender when
        // it ends (with its runtime, say): then the client is closed.
        let outcome = self.result.await.map_err(|_| Error::Closed)?;
        match outcome? {
            None => Ok(Published {
                packet_id: None,
                reason_code: ReasonCode::Success,
            }),
            Some(outcome) if outcome.reason_code.is_error() => Err(Error::Rejected {
                reason_code: outcome.reason_code,
                reason_string: outcome.properties.reason_string.map(|s| s.to_string()),
            }),
            Some(outcome) => Ok(Published {
                packet_id: Some(outcome.packet_id),
                reason_code: outcome.reason_code,
            }),
        }
    }
}

/// The result of a completed publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The packet identifier (QoS 1 and 2).
    pub packet_id: Option<PacketId>,
    /// The broker's reason code (Success for QoS 0; 5.0 brokers may say No matching
    /// subscribers).
    pub reason_code: ReasonCode,
}

struct Shared {
    commands: Sender<Command>,
    control: Sender<Control>,
    events: Receiver<ConnectionEvent>,
    next_request: AtomicU64,
    version: Version,
    client_id: std::sync::Mutex<ByteString>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: the background task ends.
        let _ = self.control.try_send(Control::Shutdown);
    }
}

/// An MQTT client. Clone it freely: every clone talks to the same connection.
///
/// A background task (spawned on the runtime `R`) drives the connection; there is no event loop
/// to poll. Every method is cancel-safe: dropping a `publish` future after it was polled does
/// not take the message back (it is sent, and acknowledged, regardless), and dropping a
/// `subscribe` future leaves the subscription to be removed again.
pub struct Client<R> {
    shared: Arc<Shared>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R> Clone for Client<R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _runtime: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl<R: Runtime + Default> Client<R> {
    /// Connects, and returns once the broker accepted the connection, or fails: refused, a
    /// network or TLS error, or [`Error::Timeout`] when connecting took longer than the
    /// [connect timeout](ClientOptions::connect_timeout) (30 s by default).
    pub async fn connect(options: ClientOptions) -> Result<Self, Error> {
        Self::connect_with(Arc::new(R::default()), options).await
    }
}

impl<R> Client<R> {
    /// Connects using this runtime handle.
    ///
    /// Connecting (resolving, TCP, TLS, CONNACK) is bounded by the
    /// [connect timeout](ClientOptions::connect_timeout): past it, this is [`Error::Timeout`].
    /// With a [session store](ClientOptions::session_store), its session is read first: a
    /// file that cannot be read, is damaged or is another client's is [`Error::SessionStore`].
    pub async fn connect_with(
        runtime: SharedRuntime,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        // The TLS configuration (with the system's roots) is built here, once, off the async
        // tasks; every connection and reconnection of the client reuses it.
        #[cfg(feature = "tls")]
        options.tls_connector().await?;
        let (commands, command_rx) = async_channel::bounded(256);
        let (control, control_rx) = async_channel::unbounded();
        let (events_tx, events) = async_channel::bounded(64);
        let (ready_tx, ready_rx) = async_channel::bounded(1);
        let version = options.config.version;
        let client_id = options.config.client_id.clone();
        let (store, session) = match &options.session_store {
            Some(store) => {
                let (thread, session) = StoreThread::open(store.clone(), client_id.clone()).await?;
                (Some(thread), session)
            }
            None => (None, None),
        };
        let driver = Driver::new(
            runtime.clone(),
            options,
            command_rx,
            control_rx,
            control.clone(),
            commands.clone(),
            events_tx,
            ready_tx,
            store,
            session,
        );
        runtime.spawn(Box::pin(driver.run()));
        let assigned = ready_rx.recv().await.map_err(|_| Error::Closed)??;
        Ok(Self {
            shared: Arc::new(Shared {
                commands,
                control,
                events,
                next_request: AtomicU64::new(0),
                version,
                client_id: std::sync::Mutex::new(if client_id.is_empty() {
                    assigned
                } else {
                    client_id
                }),
            }),
            _runtime: PhantomData,
        })
    }

    /// Publishes a message; completes when the broker acknowledged it (QoS 1: PUBACK, QoS 2:
    /// PUBCOMP) or, for QoS 0, when it was written. A refusal is [`Error::Rejected`]. While
    /// disconnected, messages wait in a bounded queue and go out after the reconnect.
    ///
    /// The topic is checked first: an invalid one is [`UsageError::InvalidTopic`].
    pub async fn publish(
        &self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<Published, Error> {
        let topic = TopicName::new(topic).map_err(UsageError::InvalidTopic)?;
        let mut publish = Publish::new(topic, payload);
        publish.qos = qos;
        self.publish_with(publish).await
    }

    /// Publishes a PUBLISH with every option (retain, 5.0 properties).
    pub async fn publish_with(&self, publish: Publish) -> Result<Published, Error> {
        self.start_publish(publish).await?.wait().await
    }

    /// Hands a PUBLISH to the client and returns as soon as it is queued, with a handle that
    /// resolves when the broker acknowledged it (QoS 1: PUBACK, QoS 2: PUBCOMP) or, for QoS 0,
    /// when it was written. One task can so keep the in-flight window full, as a pipeline:
    /// start many publishes, then wait for their handles (in any order). Messages go out in
    /// the order they were started. A handle dropped without waiting does not take its message
    /// back.
    ///
    /// ```no_run
    /// # async fn run<R>(client: mqtt_async::Client<R>) -> Result<(), Box<dyn std::error::Error>> {
    /// use mqtt_async::{Publish, QoS, TopicName};
    /// let mut handles = std::collections::VecDeque::new();
    /// for n in 0..10_000 {
    ///     let mut publish = Publish::new(TopicName::new("readings")?, format!("{n}"));
    ///     publish.qos = QoS::AtLeastOnce;
    ///     handles.push_back(client.start_publish(publish).await?);
    ///     if handles.len() >= 1_000 {
    ///         // Bounded: wait for the oldest before starting more.
    ///         handles.pop_front().unwrap().wait().await?;
    ///     }
    /// }
    /// for handle in handles {
    ///     handle.wait().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn start_publish(&self, publish: Publish) -> Result<PublishHandle<R>, Error> {
        let (done, result) = futures_channel::oneshot::channel();
        self.send(Command::Publish { publish, done }).await?;
        Ok(PublishHandle {
            result,
            runtime: PhantomData,
        })
    }

    /// Subscribes to `filter` at `qos`; messages arrive on the returned stream.
    ///
    /// Messages that arrived for no subscription (a resumed session's queued messages come
    /// right after the connection is accepted, before the application subscribes again) were
    /// kept, acknowledged: the first subscription that matches them receives them first.
    pub async fn subscribe(
        &self,
        filter: impl Into<ByteString>,
        qos: QoS,
    ) -> Result<Subscription, Error> {
        self.subscribe_with(SubscribeOptions::new(filter).qos(qos))
            .await
    }

    /// Subscribes with every option (manual acknowledgement, No Local, retain handling, …).
    pub async fn subscribe_with(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        let options = options.check().map_err(UsageError::InvalidTopic)?;
        let (done, result) = async_channel::bounded(1);
        self.send(Command::Subscribe { options, done }).await?;
        let (key, messages, reason_code) = self.reply(result).await??;
        let subscription = Subscription {
            messages: Box::pin(messages),
            key,
            control: self.shared.control.clone(),
            reason_code,
        };
        if reason_code.is_error() {
            return Err(Error::Rejected {
                reason_code,
                reason_string: None,
            });
        }
        Ok(subscription)
    }

    /// Sends a request and waits for the response (5.0 request/response): subscribes to a
    /// response topic of its own, publishes with Response Topic and Correlation Data set, and
    /// returns the first message carrying that correlation data. An invalid topic is
    /// [`UsageError::InvalidTopic`], and nothing is subscribed.
    pub async fn request(
        &self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
    ) -> Result<Message, Error> {
        let topic = TopicName::new(topic).map_err(UsageError::InvalidTopic)?;
        if self.shared.version != Version::V5 {
            return Err(Error::Usage(mqtt_proto::connection::UsageError::Encode(
                mqtt_proto::codec::EncodeError::NotInV311(
                    mqtt_proto::codec::V5Only::RequestResponse,
                ),
            )));
        }
        let n = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let client_id = self.client_id();
        let response_topic = format!("mqtt-rs/responses/{client_id}/{n}");
        let mut responses = self
            .subscribe(response_topic.clone(), QoS::AtLeastOnce)
            .await?;
        let correlation = Bytes::from(n.to_be_bytes().to_vec());
        let mut publish = Publish::new(topic, payload);
        publish.qos = QoS::AtLeastOnce;
        publish.properties.response_topic = Some(response_topic.into());
        publish.properties.correlation_data = Some(correlation.clone());
        self.publish_with(publish).await?;
        while let Some(message) = responses.recv().await {
            if message.properties().correlation_data.as_ref() == Some(&correlation) {
                return Ok(message);
            }
        }
        Err(Error::Closed)
    }

    /// The client identifier (the server-assigned one if ours was empty).
    pub fn client_id(&self) -> ByteString {
        self.shared
            .client_id
            .lock()
            .map(|id| id.clone())
            .unwrap_or_default()
    }

    /// The stream of connection events: connected, disconnected (with the reason),
    /// reconnecting. Each event goes to one receiver; the oldest are dropped if nobody reads.
    pub fn events(&self) -> Receiver<ConnectionEvent> {
        self.shared.events.clone()
    }

    /// Disconnects gracefully (DISCONNECT with Normal disconnection) and stops reconnecting.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.disconnect_with(Disconnect::default()).await
    }

    /// Disconnects with this DISCONNECT (reason 0x04 asks the broker to publish the will).
    pub async fn disconnect_with(&self, disconnect: Disconnect) -> Result<(), Error> {
        let (done, result) = async_channel::bounded(1);
        self.send(Command::Disconnect { disconnect, done }).await?;
        let _ = self.reply(result).await;
        Ok(())
    }

    /// Waits for the background task's reply to a command. Every command the task took is
    /// answered; one still queued when the task ends is dropped with its reply sender (the
    /// task drains its queue on the way out, and when it is dropped), which ends the wait.
    async fn reply<T>(&self, reply: Receiver<T>) -> Result<T, Error> {
        reply.recv().await.map_err(|_| Error::Closed)
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| Error::Closed)
    }
}
