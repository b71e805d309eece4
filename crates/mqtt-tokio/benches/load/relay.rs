//! The `broker` scenario: relays of stamped messages from publishers to subscribers through a
//! broker, and what went missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use mqtt_proto::connection::ClientEvent;
use mqtt_proto::packet::{Publish, QoS, TopicName, Version};
use tokio::sync::{Notify, watch};

use crate::brokers::BrokerProcess;
use crate::client::{Endpoint, Raw, Stamp, nanos_since_epoch};
use crate::{FULL_MESSAGES, IN_TRANSIT, STALL};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Relay {
    pub(crate) name: &'static str,
    pub(crate) version: Version,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    /// Messages per publisher at `--messages 100000`.
    per_publisher: u64,
    /// The subscribers' sessions persist (`Raw::persistent_config`): what a persisting broker
    /// writes to disk.
    persistent: bool,
}

impl Relay {
    /// Messages all publishers send together at `--messages messages`.
    pub(crate) fn total(&self, messages: u64) -> u64 {
        self.per_publisher(messages) * self.publishers as u64
    }

    fn per_publisher(&self, messages: u64) -> u64 {
        (self.per_publisher * messages / FULL_MESSAGES).max(1)
    }

    /// Publisher `i`'s topic: fan-in gives each publisher its own, which tells the subscriber
    /// whose a message is.
    fn topic(&self, i: usize) -> anyhow::Result<TopicName> {
        Ok(if self.publishers > 1 {
            TopicName::new(format!("load/in/{i}"))?
        } else {
            TopicName::new("load/topic")?
        })
    }

    fn filter(&self) -> &'static str {
        if self.publishers > 1 {
            "load/in/+"
        } else {
            "load/topic"
        }
    }
}

pub(crate) const RELAYS: [Relay; 6] = [
    Relay {
        name: "1→1 QoS 0",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtMostOnce,
        per_publisher: 100_000,
        persistent: false,
    },
    Relay {
        name: "1→1 QoS 1",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 100_000,
        persistent: false,
    },
    Relay {
        name: "10→1 QoS 1 3.1.1",
        version: Version::V3_1_1,
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 20_000,
        persistent: false,
    },
    Relay {
        name: "10→1 QoS 1 5.0",
        version: Version::V5,
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 20_000,
        persistent: false,
    },
    Relay {
        name: "1→10 QoS 0",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 10,
        qos: QoS::AtMostOnce,
        per_publisher: 100_000,
        persistent: false,
    },
    Relay {
        name: "1→10 QoS 1",
        version: Version::V3_1_1,
        publishers: 1,
        subscribers: 10,
        qos: QoS::AtLeastOnce,
        per_publisher: 100_000,
        persistent: false,
    },
];

/// The `persist` scenario's relays: fan-in at QoS 1 into one persistent session, whose
/// messages a persisting broker stores from their arrival until the subscriber's PUBACK.
pub(crate) const PERSIST_RELAYS: [Relay; 2] = [
    Relay {
        name: "10→1 QoS 1 3.1.1 CS0",
        version: Version::V3_1_1,
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 10_000,
        persistent: true,
    },
    Relay {
        name: "10→1 QoS 1 5.0 expiry",
        version: Version::V5,
        publishers: 10,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        per_publisher: 10_000,
        persistent: true,
    },
];

