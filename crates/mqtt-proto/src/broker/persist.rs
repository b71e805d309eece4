//! Durability, with no I/O: the broker's lasting state as records a store keeps, changed in
//! batches the driver makes durable, and given back at start.
//!
//! Turned on by [`Broker::restore`] (with whatever a store holds, nothing the first time).
//! From then on, what must survive a crash is recorded as [`StoreOp`]s:
//!
//! | key | value | kept for |
//! |---|---|---|
//! | `V` | the format version | the store |
//! | `S` + client id | version, expiry, when it disconnected, its will | each persistent session |
//! | `B` + client id + filter | subscription options and identifier | each subscription of one |
//! | `Q` + client id + packet id | order, expiry, the PUBLISH | each QoS 1/2 message for one, until acknowledged |
//! | `P` + client id + packet id | nothing | each QoS 2 message from one awaiting PUBREL |
//! | `R` + topic | expiry, the PUBLISH | each retained message |
//!
//! (Client ids in keys are preceded by their length; messages are stored as MQTT 5.0 PUBLISH
//! packets; times are milliseconds since the Unix epoch, so that expiry counts the downtime.)
//! Sessions with a Session Expiry Interval of 0 (3.1.1 Clean Session) are never written and
//! cost nothing.
//!
//! **Nothing goes out before what it tells of is durable.** [`Broker::poll_store`] seals the
//! changes made since the last call into a [`StoreBatch`]; every connection's output produced
//! until then (PUBACK/PUBREC to publishers, messages to subscribers, CONNACK and SUBACK) is held
//! until [`Broker::handle_stored`] says the batch is durable, so one `fsync` covers a whole turn
//! of the driver (group commit). While no change waits, output is not held at all. When a
//! batch cannot be stored ([`Broker::handle_store_failed`]), the output that depended on it is
//! discarded and those connections are closed (their publishers send again, their subscribers
//! get the messages on their next connection); the changes are kept for the next batch.
//!
//! At start, sessions that were connected when the broker stopped are treated as having
//! disconnected then (uncleanly: their wills are published, after their delay).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::session::{BrokerSession, SubValue};
use super::{Broker, BrokerEvent, TimerKey};
use crate::ReasonCode;
use crate::codec::{self, Limits};
use crate::connection::ServerSession;
use crate::packet::{
    Disconnect, Packet, PacketId, Publish, QoS, SubscriptionId, SubscriptionOptions, Version, Will,
};
use crate::topic::TopicFilter;

/// The version of the record format, stored under `V`.
pub const STORE_FORMAT: u8 = 1;

const VERSION_KEY: &[u8] = b"V";

/// The stage of a queued message: to send (the PUBLISH follows), or PUBREL to send.
const QUEUED: u8 = 0;
const RELEASING: u8 = 1;

/// One change to the stored state; the keys and values are the broker's own encoding, opaque to
/// the store. Both kinds are idempotent: a batch whose commit failed can be committed again as
/// it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key` (it may not exist).
    Delete {
        /// The key.
        key: Bytes,
    },
}

impl StoreOp {
    /// The key this op changes.
    pub fn key(&self) -> &Bytes {
        match self {
            StoreOp::Put { key, .. } | StoreOp::Delete { key } => key,
        }
    }
}

/// Changes to apply atomically, then report with [`Broker::handle_stored`] (or
/// [`Broker::handle_store_failed`]), in the order the batches came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreBatch {
    /// Its number, increasing.
    pub id: u64,
    /// The changes, in order (a later one on the same key wins).
    pub ops: Vec<StoreOp>,
}

