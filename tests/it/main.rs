//! Cross-crate integration and interop tests, as one test binary: each module is a suite.
//!
//! - `mosquitto`: a real mosquitto broker on a free loopback port, per test.
//! - `examples`: every example of `mqtt-examples` runs (against mosquitto, our broker or the
//!   broker it embeds) and must succeed.
//! - `blocking`: the blocking client from plain threads, on each runtime, against our broker.
//! - `broker_limits`: our broker with clients that stop reading or send garbage.
//! - `client_suite`: the async client on tokio, smol and async-std (one suite, a macro per
//!   runtime) against our broker and mosquitto, in 3.1.1 and 5.0.
//! - `client_store`: the client's session store across a SIGKILL of the client process.
//! - `idle`: idle connections parked without a task wake for what either side sends.

mod blocking;
mod bridge;
mod broker_limits;
mod client_guarantees;
mod client_store;
mod client_suite;
mod examples;
mod guarantees;
mod idle;
mod mosquitto;
mod mosquitto_clients;
mod mtls;
mod operations;
mod peer_events;
mod persistence;
mod pki;
mod tls;
mod unix_socket;
mod websocket;
