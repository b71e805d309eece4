//! Flow control: what the broker acknowledges, it keeps; what it keeps, it bounds.
//!
//! - **Backpressure instead of loss.** A message for a connected client whose queue is full
//!   (`ServerConfig::max_queued` messages or `max_queued_bytes`) is still queued, but the
//!   publisher's PUBACK/PUBREC is held back until every such queue it went to has room again.
//!   A 5.0 publisher stops at its Receive Maximum; a 3.1.1 one, which announces none, is not
//!   read any more once it has `receive_maximum` acknowledgements held back. A queue that stays
//!   full past `BrokerConfig::congestion_timeout` disconnects its client (0x97), which releases
//!   the publishers: the messages stay in the client's session if it persists.
//! - **The incoming budget.** A packet larger than [`SMALL_PACKET`] reserves its announced size
//!   in `BrokerConfig::max_incoming_bytes` when its fixed header arrives; a connection whose
//!   packet does not fit is not read until others complete theirs, first come first served.
//! - **The queued-bytes budget**, `BrokerConfig::max_total_queued_bytes`: every message kept for a
//!   session is counted by its weight.
//! - **Drops are reported**: counted in `Stats` and told to the driver, per client, at most every
//!   [`DROP_REPORT_INTERVAL`].
//!
//! The driver learns which connections to read from `BrokerEvent::PauseReading` and
//! `ResumeReading`; the core also stops processing a paused publisher's input by itself, so a
//! driver that reads anyway only buffers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::conn::closed_already;
use super::{Broker, BrokerEvent, DropReason, TimerKey};
use crate::ReasonCode;
use crate::connection::AckToken;
use crate::packet::{Disconnect, Version};

/// The connection's publisher has too many acknowledgements held back.
pub(super) const PAUSED_HELD: u8 = 1;
/// The connection's next packet waits for room in the incoming budget.
pub(super) const PAUSED_INCOMING: u8 = 2;

/// Packets up to this size are received without a reservation: what one read of a driver
/// brings.
pub(super) const SMALL_PACKET: usize = 16 * 1024;

/// The least time between two reports of dropped messages.
pub(super) const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A publisher's acknowledgement, held until every full queue its message went to has room.
#[derive(Debug)]
struct Held {
    conn: u64,
    token: AckToken,
    code: ReasonCode,
    /// Full queues it still waits for.
    waiting: u32,
}

/// A connection whose queue is full, and the acknowledgements waiting for it.
#[derive(Debug)]
struct Congestion {
    since: Instant,
    waiters: Vec<u64>,
}

/// The broker's flow-control state (see the [module documentation](self)).
#[derive(Debug, Default)]
pub(super) struct Flow {
    /// The weight of every message kept for a session, connected or not.
    pub(super) queued_bytes: usize,
    /// Bytes reserved by packets being received.
    pub(super) incoming: usize,
    /// Connections waiting for room in the incoming budget, in arrival order.
    incoming_waiters: VecDeque<u64>,
    held: HashMap<u64, Held>,
    next_held: u64,
    congested: HashMap<u64, Congestion>,
    /// The connections whose queue the message being routed found full.
    pub(super) jammed: Vec<u64>,
    /// Connections to look at again once the current input is handled (see [`Broker::settle`]).
    kicked: Vec<u64>,
    drops: BTreeMap<(ByteString, DropReason), u64>,
    /// When the next drop report is due, if one is.
    drop_report: Option<Instant>,
    last_report: Option<Instant>,
}

impl Flow {
    pub(super) fn held_count(&self) -> usize {
        self.held.len()
    }
}

impl Broker {
    /// How many held acknowledgements stop a 3.1.1 publisher from being read.
    fn held_limit(&self) -> u32 {
        u32::from(self.config.connection.receive_maximum.max(1))
    }

    /// After input to connection `id` was handled: counts its queue, frees the publishers held
    /// back by it when it has room, looks after its incoming packet, and tells the driver
    /// whether to read it.
    pub(super) fn flow_after(&mut self, id: u64, now: Instant) {
        self.count_queue(id);
        let has_room = self.conns.get(&id).is_some_and(|conn| {
            !conn.server.is_congested()
                && (self.flow.queued_bytes <= self.config.max_total_queued_bytes
                    || conn.server.queued() == 0)
        });
        if has_room && self.flow.congested.contains_key(&id) {
            self.release(id, now);
        }
        self.check_incoming(id, now);
        self.update_reading(id);
    }

