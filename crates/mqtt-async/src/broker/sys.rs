//! The broker's `$SYS/broker/…` topics: its counters, published retained every `sys_interval`,
//! under mosquitto's names where the meaning is the same, so that dashboards made for mosquitto
//! read them.

use std::time::{Duration, Instant};

use mqtt_proto::broker::{Broker as Core, BrokerEvent, Stats};
use mqtt_proto::packet::{Publish, TopicName};

use super::BridgeStatus;

/// Counters that are the broker's driver's own, and when to publish next.
#[derive(Debug)]
pub(super) struct SysTopics {
    interval: Duration,
    started: Instant,
    next: Instant,
    /// Connected clients now and at most, counted from the core's events.
    connected: usize,
    maximum: usize,
    /// Load averages (messages per minute) over 1, 5 and 15 minutes, received then sent.
    load: [[f64; 3]; 2],
    /// The counters at the last publication, for the load averages.
    last: Option<(Instant, u64, u64)>,
}

/// The load averages' time constants, in seconds.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

impl SysTopics {
    /// Publishes every `interval` from `now` on; `None` for a zero interval (off).
    pub(super) fn new(interval: Duration, now: Instant) -> Option<Self> {
        (!interval.is_zero()).then_some(Self {
            interval,
            started: now,
            next: now,
            connected: 0,
            maximum: 0,
            load: [[0.0; 3]; 2],
            last: None,
        })
    }

    /// When to publish next.
    pub(super) fn deadline(&self) -> Instant {
        self.next
    }

