//! Broker simulations: several client cores against the broker core in memory, on a virtual
//! clock, named after the normative statements they check.

mod auth_limits;
mod bridge;
mod connect;
mod deferred_auth;
mod flow;
mod identity;
mod persist;
mod property;
mod retained;
mod routing;
mod sessions;
mod util;
