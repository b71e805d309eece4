//! Runnable examples of the mqtt-rs crates, one per use. This library is empty; the examples sit
//! beside the package manifest and run from anywhere in the workspace:
//!
//! - `sans_io_blocking`: the sans-I/O `mqtt_proto::connection::ClientConnection` driven by a
//!   blocking `std::net::TcpStream`, no async runtime. It subscribes, publishes one message at
//!   each QoS to itself and prints them as they come back:
//!   `cargo run --example sans_io_blocking -- 127.0.0.1:1883 [--v311]`.
//! - `blocking`: the blocking client (`mqtt_tokio::blocking::Client`) in a program with no async
//!   code, against an embedded broker started with `Broker::start_in_thread`; it subscribes,
//!   publishes at each QoS and prints what arrives: `cargo run --example blocking`.
//! - `durable_publisher`: publishes each line of its input at QoS 1 or 2 with a session store
//!   (`ClientOptions::session_store`), so that what the broker had not acknowledged when the
//!   process died, even by `kill -9`, is sent again by the next run:
//!   `cargo run --example durable_publisher -- HOST:PORT CLIENT_ID STORE_FILE TOPIC`.