    /// Counts connections from the core's events.
    pub(super) fn note(&mut self, event: &BrokerEvent) {
        match event {
            BrokerEvent::ClientConnected { .. } => {
                self.connected += 1;
                self.maximum = self.maximum.max(self.connected);
            }
            BrokerEvent::ClientDisconnected { .. } => {
                self.connected = self.connected.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// Publishes every topic, retained, if it is time.
    pub(super) fn publish_due(&mut self, core: &mut Core, now: Instant, bridges: &[BridgeStatus]) {
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        let stats = core.stats();
        self.update_load(now, &stats);
        for (topic, value) in self.values(now, &stats, bridges) {
            let Ok(name) = TopicName::new(topic) else {
                continue;
            };
            let mut publish = Publish::new(name, value);
            publish.retain = true;
            let _ = core.publish(now, publish);
        }
    }

    fn update_load(&mut self, now: Instant, stats: &Stats) {
        if let Some((at, received, sent)) = self.last {
            let seconds = now.saturating_duration_since(at).as_secs_f64();
            if seconds > 0.0 {
                let rates = [
                    stats.messages_in.saturating_sub(received) as f64 * 60.0 / seconds,
                    stats.messages_out.saturating_sub(sent) as f64 * 60.0 / seconds,
                ];
                for (averages, rate) in self.load.iter_mut().zip(rates) {
                    for (average, (window, _)) in averages.iter_mut().zip(WINDOWS) {
                        *average += (rate - *average) * (1.0 - (-seconds / window).exp());
                    }
                }
            }
        }
        self.last = Some((now, stats.messages_in, stats.messages_out));
    }

    /// Every topic and its value.
    fn values(
        &self,
        now: Instant,
        stats: &Stats,
        bridges: &[BridgeStatus],
    ) -> Vec<(String, String)> {
        let dropped = &stats.dropped;
        let dropped_total = dropped.queue_full
            + dropped.memory_budget
            + dropped.expired
            + dropped.too_large
            + dropped.not_authorized
            + dropped.retained;
        let uptime = now.saturating_duration_since(self.started).as_secs();
        let mut values: Vec<(String, String)> = [
            ("version", format!("mqtt-rs {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{uptime} seconds")),
            ("clients/connected", self.connected.to_string()),
            ("clients/maximum", self.maximum.to_string()),
            (
                "clients/total",
                stats.sessions.max(self.connected).to_string(),
            ),
            (
                "clients/disconnected",
                stats.sessions.saturating_sub(self.connected).to_string(),
            ),
            ("messages/received", stats.messages_in.to_string()),
            ("messages/sent", stats.messages_out.to_string()),
            ("publish/messages/received", stats.messages_in.to_string()),
            ("publish/messages/sent", stats.messages_out.to_string()),
            ("publish/bytes/received", stats.bytes_in.to_string()),
            ("publish/bytes/sent", stats.bytes_out.to_string()),
            ("publish/messages/dropped", dropped_total.to_string()),
            ("subscriptions/count", stats.subscriptions.to_string()),
            (
                "messages/stored",
                (stats.queued_messages + stats.retained).to_string(),
            ),
            ("retained messages/count", stats.retained.to_string()),
            (
                "store/messages/bytes",
                (stats.queued_bytes + stats.retained_bytes).to_string(),
            ),
            // Ours: drops by cause, and what is held now.
            (
                "publish/messages/dropped/queue-full",
                dropped.queue_full.to_string(),
            ),
            (
                "publish/messages/dropped/memory-budget",
                dropped.memory_budget.to_string(),
            ),
            (
                "publish/messages/dropped/expired",
                dropped.expired.to_string(),
            ),
            (
                "publish/messages/dropped/too-large",
                dropped.too_large.to_string(),
            ),
            (
                "publish/messages/dropped/not-authorized",
                dropped.not_authorized.to_string(),
            ),
            ("retained messages/dropped", dropped.retained.to_string()),
            ("store/queued/bytes", stats.queued_bytes.to_string()),
            ("store/retained/bytes", stats.retained_bytes.to_string()),
            ("publish/acks/held", stats.held_acks.to_string()),
        ]
        .into_iter()
        .map(|(topic, value)| (format!("$SYS/broker/{topic}"), value))
        .collect();
        for (direction, averages) in ["received", "sent"].into_iter().zip(&self.load) {
            for (average, (_, window)) in averages.iter().zip(WINDOWS) {
                values.push((
                    format!("$SYS/broker/load/messages/{direction}/{window}"),
                    format!("{average:.2}"),
                ));
            }
        }
        for bridge in bridges {
            let base = format!("$SYS/broker/bridges/{}", bridge.name);
            let state = if bridge.connected {
                "connected"
            } else {
                "disconnected"
            };
            values.push((format!("{base}/state"), state.to_string()));
            values.push((format!("{base}/messages/sent"), bridge.sent.to_string()));
            values.push((
                format!("{base}/messages/received"),
                bridge.received.to_string(),
            ));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use mqtt_proto::broker::BrokerConfig;
    use mqtt_proto::packet::ByteString;

    use super::*;

    fn value<'a>(values: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        values
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn counts_clients_from_events_and_names_bridges_and_loads() {
        let start = Instant::now();
        let mut sys = SysTopics::new(Duration::from_secs(10), start).unwrap();
        assert!(
            SysTopics::new(Duration::ZERO, start).is_none(),
            "0 turns them off"
        );
        let mut core = Core::new(BrokerConfig::default());
        let Some(connection) = core.open(start) else {
            panic!("a connection");
        };
        let connected = |n: &str| BrokerEvent::ClientConnected {
            connection,
            client_id: ByteString::from(n.to_string()),
            username: None,
            session_present: false,
        };
        sys.note(&connected("a"));
        sys.note(&connected("b"));
        sys.note(&BrokerEvent::ClientDisconnected {
            connection,
            client_id: Some("b".into()),
            username: None,
            reason: mqtt_proto::connection::DisconnectReason::ConnectionLost,
        });
        let mut stats = core.stats();
        sys.update_load(start, &stats);
        stats.messages_in = 600;
        let later = start + Duration::from_secs(60);
        sys.update_load(later, &stats);
        let bridge = BridgeStatus {
            name: "cloud".into(),
            connected: true,
            last_error: None,
            sent: 7,
            received: 3,
            refused: 0,
        };
        let values = sys.values(later, &stats, &[bridge]);
        assert_eq!(value(&values, "$SYS/broker/clients/connected"), Some("1"));
        assert_eq!(value(&values, "$SYS/broker/clients/maximum"), Some("2"));
        assert_eq!(value(&values, "$SYS/broker/uptime"), Some("60 seconds"));
        assert_eq!(
            value(&values, "$SYS/broker/bridges/cloud/state"),
            Some("connected")
        );
        assert_eq!(
            value(&values, "$SYS/broker/bridges/cloud/messages/sent"),
            Some("7")
        );
        // 600 messages in a minute: the 1-minute average moves most, the 15-minute least.
        let load = |window: &str| {
            value(
                &values,
                &format!("$SYS/broker/load/messages/received/{window}"),
            )
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap()
        };
        assert!(load("1min") > load("5min") && load("5min") > load("15min") && load("15min") > 0.0);
        assert!(load("1min") < 600.0);
        // Published at the start, then every interval.
        sys.publish_due(&mut core, start, &[]);
        assert_eq!(sys.deadline(), start + Duration::from_secs(10));
        let retained = core.stats().retained;
        assert!(retained > 20, "{retained}");
        sys.publish_due(&mut core, start + Duration::from_secs(5), &[]);
        assert_eq!(
            sys.deadline(),
            start + Duration::from_secs(10),
            "not due yet"
        );
    }
}
