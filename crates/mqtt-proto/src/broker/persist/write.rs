//! Recording changes as they are made, and holding output until what it tells of is durable.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    QUEUED, RELEASING, Sealed, SessionRecord, StoreBatch, pubrel_key, put_publish, queued_key,
    retained_key, session_key, session_value, subscription_key, subscription_value, timed_value,
};
use crate::ReasonCode;
use crate::broker::expiry::will_publish;
use crate::broker::session::{BrokerSession, SubValue};
use crate::broker::{Broker, BrokerEvent};
use crate::packet::{Disconnect, PacketId, Publish};

impl Broker {
    /// Whether persistence is on.
    pub(in crate::broker) fn persisting(&self) -> bool {
        self.persist.is_some()
    }

    /// Records a persistent session (created, resumed, disconnected, its will changed). Marks it
    /// stored.
    pub(in crate::broker) fn store_session(&mut self, key: u32, now: Instant) {
        let Some(session) = self.sessions.get(key as usize).and_then(Option::as_ref) else {
            return;
        };
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        if session.expiry_interval == 0 {
            return;
        }
        let connected = session.connection.and_then(|id| self.conns.get(&id));
        let will = match (connected, &session.pending_will) {
            (Some(conn), _) => conn.will.as_ref().map(|will| {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                (will_publish((**will).clone()), delay, 0)
            }),
            (None, Some(pending)) => {
                let (will, due) = &**pending;
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                Some((will_publish(will.clone()), delay, persist.wall_ms(*due)))
            }
            (None, None) => None,
        };
        let connection = session.connection;
        let record = SessionRecord {
            version: session.version,
            expiry_interval: session.expiry_interval,
            disconnected_ms: if connected.is_some() {
                0
            } else {
                persist.wall_ms(now).max(1)
            },
            will,
        };
        persist.put(session_key(&session.client_id), session_value(&record));
        if let Some(session) = self.session_mut(key) {
            session.stored = true;
        }
        // Its CONNACK tells the client the session is kept.
        let current = self.current_batch();
        self.hold_until(connection, current);
    }

    /// Removes every record of a session that has some (its delivery state must be in
    /// `session.delivery`, not in a connection).
    pub(in crate::broker) fn unstore_session(&mut self, session: &mut BrokerSession) {
        if !session.stored {
            return;
        }
        session.stored = false;
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        let id = &session.client_id;
        persist.delete(session_key(id));
        for filter in &session.filters {
            persist.delete(subscription_key(id, filter));
        }
        if let Some(delivery) = session.delivery.as_deref_mut() {
            for packet_id in delivery.packet_ids() {
                persist.delete(queued_key(id, packet_id));
            }
            for &pid in &delivery.awaiting_pubrel {
                persist.delete(pubrel_key(id, pid));
            }
        }
    }

