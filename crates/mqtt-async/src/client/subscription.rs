//! Subscriptions as streams, and received messages with their acknowledgement.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_channel::{Receiver, Sender};
use futures_lite::Stream;
use mqtt_proto::ReasonCode;
use mqtt_proto::connection::AckToken;
use mqtt_proto::packet::{
    ByteString, Bytes, Publish, PublishProperties, QoS, RetainHandling, SubscribeProperties,
    Subscription as Filter, SubscriptionOptions,
};
use mqtt_proto::topic::{TopicError, TopicFilter, TopicName};

use super::driver::{Command, Control};
use crate::Error;

/// What to subscribe to, and how.
///
/// The filter is checked when the subscription is made: an invalid one makes
/// [`Client::subscribe_with`](crate::Client::subscribe_with) return
/// [`UsageError::InvalidTopic`](crate::UsageError::InvalidTopic).
///
/// ```
/// use mqtt_async::{QoS, SubscribeOptions};
/// let options = SubscribeOptions::new("sensors/#").qos(QoS::AtLeastOnce).manual_ack();
/// ```
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    filter: ByteString,
    options: SubscriptionOptions,
    manual_ack: bool,
    capacity: Option<usize>,
    properties: SubscribeProperties,
}

/// [`SubscribeOptions`] whose filter is valid.
#[derive(Debug)]
pub(crate) struct CheckedSubscribe {
    pub(crate) subscription: Filter,
    pub(crate) manual_ack: bool,
    pub(crate) capacity: Option<usize>,
    pub(crate) properties: SubscribeProperties,
}

impl SubscribeOptions {
    /// A subscription to `filter` (a `&str`, `String`, or a [`TopicFilter`]) at QoS 0 with
    /// automatic acknowledgement.
    pub fn new(filter: impl Into<ByteString>) -> Self {
        Self {
            filter: filter.into(),
            options: SubscriptionOptions::new(QoS::AtMostOnce),
            manual_ack: false,
            capacity: None,
            properties: SubscribeProperties::default(),
        }
    }

    /// 5.0 properties of the SUBSCRIBE (user properties, a Subscription Identifier; ignored
    /// under 3.1.1). A re-subscription after a reconnect that did not resume the session
    /// carries the Subscription Identifier again, not the user properties.
    pub fn properties(mut self, properties: SubscribeProperties) -> Self {
        self.properties = properties;
        self
    }

    /// Checks the filter.
    pub(crate) fn check(self) -> Result<CheckedSubscribe, TopicError> {
        Ok(CheckedSubscribe {
            subscription: Filter {
                filter: TopicFilter::new(self.filter)?,
                options: self.options,
            },
            manual_ack: self.manual_ack,
            capacity: self.capacity,
            properties: self.properties,
        })
    }

    /// The maximum QoS to receive at.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.options.qos = qos;
        self
    }

    /// Messages must be acknowledged with [`Message::ack`]. Acknowledgements reach the wire in
    /// the order messages arrived (MQTT-4.6.0-2). A message dropped without `ack` never holds
    /// the others back: with a persistent session the client reconnects at once and the broker
    /// redelivers it; with a clean session it is acknowledged in the application's place.
    /// Either way a [`ConnectionEvent::DroppedUnacked`](crate::ConnectionEvent) says so (see
    /// [`Message`]).
    pub fn manual_ack(mut self) -> Self {
        self.manual_ack = true;
        self
    }

    /// Do not receive our own publications (5.0).
    pub fn no_local(mut self) -> Self {
        self.options.no_local = true;
        self
    }

    /// Keep the RETAIN flag of forwarded messages (5.0).
    pub fn retain_as_published(mut self) -> Self {
        self.options.retain_as_published = true;
        self
    }

    /// When retained messages are sent (5.0).
    pub fn retain_handling(mut self, handling: RetainHandling) -> Self {
        self.options.retain_handling = handling;
        self
    }

    /// This subscription's queue capacity (default: the client's `queue_capacity`).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }
}

