//! Idle connections parked without a task ([`mqtt_tokio::BrokerBuilder::idle_after`]): they
//! wake for what the client sends and for what the broker has for them (messages, closing on
//! keep-alive expiry, a session taken over), and nothing is lost.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mqtt_async::blocking;
use mqtt_async::runtime::Runtime;
use mqtt_tokio::broker::BrokerHandle;
use mqtt_tokio::{Broker, Client, ClientOptions, QoS, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Short, so that connections park within the tests.
const IDLE_AFTER: Duration = Duration::from_millis(100);

async fn start() -> (BrokerHandle, SocketAddr) {
    let broker = Broker::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .idle_after(IDLE_AFTER)
        .build()
        .await
        .expect("build the broker");
    let addr = broker.local_addrs()[0];
    (broker.spawn(), addr)
}

/// Waits until at least `n` connections are parked, and at least `parks` parkings happened in
/// all.
async fn parked(handle: &BrokerHandle, n: u64, parks: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = handle.driver_stats().await.expect("the broker runs");
        if stats.parked >= n && stats.parks >= parks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} connections parked, {parks} parkings in all, in time: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`parked`] from a plain thread.
fn parked_blocking(handle: &BrokerHandle, n: u64, parks: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = futures_lite::future::block_on(handle.driver_stats()).expect("the broker runs");
        if stats.parked >= n && stats.parks >= parks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} connections parked, {parks} parkings in all, in time: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn options(addr: SocketAddr, id: &str) -> ClientOptions {
    ClientOptions::new("127.0.0.1", addr.port())
        .version(Version::V3_1_1)
        .client_id(id)
        .reconnect(None)
}

/// A 3.1.1 CONNECT with a clean session, keep alive `keep_alive` seconds and, with `will`, a
/// QoS 1 will on that topic saying "gone".
fn connect_packet(client_id: &str, keep_alive: u16, will: Option<&str>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if will.is_some() {
        0x02 | 0x04 | 0x08
    } else {
        0x02
    });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    let mut string = |s: &[u8]| {
        body.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
        body.extend_from_slice(s);
    };
    string(client_id.as_bytes());
    if let Some(topic) = will {
        string(topic.as_bytes());
        string(b"gone");
    }
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short")];
    packet.extend_from_slice(&body);
    packet
}

/// A raw 3.1.1 client that connected and got its CONNACK, and then says nothing.
async fn raw_client(addr: SocketAddr, connect: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(connect).await.expect("send CONNECT");
    let mut connack = [0u8; 4];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    stream
}

/// Reads until the broker closes the connection (end of stream or reset); what it read.
async fn closed_by_broker(stream: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("closed in time")
        {
            Ok(0) | Err(_) => return read,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn parked_connections_wake_for_qos1_both_ways() {
    let (handle, addr) = start().await;
    let a = Client::connect(options(addr, "idle-a"))
        .await
        .expect("a connects");
    let b = Client::connect(options(addr, "idle-b"))
        .await
        .expect("b connects");
    let mut to_a = a
        .subscribe("idle/a", QoS::AtLeastOnce)
        .await
        .expect("a subscribes");
    let mut to_b = b
        .subscribe("idle/b", QoS::AtLeastOnce)
        .await
        .expect("b subscribes");
    let mut parks = 2;
    for round in 0..3 {
        // Both parked: b's PUBLISH wakes b's connection (client to broker), the message for a
        // wakes a's (broker to client); then the other way round.
        parked(&handle, 2, parks).await;
        let payload = format!("to a, round {round}");
        b.publish("idle/a", payload.clone(), QoS::AtLeastOnce)
            .await
            .expect("PUBACK from the broker");
        let message = tokio::time::timeout(TIMEOUT, to_a.recv())
            .await
            .expect("a's message in time")
            .expect("a's message");
        assert_eq!(message.payload().as_ref(), payload.as_bytes());
        parks += 2;
        parked(&handle, 2, parks).await;
        let payload = format!("to b, round {round}");
        a.publish("idle/b", payload.clone(), QoS::AtLeastOnce)
            .await
            .expect("PUBACK from the broker");
        let message = tokio::time::timeout(TIMEOUT, to_b.recv())
            .await
            .expect("b's message in time")
            .expect("b's message");
        assert_eq!(message.payload().as_ref(), payload.as_bytes());
        parks += 2;
    }
    tokio::time::timeout(TIMEOUT, handle.stop())
        .await
        .expect("the broker stops");
}

#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_expiry_closes_a_parked_connection_and_publishes_its_will() {
    let (handle, addr) = start().await;
    let watcher = Client::connect(options(addr, "idle-watcher"))
        .await
        .expect("the watcher connects");
    let mut wills = watcher
        .subscribe("idle/will", QoS::AtLeastOnce)
        .await
        .expect("subscribe to the will");
    let connected = Instant::now();
    let mut silent = raw_client(addr, &connect_packet("idle-silent", 2, Some("idle/will"))).await;
    // Parked long before its keep alive (2 s) runs out at 3 s.
    parked(&handle, 2, 2).await;
    let read = closed_by_broker(&mut silent).await;
    assert!(read.is_empty(), "no packet for a 3.1.1 client: {read:?}");
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(2900),
        "closed at 1.5 times the keep alive, not before: {waited:?}"
    );
    let will = tokio::time::timeout(TIMEOUT, wills.recv())
        .await
        .expect("the will in time")
        .expect("the will");
    assert_eq!(will.payload().as_ref(), b"gone");
    tokio::time::timeout(TIMEOUT, handle.stop())
        .await
        .expect("the broker stops");
}

