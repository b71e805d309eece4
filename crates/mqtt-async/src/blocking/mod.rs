//! The client for blocking code: programs, threads and callbacks that are not async.
//!
//! [`Client`] is a small facade over the async [`crate::Client`]: the same background task
//! drives the connection, so reconnect, backpressure, manual acknowledgement, QoS and flow
//! control behave exactly as they do in async code. Each call blocks the calling thread until
//! the async call it wraps completes: [`Client::publish`] until PUBACK (QoS 1) or PUBCOMP
//! (QoS 2), or until written (QoS 0); [`Client::subscribe`] until SUBACK. A [`Subscription`] is
//! an [`Iterator`] of messages with [`Subscription::recv_timeout`]; under manual acknowledgement
//! its [`Message::ack`] blocks as well.
//!
//! Each runtime crate names it for its runtime (`mqtt_tokio::blocking::Client`,
//! `mqtt_smol::blocking::Client`, `mqtt_async_std::blocking::Client`); `mqtt_tokio::blocking`
//! shows it at work, and the example `examples/blocking.rs` runs it against an embedded broker
//! without any async code.
//!
//! # Threads
//!
//! [`Client::connect`] starts one thread per client, `mqtt-client`, which runs the runtime's
//! [`Runtime::block_on`] (as `Broker::start_in_thread` does
//! for a broker) and connects the async client from inside it. So the connection's task is
//! spawned where the runtime expects it: on tokio, onto the runtime that `block_on` builds
//! (tokio's sockets and timers need one, and a program that is not async has none); on smol
//! and async-std, onto their global executors. The thread then only waits: for the last clone
//! of the blocking client to be dropped, after which it disconnects (DISCONNECT, Normal
//! disconnection) and waits for the connection's task to end, so that a runtime which ends with
//! `block_on` (tokio's) never cancels it halfway.
//!
//! The calls themselves need no runtime: the async client talks to its task over channels, so
//! the calling thread waits on those futures, parked until the task answers. Hence:
//!
//! - The connection lives on while the program does other things: keep-alives, acknowledgements
//!   and reconnects do not depend on the application calling in (unlike an event loop that
//!   runs only while it is polled), and a full subscription queue pushes back on the broker
//!   exactly as in async code.
//! - A thread per client, rather than one shared by every client, because a client's thread
//!   ends with it and nothing global outlives the clients. On tokio, `block_on` builds a
//!   runtime with two worker threads of its own, so a blocking client costs three threads.
//! - Calling a blocking method from async code blocks that executor's thread: use the async
//!   [`crate::Client`] there.

mod subscription;
mod wait;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use mqtt_proto::packet::{ByteString, Publish, QoS};

pub use subscription::{Message, Subscription};
use wait::{block_on, block_on_until};

use crate::runtime::{Runtime, SharedRuntime};
use crate::{ClientOptions, ConnectionEvent, Error, Published, SubscribeOptions};

/// How long dropping the last clone of a [`Client`] waits for its thread to disconnect and end
/// (writing a DISCONNECT takes moments; a reconnect attempt stuck in a TCP connect could take
/// minutes, and a `drop` should not).
const DROP_WAIT: Duration = Duration::from_secs(5);

/// An MQTT client for blocking code. Clone it freely: every clone talks to the same connection,
/// from any thread.
///
/// Dropping the last clone disconnects gracefully and ends the client's thread (waiting for
/// that up to a few seconds). Subscriptions end then too.
pub struct Client<R> {
    client: crate::Client<R>,
    worker: Arc<Worker>,
}

/// The client's thread, stopped when the last clone of the client is dropped.
struct Worker {
    /// Closed to ask the thread to disconnect and end.
    stop: Sender<()>,
    /// Closed when the thread ends.
    ended: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.close();
        let deadline = Instant::now() + DROP_WAIT;
        if block_on_until(self.ended.recv(), deadline).is_some()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
        // Otherwise the thread is left to finish on its own.
    }
}

impl<R> Clone for Client<R> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            worker: self.worker.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client").finish_non_exhaustive()
    }
}

