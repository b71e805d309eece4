//! The `queued` scenario: what a broker's memory holds per message it keeps for disconnected
//! persistent sessions, and whether each session gets exactly its messages when it returns.
//!
//! 1. `sessions` 3.1.1 clients `queued-{i}` connect with Clean Session 0, subscribe to `q/{i}`
//!    at QoS 1 and close their connection, `BATCH` at a time, so that at most that many are
//!    connected. They close without DISCONNECT: rumqttd 0.20, given DISCONNECT and then the
//!    close, frees the connection's id at the first, hands it to the next client, and at the
//!    second disconnects that client.
//! 2. The broker's VmRSS, and ours' own accounting (`Stats::queued_bytes`), before publishing.
//! 3. One 3.1.1 publisher sends `PER_SESSION` QoS 1 messages of `PAYLOAD` bytes to each topic,
//!    round robin over the topics, with `INFLIGHT` (100) in flight: the Receive Maximum ours
//!    (by default) and mosquitto (`max_inflight_messages 100`) announce to 5.0 clients, so as
//!    many as they allow. Each refill of the window goes out in one write. (Not a 5.0
//!    publisher: rumqttd 0.20 panics writing a 5.0 client's message to a 3.1.1 subscriber.)
//! 4. After the last PUBACK (and `SETTLE`), VmRSS and ours' accounting again: the growth per
//!    acknowledged message is what the broker pays per queued message.
//! 5. `SAMPLE` sessions, spread evenly, reconnect with Clean Session 0 and must receive exactly
//!    their `PER_SESSION` messages. What is missing is counted as in the relays: **lost**
//!    (PUBACKed and never delivered), **unacked**, **refused**, **unsent**; a surplus copy is a
//!    **duplicate**.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use mqtt_proto::connection::ClientEvent;
use mqtt_proto::packet::{Publish, QoS, TopicName, Version};

use crate::brokers::BrokerProcess;
use crate::client::Raw;
use crate::memory::BATCH;
use crate::relay::{Ack, ranges};
use crate::{PAYLOAD, STALL};

/// Messages published to each session's topic.
pub(crate) const PER_SESSION: u64 = 100;
/// Sessions that reconnect to collect their messages.
pub(crate) const SAMPLE: usize = 100;
/// Time given to the broker before each VmRSS reading, to finish what it was doing.
const SETTLE: Duration = Duration::from_secs(1);
/// How long a sampled session that has all its messages keeps reading for a surplus one.
const SURPLUS_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Default)]
pub(crate) struct QueuedResult {
    /// Messages the publisher had acknowledged.
    pub(crate) acked: u64,
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    /// Ours only: `Stats::queued_bytes` before and after publishing.
    pub(crate) accounted_before: Option<u64>,
    pub(crate) accounted_after: Option<u64>,
    /// Ours only: messages for disconnected sessions it dropped (queue full, memory budget).
    pub(crate) dropped: Option<u64>,
    /// Opening, subscribing and closing every session.
    pub(crate) setup: Duration,
    /// Acknowledged messages per second, first publish to last PUBACK.
    pub(crate) publish_rate: f64,
    /// The publishing ended because nothing happened for `STALL`.
    pub(crate) publish_stalled: bool,
    /// Sampled sessions, and those among them the broker did not resume (CONNACK without
    /// Session Present).
    pub(crate) sampled: usize,
    pub(crate) not_resumed: usize,
    /// (session, message) pairs of the sample delivered, each counted once.
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) unacked: u64,
    pub(crate) refused: u64,
    pub(crate) unsent: u64,
    pub(crate) duplicates: u64,
    /// Which messages were lost, per session.
    pub(crate) where_lost: Vec<String>,
}

impl QueuedResult {
    /// What the broker's resident memory grew by per acknowledged message.
    pub(crate) fn bytes_per_message(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.acked.max(1) as f64
    }

    /// Ours only: what the broker's own accounting grew by per acknowledged message.
    pub(crate) fn accounted_per_message(&self) -> Option<f64> {
        Some(
            self.accounted_after?.saturating_sub(self.accounted_before?) as f64
                / self.acked.max(1) as f64,
        )
    }

    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "sessions opened in {:.1} s; RSS {:.1} → {:.1} MB, {:.0} B/message",
            self.setup.as_secs_f64(),
            self.rss_before as f64 / 1e6,
            self.rss_after as f64 / 1e6,
            self.bytes_per_message()
        );
        if let Some(accounted) = self.accounted_per_message() {
            line += &format!(" (accounted {accounted:.0} B)");
        }
        line += &format!(
            "; {} acked at {:.0} msg/s; sample of {}: {} delivered, lost {}",
            self.acked, self.publish_rate, self.sampled, self.delivered, self.lost
        );
        for (what, n) in [
            ("unacked", self.unacked),
            ("refused", self.refused),
            ("unsent", self.unsent),
            ("duplicates", self.duplicates),
            ("not resumed", self.not_resumed as u64),
            ("dropped by the broker", self.dropped.unwrap_or(0)),
        ] {
            if n > 0 {
                line += &format!(", {what} {n}");
            }
        }
        if self.publish_stalled {
            line += &format!(
                " (publishing ended after {} s without progress)",
                STALL.as_secs()
            );
        }
        line
    }
}

