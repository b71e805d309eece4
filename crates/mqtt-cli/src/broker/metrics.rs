//! `mqtt broker --metrics ADDR`: the broker's counters for Prometheus, at `/metrics`.
//!
//! The exposition is prometheus-client's (the Prometheus project's own Rust crate), in the
//! OpenMetrics text format, which Prometheus scrapes; the HTTP server is tiny_http on a thread
//! of its own (a scrape every few seconds needs no more). Each scrape asks the broker for a
//! fresh snapshot of its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use mqtt_tokio::broker::{BridgeStatus, DriverStats, Stats};
use mqtt_tokio::{BrokerHandle, DisconnectReason, PeerEvent, ReasonCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// What the CLI counts itself, from the broker's events.
#[derive(Debug, Default)]
pub(crate) struct EventCounts {
    /// Clients refused for their credentials or rights.
    auth_failures: AtomicU64,
}

impl EventCounts {
    /// Counts what `event` tells.
    pub(crate) fn note(&self, event: &PeerEvent) {
        if let PeerEvent::Disconnected {
            reason: DisconnectReason::Refused { reason_code, .. },
            ..
        } = event
            && matches!(
                reason_code,
                ReasonCode::BadUserNameOrPassword
                    | ReasonCode::NotAuthorized
                    | ReasonCode::BadAuthenticationMethod
            )
        {
            self.auth_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Serves `/metrics` on `addr` from a thread of its own; returns the address it listens on.
pub(crate) fn serve(
    addr: std::net::SocketAddr,
    handle: BrokerHandle,
    events: Arc<EventCounts>,
) -> anyhow::Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr)
        .map_err(|error| anyhow::anyhow!("{error}"))
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("the metrics listener has no IP address")?;
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now();
    std::thread::Builder::new()
        .name("mqtt-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let snapshot = runtime.block_on(async {
                        Snapshot {
                            stats: handle.stats().await.unwrap_or_default(),
                            driver: handle.driver_stats().await.unwrap_or_default(),
                            bridges: handle.bridges().await,
                            auth_failures: events.auth_failures.load(Ordering::Relaxed),
                            uptime: started.elapsed().as_secs(),
                        }
                    });
                    let mut registry = Registry::default();
                    registry.register_collector(Box::new(snapshot));
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => tiny_http::Response::from_string(body).with_header(
                            tiny_http::Header::from_bytes(
                                "Content-Type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .expect("a valid header"),
                        ),
                        Err(error) => {
                            warn!("cannot encode the metrics: {error}");
                            tiny_http::Response::from_string("cannot encode the metrics")
                                .with_status_code(500)
                        }
                    }
                } else {
                    tiny_http::Response::from_string("see /metrics").with_status_code(404)
                };
                // A scraper that went away: nothing to do.
                let _ = request.respond(response);
            }
        })
        .context("cannot start the metrics thread")?;
    info!("metrics at http://{bound}/metrics");
    Ok(bound)
}

/// One scrape's values.
#[derive(Debug)]
struct Snapshot {
    stats: Stats,
    driver: DriverStats,
    bridges: Vec<BridgeStatus>,
    auth_failures: u64,
    uptime: u64,
}

