//! Deterministic simulations of the client core against a scripted server, and of the server
//! core against a scripted client, on a virtual clock.

mod client;
mod property;
mod server;
pub(super) mod util;
