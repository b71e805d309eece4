//! The timer table: one optional deadline per kind of timer, indexed by an enum.
//!
//! A state machine arms and disarms deadlines as it works; the driver only ever asks for the
//! earliest one (`poll_timeout`) and calls `handle_timeout(now)` when it passes. Handling a timer
//! that is not due, or handling the same instant twice, does nothing.

use std::time::Instant;

/// The kinds of timer a connection may have armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The CONNACK (client) or CONNECT (server) must arrive by then.
    Connect = 0,
    /// Client: send a PINGREQ if nothing was sent by then.
    KeepAliveSend = 1,
    /// Client: the PINGRESP must arrive by then. Server: the client must have sent something
    /// within one and a half keep-alive intervals (MQTT-3.1.2-24).
    KeepAliveExpiry = 2,
}

const COUNT: usize = 3;

/// Deadlines by [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, deadline: Instant) {
        if let Some(slot) = self.deadlines.get_mut(timer as usize) {
            *slot = Some(deadline);
        }
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        if let Some(slot) = self.deadlines.get_mut(timer as usize) {
            *slot = None;
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines.get(timer as usize).copied().flatten()
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [None; COUNT];
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns `timer` if its deadline is at or before `now`.
    pub(crate) fn expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.get(timer) {
            Some(deadline) if deadline <= now => {
                self.stop(timer);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_is_the_earliest_and_expiry_is_one_shot() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::KeepAliveSend, t0 + Duration::from_secs(10));
        table.set(Timer::Connect, t0 + Duration::from_secs(5));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(5)));
        assert!(!table.expired(Timer::Connect, t0));
        assert!(table.expired(Timer::Connect, t0 + Duration::from_secs(5)));
        assert!(!table.expired(Timer::Connect, t0 + Duration::from_secs(5)));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(10)));
    }
}
