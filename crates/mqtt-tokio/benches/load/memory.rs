//! The `memory` scenario: the broker's resident memory per idle connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use mqtt_proto::connection::{ClientConfig, ClientConnection};
use mqtt_proto::packet::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::brokers::BrokerProcess;

/// Connections opened at once: more overflows the brokers' listen backlogs (a lost SYN costs
/// a one-second retransmission).
pub(crate) const BATCH: usize = 50;

pub(crate) async fn memory(broker: &BrokerProcess, connections: usize) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = broker.rss()?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(connections);
    let addr = broker.addr();
    let mut next = 0;
    while next < connections {
        let batch = (connections - next).min(BATCH);
        let mut tasks = tokio::task::JoinSet::new();
        for i in next..next + batch {
            tasks.spawn(idle_connection(addr, i));
        }
        while let Some(done) = tasks.join_next().await {
            open.push(done??);
        }
        next += batch;
    }
    let opening = started.elapsed();
    // Our broker parks a connection between one and two `idle_after` after its last byte: the
    // reading is of idle connections, parked.
    tokio::time::sleep(2 * mqtt_tokio::broker::DEFAULT_IDLE_AFTER + Duration::from_secs(1)).await;
    let after = broker.rss()?;
    println!(
        "  ({connections} connections opened in {:.1} s; RSS {:.1} → {:.1} MB)",
        opening.as_secs_f64(),
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    drop(open);
    Ok((after.saturating_sub(before)) as f64 / connections as f64)
}

pub(crate) async fn idle_connection(addr: SocketAddr, i: usize) -> anyhow::Result<TcpStream> {
    let mut config = ClientConfig::new(Version::V3_1_1, format!("idle-{i:05}"));
    config.keep_alive = 3600;
    let mut conn = ClientConnection::new(config, None, Instant::now());
    let mut connect = BytesMut::new();
    conn.poll_transmit(Instant::now(), &mut connect);
    // One loopback source address per 20,000 connections: one address has about 28,000
    // ephemeral ports to reach the broker's port from.
    let mut stream = match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() && i >= 20_000 => {
            let socket = TcpSocket::new_v4()?;
            let source = Ipv4Addr::new(127, 0, 0, u8::try_from(1 + i / 20_000)?);
            socket.bind(SocketAddr::from((source, 0)))?;
            socket.connect(addr).await?
        }
        _ => TcpStream::connect(addr).await?,
    };
    stream.write_all(&connect).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut connack))
        .await
        .context("CONNACK timed out")??;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        bail!("connection {i} refused: {connack:?}");
    }
    Ok(stream)
}
