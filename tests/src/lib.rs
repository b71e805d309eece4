//! Cross-crate integration and interop tests of the mqtt-rs crates. This library is empty: the
//! tests are one binary, `it` (`tests/it/main.rs`), with one module per suite; run them with
//! `cargo test -p mqtt-tests`.
//!
//! Interop tests run a real `mosquitto` broker (the Debian package `mosquitto`). Without it they
//! are skipped with a notice, except under CI (the `CI` environment variable is set), where they
//! fail.
