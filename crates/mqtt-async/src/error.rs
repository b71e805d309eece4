//! Errors of the async layer.

use std::io;

use mqtt_proto::ReasonCode;
use mqtt_proto::connection::{DisconnectReason, UsageError};

use crate::SessionStoreError;

/// What can go wrong talking MQTT over a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The network failed (connection refused, reset, name not resolved, …). With automatic
    /// reconnect on, the client retries by itself.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// TLS could not be set up (bad certificate file, invalid server name, a `mqtts://` URL
    /// without the `tls` feature) or the handshake failed (the server's certificate is not
    /// trusted or not valid for its name).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The WebSocket upgrade failed: the server answered with an HTTP error (wrong path, no
    /// WebSocket there) or did not select the `mqtt` subprotocol; or a `ws://` URL without the
    /// `ws` feature.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// The server refused the connection (CONNACK reason code).
    #[error("connection refused: {reason_code}{}", fmt_reason(reason_string))]
    Refused {
        /// The CONNACK reason code (3.1.1 return codes mapped).
        reason_code: ReasonCode,
        /// The server's reason string, if it sent one.
        reason_string: Option<String>,
    },
    /// The server refused a publish or subscription (reason code 0x80 or above).
    #[error("refused by the server: {reason_code}{}", fmt_reason(reason_string))]
    Rejected {
        /// The reason code.
        reason_code: ReasonCode,
        /// The server's reason string, if it sent one.
        reason_string: Option<String>,
    },
    /// The request cannot be made (invalid topic, packet too large for the server, queue
    /// full, …). Nothing was sent.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The connection ended before the operation completed, and the client does not reconnect.
    #[error("disconnected: {0}")]
    Disconnected(DisconnectReason),
    /// The client was shut down.
    #[error("the client is closed")]
    Closed,
    /// A wait exceeded its bound; [`TimedOut`] says which. With automatic reconnect on, the
    /// client retries by itself (a timeout while connecting is reported here only by the first
    /// [`Client::connect`](crate::Client::connect)).
    #[error("timed out: {0}")]
    Timeout(TimedOut),
    /// A URL (`mqtt://`, `mqtts://`, `ws://`, `wss://`, `unix://`) could not be parsed.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A configuration that cannot work (a bridge without topics, an invalid filter), with
    /// what is wrong.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The broker's store could not be opened or read (see the error for the file and what is
    /// wrong).
    #[error("store: {0}")]
    #[cfg(feature = "broker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
    Store(#[from] crate::broker::StoreError),
    /// The broker's store holds records in a format this broker does not read.
    #[error("cannot restore the stored state: {0}")]
    #[cfg(feature = "broker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
    Restore(#[from] mqtt_proto::broker::RestoreError),
    /// The session store ([`ClientOptions::session_store`](crate::ClientOptions::session_store))
    /// could not be read, or no longer be written: the client does not connect, or stops, since
    /// it could not keep what the store promises. [`SessionStoreError`] says what is wrong.
    #[error(transparent)]
    SessionStore(#[from] SessionStoreError),
}

/// What did not complete in time: a step of connecting, bounded together by the connect
/// timeout ([`ClientOptions::connect_timeout`](crate::ClientOptions::connect_timeout)), or a
/// write, bounded by the write timeout
/// ([`ClientOptions::write_timeout`](crate::ClientOptions::write_timeout)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimedOut {
    /// Resolving the host name (a DNS server that does not answer).
    #[error("the host name was not resolved within the connect timeout")]
    Resolve,
    /// Opening the TCP connection: no address of the host answered (a firewall dropping the
    /// packets, a host that is down). Each address was tried with a share of the time.
    #[error("no TCP connection within the connect timeout")]
    Connect,
    /// The TLS handshake: the server took the connection and never completed the handshake (a
    /// server that does not speak TLS on that port, or an overloaded one).
    #[error("the TLS handshake did not complete within the connect timeout")]
    TlsHandshake,
    /// The WebSocket upgrade: the server took the HTTP request and never answered it.
    #[error("the WebSocket upgrade did not complete within the connect timeout")]
    WebSocketHandshake,
    /// The CONNACK: the server took CONNECT (or did not read it) and never answered.
    #[error("no CONNACK within the connect timeout")]
    ConnAck,
    /// A write made no progress: the server stopped reading, or the network stopped carrying
    /// packets, for the write timeout. The connection is dropped.
    #[error("a write made no progress within the write timeout")]
    Write,
}

fn fmt_reason(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}
