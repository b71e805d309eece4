//! Deterministic simulations of the client core against a scripted server on a virtual clock.

mod client;
mod property;
pub(super) mod util;
