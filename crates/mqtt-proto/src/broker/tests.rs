//! Broker simulations: several client cores against the broker core in memory on a virtual clock.
