//! The `client` scenario: client throughput, our tokio `Client` against rumqttc's
//! `AsyncClient`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_proto::packet::{ByteString, QoS, Version};

use crate::{INFLIGHT, PAYLOAD};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ClientKind {
    Ours,
    Rumqttc,
}

/// Concurrent `publish` calls on our client (each awaits its completion).
pub(crate) const OUR_PUBLISHERS: usize = 256;

pub(crate) async fn client_ours(addr: SocketAddr, qos: QoS, count: u64) -> anyhow::Result<f64> {
    client_ours_with(addr, qos, count, INFLIGHT, OUR_PUBLISHERS).await
}

/// Our client, 3.1.1, with `window` QoS 1 publishes in flight and its other defaults (its queue
/// of 10,000 publishes waiting for the window holds every publish the drivers below keep
/// outstanding).
async fn connect_ours(addr: SocketAddr, window: u16) -> anyhow::Result<mqtt_tokio::Client> {
    let mut options = mqtt_tokio::ClientOptions::new(addr.ip().to_string(), addr.port())
        .version(Version::V3_1_1)
        .client_id("load-ours")
        .keep_alive(Duration::from_secs(600));
    options.config_mut().max_inflight = window;
    Ok(mqtt_tokio::Client::connect(options).await?)
}

