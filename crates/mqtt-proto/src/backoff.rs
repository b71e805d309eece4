//! Reconnect backoff as a pure policy: exponential, jittered from a caller-supplied seed, capped,
//! and reset once a connection has proved stable.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use mqtt_proto::backoff::{Backoff, BackoffConfig};
//!
//! let mut backoff = Backoff::new(BackoffConfig::default(), 42);
//! let first = backoff.next_delay();
//! let second = backoff.next_delay();
//! assert!(first <= Duration::from_secs(1) && second <= Duration::from_secs(2));
//!
//! // A connection that lasted long enough resets the sequence.
//! let start = Instant::now();
//! backoff.connected(start);
//! backoff.disconnected(start + Duration::from_secs(60));
//! assert_eq!(backoff.attempt(), 0);
//! ```

use std::time::{Duration, Instant};

/// Parameters of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The delay before the first retry, before jitter (default 500 ms).
    pub initial: Duration,
    /// The largest delay, before jitter (default 30 s).
    pub max: Duration,
    /// Growth factor per failed attempt (default 2).
    pub multiplier: f64,
    /// Fraction of each delay that is random, 0 to 1 (default 0.5): the delay is drawn from
    /// `[(1 - jitter) * d, d]`, so clients that lost a broker together do not return together.
    pub jitter: f64,
    /// A connection that lasted this long resets the sequence (default 10 s).
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
            stable_after: Duration::from_secs(10),
        }
    }
}

/// The reconnect delay sequence. Same seed, same delays: a recorded run replays exactly.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    state: u64,
    connected_at: Option<Instant>,
}

impl Backoff {
    /// A policy with this configuration; `seed` drives the jitter (use something that differs
    /// between clients, such as a hash of the client identifier and the start time).
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            attempt: 0,
            state: seed,
            connected_at: None,
        }
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt; counts one more failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let config = self.config;
        let exponent = i32::try_from(self.attempt).unwrap_or(i32::MAX);
        let base = config.initial.as_secs_f64() * config.multiplier.max(1.0).powi(exponent);
        let capped = base.min(config.max.as_secs_f64());
        let jitter = config.jitter.clamp(0.0, 1.0);
        let delay = capped * (1.0 - jitter * self.random_unit());
        self.attempt = self.attempt.saturating_add(1);
        Duration::try_from_secs_f64(delay).unwrap_or(config.max)
    }

    /// A connection was established at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection established last ended at `now`; if it lasted `stable_after`, the next
    /// delay starts from `initial` again.
    pub fn disconnected(&mut self, now: Instant) {
        if let Some(start) = self.connected_at.take()
            && now.saturating_duration_since(start) >= self.config.stable_after
        {
            self.attempt = 0;
        }
    }

    /// Starts the sequence over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A uniform value in `[0, 1)` from SplitMix64: a few lines, deterministic, and enough for
    /// jitter (no cryptographic quality needed), so the core needs no random number crate.
    fn random_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let config = BackoffConfig::default();
        let mut backoff = Backoff::new(config, 7);
        let mut nominal = config.initial.as_secs_f64();
        for _ in 0..20 {
            let delay = backoff.next_delay().as_secs_f64();
            let ceiling = nominal.min(config.max.as_secs_f64());
            assert!(delay <= ceiling + 1e-9, "{delay} > {ceiling}");
            assert!(delay >= ceiling * (1.0 - config.jitter) - 1e-9);
            nominal *= config.multiplier;
        }
        assert!(backoff.next_delay() <= config.max);
    }

    #[test]
    fn same_seed_same_sequence_other_seed_differs() {
        let run = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn no_jitter_is_exact() {
        let config = BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(config, 0);
        assert_eq!(b.next_delay(), Duration::from_millis(500));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn only_a_stable_connection_resets() {
        let mut b = Backoff::new(BackoffConfig::default(), 3);
        b.next_delay();
        b.next_delay();
        let t0 = Instant::now();
        b.connected(t0);
        b.disconnected(t0 + Duration::from_secs(1));
        assert_eq!(b.attempt(), 2, "a short-lived connection does not reset");
        b.connected(t0);
        b.disconnected(t0 + Duration::from_secs(10));
        assert_eq!(b.attempt(), 0);
    }
}