/// What the publishers and subscribers of one run share.
pub(crate) struct Shared {
    publishers: usize,
    subscribers: usize,
    /// Per publisher: messages handed to its connection.
    published: Vec<AtomicU64>,
    /// Per (subscriber, publisher), at `subscriber * publishers + publisher`: the publisher's
    /// messages the subscriber received, each counted once.
    received: Vec<AtomicU64>,
    /// When anything last happened (a publish sent, an acknowledgement, a delivery), in
    /// nanoseconds since `epoch()`.
    progress_at: AtomicU64,
    /// Deliveries wake publishers waiting for room.
    wake: Notify,
    /// Set when nothing happened for `STALL`: everyone stops and reports.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn new(publishers: usize, subscribers: usize) -> Self {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Shared {
            publishers,
            subscribers,
            published: counters(publishers),
            received: counters(publishers * subscribers),
            progress_at: AtomicU64::new(nanos_since_epoch()),
            wake: Notify::new(),
            stop: watch::Sender::new(false),
        }
    }

    /// How many more messages `publisher` may send now.
    fn room(&self, publisher: usize) -> u64 {
        let published = self.published[publisher].load(Ordering::Acquire);
        let delivered = (0..self.subscribers)
            .map(|s| self.received[s * self.publishers + publisher].load(Ordering::Acquire))
            .min()
            .unwrap_or(published);
        IN_TRANSIT.saturating_sub(published.saturating_sub(delivered))
    }

    fn progressed(&self) {
        self.progress_at
            .store(nanos_since_epoch(), Ordering::Release);
    }

    fn idle(&self) -> Duration {
        Duration::from_nanos(
            nanos_since_epoch().saturating_sub(self.progress_at.load(Ordering::Acquire)),
        )
    }

    fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Resolves once the run is stopped.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RelayResult {
    /// Deliveries per second, all subscribers together, from the first publish to the last
    /// delivery.
    pub(crate) rate: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    /// Broker CPU time per delivery: less sensitive to what else runs on the machine than the
    /// rate.
    pub(crate) cpu_ns: f64,
    /// (subscriber, message) pairs delivered, each counted once.
    pub(crate) delivered: u64,
    /// Acknowledged (QoS 1) or sent (QoS 0), never delivered.
    pub(crate) lost: u64,
    /// Sent, neither acknowledged nor delivered when the run ended.
    pub(crate) unacked: u64,
    /// Refused by a PUBACK with an error reason code.
    pub(crate) refused: u64,
    /// Never sent: the publisher had no room for them when the run ended.
    pub(crate) unsent: u64,
    /// Deliveries of a message the subscriber already had.
    pub(crate) duplicates: u64,
    /// The run ended because nothing happened for `STALL`.
    pub(crate) stalled: bool,
    /// Which messages were lost, per (publisher, subscriber): for whoever hunts the bug.
    pub(crate) where_lost: Vec<String>,
}

impl RelayResult {
    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{:>9.0} msg/s  p50 {:>6} µs  p99 {:>6} µs  CPU {:>5.0} ns/msg  lost {}",
            self.rate, self.p50_us, self.p99_us, self.cpu_ns, self.lost
        );
        for (what, n) in [
            ("unacked", self.unacked),
            ("refused", self.refused),
            ("unsent", self.unsent),
            ("duplicates", self.duplicates),
        ] {
            if n > 0 {
                line += &format!(", {what} {n}");
            }
        }
        if self.stalled {
            line += &format!(" (ended after {} s without progress)", STALL.as_secs());
        }
        line
    }
}

/// Sorted sequence numbers as ranges, `0–199, 1200, 1300–1310`; the first few only.
pub(crate) fn ranges(seqs: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in seqs {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == seq => *end = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    let mut text: Vec<String> = ranges
        .iter()
        .take(8)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect();
    if ranges.len() > 8 {
        text.push(format!("… {} ranges in all", ranges.len()));
    }
    text.join(", ")
}

/// A publisher's view of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    Pending,
    Acked,
    Refused,
}

pub(crate) struct PublisherReport {
    /// Messages handed to the connection: sequence numbers `0..sent`.
    sent: u64,
    /// Per sequence number (QoS 1).
    acks: Vec<Ack>,
    /// Kept open until the run ends.
    _raw: Raw,
}

pub(crate) struct SubscriberReport {
    /// Per publisher, per sequence number: delivered.
    received: Vec<Vec<bool>>,
    delivered: u64,
    duplicates: u64,
    last: Instant,
    histogram: Histogram<u64>,
    _raw: Raw,
}

