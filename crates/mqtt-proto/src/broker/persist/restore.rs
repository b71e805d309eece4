//! Restoring the broker's state from the records a store holds ([`Broker::restore`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use bytestring::ByteString;

use super::{
    Fields, Persist, QUEUED, RELEASING, RestoreError, RestoreReport, STORE_FORMAT, SessionRecord,
    VERSION_KEY, escape, pubrel_key, queued_key, read_publish, read_session, read_subscription,
    split_key,
};
use crate::broker::session::{BrokerSession, SubValue};
use crate::broker::{Broker, TimerKey};
use crate::connection::ServerSession;
use crate::packet::{PacketId, Publish, QoS, Will, WillProperties};
use crate::topic::TopicFilter;

/// A queued message as read: its order, its expiry, the PUBLISH.
type Queued = (u64, Option<Instant>, Publish);

/// What the records say, sorted by session (client identifier).
#[derive(Default)]
struct Records {
    version: Option<u8>,
    sessions: BTreeMap<String, (SessionRecord, Vec<(TopicFilter, SubValue)>)>,
    queued: BTreeMap<String, Vec<Queued>>,
    /// Messages whose PUBREL is to be sent again.
    releasing: BTreeMap<String, Vec<PacketId>>,
    /// The client's QoS 2 messages awaiting its PUBREL.
    pubrels: BTreeMap<String, Vec<PacketId>>,
    /// Retained messages with their expiry (ms; 0: none).
    retained: Vec<(u64, Publish)>,
}

impl Records {
    /// Sorts `records` by kind; what cannot be read is listed in `report`. Keys come in any
    /// order: sessions first, then what belongs to them.
    fn read<'a>(
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        persist: &Persist,
        report: &mut RestoreReport,
    ) -> Self {
        let mut read = Records::default();
        let mut rest = Vec::new();
        for (key, value) in records {
            if key == VERSION_KEY {
                read.version = value.first().copied();
                continue;
            }
            match split_key(key) {
                Some((b'S', id, [])) => match read_session(value) {
                    Ok(record) => {
                        read.sessions.insert(id.to_owned(), (record, Vec::new()));
                    }
                    Err(why) => skip(report, key, why),
                },
                _ => rest.push((key, value)),
            }
        }
        for (key, value) in rest {
            if let Err(why) = read.add(key, value, persist) {
                skip(report, key, why);
            }
        }
        read
    }

    /// Adds a record other than a session's.
    fn add(&mut self, key: &[u8], value: &[u8], persist: &Persist) -> Result<(), String> {
        if key.first() == Some(&b'R') {
            self.retained.push(read_retained(key, value)?);
            return Ok(());
        }
        let (prefix, id, tail) = split_key(key).ok_or("unknown key")?;
        let (_, subscriptions) = self.sessions.get_mut(id).ok_or("no session record")?;
        match prefix {
            b'B' => {
                let filter = std::str::from_utf8(tail).map_err(|e| e.to_string())?;
                let filter = TopicFilter::new(filter).map_err(|e| e.to_string())?;
                subscriptions.push((filter, read_subscription(value)?));
            }
            b'Q' => match read_queued(tail, value, persist)? {
                Ok(entry) => self.queued.entry(id.to_owned()).or_default().push(entry),
                Err(packet_id) => self
                    .releasing
                    .entry(id.to_owned())
                    .or_default()
                    .push(packet_id),
            },
            b'P' => {
                let packet_id = read_packet_id(tail).map_err(|_| "packet id".to_owned())?;
                self.pubrels
                    .entry(id.to_owned())
                    .or_default()
                    .push(packet_id);
            }
            _ => return Err("unknown key".to_owned()),
        }
        Ok(())
    }
}

fn skip(report: &mut RestoreReport, key: &[u8], why: String) {
    report.skipped.push(format!("{}: {why}", escape(key)));
}

fn read_packet_id(tail: &[u8]) -> Result<PacketId, String> {
    let bytes: [u8; 2] = tail.try_into().map_err(|_| "packet id".to_owned())?;
    PacketId::new(u16::from_be_bytes(bytes)).ok_or_else(|| "packet id 0".to_owned())
}

/// A retained message's record: its expiry (ms; 0: none) and the message.
fn read_retained(key: &[u8], value: &[u8]) -> Result<(u64, Publish), String> {
    let topic = key.get(1..).and_then(|t| std::str::from_utf8(t).ok());
    topic.ok_or_else(|| "topic".to_owned())?;
    let mut f = Fields(value);
    // The order field, which only queued messages use.
    f.u64()?;
    let expires = f.u64()?;
    Ok((expires, read_publish(f.rest())?))
}