impl<R: Runtime + Default> Client<R> {
    /// Connects, and returns once the broker accepted the connection (or refused it, or could
    /// not be reached: the first attempt is not retried).
    pub fn connect(options: ClientOptions) -> Result<Self, Error> {
        Self::connect_with(Arc::new(R::default()), options)
    }
}

impl<R: 'static> Client<R> {
    /// Connects using this runtime handle; its [`Runtime::block_on`] runs on the client's
    /// thread.
    pub fn connect_with(runtime: SharedRuntime, options: ClientOptions) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = async_channel::bounded::<()>(1);
        let (ended_tx, ended) = async_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("mqtt-client".into())
            .spawn(move || {
                // Dropped when the thread ends, which closes `ended`.
                let _ended = ended_tx;
                let inner = runtime.clone();
                runtime.block_on(Box::pin(async move {
                    let client = match crate::Client::<R>::connect_with(inner, options).await {
                        Ok(client) => client,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let events = client.events();
                    let _ = ready_tx.send(Ok(client.clone()));
                    // Nothing is ever sent: this ends when the blocking client is dropped.
                    let _ = stop_rx.recv().await;
                    // Already closed (an earlier `disconnect`, or a lost connection without
                    // reconnect) is fine.
                    let _ = client.disconnect().await;
                    drop(client);
                    // The task's last act is to drop its event sender.
                    while events.recv().await.is_ok() {}
                }));
            })?;
        let worker = Worker {
            stop,
            ended,
            thread: Some(thread),
        };
        // A runtime that could not start drops the sender: the client is closed.
        let client = ready_rx.recv().map_err(|_| Error::Closed)??;
        Ok(Self {
            client,
            worker: Arc::new(worker),
        })
    }
}

impl<R> Client<R> {
    /// Publishes a message; returns once the broker acknowledged it (QoS 1: PUBACK, QoS 2:
    /// PUBCOMP) or, for QoS 0, once it was written. A refusal is [`Error::Rejected`]. While
    /// disconnected, messages wait in a bounded queue and go out after the reconnect.
    ///
    /// The topic is checked first: an invalid one is
    /// [`UsageError::InvalidTopic`](crate::UsageError::InvalidTopic).
    pub fn publish(
        &self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<Published, Error> {
        block_on(self.client.publish(topic, payload, qos))
    }

    /// Publishes a PUBLISH with every option (retain, 5.0 properties).
    pub fn publish_with(&self, publish: Publish) -> Result<Published, Error> {
        block_on(self.client.publish_with(publish))
    }

    /// Subscribes to `filter` at `qos`; returns once the broker granted it. Messages arrive on
    /// the returned [`Subscription`].
    pub fn subscribe(
        &self,
        filter: impl Into<ByteString>,
        qos: QoS,
    ) -> Result<Subscription, Error> {
        block_on(self.client.subscribe(filter, qos)).map(Subscription::from)
    }

    /// Subscribes with every option (manual acknowledgement, No Local, retain handling, …).
    pub fn subscribe_with(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        block_on(self.client.subscribe_with(options)).map(Subscription::from)
    }

    /// Sends a request and waits for the response (5.0 request/response), as
    /// [`crate::Client::request`] does.
    pub fn request(
        &self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
    ) -> Result<Message, Error> {
        block_on(self.client.request(topic, payload)).map(Message::from)
    }

    /// The client identifier (the server-assigned one if ours was empty).
    pub fn client_id(&self) -> ByteString {
        self.client.client_id()
    }

    /// The connection events: connected, disconnected (with the reason), reconnecting. Read
    /// them with [`Receiver::recv_blocking`] or [`Receiver::try_recv`]. Each event goes to one
    /// receiver; the oldest are dropped if nobody reads.
    pub fn events(&self) -> Receiver<ConnectionEvent> {
        self.client.events()
    }

    /// Disconnects gracefully (DISCONNECT with Normal disconnection) and stops reconnecting;
    /// returns once the connection is closed. Subscriptions end, and later calls fail with
    /// [`Error::Closed`].
    pub fn disconnect(&self) -> Result<(), Error> {
        block_on(self.client.disconnect())
    }

    /// The async client behind this one, for code that is partly async. It keeps the connection
    /// open only as long as a blocking clone lives.
    pub fn as_async(&self) -> &crate::Client<R> {
        &self.client
    }
}