pub(crate) async fn relay(
    broker: &BrokerProcess,
    relay: Relay,
    messages: u64,
) -> anyhow::Result<RelayResult> {
    relay_over(broker, relay, messages, false).await
}

/// A relay whose clients all speak MQTT over WebSocket (`websocket`), or TCP.
pub(crate) async fn relay_over(
    broker: &BrokerProcess,
    relay: Relay,
    messages: u64,
    websocket: bool,
) -> anyhow::Result<RelayResult> {
    let addr = match websocket {
        true => Endpoint::Ws(broker.ws_addr().context("no WebSocket listener")?),
        false => Endpoint::Tcp(broker.addr_for(relay.version)),
    };
    relay_between(broker, addr, addr, relay, messages).await
}

/// A relay through a bridge: publishers on `edge`, subscribers on `remote`, which `edge`
/// bridges to. The CPU time is the edge broker's, which runs the bridge. Once the subscribers
/// are subscribed, a probe (QoS 1 messages on `load/probe` until one arrives at the remote
/// broker) makes sure the bridge is up before the clock starts.
pub(crate) async fn relay_bridged(
    edge: &BrokerProcess,
    remote: &BrokerProcess,
    relay: Relay,
    messages: u64,
) -> anyhow::Result<RelayResult> {
    let publish_at = Endpoint::Tcp(edge.addr_for(relay.version));
    let subscribe_at = Endpoint::Tcp(remote.addr_for(relay.version));
    probe(publish_at, subscribe_at, relay.version).await?;
    relay_between(edge, publish_at, subscribe_at, relay, messages).await
}

/// Publishes QoS 1 messages on `load/probe` at `publish_at` until one arrives at `subscribe_at`.
async fn probe(
    publish_at: Endpoint,
    subscribe_at: Endpoint,
    version: Version,
) -> anyhow::Result<()> {
    let mut subscriber = Raw::connect(subscribe_at, "load-probe-sub", version).await?;
    subscriber.subscribe("load/probe", QoS::AtLeastOnce).await?;
    let mut publisher = Raw::connect(publish_at, "load-probe-pub", version).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let topic = TopicName::new("load/probe")?;
    loop {
        let mut probe = Publish::new(topic.clone(), &b"probe"[..]);
        probe.qos = QoS::AtLeastOnce;
        publisher.conn.publish(Instant::now(), probe)?;
        publisher.flush().await?;
        let arrived = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                subscriber.read().await?;
                while let Some(event) = subscriber.conn.poll_event() {
                    if let ClientEvent::Message(_) = event {
                        return anyhow::Ok(());
                    }
                }
                subscriber.flush().await?;
            }
        })
        .await;
        if let Ok(result) = arrived {
            result?;
            break;
        }
        publisher.try_read()?;
        while publisher.conn.poll_event().is_some() {}
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bridge did not carry a message in 30 s"
        );
    }
    subscriber.flush().await?;
    subscriber.disconnect().await?;
    publisher.disconnect().await?;
    Ok(())
}