pub(crate) async fn queued(
    broker: &mut BrokerProcess,
    sessions: usize,
) -> anyhow::Result<QueuedResult> {
    let addr = broker.addr();
    let started = Instant::now();
    open_sessions(addr, sessions).await?;
    let setup = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss_before = broker.rss()?;
    let stats_before = broker.our_stats().await?;
    let topics = (0..sessions)
        .map(|i| TopicName::new(format!("q/{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let published = publish_all(addr, &topics).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_after = broker.rss()?;
    let stats_after = broker.our_stats().await?;
    let acked = published
        .acks
        .iter()
        .filter(|ack| **ack == Ack::Acked)
        .count() as u64;
    let mut result = QueuedResult {
        acked,
        rss_before,
        rss_after,
        accounted_before: stats_before.map(|s| s.queued_bytes),
        accounted_after: stats_after.map(|s| s.queued_bytes),
        dropped: stats_after.map(|s| s.dropped),
        setup,
        publish_rate: acked as f64 / published.elapsed.as_secs_f64().max(1e-9),
        publish_stalled: published.stalled,
        ..QueuedResult::default()
    };
    let sample: Vec<usize> = (0..SAMPLE.min(sessions))
        .map(|k| k * sessions / SAMPLE.min(sessions))
        .collect();
    for batch in sample.chunks(BATCH) {
        let mut tasks = tokio::task::JoinSet::new();
        for &session in batch {
            tasks.spawn(collect(addr, session));
        }
        while let Some(done) = tasks.join_next().await {
            let collected = done??;
            result.count(&collected, &published, sessions);
        }
    }
    Ok(result)
}

impl QueuedResult {
    /// Adds one sampled session's deliveries, and counts what it is missing.
    fn count(&mut self, collected: &Collected, published: &Published, sessions: usize) {
        self.sampled += 1;
        self.not_resumed += usize::from(!collected.session_present);
        self.duplicates += collected.duplicates;
        let mut lost = Vec::new();
        for (seq, got) in collected.received.iter().enumerate() {
            if *got {
                self.delivered += 1;
                continue;
            }
            let index = message_index(collected.session, seq as u64, sessions);
            let missing = if index >= published.sent {
                &mut self.unsent
            } else {
                match published.acks[index as usize] {
                    Ack::Acked => {
                        lost.push(seq as u64);
                        &mut self.lost
                    }
                    Ack::Refused => &mut self.refused,
                    Ack::Pending => &mut self.unacked,
                }
            };
            *missing += 1;
        }
        if !lost.is_empty() {
            self.where_lost.push(format!(
                "{} of session {} ({})",
                lost.len(),
                collected.session,
                ranges(&lost)
            ));
        }
    }
}

/// The publisher's `seq`th message to `session`, in publishing order (round robin).
fn message_index(session: usize, seq: u64, sessions: usize) -> u64 {
    seq * sessions as u64 + session as u64
}

fn session_id(i: usize) -> String {
    format!("queued-{i:05}")
}

/// A payload of `PAYLOAD` bytes that says whose message it is and which.
fn payload(session: usize, seq: u64) -> Bytes {
    let mut payload = [0u8; PAYLOAD];
    payload[..4].copy_from_slice(&(session as u32).to_be_bytes());
    payload[4..12].copy_from_slice(&seq.to_be_bytes());
    Bytes::copy_from_slice(&payload)
}

fn read_payload(payload: &[u8]) -> Option<(usize, u64)> {
    let session = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    Some((session as usize, seq))
}

/// Opens, subscribes and closes every session, `BATCH` at a time.
async fn open_sessions(addr: SocketAddr, sessions: usize) -> anyhow::Result<()> {
    let mut next = 0;
    while next < sessions {
        let batch = (sessions - next).min(BATCH);
        let mut tasks = tokio::task::JoinSet::new();
        for i in next..next + batch {
            tasks.spawn(async move {
                let config = Raw::persistent_config(&session_id(i), Version::V3_1_1);
                let mut raw = Raw::connect_with(addr, config).await?;
                raw.subscribe(&format!("q/{i}"), QoS::AtLeastOnce)
                    .await
                    .with_context(|| format!("session {i}: subscribing"))?;
                raw.close()
                    .await
                    .with_context(|| format!("session {i}: closing"))
            });
        }
        while let Some(done) = tasks.join_next().await {
            done?.context("opening a session")?;
        }
        next += batch;
    }
    Ok(())
}

struct Published {
    /// Messages handed to the connection: indexes `0..sent`.
    sent: u64,
    /// Per message index.
    acks: Vec<Ack>,
    /// First publish to last PUBACK.
    elapsed: Duration,
    stalled: bool,
}

/// Publishes `PER_SESSION` messages to each topic, `INFLIGHT` in flight.
async fn publish_all(addr: SocketAddr, topics: &[TopicName]) -> anyhow::Result<Published> {
    let mut raw = Raw::connect(addr, "queued-publisher", Version::V3_1_1).await?;
    let window = raw.conn.send_window();
    let total = topics.len() as u64 * PER_SESSION;
    let mut acks = vec![Ack::Pending; total as usize];
    // Packet identifier → index of the message in flight with it.
    let mut ids = vec![0u64; usize::from(u16::MAX) + 1];
    let mut sent = 0;
    let mut completed = 0;
    let mut stalled = false;
    let start = Instant::now();
    loop {
        let room = (window.saturating_sub(raw.conn.inflight()) as u64).min(total - sent);
        for _ in 0..room {
            let session = (sent % topics.len() as u64) as usize;
            let seq = sent / topics.len() as u64;
            let mut publish = Publish::new(topics[session].clone(), payload(session, seq));
            publish.qos = QoS::AtLeastOnce;
            if let Some(id) = raw.conn.publish(Instant::now(), publish)? {
                ids[usize::from(id.get())] = sent;
            }
            sent += 1;
        }
        // One write for the whole refill. A broker that stops reading ends the run.
        match tokio::time::timeout(STALL, raw.flush()).await {
            Ok(flushed) => flushed?,
            Err(_) => {
                stalled = true;
                break;
            }
        }
        if completed == total {
            break;
        }
        match tokio::time::timeout(STALL, raw.read()).await {
            Ok(read) => read?,
            Err(_) => {
                stalled = true;
                break;
            }
        }
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Published(outcome) => {
                    let index = ids[usize::from(outcome.packet_id.get())];
                    acks[index as usize] = if outcome.reason_code.is_error() {
                        Ack::Refused
                    } else {
                        Ack::Acked
                    };
                    completed += 1;
                }
                ClientEvent::Disconnected(why) => bail!("the publisher was disconnected: {why:?}"),
                _ => {}
            }
        }
    }
    let elapsed = start.elapsed();
    // Its buffers are not the broker's queue: closed before the second VmRSS reading.
    if !stalled {
        raw.disconnect().await?;
    }
    Ok(Published {
        sent,
        acks,
        elapsed,
        stalled,
    })
}

struct Collected {
    session: usize,
    session_present: bool,
    /// Per sequence number: delivered.
    received: Vec<bool>,
    duplicates: u64,
}

/// Resumes `session` and reads its messages until it has them all (and `SURPLUS_WAIT` more) or
/// nothing came for `STALL`.
async fn collect(addr: SocketAddr, session: usize) -> anyhow::Result<Collected> {
    let config = Raw::persistent_config(&session_id(session), Version::V3_1_1);
    let mut raw = Raw::connect_with(addr, config).await?;
    let mut collected = Collected {
        session,
        session_present: raw.conn.session_present(),
        received: vec![false; PER_SESSION as usize],
        duplicates: 0,
    };
    let mut delivered = 0;
    loop {
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Message(message) => {
                    let publish = &message.publish;
                    let (owner, seq) = read_payload(&publish.payload)
                        .filter(|(owner, _)| *owner == session)
                        .with_context(|| {
                            format!(
                                "session {session}: a foreign message on {:?}",
                                &*publish.topic
                            )
                        })?;
                    let Some(seen) = collected.received.get_mut(seq as usize) else {
                        bail!("session {owner}: sequence number {seq} out of range");
                    };
                    if *seen {
                        collected.duplicates += 1;
                    } else {
                        *seen = true;
                        delivered += 1;
                    }
                }
                ClientEvent::Disconnected(why) => bail!("session {session} disconnected: {why:?}"),
                _ => {}
            }
        }
        // Acknowledgements.
        raw.flush().await?;
        let wait = if delivered == PER_SESSION {
            SURPLUS_WAIT
        } else {
            STALL
        };
        match tokio::time::timeout(wait, raw.read()).await {
            Ok(read) => read?,
            Err(_) => break,
        }
    }
    raw.close().await?;
    Ok(collected)
}