#[tokio::test]
async fn parked_connection_is_closed_when_its_session_is_taken_over() {
    let (handle, addr) = start().await;
    let mut first = raw_client(addr, &connect_packet("idle-twice", 60, None)).await;
    parked(&handle, 1, 1).await;
    let second = Client::connect(options(addr, "idle-twice"))
        .await
        .expect("the second connection with the same client id is accepted");
    let read = closed_by_broker(&mut first).await;
    assert!(read.is_empty(), "no packet for a 3.1.1 client: {read:?}");
    // The new connection works, parked or not.
    let mut echo = second
        .subscribe("idle/echo", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    parked(&handle, 1, 2).await;
    second
        .publish("idle/echo", "still here", QoS::AtLeastOnce)
        .await
        .expect("PUBACK");
    let message = tokio::time::timeout(TIMEOUT, echo.recv())
        .await
        .expect("the echo in time")
        .expect("the echo");
    assert_eq!(message.payload().as_ref(), b"still here");
    tokio::time::timeout(TIMEOUT, handle.stop())
        .await
        .expect("the broker stops");
}

/// The first case on every runtime, with blocking clients: each runtime takes its sockets out
/// and back in its own way.
fn parked_connections_wake_on<R: Runtime + Default>() {
    let builder = mqtt_async::Broker::<R>::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .idle_after(IDLE_AFTER);
    let (handle, addrs) = mqtt_async::Broker::<R>::start_in_thread(builder).expect("start");
    let a = blocking::Client::<R>::connect(options(addrs[0], "idle-a")).expect("a connects");
    let b = blocking::Client::<R>::connect(options(addrs[0], "idle-b")).expect("b connects");
    let mut to_a = a
        .subscribe("idle/a", QoS::AtLeastOnce)
        .expect("a subscribes");
    let mut parks = 2;
    for round in 0..2 {
        parked_blocking(&handle, 2, parks);
        let payload = format!("round {round}");
        b.publish("idle/a", payload.clone(), QoS::AtLeastOnce)
            .expect("PUBACK from the broker");
        let message = to_a.recv_timeout(TIMEOUT).expect("a's message");
        assert_eq!(message.payload().as_ref(), payload.as_bytes());
        parks += 2;
    }
    drop((a, b));
    futures_lite::future::block_on(handle.stop());
}

#[test]
fn parked_connections_wake_on_tokio() {
    parked_connections_wake_on::<mqtt_tokio::TokioRuntime>();
}

#[test]
fn parked_connections_wake_on_smol() {
    parked_connections_wake_on::<mqtt_smol::SmolRuntime>();
}

#[test]
fn parked_connections_wake_on_async_std() {
    parked_connections_wake_on::<mqtt_async_std::AsyncStdRuntime>();
}

#[tokio::test]
async fn stopping_the_broker_closes_parked_connections() {
    let (handle, addr) = start().await;
    let mut idle = raw_client(addr, &connect_packet("idle-stop", 60, None)).await;
    parked(&handle, 1, 1).await;
    tokio::time::timeout(TIMEOUT, handle.stop())
        .await
        .expect("the broker stops");
    closed_by_broker(&mut idle).await;
}

/// `idle_after(Duration::ZERO)` keeps every connection on its task: a connection that would
/// park right after its CONNACK (see the takeover test above) does not, however long it stays
/// silent. Two round trips after its CONNACK (a second connection's CONNECT and a QoS 1
/// publish) give the set time to have taken it, were it on.
#[tokio::test]
async fn idle_after_zero_parks_nothing() {
    let broker = Broker::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .idle_after(Duration::ZERO)
        .build()
        .await
        .expect("build the broker");
    let addr = broker.local_addrs()[0];
    let handle = broker.spawn();
    let _silent = raw_client(addr, &connect_packet("idle-never", 60, None)).await;
    let client = Client::connect(options(addr, "idle-never-2"))
        .await
        .expect("connect");
    client
        .publish("idle/none", "x", QoS::AtLeastOnce)
        .await
        .expect("PUBACK");
    let stats = handle.driver_stats().await.expect("driver stats");
    assert_eq!((stats.parked, stats.parks), (0, 0), "{stats:?}");
    tokio::time::timeout(TIMEOUT, handle.stop())
        .await
        .expect("the broker stops");
}
