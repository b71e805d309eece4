//! The async layer of mqtt-rs, written once for every runtime: the drive loop that runs the
//! sans-I/O core of [`mqtt_proto`] over a transport, the [`Client`] and the [`Broker`].
//!
//! Pick a runtime crate (`mqtt-tokio`, `mqtt-smol`, `mqtt-async-std`): each implements
//! [`Runtime`] in one small file and re-exports this crate, so code looks the same on all.
//! Programs that are not async use [`blocking::Client`], a facade over the same client.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocking;
pub mod broker;
mod client;
mod error;
mod options;
mod pipe;
pub mod runtime;
mod tls;
pub mod ws;

pub use broker::{Broker, BrokerBuilder, BrokerHandle, PeerEvent};
pub use client::{
    Client, ConnectionEvent, Message, PublishHandle, Published, SessionStore, SessionStoreError,
    SubscribeOptions, Subscription,
};
pub use error::{Error, TimedOut};
pub use mqtt_proto::ReasonCode;
pub use mqtt_proto::backoff::BackoffConfig;
pub use mqtt_proto::connection::{DisconnectReason, Session, UsageError};
pub use mqtt_proto::packet::{
    PayloadFormat, Publish, PublishProperties, QoS, RetainHandling, SubscribeProperties,
    SubscriptionId, TopicFilter, TopicName, UserProperty, Version, Will,
};
/// Topic names and filters: validation and matching.
pub use mqtt_proto::topic;
pub use options::ClientOptions;
pub use runtime::{PeerAddr, Runtime, SharedRuntime};
pub use tls::{Roots, ServerTls, TlsOptions};