/// Our client with `window` QoS 1 publishes in flight, driven by `tasks` tasks that each await
/// their `publish`.
pub(crate) async fn client_ours_with(
    addr: SocketAddr,
    qos: QoS,
    count: u64,
    window: u16,
    tasks_n: usize,
) -> anyhow::Result<f64> {
    let client = connect_ours(addr, window).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    for worker in 0..tasks_n as u64 {
        let client = client.clone();
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut n = worker;
            while n < count {
                client
                    .publish(ByteString::from_static("load/client"), payload.clone(), qos)
                    .await?;
                n += tasks_n as u64;
            }
            Ok::<_, mqtt_tokio::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    if qos == QoS::AtMostOnce {
        client
            .publish("load/client", payload, QoS::AtLeastOnce)
            .await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    client.disconnect().await?;
    Ok(count as f64 / elapsed)
}

pub(crate) async fn client_rumqttc(addr: SocketAddr, qos: QoS, count: u64) -> anyhow::Result<f64> {
    client_rumqttc_with(addr, qos, count, INFLIGHT).await
}

/// rumqttc's `AsyncClient` with `window` QoS 1 publishes in flight, its event loop polled in
/// one task.
pub(crate) async fn client_rumqttc_with(
    addr: SocketAddr,
    qos: QoS,
    count: u64,
    window: u16,
) -> anyhow::Result<f64> {
    let mut options = rumqttc::MqttOptions::new("load-rumqttc", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(600));
    options.set_inflight(window);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10_000);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let rqos = match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    };
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        let payload = Bytes::from(vec![7u8; PAYLOAD]);
        for _ in 0..count {
            client
                .publish_bytes("load/client", rqos, false, payload.clone())
                .await?;
        }
        if rqos == rumqttc::QoS::AtMostOnce {
            client
                .publish_bytes("load/client", rumqttc::QoS::AtLeastOnce, false, payload)
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(client)
    });
    // QoS 0 waits for the one PUBACK at the end.
    let acks_expected = if rqos == rumqttc::QoS::AtMostOnce {
        1
    } else {
        count
    };
    let mut acks = 0;
    while acks < acks_expected {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await? {
            acks += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let client = publisher.await??;
    client.disconnect().await?;
    // Let the DISCONNECT out.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    Ok(count as f64 / elapsed)
}

/// Set in the child that runs one client of the `client-pinned` scenario:
/// `ours|rumqttc QOS ADDR COUNT`.
pub(crate) const CLIENT_RUN_ENV: &str = "MQTT_LOAD_CLIENT_RUN";

/// The setup: 20 QoS 1 publishes in flight; our client driven by 256 tasks for QoS 0
/// and 20 for QoS 1.
const PINNED_WINDOW: u16 = 20;

/// The child of the `client-pinned` scenario: runs the client the spec names, then prints its
/// rate and its process's CPU time per message (every thread's run time, from schedstat).
pub(crate) fn run_child(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [client, qos, addr, count] = parts[..] else {
        anyhow::bail!("{CLIENT_RUN_ENV}={spec:?}");
    };
    let qos = match qos {
        "0" => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    };
    let addr: SocketAddr = addr.parse()?;
    let count: u64 = count.parse()?;
    // What `#[tokio::main]` builds: a multi-thread runtime with one worker per CPU the process
    // may use, so one worker under `taskset -c 1`. `MQTT_LOAD_CLIENT_THREADS=1` runs a
    // current-thread runtime instead, `=N` N workers.
    let threads: Option<usize> = std::env::var("MQTT_LOAD_CLIENT_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    let cpu_before = crate::brokers::schedstat_ns(std::process::id()).unwrap_or(0);
    let rate = runtime.block_on(async {
        match client {
            "ours" => {
                let tasks = if qos == QoS::AtMostOnce { 256 } else { 20 };
                client_ours_with(addr, qos, count, PINNED_WINDOW, tasks).await
            }
            // In a task, as application code runs (`block_on`'s thread is not a worker).
            "core" => client_core(addr, qos, count, PINNED_WINDOW).await,
            "ours-pipelined" => {
                tokio::spawn(client_ours_pipelined(addr, qos, count, PINNED_WINDOW)).await?
            }
            _ => client_rumqttc_with(addr, qos, count, PINNED_WINDOW).await,
        }
    })?;
    let cpu = crate::brokers::schedstat_ns(std::process::id()).unwrap_or(0) - cpu_before;
    println!("{rate} {}", cpu as f64 / count as f64);
    Ok(())
}

/// Our client driven by one task with `Client::start_publish`: at most `PIPELINE` publishes
/// started and not yet resolved, the client's window (`window`) full meanwhile.
async fn client_ours_pipelined(
    addr: SocketAddr,
    qos: QoS,
    count: u64,
    window: u16,
) -> anyhow::Result<f64> {
    const PIPELINE: usize = 1_000;
    let client = connect_ours(addr, window).await?;
    let start = Instant::now();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let topic = mqtt_tokio::TopicName::new("load/client")?;
    let mut handles = std::collections::VecDeque::with_capacity(PIPELINE);
    for _ in 0..count {
        let mut publish = mqtt_tokio::Publish::new(topic.clone(), payload.clone());
        publish.qos = qos;
        handles.push_back(client.start_publish(publish).await?);
        if handles.len() >= PIPELINE
            && let Some(oldest) = handles.pop_front()
        {
            oldest.wait().await?;
        }
    }
    for handle in handles {
        handle.wait().await?;
    }
    if qos == QoS::AtMostOnce {
        client
            .publish("load/client", payload, QoS::AtLeastOnce)
            .await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    client.disconnect().await?;
    Ok(count as f64 / elapsed)
}

/// The ceiling: our protocol core in the smallest loop over a tokio `TcpStream` (no client
/// task, no channels): every message queued in the core at once, `window` in flight; each turn
/// writes what the core has, then reads once. Whatever it cannot beat, the broker sets.
async fn client_core(addr: SocketAddr, qos: QoS, count: u64, window: u16) -> anyhow::Result<f64> {
    use mqtt_proto::connection::ClientEvent;
    let mut config = crate::client::Raw::config("load-core", Version::V3_1_1);
    config.max_inflight = window;
    let mut raw = crate::client::Raw::connect_with(addr, config).await?;
    let start = Instant::now();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let topic = mqtt_tokio::TopicName::new("load/client")?;
    // QoS 1 messages take their packet identifiers when queued: at most this many at a time.
    const AHEAD: u64 = 1_000;
    let (mut sent, mut completed) = (0, 0);
    let total = if qos == QoS::AtMostOnce { 1 } else { count };
    while completed < total {
        while sent <= count && (qos == QoS::AtMostOnce || sent - completed < AHEAD) {
            let mut publish = mqtt_tokio::Publish::new(topic.clone(), payload.clone());
            publish.qos = match (qos, sent == count) {
                // The last one, at QoS 1, proves the broker read the QoS 0 ones.
                (QoS::AtMostOnce, true) => QoS::AtLeastOnce,
                (_, true) => break,
                (qos, false) => qos,
            };
            raw.conn.publish(Instant::now(), publish)?;
            sent += 1;
            if sent % 1024 == 0 {
                raw.flush().await?;
            }
        }
        raw.flush().await?;
        raw.read().await?;
        while let Some(event) = raw.conn.poll_event() {
            match event {
                ClientEvent::Published(_) => completed += 1,
                ClientEvent::Disconnected(why) => anyhow::bail!("disconnected: {why:?}"),
                _ => {}
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    raw.disconnect().await?;
    Ok(count as f64 / elapsed)
}

/// Runs one client of the `client-pinned` scenario (`ours`, `ours-pipelined`, `rumqttc`) in a
/// child process confined to CPU 1 (`taskset -c 1`): its rate and CPU nanoseconds per message.
pub(crate) async fn client_pinned(
    name: &str,
    addr: SocketAddr,
    qos: QoS,
    count: u64,
) -> anyhow::Result<(f64, f64)> {
    let output = tokio::process::Command::new("taskset")
        .arg("-c")
        .arg("1")
        .arg(std::env::current_exe()?)
        .env(
            CLIENT_RUN_ENV,
            format!("{name} {} {addr} {count}", qos as u8),
        )
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "{name}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut fields = stdout.split_whitespace();
    let rate = fields.next().unwrap_or_default().parse()?;
    let cpu = fields.next().unwrap_or_default().parse()?;
    Ok((rate, cpu))
}
