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
    let mut options =
        mqtt_tokio::ClientOptions::new(addr.ip().to_string(), addr.port()).version(Version::V3_1_1);
    options = options
        .client_id("load-ours")
        .keep_alive(Duration::from_secs(600));
    options.config_mut().max_inflight = INFLIGHT;
    options.config_mut().max_queued = 1_000_000;
    let client = mqtt_tokio::Client::connect(options).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    for worker in 0..OUR_PUBLISHERS as u64 {
        let client = client.clone();
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut n = worker;
            while n < count {
                client
                    .publish(ByteString::from_static("load/client"), payload.clone(), qos)
                    .await?;
                n += OUR_PUBLISHERS as u64;
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
    let mut options = rumqttc::MqttOptions::new("load-rumqttc", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(600));
    options.set_inflight(INFLIGHT);
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