/// A relay with its publishers at `publish_at` and its subscribers at `subscribe_at`; the CPU
/// time is `broker`'s.
async fn relay_between(
    broker: &BrokerProcess,
    publish_at: Endpoint,
    subscribe_at: Endpoint,
    relay: Relay,
    messages: u64,
) -> anyhow::Result<RelayResult> {
    let addr = subscribe_at;
    let per_publisher = relay.per_publisher(messages);
    let shared = Arc::new(Shared::new(relay.publishers, relay.subscribers));
    let topics = (0..relay.publishers)
        .map(|i| relay.topic(i))
        .collect::<anyhow::Result<Arc<[TopicName]>>>()?;
    let mut subscribers = tokio::task::JoinSet::new();
    for i in 0..relay.subscribers {
        let id = format!("load-sub-{i}");
        let config = if relay.persistent {
            Raw::persistent_config(&id, relay.version)
        } else {
            Raw::config(&id, relay.version)
        };
        let mut raw = Raw::connect_with(addr, config).await?;
        raw.subscribe(relay.filter(), relay.qos).await?;
        subscribers.spawn(subscribe_loop(
            raw,
            i,
            per_publisher,
            topics.clone(),
            shared.clone(),
        ));
    }
    let mut raws = Vec::new();
    for i in 0..relay.publishers {
        raws.push(Raw::connect(publish_at, &format!("load-pub-{i}"), relay.version).await?);
    }
    let cpu_before = broker.cpu()?;
    let start = Instant::now();
    shared.progressed();
    let mut publishers = tokio::task::JoinSet::new();
    for (i, raw) in raws.into_iter().enumerate() {
        publishers.spawn(publish_loop(
            raw,
            i,
            topics[i].clone(),
            relay.qos,
            per_publisher,
            shared.clone(),
        ));
    }
    // Ends the run when nothing happens: only then may a message be missing.
    let watchdog = tokio::spawn({
        let shared = shared.clone();
        async move {
            while shared.idle() < STALL {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            shared.stop.send_replace(true);
        }
    });
    let mut failure = None;
    let mut sent = Vec::new();
    while let Some(done) = publishers.join_next().await {
        match done.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(report) => sent.push(report),
            Err(e) => {
                shared.stop.send_replace(true);
                failure.get_or_insert(e.context("publisher"));
            }
        }
    }
    let mut received = Vec::new();
    while let Some(done) = subscribers.join_next().await {
        match done.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(report) => received.push(report),
            Err(e) => {
                shared.stop.send_replace(true);
                failure.get_or_insert(e.context("subscriber"));
            }
        }
    }
    let stalled = shared.is_stopped();
    watchdog.abort();
    let cpu = broker.cpu()?.saturating_sub(cpu_before);
    if let Some(e) = failure {
        return Err(e);
    }
    sent.sort_by_key(|(i, _)| *i);
    received.sort_by_key(|(i, _)| *i);
    let mut result = RelayResult {
        stalled,
        ..RelayResult::default()
    };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut end = start;
    for (s, subscriber) in &received {
        result.delivered += subscriber.delivered;
        result.duplicates += subscriber.duplicates;
        end = end.max(subscriber.last);
        histogram.add(&subscriber.histogram)?;
        for ((p, publisher), received) in sent.iter().zip(&subscriber.received) {
            let mut lost = Vec::new();
            for (seq, _) in received.iter().enumerate().filter(|(_, got)| !**got) {
                let seq = seq as u64;
                let missing = if seq >= publisher.sent {
                    &mut result.unsent
                } else if relay.qos == QoS::AtMostOnce || publisher.acks[seq as usize] == Ack::Acked
                {
                    lost.push(seq);
                    &mut result.lost
                } else if publisher.acks[seq as usize] == Ack::Refused {
                    &mut result.refused
                } else {
                    &mut result.unacked
                };
                *missing += 1;
            }
            if !lost.is_empty() {
                result.where_lost.push(format!(
                    "{} of publisher {p} to subscriber {s} ({})",
                    lost.len(),
                    ranges(&lost)
                ));
            }
        }
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    result.rate = if elapsed > 0.0 {
        result.delivered as f64 / elapsed
    } else {
        0.0
    };
    result.p50_us = histogram.value_at_quantile(0.5);
    result.p99_us = histogram.value_at_quantile(0.99);
    result.cpu_ns = cpu.as_nanos() as f64 / result.delivered.max(1) as f64;
    Ok(result)
}

