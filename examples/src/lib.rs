//! Runnable examples of the mqtt-rs crates, one per use. This library is empty; the examples sit
//! beside the package manifest and run from anywhere in the workspace:
//!
//! - `sans_io_blocking`: the sans-I/O `mqtt_proto::connection::ClientConnection` driven by a
//!   blocking `std::net::TcpStream`, no async runtime. It subscribes, publishes one message at
//!   each QoS to itself and prints them as they come back:
//!   `cargo run --example sans_io_blocking -- 127.0.0.1:1883 [--v311]`.
