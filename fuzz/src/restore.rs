//! The `restore` target: a broker core started from arbitrary stored records, then run for a
//! while. Reading them must never panic, whatever a damaged store holds; what it cannot read it
//! skips.

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;
use mqtt_proto::broker::{Broker, BrokerConfig};
use mqtt_proto::codec;
use mqtt_proto::packet::{Connect, Packet, Version};

/// Reads `[key length][key][value length, 2 bytes][value]` records.
fn records(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some((&klen, rest)) = data.split_first() {
        let klen = usize::from(klen).min(rest.len());
        let (key, rest) = rest.split_at(klen);
        let Some((vlen, rest)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let vlen = usize::from(u16::from_le_bytes(*vlen)).min(rest.len());
        let (value, rest) = rest.split_at(vlen);
        out.push((key, value));
        data = rest;
    }
    out
}

/// The `restore` target.
pub fn restore(data: &[u8]) {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut broker = Broker::new(BrokerConfig::default());
    let records = records(data);
    if broker.restore(now, wall, records.iter().copied()).is_err() {
        return;
    }
    // Clients come back for the sessions that might be there, and time passes (expiry, wills).
    for id in ["a", "b", "x"] {
        let Some(conn) = broker.open(now) else {
            return;
        };
        let mut connect = Connect::new(Version::V5, id);
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(60);
        let mut wire = BytesMut::new();
        if codec::encode(&Packet::Connect(Box::new(connect)), Version::V5, &mut wire).is_ok() {
            broker.handle_bytes(conn, now, &wire);
        }
    }
    for step in [1u64, 30, 3600, 100_000] {
        let later = now + Duration::from_secs(step);
        broker.handle_timeout(later);
        while let Some(batch) = broker.poll_store() {
            broker.handle_stored(batch.id, later);
        }
        while let Some(conn) = broker.poll_ready() {
            broker.poll_transmit(conn, later, &mut BytesMut::new());
        }
        while broker.poll_event().is_some() {}
    }
}