/// Encodes one unlabelled metric.
fn one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Encodes a metric with one label, a value per label value.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, M)>,
    metric_type: prometheus_client::metrics::MetricType,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in values {
        let labels = [(label, value.as_str())];
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let s = &self.stats;
        let gauge = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        let e = &mut encoder;
        one(
            e,
            "mqtt_uptime_seconds",
            "Seconds since the broker started",
            ConstGauge::new(self.uptime as i64),
        )?;
        one(
            e,
            "mqtt_connections",
            "Connected clients",
            gauge(s.connections),
        )?;
        one(
            e,
            "mqtt_sessions",
            "Sessions, connected or not",
            gauge(s.sessions),
        )?;
        one(
            e,
            "mqtt_subscriptions",
            "Subscriptions",
            gauge(s.subscriptions),
        )?;
        one(
            e,
            "mqtt_queued_messages",
            "Messages kept for sessions, in flight and waiting",
            gauge(s.queued_messages),
        )?;
        one(
            e,
            "mqtt_retained_messages",
            "Retained messages",
            gauge(s.retained),
        )?;
        one(
            e,
            "mqtt_retained_bytes",
            "Bytes the retained messages weigh",
            gauge(s.retained_bytes),
        )?;
        one(
            e,
            "mqtt_queued_bytes",
            "Bytes of the messages queued for sessions",
            gauge(s.queued_bytes),
        )?;
        one(
            e,
            "mqtt_incoming_bytes",
            "Bytes reserved by large packets being received",
            gauge(s.incoming_bytes),
        )?;
        one(
            e,
            "mqtt_held_acks",
            "Acknowledgements held back from publishers (a full queue)",
            gauge(s.held_acks),
        )?;
        one(
            e,
            "mqtt_messages_received",
            "PUBLISH packets received from clients",
            ConstCounter::new(s.messages_in),
        )?;
        one(
            e,
            "mqtt_messages_sent",
            "PUBLISH packets sent or queued to clients",
            ConstCounter::new(s.messages_out),
        )?;
        one(
            e,
            "mqtt_publish_bytes_received",
            "Payload bytes received",
            ConstCounter::new(s.bytes_in),
        )?;
        one(
            e,
            "mqtt_publish_bytes_sent",
            "Payload bytes sent or queued",
            ConstCounter::new(s.bytes_out),
        )?;
        one(
            e,
            "mqtt_sessions_refused",
            "Clients refused at the session limit",
            ConstCounter::new(s.refused_sessions),
        )?;
        one(
            e,
            "mqtt_congestion_disconnects",
            "Clients disconnected for a queue full too long",
            ConstCounter::new(s.congestion_disconnects),
        )?;
        one(
            e,
            "mqtt_auth_failures",
            "Clients refused for their credentials or rights",
            ConstCounter::new(self.auth_failures),
        )?;
        for (name, help, counts) in [
            (
                "mqtt_messages_received_by_qos",
                "PUBLISH packets received from clients, by QoS",
                s.messages_in_by_qos,
            ),
            (
                "mqtt_messages_sent_by_qos",
                "PUBLISH packets sent or queued to clients, by the QoS delivered at",
                s.messages_out_by_qos,
            ),
        ] {
            family(
                e,
                name,
                help,
                "qos",
                counts
                    .into_iter()
                    .enumerate()
                    .map(|(qos, n)| (qos.to_string(), ConstCounter::new(n))),
                MetricType::Counter,
            )?;
        }
        let r = &self.driver;
        one(
            e,
            "mqtt_router_turns",
            "Turns of the router (each a batch of up to 64 messages from connections)",
            ConstCounter::new(r.router_turns),
        )?;
        one(
            e,
            "mqtt_router_messages",
            "Messages the router handled; over mqtt_router_turns, the mean batch size",
            ConstCounter::new(r.router_messages),
        )?;
        one(
            e,
            "mqtt_connections_parked",
            "Idle plain TCP connections waiting without a task of their own (see idle_after)",
            ConstGauge::new(i64::try_from(r.parked).unwrap_or(i64::MAX)),
        )?;
        one(
            e,
            "mqtt_connections_parks",
            "Times a connection was parked",
            ConstCounter::new(r.parks),
        )?;
        one(
            e,
            "mqtt_store_commits",
            "Commits of the store (with a data directory)",
            ConstCounter::new(r.store_commits),
        )?;
        one(
            e,
            "mqtt_store_ops",
            "Changes the store's commits wrote",
            ConstCounter::new(r.store_ops),
        )?;
        one(
            e,
            "mqtt_store_commit_seconds",
            "Time in store commits, sync included; over mqtt_store_commits, the mean latency",
            ConstCounter::new(r.store_commit_time.as_secs_f64()),
        )?;
        one(
            e,
            "mqtt_store_commit_max_seconds",
            "The longest store commit",
            ConstGauge::new(r.store_commit_max.as_secs_f64()),
        )?;
        let d = &s.dropped;
        family(
            e,
            "mqtt_messages_dropped",
            "Messages not delivered, by cause",
            "reason",
            [
                ("queue_full", d.queue_full),
                ("memory_budget", d.memory_budget),
                ("expired", d.expired),
                ("too_large", d.too_large),
                ("not_authorized", d.not_authorized),
                ("retained_not_kept", d.retained),
            ]
            .map(|(reason, n)| (reason.to_string(), ConstCounter::new(n))),
            MetricType::Counter,
        )?;
        let bridges = |f: fn(&BridgeStatus) -> u64| {
            self.bridges
                .iter()
                .map(move |b| (b.name.clone(), ConstCounter::new(f(b))))
                .collect::<Vec<_>>()
        };
        family(
            e,
            "mqtt_bridge_connected",
            "1 while the bridge is connected to its remote broker",
            "bridge",
            self.bridges
                .iter()
                .map(|b| (b.name.clone(), ConstGauge::new(i64::from(b.connected)))),
            MetricType::Gauge,
        )?;
        family(
            e,
            "mqtt_bridge_messages_sent",
            "Messages a bridge forwarded to its remote broker",
            "bridge",
            bridges(|b| b.sent),
            MetricType::Counter,
        )?;
        family(
            e,
            "mqtt_bridge_messages_received",
            "Messages a bridge brought from its remote broker",
            "bridge",
            bridges(|b| b.received),
            MetricType::Counter,
        )?;
        Ok(())
    }
}
