//! Cross-crate integration and interop tests, as one test binary: each module is a suite.
//!
//! - `mosquitto`: a real mosquitto broker on a free loopback port, per test.
//! - `examples`: every example of `mqtt-examples` runs against mosquitto and must succeed.

mod examples;
mod mosquitto;
mod mosquitto_clients;
mod tls;
