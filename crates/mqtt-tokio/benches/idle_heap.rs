//! Where an idle connection's bytes go: heap bytes per idle 3.1.1 connection of our broker on
//! tokio, counted by the allocator (the `memory` scenario of the load bench reads VmRSS, which
//! also holds what the allocator keeps from freed memory). Three readings for the same
//! connections (CONNECT and CONNACK done, keep alive one hour):
//!
//! - the broker core alone: the same CONNECTs fed to a bare `mqtt_proto::broker::Broker`;
//! - the whole broker with idle connections parked (the default), sockets from real clients;
//! - the whole broker with parking off (`idle_after(Duration::ZERO)`): a task each.
//!
//! The whole broker minus the core is the async layer: the parked slot or the task, the outbox,
//! the router's map, tokio's registration.
//!
//! ```sh
//! cargo bench -p mqtt-tokio --bench idle_heap           # 5,000 connections
//! cargo bench -p mqtt-tokio --bench idle_heap -- 8000
//! ```
//!
//! Client and broker sockets are both in this process: it needs twice the connections in file
//! descriptors.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_proto::broker::{Broker as Core, BrokerConfig};
use mqtt_proto::connection::{ClientConfig, ClientConnection};
use mqtt_proto::packet::Version;
use mqtt_tokio::Broker;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Connections opened before counting, so that the maps' first growth is not charged.
const WARM: usize = 500;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000);
    let core = core_share(n);
    println!("broker core alone:        {core:>6} B heap per idle connection ({n})");
    let parked = whole_broker(n, mqtt_tokio::broker::DEFAULT_IDLE_AFTER)?;
    println!(
        "whole broker, parked:     {parked:>6} B (async layer {} B)",
        parked - core
    );
    let tasks = whole_broker(n, Duration::ZERO)?;
    println!(
        "whole broker, tasks:      {tasks:>6} B (async layer {} B)",
        tasks - core
    );
    Ok(())
}

/// Heap bytes held after minus before (stats_alloc counts a reallocation's growth and
/// shrinking in these two as well).
fn heap_change(change: &stats_alloc::Stats) -> i64 {
    change.bytes_allocated as i64 - change.bytes_deallocated as i64
}

fn config(n: usize) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.max_connections = n + WARM + 10;
    config
}

/// The CONNECT of the load bench's idle connections.
fn connect(i: usize) -> BytesMut {
    let mut config = ClientConfig::new(Version::V3_1_1, format!("idle-{i:05}"));
    config.keep_alive = 3600;
    let mut conn = ClientConnection::new(config, None, Instant::now());
    let mut connect = BytesMut::new();
    conn.poll_transmit(Instant::now(), &mut connect);
    connect
}

fn core_share(n: usize) -> i64 {
    let now = Instant::now();
    let mut core = Core::new(config(n));
    let mut out = BytesMut::new();
    let mut client = |core: &mut Core, i: usize| {
        let connect = connect(i);
        if let Some(id) = core.open(now) {
            core.handle_bytes(id, now, &connect);
        }
        while let Some(id) = core.poll_ready() {
            out.clear();
            core.poll_transmit(id, now, &mut out);
        }
        while core.poll_event().is_some() {}
    };
    for i in 0..WARM {
        client(&mut core, n + i);
    }
    let region = Region::new(GLOBAL);
    for i in 0..n {
        client(&mut core, i);
    }
    let held = heap_change(&region.change());
    std::hint::black_box(&core);
    held / n as i64
}

/// Opens a blocking client connection (no heap of its own) and waits for its CONNACK.
fn open(addr: SocketAddr, i: usize) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(&connect(i))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    anyhow::ensure!(connack == [0x20, 0x02, 0x00, 0x00], "refused: {connack:?}");
    Ok(stream)
}

fn whole_broker(n: usize, idle_after: Duration) -> anyhow::Result<i64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (handle, addr) = runtime.block_on(async {
        let broker = Broker::builder()
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .config(config(n))
            .sys_interval(Duration::ZERO)
            .idle_after(idle_after)
            .build()
            .await?;
        let addr = broker.local_addrs()[0];
        anyhow::Ok((broker.spawn(), addr))
    })?;
    let mut clients = Vec::with_capacity(n + WARM);
    for i in 0..WARM {
        clients.push(open(addr, n + i)?);
    }
    let settle = |parked: usize| -> anyhow::Result<()> {
        if idle_after.is_zero() {
            std::thread::sleep(Duration::from_secs(1));
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = runtime
                .block_on(handle.driver_stats())
                .ok_or_else(|| anyhow::anyhow!("the broker stopped"))?;
            if stats.parked as usize >= parked {
                // The tasks that parked are gone; give the runtime a moment to free them.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "not parked in time: {stats:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    settle(WARM)?;
    let region = Region::new(GLOBAL);
    for i in 0..n {
        clients.push(open(addr, i)?);
    }
    settle(n + WARM)?;
    let held = heap_change(&region.change());
    runtime.block_on(handle.stop());
    drop(clients);
    Ok(held / n as i64)
}
