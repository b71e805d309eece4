//! The sans-I/O core of an MQTT 3.1.1 and 5.0 implementation.
//!
//! Bytes and the current time go in; packets, events and bytes to send come out. Nothing here
//! opens a socket, reads a clock or spawns a thread, so the same code runs under any async
//! runtime, a blocking loop, or a fuzzer.
//!
//! - [`packet`]: every control packet of both versions in one type tree, with typed 5.0
//!   properties and [`ReasonCode`]s.
//! - [`codec`]: incremental, zero-copy decoding (`Ok(None)` means "need more bytes") and encoding
//!   into a caller-owned buffer, with strict validation.
//! - [`topic`]: topic names and filters, matching, shared subscriptions.
//!
//! ```
//! use bytes::BytesMut;
//! use mqtt_proto::codec::{self, Limits};
//! use mqtt_proto::packet::{Packet, Publish, QoS, Version};
//!
//! let mut publish = Publish::new("sensors/kitchen/temperature".parse()?, "23.5");
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = std::num::NonZeroU16::new(7);
//!
//! let mut wire = BytesMut::new();
//! codec::encode(&Packet::Publish(publish.clone()), Version::V5, &mut wire)?;
//!
//! // Bytes arrive in pieces: decoding waits until a whole packet is there.
//! let mut received = BytesMut::new();
//! let limits = Limits::default();
//! for byte in wire.iter() {
//!     assert_eq!(codec::decode(&mut received, Version::V5, &limits)?, None);
//!     received.extend_from_slice(&[*byte]);
//! }
//! assert_eq!(codec::decode(&mut received, Version::V5, &limits)?, Some(Packet::Publish(publish)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Every byte from the wire is read through checked accessors.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod backoff;
pub mod broker;
pub mod codec;
pub mod connection;
pub mod packet;
mod reason;
pub mod topic;

pub use reason::ReasonCode;
