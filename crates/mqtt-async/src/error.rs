//! Errors of the async layer.

use std::io;

use mqtt_proto::ReasonCode;
use mqtt_proto::connection::{DisconnectReason, UsageError};

/// What can go wrong talking MQTT over a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The network failed (connection refused, reset, name not resolved, …). With automatic
    /// reconnect on, the client retries by itself.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// TLS could not be set up (bad certificate file, invalid server name) or the handshake
    /// failed (the server's certificate is not trusted or not valid for its name).
    #[error("TLS error: {0}")]
    Tls(String),
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
    /// The operation did not complete in time.
    #[error("timed out")]
    Timeout,
    /// A `mqtt://` or `mqtts://` URL could not be parsed.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
}

fn fmt_reason(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}