pub(crate) async fn publish_loop(
    mut raw: Raw,
    index: usize,
    topic: TopicName,
    qos: QoS,
    count: u64,
    shared: Arc<Shared>,
) -> anyhow::Result<(usize, PublisherReport)> {
    let mut stop = shared.stop.subscribe();
    let mut acks = vec![Ack::Pending; count as usize];
    // Packet identifier → sequence number of the message in flight with it.
    let mut ids = vec![0u64; usize::from(u16::MAX) + 1];
    let mut sent = 0;
    let mut completed = 0;
    loop {
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        // Acknowledgements first: they open the window for what the flush below sends.
        raw.try_read()?;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Published(outcome) => {
                    let seq = ids[usize::from(outcome.packet_id.get())];
                    acks[seq as usize] = if outcome.reason_code.is_error() {
                        Ack::Refused
                    } else {
                        Ack::Acked
                    };
                    completed += 1;
                    shared.progressed();
                }
                ClientEvent::Disconnected(why) => bail!("publisher {index} disconnected: {why:?}"),
                _ => {}
            }
        }
        let room = shared.room(index).min(count - sent).min(64);
        for _ in 0..room {
            let mut publish = Publish::new(topic.clone(), Stamp::payload(index, sent));
            publish.qos = qos;
            if let Some(id) = raw.conn.publish(Instant::now(), publish)? {
                ids[usize::from(id.get())] = sent;
            }
            sent += 1;
            shared.published[index].fetch_add(1, Ordering::AcqRel);
        }
        if room > 0 {
            shared.progressed();
        }
        // A broker that stops reading must not keep the run from ending.
        tokio::select! {
            flushed = raw.flush() => flushed?,
            _ = stopped(&mut stop) => break,
        }
        let finished = sent == count && (qos == QoS::AtMostOnce || completed == count);
        if finished || shared.is_stopped() {
            break;
        }
        if room == 0 || sent == count {
            // Nothing to send now: wait for deliveries (room) or acknowledgements.
            tokio::select! {
                _ = &mut wake => {}
                read = raw.read() => read?,
                _ = stopped(&mut stop) => break,
            }
        }
    }
    let report = PublisherReport {
        sent,
        acks,
        _raw: raw,
    };
    Ok((index, report))
}

pub(crate) async fn subscribe_loop(
    mut raw: Raw,
    index: usize,
    per_publisher: u64,
    topics: Arc<[TopicName]>,
    shared: Arc<Shared>,
) -> anyhow::Result<(usize, SubscriberReport)> {
    let mut stop = shared.stop.subscribe();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = vec![vec![false; per_publisher as usize]; topics.len()];
    let expected = per_publisher * topics.len() as u64;
    let mut delivered = 0;
    let mut duplicates = 0;
    let mut last = Instant::now();
    while delivered < expected {
        tokio::select! {
            read = raw.read() => read?,
            _ = stopped(&mut stop) => break,
        }
        let before = delivered;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Message(message) => {
                    let publish = &message.publish;
                    let stamp = Stamp::read(&publish.payload)
                        .filter(|s| topics.get(s.publisher) == Some(&publish.topic))
                        .with_context(|| format!("a foreign message on {:?}", &*publish.topic))?;
                    let Some(seen) = received[stamp.publisher].get_mut(stamp.seq as usize) else {
                        bail!("sequence number {} out of range", stamp.seq);
                    };
                    if *seen {
                        duplicates += 1;
                        continue;
                    }
                    *seen = true;
                    delivered += 1;
                    let _ = histogram.record(stamp.latency_us().max(1));
                    shared.received[index * shared.publishers + stamp.publisher]
                        .fetch_add(1, Ordering::AcqRel);
                }
                ClientEvent::Disconnected(why) => bail!("subscriber {index} disconnected: {why:?}"),
                _ => {}
            }
        }
        if delivered > before {
            last = Instant::now();
            shared.progressed();
            shared.wake.notify_waiters();
        }
        // Acknowledgements.
        tokio::select! {
            flushed = raw.flush() => flushed?,
            _ = stopped(&mut stop) => break,
        }
    }
    let report = SubscriberReport {
        received,
        delivered,
        duplicates,
        last,
        histogram,
        _raw: raw,
    };
    Ok((index, report))
}
