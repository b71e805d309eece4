//! Blocking subscriptions: an [`Iterator`] of messages, with timeouts, and a blocking `ack`.

use std::ops::Deref;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use mqtt_proto::ReasonCode;

use super::wait::{block_on, block_on_until, poll_once};
use crate::Error;

/// A message from the broker, received through a blocking [`Subscription`].
///
/// It dereferences to the async [`crate::Message`] for its topic, payload, QoS and properties;
/// [`Message::ack`] here blocks instead of returning a future.
#[derive(Debug)]
pub struct Message(crate::Message);

impl Message {
    /// Acknowledges the message (manual acknowledgement, see
    /// [`SubscribeOptions::manual_ack`](crate::SubscribeOptions::manual_ack); a no-op
    /// otherwise). Returns once the acknowledgement is queued to the connection; it reaches the
    /// wire in the order the messages arrived, whatever order they are acknowledged in. If the
    /// connection the message came on has ended, the broker redelivers it instead.
    pub fn ack(self) -> Result<(), Error> {
        block_on(self.0.ack())
    }

    /// The async message, to acknowledge from async code.
    pub fn into_async(self) -> crate::Message {
        self.0
    }
}

impl From<crate::Message> for Message {
    fn from(message: crate::Message) -> Self {
        Self(message)
    }
}

impl Deref for Message {
    type Target = crate::Message;

    fn deref(&self) -> &crate::Message {
        &self.0
    }
}

/// An active subscription, read from blocking code: an [`Iterator`] of [`Message`]s that ends
/// once the client is closed.
///
/// Its queue is the async subscription's, with the same overflow policy: backpressure. While it
/// is full the client stops reading from the network, so no QoS 1/2 message is dropped, and a
/// subscription nobody reads stalls the connection's input. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    inner: crate::Subscription,
}

impl From<crate::Subscription> for Subscription {
    fn from(inner: crate::Subscription) -> Self {
        Self { inner }
    }
}

impl Subscription {
    /// Waits for the next message; `None` once the client is closed.
    pub fn recv(&mut self) -> Option<Message> {
        block_on(self.inner.recv()).map(Message)
    }

    /// The next message if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Result<Message, TryRecvError> {
        match poll_once(self.inner.recv()) {
            Some(Some(message)) => Ok(Message(message)),
            Some(None) => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits at most `timeout` for the next message: [`RecvTimeoutError::Timeout`] when none
    /// came in time, [`RecvTimeoutError::Disconnected`] once the client is closed. A message
    /// that arrives as the time runs out is not lost: the next call returns it.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        let received = match Instant::now().checked_add(timeout) {
            Some(deadline) => {
                block_on_until(self.inner.recv(), deadline).ok_or(RecvTimeoutError::Timeout)?
            }
            // Later than any clock can tell: no deadline at all.
            None => block_on(self.inner.recv()),
        };
        received.map(Message).ok_or(RecvTimeoutError::Disconnected)
    }

    /// The granted QoS, as the SUBACK said.
    pub fn reason_code(&self) -> ReasonCode {
        self.inner.reason_code()
    }

    /// The async subscription, to read from async code.
    pub fn into_async(self) -> crate::Subscription {
        self.inner
    }
}

impl Iterator for Subscription {
    type Item = Message;

    /// Waits for the next message, like [`Subscription::recv`].
    fn next(&mut self) -> Option<Message> {
        self.recv()
    }
}