/// Acknowledges one message under manual acknowledgement; dropped unused, it tells the driver
/// (see [`Message`]).
#[derive(Debug)]
pub(crate) struct Acker {
    pub(crate) commands: Sender<Command>,
    pub(crate) control: Sender<Control>,
    pub(crate) token: AckToken,
    pub(crate) epoch: u64,
    /// The subscription it was delivered to.
    pub(crate) key: u64,
    /// The message's topic and DUP flag, for the driver's decision and report.
    pub(crate) topic: TopicName,
    pub(crate) dup: bool,
    /// `ack` was called.
    pub(crate) settled: bool,
}

impl Drop for Acker {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.control.try_send(Control::Unacked {
                token: self.token,
                epoch: self.epoch,
                key: self.key,
                topic: self.topic.clone(),
                dup: self.dup,
            });
        }
    }
}

/// A message from the broker.
///
/// Under manual acknowledgement ([`SubscribeOptions::manual_ack`]) its PUBACK/PUBREC waits for
/// [`Message::ack`], and acknowledgements go out in the order the messages arrived
/// (MQTT-4.6.0-2). A message dropped without `ack` (a handler that returned early or
/// panicked) must not hold back every acknowledgement after it, so the client settles it at
/// once, and says what it did with [`ConnectionEvent::DroppedUnacked`](crate::ConnectionEvent):
///
/// - with a persistent session (3.1.1 Clean Session 0, or a 5.0 Session Expiry Interval above
///   0) and automatic reconnect on, it reconnects at once without acknowledging: the broker
///   redelivers the message (DUP set), and every later one not yet acknowledged, on the resumed
///   session. At-least-once holds. A message that was already a redelivery is acknowledged
///   instead, so that one message a handler keeps dropping cannot make the client reconnect
///   forever;
/// - otherwise (a clean session, which the broker would not redeliver) it acknowledges it: the
///   message is lost to the application, and reported.
///
/// Messages still queued in a subscription that is dropped are acknowledged: the application
/// asked not to receive them.
#[derive(Debug)]
pub struct Message {
    pub(crate) publish: Publish,
    pub(crate) acker: Option<Acker>,
}

impl Message {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.publish.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.publish.payload
    }

    /// The QoS it was delivered at.
    pub fn qos(&self) -> QoS {
        self.publish.qos
    }

    /// Whether it is a retained message.
    pub fn retain(&self) -> bool {
        self.publish.retain
    }

    /// Its 5.0 properties.
    pub fn properties(&self) -> &PublishProperties {
        &self.publish.properties
    }

    /// The whole PUBLISH.
    pub fn publish(&self) -> &Publish {
        &self.publish
    }

    /// Whether this message waits for [`Message::ack`].
    pub fn needs_ack(&self) -> bool {
        self.acker.is_some()
    }

    /// Acknowledges the message (manual acknowledgement; a no-op otherwise). If the connection
    /// it came on has ended, the broker redelivers it instead and this does nothing.
    pub async fn ack(mut self) -> Result<(), Error> {
        if let Some(mut acker) = self.acker.take() {
            acker.settled = true;
            acker
                .commands
                .send(Command::Ack {
                    token: acker.token,
                    epoch: acker.epoch,
                })
                .await
                .map_err(|_| Error::Closed)?;
        }
        Ok(())
    }
}

/// An active subscription: a stream of [`Message`]s with a bounded queue.
///
/// Overflow policy: backpressure. While the queue is full the client stops reading from the
/// network, so the broker (bounded by our Receive Maximum) stops sending; no QoS 1/2 message is
/// dropped. Dropping the subscription unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    // Boxed: a receiver is not `Unpin`, and a stream should be.
    pub(crate) messages: Pin<Box<Receiver<Message>>>,
    pub(crate) key: u64,
    pub(crate) control: Sender<Control>,
    pub(crate) reason_code: ReasonCode,
}

impl Subscription {
    /// The next message; `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.messages.recv().await.ok()
    }

    /// The granted QoS, as the SUBACK said.
    pub fn reason_code(&self) -> ReasonCode {
        self.reason_code
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.as_mut().poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.control.try_send(Control::Unsubscribe(self.key));
    }
}