/// What [`Broker::restore`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Persistent sessions.
    pub sessions: usize,
    /// Their subscriptions.
    pub subscriptions: usize,
    /// QoS 1/2 messages queued or in flight for them.
    pub messages: usize,
    /// QoS 2 messages from them awaiting PUBREL.
    pub awaiting_pubrel: usize,
    /// Retained messages.
    pub retained: usize,
    /// Sessions that expired while the broker was down.
    pub expired_sessions: usize,
    /// Records that could not be read, skipped: each with its key (escaped) and why. A store
    /// damaged by a torn write loses those records and nothing else.
    pub skipped: Vec<String>,
}

/// Why [`Broker::restore`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The store was written in a format this broker does not read (a newer one): start the
    /// version that wrote it, or an empty store.
    #[error("the store has record format {found}; this broker reads format {STORE_FORMAT}")]
    UnknownFormat {
        /// The format found.
        found: u8,
    },
    /// The broker already has sessions or connections: restore first.
    #[error("restore must come before any connection")]
    NotEmpty,
}

/// A sealed batch, until it is durable.
#[derive(Debug)]
struct Sealed {
    id: u64,
    /// Kept to try again if the store fails (the values are shared, not copied).
    ops: Vec<StoreOp>,
    /// Connections whose output up to this many bytes (counted since the connection opened)
    /// waits for this batch.
    marks: Vec<(u64, u64)>,
}

/// The broker's durability state.
#[derive(Debug)]
pub(super) struct Persist {
    instant_anchor: Instant,
    wall_anchor: SystemTime,
    ops: Vec<StoreOp>,
    sealed: VecDeque<Sealed>,
    next_batch: u64,
    next_seq: u64,
    /// Connections whose output depends on the changes not yet sealed.
    dirty: HashSet<u64>,
    /// Every batch up to this one is durable.
    durable: u64,
}

