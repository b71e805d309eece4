//! Errors of a connection: the peer's ([`ProtocolError`]), the application's ([`UsageError`]),
//! and why a connection ended ([`DisconnectReason`]).

use crate::ReasonCode;
use crate::codec::{DecodeError, EncodeError};
use crate::packet::{ConnAckProperties, Disconnect, PacketType, QoS};
use crate::topic::TopicError;

/// The peer broke the protocol. Fatal and sticky: the connection sends (in 5.0) a DISCONNECT with
/// [`ProtocolError::reason_code`], then reports [`DisconnectReason::Protocol`] and accepts no
/// more input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A packet could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A packet arrived that this side never accepts, or not in this state (a second CONNACK,
    /// a SUBSCRIBE sent to a client, anything before CONNACK, AUTH without an authentication
    /// method).
    #[error("unexpected {0} packet")]
    UnexpectedPacket(PacketType),
    /// More unacknowledged QoS 1 and 2 publishes than our Receive Maximum (MQTT-3.3.4-9).
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// A Topic Alias of 0, above our Topic Alias Maximum, or unknown and sent without a topic
    /// (MQTT-3.3.2-8, MQTT-3.3.2-9).
    #[error("invalid topic alias {0}")]
    TopicAliasInvalid(u16),
    /// The server claimed a session we did not ask to resume (MQTT-3.2.2-4).
    #[error("session present in CONNACK for a clean start")]
    UnexpectedSessionPresent,
    /// A PUBLISH from the server with a QoS above the one we may receive, or a Subscription
    /// Identifier in a PUBLISH sent to a server (MQTT-3.3.4-6).
    #[error("PUBLISH not allowed here")]
    InvalidPublish,
    /// An acknowledgement for a packet identifier we are not waiting on, where the protocol has no
    /// way to answer it.
    #[error("acknowledgement for unknown packet identifier {0}")]
    UnknownPacketId(u16),
}

impl ProtocolError {
    /// The reason code of the DISCONNECT that reports this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            ProtocolError::Decode(error) => error.reason_code(),
            ProtocolError::ReceiveMaximumExceeded => ReasonCode::ReceiveMaximumExceeded,
            ProtocolError::TopicAliasInvalid(_) => ReasonCode::TopicAliasInvalid,
            ProtocolError::UnexpectedPacket(_)
            | ProtocolError::UnexpectedSessionPresent
            | ProtocolError::InvalidPublish
            | ProtocolError::UnknownPacketId(_) => ReasonCode::ProtocolError,
        }
    }
}

/// The application asked for something that cannot be done now. Nothing was sent and the
/// connection carries on; each variant says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The connection is closed or closing: make a new one (carrying the session over).
    #[error("the connection is closed")]
    Closed,
    /// A QoS 0 message cannot wait for the connection: publish it once connected, or at QoS 1.
    #[error("not connected")]
    NotConnected,
    /// All 65,535 packet identifiers are in use: wait for acknowledgements.
    #[error("no free packet identifier")]
    PacketIdsExhausted,
    /// The queue of publishes waiting for the in-flight window is full: wait for
    /// acknowledgements, or raise `max_queued`.
    #[error("the publish queue is full")]
    QueueFull,
    /// The topic name or filter is not valid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The packet would exceed the peer's Maximum Packet Size: send less.
    #[error("packet of {size} bytes exceeds the peer's maximum packet size of {max}")]
    PacketTooLarge {
        /// The encoded size.
        size: usize,
        /// The peer's limit.
        max: u32,
    },
    /// The server does not support this QoS (its CONNACK Maximum QoS): publish at `max` or less.
    #[error("QoS {requested:?} above the server's maximum {max:?}")]
    QoSNotSupported {
        /// What was asked for.
        requested: QoS,
        /// The server's maximum.
        max: QoS,
    },
    /// The server does not support retained messages: publish without RETAIN.
    #[error("the server does not support retained messages")]
    RetainNotSupported,
    /// The server does not support this kind of subscription (wildcards, shared subscriptions or
    /// subscription identifiers, per its CONNACK).
    #[error("the server does not support {0}")]
    SubscriptionFeatureNotSupported(&'static str),
    /// The packet cannot be encoded (for example 5.0-only data on a 3.1.1 connection).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The acknowledgement token is unknown to this connection (already used, or from an earlier
    /// connection: that message will be redelivered).
    #[error("unknown acknowledgement token")]
    UnknownAck,
    /// An AUTH packet is not possible now: no authentication method was set at connect, the
    /// protocol is 3.1.1, or the reason code is not Continue authentication or Re-authenticate.
    #[error("authentication exchange not possible now")]
    AuthNotAllowed,
}

/// Why a connection ended, reported once by the `Disconnected` event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The application asked to disconnect; this DISCONNECT was sent.
    Local(Disconnect),
    /// The peer sent DISCONNECT (5.0 servers, or any client).
    Remote(Disconnect),
    /// The server refused the connection with this CONNACK reason code.
    Refused {
        /// The CONNACK reason code (3.1.1 return codes mapped).
        reason_code: ReasonCode,
        /// The CONNACK properties (reason string, server reference, …).
        properties: Box<ConnAckProperties>,
    },
    /// The peer broke the protocol; in 5.0 a DISCONNECT with its reason code was sent.
    Protocol(ProtocolError),
    /// No CONNACK (or CONNECT) arrived within the connect timeout.
    ConnectTimeout,
    /// The keep-alive expired: no PINGRESP in time (client), or no packet within one and a half
    /// keep-alive intervals (server, MQTT-3.1.2-24).
    KeepAliveTimeout,
    /// The transport reached end of file without a DISCONNECT.
    ConnectionLost,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_reason_string =
            |f: &mut std::fmt::Formatter<'_>, what, disconnect: &Disconnect| {
                write!(f, "{what}: {}", disconnect.reason_code)?;
                match &disconnect.properties.reason_string {
                    Some(reason) => write!(f, " ({reason})"),
                    None => Ok(()),
                }
            };
        match self {
            DisconnectReason::Local(d) => with_reason_string(f, "disconnected locally", d),
            DisconnectReason::Remote(d) => with_reason_string(f, "disconnected by the peer", d),
            DisconnectReason::Refused {
                reason_code,
                properties,
            } => {
                write!(f, "connection refused: {reason_code}")?;
                if let Some(reason) = &properties.reason_string {
                    write!(f, " ({reason})")?;
                }
                if let Some(server) = &properties.server_reference {
                    write!(f, ", use server {server}")?;
                }
                Ok(())
            }
            DisconnectReason::Protocol(error) => {
                write!(f, "protocol error: {error} ({})", error.reason_code())
            }
            DisconnectReason::ConnectTimeout => {
                f.write_str("no CONNACK within the connect timeout")
            }
            DisconnectReason::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            DisconnectReason::ConnectionLost => f.write_str("connection lost"),
        }
    }
}