    /// A subscription of a stored session was made or replaced.
    pub(in crate::broker) fn store_subscription(
        &mut self,
        key: u32,
        filter: &str,
        value: &SubValue,
    ) {
        let Some(session) = self.session(key).filter(|s| s.stored) else {
            return;
        };
        let connection = session.connection;
        let key = subscription_key(&session.client_id, filter);
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.put(key, subscription_value(value));
        }
        let current = self.current_batch();
        self.hold_until(connection, current);
    }

    /// A subscription of a stored session was removed.
    pub(in crate::broker) fn unstore_subscription(&mut self, key: u32, filter: &str) {
        let Some(session) = self.session(key).filter(|s| s.stored) else {
            return;
        };
        let connection = session.connection;
        let key = subscription_key(&session.client_id, filter);
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.delete(key);
        }
        let current = self.current_batch();
        self.hold_until(connection, current);
    }

    /// The ops recorded so far, to tell whether a step recorded any.
    pub(in crate::broker) fn store_ops(&self) -> usize {
        self.persist
            .as_deref()
            .map_or(0, |p| p.ops.len() + p.next_batch as usize)
    }

    /// A QoS 1/2 message was queued (or sent) for a stored session with this packet identifier.
    pub(in crate::broker) fn store_queued(&mut self, key: u32, now: Instant, publish: &Publish) {
        let Some(packet_id) = publish.packet_id else {
            return;
        };
        let Some(session) = self.sessions.get(key as usize).and_then(Option::as_ref) else {
            return;
        };
        if !session.stored {
            return;
        }
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        let expires_ms = publish
            .properties
            .message_expiry_interval
            .map_or(0, |secs| {
                persist.wall_ms(now + Duration::from_secs(u64::from(secs)))
            });
        let seq = persist.next_seq;
        persist.next_seq += 1;
        let mut value = BytesMut::with_capacity(17 + publish.topic.len() + publish.payload.len());
        value.put_u64(seq);
        value.put_u64(expires_ms);
        value.put_u8(QUEUED);
        put_publish(publish, &mut value);
        persist.put(queued_key(&session.client_id, packet_id), value.freeze());
    }

    /// A stored session's client accepted a QoS 2 message (PUBREC): from now on the exchange
    /// resumes with PUBREL, never with the message (its receiver may have completed it and
    /// forgotten its identifier, and would take the message again as new).
    pub(in crate::broker) fn store_releasing(&mut self, key: u32, packet_id: PacketId) {
        let Some(session) = self.session(key).filter(|s| s.stored) else {
            return;
        };
        let connection = session.connection;
        let key = queued_key(&session.client_id, packet_id);
        let mut value = BytesMut::with_capacity(17);
        value.put_u64(0);
        value.put_u64(0);
        value.put_u8(RELEASING);
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.put(key, value.freeze());
        }
        // Its PUBREL goes out once this is durable.
        let current = self.current_batch();
        self.hold_until(connection, current);
    }

    /// A message of a stored session's queue is done (acknowledged, expired).
    pub(in crate::broker) fn unstore_queued(&mut self, key: u32, packet_id: PacketId) {
        let Some(session) = self.session(key).filter(|s| s.stored) else {
            return;
        };
        let key = queued_key(&session.client_id, packet_id);
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.delete(key);
        }
    }

    /// A QoS 2 message from a stored session's client awaits its PUBREL (`true`), or got it.
    pub(in crate::broker) fn store_pubrel(
        &mut self,
        key: u32,
        packet_id: PacketId,
        awaiting: bool,
    ) {
        let Some(session) = self.session(key).filter(|s| s.stored) else {
            return;
        };
        let connection = session.connection;
        let key = pubrel_key(&session.client_id, packet_id.get());
        if let Some(persist) = self.persist.as_deref_mut() {
            if awaiting {
                persist.put(key, Bytes::new());
            } else {
                persist.delete(key);
            }
        }
        // Its PUBREC (or PUBCOMP) goes out once this is durable.
        let current = self.current_batch();
        self.hold_until(connection, current);
    }

    /// A retained message was set (`Some`) or cleared.
    pub(in crate::broker) fn store_retained(
        &mut self,
        topic: &str,
        retained: Option<(&Publish, Option<Instant>)>,
    ) {
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        match retained {
            Some((publish, expires_at)) => {
                let expires_ms = expires_at.map_or(0, |at| persist.wall_ms(at));
                persist.put(retained_key(topic), timed_value(0, expires_ms, publish));
            }
            None => persist.delete(retained_key(topic)),
        }
    }

    /// The batch the changes being made now will be in.
    pub(in crate::broker) fn current_batch(&self) -> u64 {
        self.persist.as_deref().map_or(0, |p| p.next_batch)
    }

    /// Connection `id`'s output so far waits for batch `batch` to be durable.
    pub(in crate::broker) fn hold_until(&mut self, id: Option<u64>, batch: u64) {
        let (Some(id), Some(persist)) = (id, self.persist.as_deref_mut()) else {
            return;
        };
        if batch <= persist.durable {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if batch >= persist.next_batch {
            conn.dep = true;
            persist.dirty.insert(id);
        } else if let Some(sealed) = persist.sealed.iter_mut().find(|s| s.id == batch) {
            sealed
                .marks
                .push((id, conn.handed_out + conn.server.transmit_len() as u64));
            conn.holds += 1;
        }
    }

    /// Connection `id` has new output. Output that tells of changes (an acknowledgement, a
    /// message for a stored session) waits until the batch holding them is durable; output
    /// that tells of nothing pending (a PINGRESP, a message whose record is on disk already)
    /// goes at once, unless earlier output of the connection waits. Changes that output
    /// depends on are recorded (and the holds taken) before this is called.
    pub(in crate::broker) fn note_output(&mut self, id: u64) {
        let stamp = match self.conns.get_mut(&id) {
            Some(conn) if self.persist.is_some() => conn.server.take_sent_stamp(),
            _ => return,
        };
        if stamp > 0 {
            self.hold_until(Some(id), stamp);
        }
        if let Some(conn) = self.conns.get_mut(&id)
            && !conn.dep
            && conn.holds == 0
        {
            conn.released = conn.handed_out + conn.server.transmit_len() as u64;
        }
    }

    /// How many bytes of connection `id`'s output may go out now.
    pub(in crate::broker) fn releasable(&self, id: u64) -> usize {
        if self.persist.is_none() {
            return usize::MAX;
        }
        self.conns.get(&id).map_or(0, |conn| {
            usize::try_from(conn.released.saturating_sub(conn.handed_out)).unwrap_or(usize::MAX)
        })
    }

    pub(in crate::broker) fn seal_batch(&mut self) -> Option<StoreBatch> {
        let dirty: Vec<u64> = {
            let persist = self.persist.as_deref_mut()?;
            if persist.ops.is_empty() {
                return None;
            }
            persist.dirty.drain().collect()
        };
        let marks = dirty
            .into_iter()
            .filter_map(|id| {
                let conn = self.conns.get_mut(&id)?;
                conn.dep = false;
                conn.holds += 1;
                Some((id, conn.handed_out + conn.server.transmit_len() as u64))
            })
            .collect();
        let persist = self.persist.as_deref_mut()?;
        let id = persist.next_batch;
        persist.next_batch += 1;
        let ops = std::mem::take(&mut persist.ops);
        persist.sealed.push_back(Sealed {
            id,
            ops: ops.clone(),
            marks,
        });
        Some(StoreBatch { id, ops })
    }

    pub(in crate::broker) fn stored(&mut self, id: u64) {
        let mut released = Vec::new();
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        persist.durable = persist.durable.max(id);
        while persist.sealed.front().is_some_and(|s| s.id <= id) {
            if let Some(sealed) = persist.sealed.pop_front() {
                released.extend(sealed.marks);
            }
        }
        for (conn_id, mark) in released {
            if let Some(conn) = self.conns.get_mut(&conn_id) {
                let produced = conn.handed_out + conn.server.transmit_len() as u64;
                conn.holds = conn.holds.saturating_sub(1);
                conn.released = conn.released.max(mark.min(produced));
                if conn.holds == 0 && !conn.dep {
                    // What came after depends on nothing pending.
                    conn.released = produced;
                }
                if !conn.ready && conn.server.has_transmit() {
                    conn.ready = true;
                    self.ready.push_back(conn_id);
                }
            }
        }
    }

    pub(in crate::broker) fn store_failed(&mut self, id: u64, now: Instant) {
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        // This batch and every later one: their changes come back for the next batch, in
        // order; the output that told of them is withdrawn.
        let mut ops = Vec::new();
        let mut marks = Vec::new();
        while let Some(sealed) = persist.sealed.back() {
            if sealed.id < id {
                break;
            }
            if let Some(sealed) = persist.sealed.pop_back() {
                let mut later = sealed.ops;
                later.append(&mut ops);
                ops = later;
                marks.extend(sealed.marks.into_iter().map(|(conn, _)| conn));
            }
        }
        ops.append(&mut persist.ops);
        persist.ops = ops;
        marks.extend(persist.dirty.drain());
        let closing: HashSet<u64> = marks.into_iter().collect();
        for conn_id in closing {
            let Some(conn) = self.conns.get_mut(&conn_id) else {
                continue;
            };
            let keep = usize::try_from(conn.released.saturating_sub(conn.handed_out))
                .unwrap_or(usize::MAX);
            conn.server.discard_transmit_after(keep);
            conn.holds = 0;
            conn.dep = false;
            // Its publishers send again, its subscribers get the messages on their next
            // connection (a persistent session keeps them in memory meanwhile).
            crate::broker::conn::closed_already(
                conn.server
                    .disconnect(now, Disconnect::new(ReasonCode::QuotaExceeded)),
            );
            // The DISCONNECT depends on nothing.
            conn.released = conn.handed_out + conn.server.transmit_len() as u64;
            self.after(conn_id, now);
        }
        self.events.push_back(BrokerEvent::StoreFailed);
    }
}