impl Persist {
    /// Milliseconds since the Unix epoch at `at`, through the wall clock given at restore.
    fn wall_ms(&self, at: Instant) -> u64 {
        let wall = match at.checked_duration_since(self.instant_anchor) {
            Some(after) => self.wall_anchor + after,
            None => self
                .wall_anchor
                .checked_sub(self.instant_anchor.saturating_duration_since(at))
                .unwrap_or(UNIX_EPOCH),
        };
        wall.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The instant of a wall time in milliseconds (one further back than the monotonic clock
    /// reaches is clamped to the earliest it can say).
    fn instant(&self, ms: u64) -> Instant {
        let wall = UNIX_EPOCH + Duration::from_millis(ms);
        match wall.duration_since(self.wall_anchor) {
            Ok(ahead) => self.instant_anchor + ahead,
            Err(behind) => self
                .instant_anchor
                .checked_sub(behind.duration())
                .unwrap_or(self.instant_anchor),
        }
    }

    /// The batch the changes being made now will be in.
    pub(super) fn next_batch(&self) -> u64 {
        self.next_batch
    }

    fn put(&mut self, key: Bytes, value: Bytes) {
        self.ops.push(StoreOp::Put { key, value });
    }

    fn delete(&mut self, key: Bytes) {
        self.ops.push(StoreOp::Delete { key });
    }
}

// ---- keys and values ----

fn key(prefix: u8, client_id: &str, rest: &[u8]) -> Bytes {
    let mut key = BytesMut::with_capacity(3 + client_id.len() + rest.len());
    key.put_u8(prefix);
    key.put_u16(u16::try_from(client_id.len()).unwrap_or(u16::MAX));
    key.put_slice(client_id.as_bytes());
    key.put_slice(rest);
    key.freeze()
}

fn session_key(client_id: &str) -> Bytes {
    key(b'S', client_id, &[])
}

fn subscription_key(client_id: &str, filter: &str) -> Bytes {
    key(b'B', client_id, filter.as_bytes())
}

fn queued_key(client_id: &str, packet_id: PacketId) -> Bytes {
    key(b'Q', client_id, &packet_id.get().to_be_bytes())
}

fn pubrel_key(client_id: &str, packet_id: u16) -> Bytes {
    key(b'P', client_id, &packet_id.to_be_bytes())
}

fn retained_key(topic: &str) -> Bytes {
    let mut key = BytesMut::with_capacity(1 + topic.len());
    key.put_u8(b'R');
    key.put_slice(topic.as_bytes());
    key.freeze()
}

/// A message as a 5.0 PUBLISH packet (a packet identifier stands in where QoS needs one).
fn put_publish(publish: &Publish, buf: &mut BytesMut) {
    let mut publish = publish.clone();
    if let Some(p) = publish.properties.get_mut() {
        p.topic_alias = None;
    }
    publish.packet_id = match publish.qos {
        QoS::AtMostOnce => None,
        _ => publish.packet_id.or(PacketId::new(1)),
    };
    // A message the broker holds was decoded or checked once: it encodes.
    let _ = codec::encode(&Packet::Publish(publish), Version::V5, buf);
}

fn read_publish(bytes: &[u8]) -> Result<Publish, String> {
    let mut buf = BytesMut::from(bytes);
    let limits = Limits::new(Limits::PROTOCOL_MAX_PACKET_SIZE);
    match codec::decode(&mut buf, Version::V5, &limits) {
        Ok(Some(Packet::Publish(publish))) if buf.is_empty() => Ok(publish),
        Ok(_) => Err("not one whole PUBLISH".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// Reads big-endian fields off the front of a value.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("value too short".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes: [u8; 4] = self.take(4)?.try_into().map_err(|_| "short".to_owned())?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| "short".to_owned())?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// What a session record says.
struct SessionRecord {
    version: Version,
    expiry_interval: u32,
    /// When it disconnected (ms); 0: it was connected.
    disconnected_ms: u64,
    /// Its will, with the delay it has from disconnection and (when disconnected) when due.
    will: Option<(Publish, u32, u64)>,
}

fn session_value(record: &SessionRecord) -> Bytes {
    let mut value = BytesMut::new();
    value.put_u8(match record.version {
        Version::V3_1_1 => 4,
        Version::V5 => 5,
    });
    value.put_u32(record.expiry_interval);
    value.put_u64(record.disconnected_ms);
    match &record.will {
        Some((publish, delay, due_ms)) => {
            value.put_u8(1);
            value.put_u32(*delay);
            value.put_u64(*due_ms);
            put_publish(publish, &mut value);
        }
        None => value.put_u8(0),
    }
    value.freeze()
}

fn read_session(bytes: &[u8]) -> Result<SessionRecord, String> {
    let mut f = Fields(bytes);
    let version = match f.u8()? {
        4 => Version::V3_1_1,
        5 => Version::V5,
        other => return Err(format!("protocol level {other}")),
    };
    let expiry_interval = f.u32()?;
    let disconnected_ms = f.u64()?;
    let will = match f.u8()? {
        0 => None,
        _ => {
            let delay = f.u32()?;
            let due = f.u64()?;
            Some((read_publish(f.rest())?, delay, due))
        }
    };
    Ok(SessionRecord {
        version,
        expiry_interval,
        disconnected_ms,
        will,
    })
}

fn subscription_value(value: &SubValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(6);
    buf.put_u8(value.options.to_byte(Version::V5).unwrap_or(0));
    match value.identifier {
        Some(id) => {
            buf.put_u8(1);
            buf.put_u32(id.get());
        }
        None => buf.put_u8(0),
    }
    buf.freeze()
}

fn read_subscription(bytes: &[u8]) -> Result<SubValue, String> {
    let mut f = Fields(bytes);
    let options =
        SubscriptionOptions::from_byte(f.u8()?, Version::V5).map_err(|e| e.to_string())?;
    let identifier = match f.u8()? {
        0 => None,
        _ => Some(SubscriptionId::new(f.u32()?).ok_or("subscription identifier")?),
    };
    Ok(SubValue {
        options,
        identifier,
    })
}

fn timed_value(first: u64, expires_ms: u64, publish: &Publish) -> Bytes {
    let mut value = BytesMut::with_capacity(16 + 16 + publish.topic.len() + publish.payload.len());
    value.put_u64(first);
    value.put_u64(expires_ms);
    put_publish(publish, &mut value);
    value.freeze()
}

/// Splits a key into its prefix, client id and the rest.
fn split_key(key: &[u8]) -> Option<(u8, &str, &[u8])> {
    let (&prefix, rest) = key.split_first()?;
    let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let id = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    Some((prefix, id, rest.get(2 + len..)?))
}

fn escape(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

// ---- the broker's side ----

impl Broker {
    /// Whether persistence is on.
    pub(super) fn persisting(&self) -> bool {
        self.persist.is_some()
    }

    /// Records a persistent session (created, resumed, disconnected, its will changed). Marks it
    /// stored.
    pub(super) fn store_session(&mut self, key: u32, now: Instant) {
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
                (super::will_publish((**will).clone()), delay, 0)
            }),
            (None, Some(pending)) => {
                let (will, due) = &**pending;
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                Some((
                    super::will_publish(will.clone()),
                    delay,
                    persist.wall_ms(*due),
                ))
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
    pub(super) fn unstore_session(&mut self, session: &mut BrokerSession) {
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
    pub(super) fn store_subscription(&mut self, key: u32, filter: &str, value: &SubValue) {
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
    pub(super) fn unstore_subscription(&mut self, key: u32, filter: &str) {
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
    pub(super) fn store_ops(&self) -> usize {
        self.persist
            .as_deref()
            .map_or(0, |p| p.ops.len() + p.next_batch as usize)
    }

    /// A QoS 1/2 message was queued (or sent) for a stored session with this packet identifier.
    pub(super) fn store_queued(&mut self, key: u32, now: Instant, publish: &Publish) {
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
    pub(super) fn store_releasing(&mut self, key: u32, packet_id: PacketId) {
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
    pub(super) fn unstore_queued(&mut self, key: u32, packet_id: PacketId) {
        let Some(session) = self.session(key).filter(|s| s.stored) else {
            return;
        };
        let key = queued_key(&session.client_id, packet_id);
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.delete(key);
        }
    }

    /// A QoS 2 message from a stored session's client awaits its PUBREL (`true`), or got it.
    pub(super) fn store_pubrel(&mut self, key: u32, packet_id: PacketId, awaiting: bool) {
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
    pub(super) fn store_retained(
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
    pub(super) fn current_batch(&self) -> u64 {
        self.persist.as_deref().map_or(0, |p| p.next_batch)
    }

    /// Connection `id`'s output so far waits for batch `batch` to be durable.
    pub(super) fn hold_until(&mut self, id: Option<u64>, batch: u64) {
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
    pub(super) fn note_output(&mut self, id: u64) {
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
    pub(super) fn releasable(&self, id: u64) -> usize {
        if self.persist.is_none() {
            return usize::MAX;
        }
        self.conns.get(&id).map_or(0, |conn| {
            usize::try_from(conn.released.saturating_sub(conn.handed_out)).unwrap_or(usize::MAX)
        })
    }
}

impl Broker {
    // ---- the public side, documented on `Broker` ----

    pub(super) fn restore_records<'a>(
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
        let mut sessions: BTreeMap<String, (SessionRecord, Vec<(TopicFilter, SubValue)>)> =
            BTreeMap::new();
        let mut queued: BTreeMap<String, Vec<(u64, Option<Instant>, Publish)>> = BTreeMap::new();
        let mut pubrels: BTreeMap<String, Vec<PacketId>> = BTreeMap::new();
        let mut releasing: BTreeMap<String, Vec<PacketId>> = BTreeMap::new();
        let mut retained = Vec::new();
        let mut version = None;
        let skip = |report: &mut RestoreReport, key: &[u8], why: String| {
            report.skipped.push(format!("{}: {why}", escape(key)));
        };
        // Keys come in any order: sessions first, then what belongs to them.
        let mut rest = Vec::new();
        for (key, value) in records {
            if key == VERSION_KEY {
                version = value.first().copied();
                continue;
            }
            match split_key(key) {
                Some((b'S', id, [])) => match read_session(value) {
                    Ok(record) => {
                        sessions.insert(id.to_owned(), (record, Vec::new()));
                    }
                    Err(why) => skip(&mut report, key, why),
                },
                _ => rest.push((key, value)),
            }
        }
        if let Some(found) = version
            && found != STORE_FORMAT
        {
            return Err(RestoreError::UnknownFormat { found });
        }
        if version.is_none() {
            persist.put(
                Bytes::from_static(VERSION_KEY),
                Bytes::from_static(&[STORE_FORMAT]),
            );
        }
        for (key, value) in rest {
            if key.first() == Some(&b'R') {
                let topic = key.get(1..).and_then(|t| std::str::from_utf8(t).ok());
                let read = topic.ok_or_else(|| "topic".to_owned()).and_then(|_| {
                    let mut f = Fields(value);
                    let _ = f.u64()?;
                    let expires = f.u64()?;
                    Ok((expires, read_publish(f.rest())?))
                });
                match read {
                    Ok((expires, publish)) => retained.push((expires, publish)),
                    Err(why) => skip(&mut report, key, why),
                }
                continue;
            }
            let Some((prefix, id, tail)) = split_key(key) else {
                skip(&mut report, key, "unknown key".to_owned());
                continue;
            };
            if !sessions.contains_key(id) {
                skip(&mut report, key, "no session record".to_owned());
                continue;
            }
            match prefix {
                b'B' => {
                    let read = std::str::from_utf8(tail)
                        .map_err(|e| e.to_string())
                        .and_then(|f| TopicFilter::new(f).map_err(|e| e.to_string()))
                        .and_then(|filter| Ok((filter, read_subscription(value)?)));
                    match read {
                        Ok(sub) => {
                            if let Some((_, subs)) = sessions.get_mut(id) {
                                subs.push(sub);
                            }
                        }
                        Err(why) => skip(&mut report, key, why),
                    }
                }
                b'Q' => {
                    let read = (|| {
                        let pid: [u8; 2] = tail.try_into().map_err(|_| "packet id".to_owned())?;
                        let packet_id =
                            PacketId::new(u16::from_be_bytes(pid)).ok_or("packet id 0")?;
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
                        Ok::<_, String>(Ok((seq, expires_at, publish)))
                    })();
                    match read {
                        Ok(Ok(entry)) => queued.entry(id.to_owned()).or_default().push(entry),
                        Ok(Err(packet_id)) => {
                            releasing.entry(id.to_owned()).or_default().push(packet_id)
                        }
                        Err(why) => skip(&mut report, key, why),
                    }
                }
                b'P' => match <[u8; 2]>::try_from(tail)
                    .ok()
                    .and_then(|b| PacketId::new(u16::from_be_bytes(b)))
                {
                    Some(pid) => pubrels.entry(id.to_owned()).or_default().push(pid),
                    None => skip(&mut report, key, "packet id".to_owned()),
                },
                _ => skip(&mut report, key, "unknown key".to_owned()),
            }
        }
        self.persist = Some(Box::new(persist));
        // Retained messages whose expiry passed are gone; the others count down from now.
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
        let mut due_wills = Vec::new();
        for (client_id, (record, subscriptions)) in sessions {
            let client = ByteString::from(client_id.as_str());
            let disconnected = match record.disconnected_ms {
                // It was connected when the broker stopped: it disconnected then.
                0 => now,
                ms => self.persist.as_deref().map_or(now, |p| p.instant(ms)),
            };
            let expires_at = match record.expiry_interval {
                u32::MAX => None,
                secs => Some(disconnected + Duration::from_secs(u64::from(secs))),
            };
            let will = record.will.map(|(publish, delay, due_ms)| {
                let due = match (record.disconnected_ms, due_ms) {
                    (0, _) => now + Duration::from_secs(u64::from(delay)),
                    (_, 0) => now,
                    (_, ms) => self.persist.as_deref().map_or(now, |p| p.instant(ms)),
                };
                (publish, due)
            });
            if expires_at.is_some_and(|at| at <= now) {
                // Gone while the broker was down: its will (if still waiting) went with it.
                report.expired_sessions += 1;
                if let Some((publish, _)) = will {
                    due_wills.push(publish);
                }
                let mut session = BrokerSession::new(client.clone(), record.version);
                session.stored = true;
                session.filters = subscriptions.into_iter().map(|(f, _)| f).collect();
                let mut delivery = ServerSession::default();
                for (_, _, publish) in queued.remove(&client_id).unwrap_or_default() {
                    let _ = delivery.restore(publish, None);
                }
                for packet_id in releasing.remove(&client_id).unwrap_or_default() {
                    let _ = delivery.restore_pubrel(packet_id);
                }
                for pid in pubrels.remove(&client_id).unwrap_or_default() {
                    delivery.restore_awaiting_pubrel(pid);
                }
                session.delivery = Some(Box::new(delivery));
                self.unstore_session(&mut session);
                continue;
            }
            let mut session = BrokerSession::new(client.clone(), record.version);
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
            let mut delivery = ServerSession::default();
            for packet_id in releasing.remove(&client_id).unwrap_or_default() {
                match delivery.restore_pubrel(packet_id) {
                    Ok(()) => report.messages += 1,
                    Err(_) => report
                        .skipped
                        .push(format!("{client_id}: a packet id twice")),
                }
            }
            let mut messages = queued.remove(&client_id).unwrap_or_default();
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
            for pid in pubrels.remove(&client_id).unwrap_or_default() {
                delivery.restore_awaiting_pubrel(pid);
                report.awaiting_pubrel += 1;
            }
            self.flow.queued_bytes += delivery.queued_bytes();
            if let Some(session) = self.session_mut(key) {
                session.delivery = Some(Box::new(delivery));
            }
            if let Some((publish, due)) = will {
                if due <= now || record.expiry_interval == 0 {
                    due_wills.push(publish);
                } else if let Some(session) = self.session_mut(key) {
                    let will = Will {
                        topic: publish.topic.clone(),
                        payload: publish.payload.clone(),
                        qos: publish.qos,
                        retain: publish.retain,
                        properties: will_properties(&publish),
                    };
                    session.pending_will = Some(Box::new((will, due)));
                    self.timers
                        .push(std::cmp::Reverse((due, TimerKey::Will(key))));
                }
            }
            // Its record now says it disconnected (it may have said connected).
            self.store_session(key, disconnected);
        }
        for publish in due_wills {
            self.route(now, None, publish);
        }
        // Sessions for records with no session (skipped above) and wills due now are settled;
        // nothing is connected yet, so nothing waits for the first batch.
        Ok(report)
    }

    pub(super) fn seal_batch(&mut self) -> Option<StoreBatch> {
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

    pub(super) fn stored(&mut self, id: u64) {
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

    pub(super) fn store_failed(&mut self, id: u64, now: Instant) {
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
            let _ = conn
                .server
                .disconnect(now, Disconnect::new(ReasonCode::QuotaExceeded));
            // The DISCONNECT depends on nothing.
            conn.released = conn.handed_out + conn.server.transmit_len() as u64;
            self.after(conn_id, now);
        }
        self.events.push_back(BrokerEvent::StoreFailed);
    }
}

/// The will properties of a message that was a will.
fn will_properties(publish: &Publish) -> crate::packet::WillProperties {
    let p = &publish.properties;
    crate::packet::WillProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Default::default()
    }
}