    /// Brings the broker-wide count up to date with connection `id`'s queue.
    fn count_queue(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id)
            && !conn.closed
        {
            let bytes = conn.server.queued_bytes();
            self.flow.queued_bytes =
                (self.flow.queued_bytes + bytes).saturating_sub(conn.accounted);
            conn.accounted = bytes;
        }
    }

    /// A message was handed to connection `id`: counts it, and notes the connection for the
    /// publisher's acknowledgement if its queue is now full.
    pub(super) fn note_delivered(&mut self, id: u64, now: Instant) {
        self.count_queue(id);
        let over_budget = self.flow.queued_bytes > self.config.max_total_queued_bytes;
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if conn.server.is_congested() || (over_budget && conn.server.queued() > 0) {
            self.flow.jammed.push(id);
            if conn.paused & PAUSED_HELD != 0 {
                // A held-back publisher whose own queue fills must be read again: its
                // acknowledgements are what empties that queue.
                self.flow.kicked.push(id);
            }
            if let std::collections::hash_map::Entry::Vacant(entry) = self.flow.congested.entry(id)
            {
                entry.insert(Congestion {
                    since: now,
                    waiters: Vec::new(),
                });
                let at = now + self.config.congestion_timeout;
                self.timers.push(Reverse((at, TimerKey::Congestion(id))));
            }
        }
    }

    /// Acknowledges a publisher's message now, or once the full queues it went to
    /// (`flow.jammed`) have room.
    pub(super) fn acknowledge(&mut self, id: u64, now: Instant, token: AckToken, code: ReasonCode) {
        let jammed = std::mem::take(&mut self.flow.jammed);
        if jammed.is_empty() {
            if let Some(conn) = self.conns.get_mut(&id) {
                let result = conn.server.ack(now, token, code);
                self.answered(id, now, result);
            }
            self.flow.jammed = jammed;
            return;
        }
        let key = self.flow.next_held;
        self.flow.next_held += 1;
        let mut waiting = 0;
        for &target in &jammed {
            if let Some(congestion) = self.flow.congested.get_mut(&target) {
                congestion.waiters.push(key);
                waiting += 1;
            }
        }
        self.flow.jammed = jammed;
        self.flow.jammed.clear();
        let limit = self.held_limit();
        let self_congested = self.flow.congested.contains_key(&id);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if waiting == 0 {
            let result = conn.server.ack(now, token, code);
            self.answered(id, now, result);
            return;
        }
        self.flow.held.insert(
            key,
            Held {
                conn: id,
                token,
                code,
                waiting,
            },
        );
        conn.held += 1;
        // A 5.0 publisher stops by itself at our Receive Maximum; a 3.1.1 one is stopped by not
        // being read. Not one whose own queue is full, though: its acknowledgements empty it.
        if conn.server.version() == Version::V3_1_1
            && conn.held >= limit
            && conn.paused & PAUSED_HELD == 0
            && !self_congested
        {
            conn.paused |= PAUSED_HELD;
            conn.server.pause_input(now);
        }
    }

    /// Connection `id`'s queue has room again, or it closed: the acknowledgements waiting for it
    /// go out once they wait for nothing else.
    fn release(&mut self, id: u64, now: Instant) {
        let Some(congestion) = self.flow.congested.remove(&id) else {
            return;
        };
        let limit = self.held_limit();
        for key in congestion.waiters {
            let Some(held) = self.flow.held.get_mut(&key) else {
                continue;
            };
            held.waiting -= 1;
            if held.waiting > 0 {
                continue;
            }
            let Some(held) = self.flow.held.remove(&key) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(&held.conn) else {
                continue;
            };
            conn.held = conn.held.saturating_sub(1);
            // A publisher's connection that closed meanwhile sends the message again.
            let result = conn.server.ack(now, held.token, held.code);
            if conn.paused & PAUSED_HELD != 0 && conn.held < limit {
                self.flow.kicked.push(held.conn);
            }
            self.answered(held.conn, now, result);
            self.mark_ready(held.conn);
        }
    }

    /// Handles what [`Broker::release`] and the incoming budget set going: connections to read
    /// again (their input is processed once nothing holds it back any more). Called at the end
    /// of every input.
    pub(super) fn settle(&mut self, now: Instant) {
        let limit = self.held_limit();
        while let Some(id) = self.flow.kicked.pop() {
            let self_congested = self.flow.congested.contains_key(&id);
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.paused & PAUSED_HELD != 0 && (conn.held < limit || self_congested) {
                conn.paused &= !PAUSED_HELD;
            }
            if conn.paused == 0 {
                conn.server.resume_input(now);
            }
            self.after(id, now);
        }
    }

    /// Connection `id`'s queue has been full since `congestion_timeout` ago: it is disconnected
    /// (5.0: 0x97 Quota exceeded), which frees the publishers it held back.
    pub(super) fn congestion_timeout(&mut self, id: u64, now: Instant) {
        let timeout = self.config.congestion_timeout;
        let due = self
            .flow
            .congested
            .get(&id)
            .is_some_and(|c| c.since + timeout <= now);
        if !due {
            return;
        }
        self.stats.congestion_disconnects += 1;
        if let Some(conn) = self.conns.get_mut(&id) {
            // Already closed or not, the queue is released below.
            closed_already(
                conn.server
                    .disconnect(now, Disconnect::new(ReasonCode::QuotaExceeded)),
            );
            self.after(id, now);
        }
        self.release(id, now);
    }

    /// Connection `id` closed: the publishers its queue held back go on, and its reservation
    /// in the incoming budget is returned.
    pub(super) fn connection_closed(&mut self, id: u64, now: Instant) {
        self.release(id, now);
        if let Some(conn) = self.conns.get_mut(&id) {
            self.flow.incoming = self.flow.incoming.saturating_sub(conn.reserved);
            conn.reserved = 0;
            conn.paused = 0;
        }
        self.flow.incoming_waiters.retain(|&w| w != id);
        self.grant_incoming();
    }

    /// Connection `id` is forgotten (its transport is gone).
    pub(super) fn forget_connection(&mut self, id: u64, conn: &super::Conn, now: Instant) {
        self.flow.queued_bytes = self.flow.queued_bytes.saturating_sub(conn.accounted);
        self.flow.incoming = self.flow.incoming.saturating_sub(conn.reserved);
        self.flow.incoming_waiters.retain(|&w| w != id);
        self.release(id, now);
        self.grant_incoming();
    }

    /// Reserves room for the large packet connection `id` is receiving, or makes it wait; frees
    /// the reservation of a packet that completed.
    fn check_incoming(&mut self, id: u64, now: Instant) {
        let budget = self.config.max_incoming_bytes;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut freed = false;
        if conn.reserved > 0 && conn.server.received_packets() != conn.reserved_at {
            self.flow.incoming = self.flow.incoming.saturating_sub(conn.reserved);
            conn.reserved = 0;
            freed = true;
        }
        if conn.reserved == 0 && !conn.closed {
            match conn.server.partial_packet_len() {
                Some(len) if len > SMALL_PACKET && conn.paused & PAUSED_INCOMING == 0 => {
                    if self.flow.incoming_waiters.is_empty() && self.flow.incoming + len <= budget {
                        self.flow.incoming += len;
                        reserve(conn, len);
                    } else {
                        conn.paused |= PAUSED_INCOMING;
                        // Not read meanwhile, so its keep alive must not run out either.
                        conn.server.pause_input(now);
                        self.flow.incoming_waiters.push_back(id);
                    }
                }
                Some(len) if len > SMALL_PACKET => {}
                _ if conn.paused & PAUSED_INCOMING != 0 => {
                    conn.paused &= !PAUSED_INCOMING;
                    self.flow.incoming_waiters.retain(|&w| w != id);
                    self.flow.kicked.push(id);
                }
                _ => {}
            }
        }
        if freed {
            self.grant_incoming();
        }
    }

    /// Gives waiting connections their reservation, in order, while the budget has room.
    fn grant_incoming(&mut self) {
        let budget = self.config.max_incoming_bytes;
        while let Some(&id) = self.flow.incoming_waiters.front() {
            let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.closed) else {
                self.flow.incoming_waiters.pop_front();
                continue;
            };
            match conn.server.partial_packet_len() {
                Some(len) if len > SMALL_PACKET => {
                    if self.flow.incoming + len > budget {
                        return;
                    }
                    self.flow.incoming += len;
                    reserve(conn, len);
                }
                _ => {}
            }
            conn.paused &= !PAUSED_INCOMING;
            self.flow.incoming_waiters.pop_front();
            self.flow.kicked.push(id);
        }
    }

    /// Tells the driver when connection `id` should start or stop being read.
    fn update_reading(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closed {
            // The driver closes it; there is nothing more to read.
            return;
        }
        let reading = conn.paused == 0 && conn.server.wants_input();
        if reading != conn.reading {
            conn.reading = reading;
            let id = super::ConnectionId(id);
            self.events.push_back(if reading {
                BrokerEvent::ResumeReading(id)
            } else {
                BrokerEvent::PauseReading(id)
            });
        }
    }

    /// Counts messages dropped for a session and schedules their report.
    pub(super) fn note_drop(
        &mut self,
        now: Instant,
        client_id: &ByteString,
        reason: DropReason,
        count: u64,
    ) {
        match reason {
            DropReason::QueueFull => self.stats.dropped.queue_full += count,
            DropReason::MemoryBudget => self.stats.dropped.memory_budget += count,
        }
        *self
            .flow
            .drops
            .entry((client_id.clone(), reason))
            .or_default() += count;
        if self.flow.drop_report.is_none() {
            let at = self
                .flow
                .last_report
                .map_or(now, |last| (last + DROP_REPORT_INTERVAL).max(now));
            self.flow.drop_report = Some(at);
            self.timers.push(Reverse((at, TimerKey::DropReport)));
        }
    }

    /// Reports the drops counted since the last report.
    pub(super) fn report_drops(&mut self, now: Instant) {
        self.flow.drop_report = None;
        self.flow.last_report = Some(now);
        for ((client_id, reason), count) in std::mem::take(&mut self.flow.drops) {
            self.events.push_back(BrokerEvent::MessagesDropped {
                client_id,
                reason,
                count,
            });
        }
    }
}

/// Records a reservation of `len` bytes for the packet `conn` is receiving, and makes room for
/// it in one allocation.
fn reserve(conn: &mut super::Conn, len: usize) {
    conn.reserved = len;
    conn.reserved_at = conn.server.received_packets();
    let buffered = conn.server.buffered_input();
    conn.server.reserve_input(len.saturating_sub(buffered));
}
