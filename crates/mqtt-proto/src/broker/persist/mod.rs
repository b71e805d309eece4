//! Durability, with no I/O: the broker's lasting state as records a store keeps, changed in
//! batches the driver makes durable, and given back at start.
//!
//! Turned on by [`Broker::restore`](crate::broker::Broker::restore) (with whatever a store holds, nothing the first time).
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
//! **Nothing goes out before what it tells of is durable.** [`Broker::poll_store`](crate::broker::Broker::poll_store) seals the
//! changes made since the last call into a [`StoreBatch`]; every connection's output produced
//! until then (PUBACK/PUBREC to publishers, messages to subscribers, CONNACK and SUBACK) is held
//! until [`Broker::handle_stored`](crate::broker::Broker::handle_stored) says the batch is durable, so one `fsync` covers a whole turn
//! of the driver (group commit). While no change waits, output is not held at all. When a
//! batch cannot be stored ([`Broker::handle_store_failed`](crate::broker::Broker::handle_store_failed)), the output that depended on it is
//! discarded and those connections are closed (their publishers send again, their subscribers
//! get the messages on their next connection); the changes are kept for the next batch.
//!
//! At start, sessions that were connected when the broker stopped are treated as having
//! disconnected then (uncleanly: their wills are published, after their delay).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::session::SubValue;
use crate::codec::{self, Limits};
use crate::packet::{Packet, PacketId, Publish, QoS, SubscriptionId, SubscriptionOptions, Version};

mod restore;
mod write;

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

/// Changes to apply atomically, then report with [`Broker::handle_stored`](crate::broker::Broker::handle_stored) (or
/// [`Broker::handle_store_failed`](crate::broker::Broker::handle_store_failed)), in the order the batches came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreBatch {
    /// Its number, increasing.
    pub id: u64,
    /// The changes, in order (a later one on the same key wins).
    pub ops: Vec<StoreOp>,
}

/// What [`Broker::restore`](crate::broker::Broker::restore) found.
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

/// Why [`Broker::restore`](crate::broker::Broker::restore) refused.
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
    let encoded = codec::encode(&Packet::Publish(publish), Version::V5, buf);
    // A message the broker holds was decoded or checked once: it encodes.
    debug_assert!(encoded.is_ok(), "{encoded:?}");
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
