//! The async layer of mqtt-rs, written once for every runtime: the drive loop that runs the
//! sans-I/O core of [`mqtt_proto`] over a transport, the [`Client`] and the `Broker`.
//!
//! Pick a runtime crate (`mqtt-tokio`, `mqtt-smol`, `mqtt-async-std`): each implements
//! [`Runtime`] in one small file and re-exports this crate, so code looks the same on all.
//! Programs that are not async use [`blocking::Client`], a facade over the same client.
//!
//! # Features
//!
//! All are on by default. A program that is only a client turns the defaults off and keeps what
//! it connects with: `default-features = false, features = ["tls"]` builds a TLS client without
//! the broker, its store and the password crypto. The runtime crates have the same features and
//! pass them through.
//!
//! | feature | what it adds | dependencies it brings |
//! |---|---|---|
//! | `tls` | `mqtts://`, `ClientOptions::tls`, `TlsOptions`; TLS listeners (`ServerTls`) with `broker` | futures-rustls (rustls, ring), rustls-native-certs |
//! | `ws` | `ws://`, `wss://`, `ClientOptions::websocket`, the `ws` module; WebSocket listeners with `broker` | async-tungstenite, futures-sink, httparse |
//! | `broker` | `Broker` and the `broker` module: listeners, stores, bridges, `$SYS` | fjall, x509-parser |
//! | `auth-file` (implies `broker`) | `broker::PasswordFile` and `broker::AclFile`, mosquitto's files | pbkdf2, sha2, base64, getrandom, subtle |
//!
//! Without `tls` (or `ws`), a `mqtts://` (or `ws://`) URL is an [`Error::Tls`] (or
//! [`Error::WebSocket`]) that names the missing feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocking;
#[cfg(feature = "broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
pub mod broker;
mod client;
mod error;
mod options;
#[cfg(feature = "broker")]
mod pipe;
pub mod runtime;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub mod ws;

#[cfg(feature = "broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
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
#[cfg(all(feature = "tls", feature = "broker"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tls", feature = "broker"))))]
pub use tls::ServerTls;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::{Roots, TlsOptions};