/// A queued message's record: the message to send, or (`Err`) the packet identifier of one
/// whose PUBREL is to be sent.
fn read_queued(
    tail: &[u8],
    value: &[u8],
    persist: &Persist,
) -> Result<Result<Queued, PacketId>, String> {
    let packet_id = read_packet_id(tail)?;
    let mut f = Fields(value);
    let seq = f.u64()?;
    let expires = f.u64()?;
    match f.u8()? {
        RELEASING => return Ok(Err(packet_id)),
        QUEUED => {}
        other => return Err(format!("stage {other}")),
    }
    let mut publish = read_publish(f.rest())?;
    if publish.qos == QoS::AtMostOnce {
        return Err("QoS 0".to_owned());
    }
    publish.packet_id = Some(packet_id);
    publish.dup = false;
    let expires_at = (expires != 0).then(|| persist.instant(expires));
    Ok(Ok((seq, expires_at, publish)))
}

impl Broker {
    // ---- the public side, documented on `Broker` ----

    pub(in crate::broker) fn restore_records<'a>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<RestoreReport, RestoreError> {
        if !self.conns.is_empty() || !self.by_client_id.is_empty() {
            return Err(RestoreError::NotEmpty);
        }
        let mut persist = Persist {
            instant_anchor: now,
            wall_anchor: wall,
            ops: Vec::new(),
            sealed: VecDeque::new(),
            next_batch: 1,
            next_seq: 0,
            dirty: HashSet::new(),
            durable: 0,
        };
        let mut report = RestoreReport::default();
        let mut records = Records::read(records, &persist, &mut report);
        match records.version {
            Some(found) if found != STORE_FORMAT => {
                return Err(RestoreError::UnknownFormat { found });
            }
            Some(_) => {}
            None => persist.put(
                Bytes::from_static(VERSION_KEY),
                Bytes::from_static(&[STORE_FORMAT]),
            ),
        }
        self.persist = Some(Box::new(persist));
        self.restore_retained(now, std::mem::take(&mut records.retained), &mut report);
        let mut due_wills = Vec::new();
        for (client_id, (record, subscriptions)) in std::mem::take(&mut records.sessions) {
            if let Some(will) = self.restore_session(
                now,
                &client_id,
                record,
                subscriptions,
                &mut records,
                &mut report,
            ) {
                due_wills.push(will);
            }
        }
        for publish in due_wills {
            self.route(now, None, publish);
        }
        // Sessions for records with no session (skipped above) and wills due now are settled;
        // nothing is connected yet, so nothing waits for the first batch.
        Ok(report)
    }

    /// Retained messages whose expiry passed are gone; the others count down from now.
    fn restore_retained(
        &mut self,
        now: Instant,
        retained: Vec<(u64, Publish)>,
        report: &mut RestoreReport,
    ) {
        for (expires_ms, mut publish) in retained {
            let expires_at = match expires_ms {
                0 => None,
                ms => {
                    let at = self.persist.as_deref().map(|p| p.instant(ms));
                    if at.is_none_or(|at| at <= now) {
                        let topic = publish.topic.clone();
                        self.store_retained(&topic, None);
                        continue;
                    }
                    at
                }
            };
            publish.packet_id = None;
            publish.dup = false;
            report.retained += 1;
            self.retained.insert(publish, expires_at);
        }
    }

    /// Restores one session with what belongs to it, or deletes it if it expired while the
    /// broker was down. Returns its will if that is due now.
    fn restore_session(
        &mut self,
        now: Instant,
        client_id: &str,
        record: SessionRecord,
        subscriptions: Vec<(TopicFilter, SubValue)>,
        records: &mut Records,
        report: &mut RestoreReport,
    ) -> Option<Publish> {
        let instant = |ms| self.persist.as_deref().map_or(now, |p| p.instant(ms));
        let disconnected = match record.disconnected_ms {
            // It was connected when the broker stopped: it disconnected then.
            0 => now,
            ms => instant(ms),
        };
        let expires_at = match record.expiry_interval {
            u32::MAX => None,
            secs => Some(disconnected + Duration::from_secs(u64::from(secs))),
        };
        let will = record.will.map(|(publish, delay, due_ms)| {
            let due = match (record.disconnected_ms, due_ms) {
                (0, _) => now + Duration::from_secs(u64::from(delay)),
                (_, 0) => now,
                (_, ms) => instant(ms),
            };
            (publish, due)
        });
        if expires_at.is_some_and(|at| at <= now) {
            // Gone while the broker was down: its will (if still waiting) went with it.
            report.expired_sessions += 1;
            self.delete_expired_session(client_id, record.version, subscriptions, records);
            return will.map(|(publish, _)| publish);
        }
        let mut session = BrokerSession::new(ByteString::from(client_id), record.version);
        session.stored = true;
        session.expiry_interval = record.expiry_interval;
        session.expires_at = expires_at;
        let key = self.insert_session(session);
        report.sessions += 1;
        if let Some(at) = expires_at {
            self.timers
                .push(std::cmp::Reverse((at, TimerKey::SessionExpiry(key))));
        }
        for (filter, value) in subscriptions {
            self.tree.insert(&filter, key, value);
            if let Some(session) = self.session_mut(key) {
                session.filters.insert(filter);
            }
            report.subscriptions += 1;
        }
        let delivery = self.restore_delivery(client_id, records, report);
        self.flow.queued_bytes += delivery.queued_bytes();
        if let Some(session) = self.session_mut(key) {
            session.delivery = Some(Box::new(delivery));
        }
        let mut due_will = None;
        if let Some((publish, due)) = will {
            if due <= now || record.expiry_interval == 0 {
                due_will = Some(publish);
            } else if let Some(session) = self.session_mut(key) {
                session.pending_will = Some(Box::new((will_of(&publish), due)));
                self.timers
                    .push(std::cmp::Reverse((due, TimerKey::Will(key))));
            }
        }
        // Its record now says it disconnected (it may have said connected).
        self.store_session(key, disconnected);
        due_will
    }

    /// A session's delivery state as its records say: PUBRELs to send again, messages queued
    /// or in flight in their order, the client's QoS 2 messages awaiting PUBREL.
    fn restore_delivery(
        &mut self,
        client_id: &str,
        records: &mut Records,
        report: &mut RestoreReport,
    ) -> ServerSession {
        let mut delivery = ServerSession::default();
        for packet_id in records.releasing.remove(client_id).unwrap_or_default() {
            match delivery.restore_pubrel(packet_id) {
                Ok(()) => report.messages += 1,
                Err(_) => report
                    .skipped
                    .push(format!("{client_id}: a packet id twice")),
            }
        }
        let mut messages = records.queued.remove(client_id).unwrap_or_default();
        messages.sort_by_key(|(seq, _, _)| *seq);
        for (seq, expires_at, publish) in messages {
            if let Some(persist) = self.persist.as_deref_mut() {
                persist.next_seq = persist.next_seq.max(seq + 1);
            }
            match delivery.restore(publish, expires_at) {
                Ok(()) => report.messages += 1,
                Err(_) => report
                    .skipped
                    .push(format!("{client_id}: a packet id twice")),
            }
        }
        for pid in records.pubrels.remove(client_id).unwrap_or_default() {
            delivery.restore_awaiting_pubrel(pid);
            report.awaiting_pubrel += 1;
        }
        delivery
    }

    /// Deletes the records of a session that expired while the broker was down.
    fn delete_expired_session(
        &mut self,
        client_id: &str,
        version: crate::packet::Version,
        subscriptions: Vec<(TopicFilter, SubValue)>,
        records: &mut Records,
    ) {
        let mut session = BrokerSession::new(ByteString::from(client_id), version);
        session.stored = true;
        session.filters = subscriptions.into_iter().map(|(f, _)| f).collect();
        // The session's own record and its subscriptions' go through `unstore_session`; its
        // messages' records are deleted here, by key, whatever they held.
        self.unstore_session(&mut session);
        let Some(persist) = self.persist.as_deref_mut() else {
            return;
        };
        let queued = records.queued.remove(client_id).unwrap_or_default();
        let queued = queued.into_iter().filter_map(|(_, _, p)| p.packet_id);
        let releasing = records.releasing.remove(client_id).unwrap_or_default();
        for packet_id in queued.chain(releasing) {
            persist.delete(queued_key(client_id, packet_id));
        }
        for packet_id in records.pubrels.remove(client_id).unwrap_or_default() {
            persist.delete(pubrel_key(client_id, packet_id.get()));
        }
    }
}

/// The will a stored message was.
fn will_of(publish: &Publish) -> Will {
    let p = &publish.properties;
    Will {
        topic: publish.topic.clone(),
        payload: publish.payload.clone(),
        qos: publish.qos,
        retain: publish.retain,
        properties: WillProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            ..Default::default()
        },
    }
}
