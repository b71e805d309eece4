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
//! - [`connection`]: the state machine of one connection, as a client
//!   ([`ClientConnection`](connection::ClientConnection)) or as a server
//!   ([`ServerConnection`](connection::ServerConnection)).
//! - [`broker`]: a whole broker ([`Broker`](broker::Broker)): sessions, routing, retained
//!   messages, wills, over one `ServerConnection` per network connection.
//! - [`backoff`]: reconnect delays.
//!
//! # The run loop
//!
//! Every state machine here is driven the same way, by a loop the caller owns:
//!
//! ```text
//!   input                      commands                      outputs (drain each until empty)
//!   handle_bytes(now, bytes)   publish, subscribe,           poll_transmit(now, buf) -> write buf
//!   handle_eof(now)       ──►  ack, disconnect, ...    ──►   poll_event()            -> act on it
//!   handle_timeout(now)                                      poll_timeout()          -> next wake-up
//! ```
//!
//! 1. Feed it what happened: bytes read from the transport (`handle_bytes`), the end of the
//!    transport (`handle_eof`), or the time, once the deadline it gave has passed
//!    (`handle_timeout`). Time is always an argument: the caller's clock, or a virtual one.
//! 2. Give it the application's commands (`publish`, `subscribe`, `ack`, `disconnect`, ...).
//! 3. Drain its outputs, each until it is empty: `poll_transmit` appends the bytes to write to
//!    a buffer the caller owns, `poll_event` says what the application should learn, and
//!    `poll_timeout` says when to call `handle_timeout` next. Then wait for input or that
//!    deadline, and start again.
//!
//! A [`Broker`](broker::Broker) serves many connections through the same loop: its input and
//! output name the connection, and `poll_ready` says which ones have bytes to write.
//!
//! The example runs a client against a broker, both in memory, with nothing but this loop: the
//! client connects, subscribes, publishes to itself and receives the message.
//!
//! ```
//! use std::time::Instant;
//!
//! use bytes::BytesMut;
//! use mqtt_proto::broker::{Broker, BrokerConfig, ConnectionId};
//! use mqtt_proto::connection::{ClientConfig, ClientConnection, ClientEvent};
//! use mqtt_proto::packet::{
//!     Publish, QoS, SubscribeProperties, Subscription, TopicFilter, TopicName, Version,
//! };
//!
//! /// One turn of the loop for both sides: whatever one side wrote, the other reads, until
//! /// neither has anything to say. Returns the client's events.
//! fn exchange(
//!     client: &mut ClientConnection,
//!     broker: &mut Broker,
//!     conn: ConnectionId,
//!     now: Instant,
//! ) -> Vec<ClientEvent> {
//!     let mut events = Vec::new();
//!     let mut wire = BytesMut::new();
//!     loop {
//!         // Client to broker: drain the client's transmit, feed it to the broker.
//!         wire.clear();
//!         let client_wrote = client.poll_transmit(now, &mut wire);
//!         if client_wrote {
//!             broker.handle_bytes(conn, now, &wire);
//!         }
//!         // Broker to client: every connection with bytes to write (only ours here).
//!         let mut broker_wrote = false;
//!         while let Some(ready) = broker.poll_ready() {
//!             wire.clear();
//!             broker.poll_transmit(ready, now, &mut wire);
//!             client.handle_bytes(now, &wire);
//!             broker_wrote = true;
//!         }
//!         // The broker's events are for its driver (who connected, whom to close).
//!         while broker.poll_event().is_some() {}
//!         while let Some(event) = client.poll_event() {
//!             events.push(event);
//!         }
//!         if !client_wrote && !broker_wrote {
//!             return events;
//!         }
//!     }
//! }
//!
//! let mut now = Instant::now();
//! let mut broker = Broker::new(BrokerConfig::default());
//! let conn = broker.open(now).expect("below the connection limit");
//! let mut client = ClientConnection::new(ClientConfig::new(Version::V5, "sensor-1"), None, now);
//!
//! // CONNECT, CONNACK.
//! let events = exchange(&mut client, &mut broker, conn, now);
//! assert!(matches!(events[..], [ClientEvent::Connected { .. }]));
//!
//! // SUBSCRIBE, SUBACK.
//! let filter = TopicFilter::new("sensors/+/temperature")?;
//! let subscription = Subscription::new(filter, QoS::AtLeastOnce);
//! client.subscribe(now, vec![subscription], SubscribeProperties::default())?;
//! let events = exchange(&mut client, &mut broker, conn, now);
//! assert!(matches!(events[..], [ClientEvent::Subscribed(_)]));
//!
//! // PUBLISH at QoS 1: the broker acknowledges it and routes it back to us.
//! let topic = TopicName::new("sensors/kitchen/temperature")?;
//! let mut publish = Publish::new(topic, "23.5");
//! publish.qos = QoS::AtLeastOnce;
//! client.publish(now, publish)?;
//! let events = exchange(&mut client, &mut broker, conn, now);
//! let received: Vec<_> = events
//!     .iter()
//!     .filter_map(|event| match event {
//!         ClientEvent::Message(message) => Some(&message.publish),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(received.len(), 1);
//! assert_eq!(received[0].topic, "sensors/kitchen/temperature");
//! assert_eq!(&received[0].payload[..], b"23.5");
//! assert!(events.iter().any(|event| matches!(event, ClientEvent::Published(_))));
//!
//! // Time passes only when the caller says so: the client's next deadline (its keep alive)
//! // sends a PINGREQ, which the broker answers.
//! let deadline = client.poll_timeout().expect("the keep alive is armed");
//! now = now.max(deadline);
//! client.handle_timeout(now);
//! broker.handle_timeout(now);
//! exchange(&mut client, &mut broker, conn, now);
//! assert_eq!(client.state(), mqtt_proto::connection::ClientState::Connected);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The codec alone, for those who drive the protocol themselves:
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
