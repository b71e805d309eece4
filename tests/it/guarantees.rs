//! What our broker promises with the configuration a user gets out of the box, over real
//! sockets: no acknowledged message is lost when subscribers fall behind (the publishers that
//! feed them are held back instead), large packets pass, a client that breaks a limit reads why
//! before the connection closes, and a slow authenticator holds up nobody but the clients it is
//! deciding about.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mqtt_tokio::broker::{AuthDecision, Authenticator, Connect, Stats};
use mqtt_tokio::{
    Broker, Client, ClientOptions, QoS, SubscribeOptions, Subscription, TokioRuntime, Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker_limits::connect_v5;
use crate::client_suite::support::Proxy;
use crate::peer_events::Hooked;

/// How long any one wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

const BOTH: [Version; 2] = [Version::V3_1_1, Version::V5];

/// Our broker on a loopback port, with its defaults.
async fn broker() -> Hooked {
    Hooked::start(Broker::builder().bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await
}

async fn connect(broker: &Hooked, version: Version, id: &str) -> Client {
    tokio::time::timeout(
        TIMEOUT,
        Client::connect(broker.options(id).version(version)),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// Waits, up to a deadline, until the broker's counters satisfy `done`.
async fn wait_for(broker: &Hooked, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let stats = broker.handle.stats().await.expect("the broker runs");
        if done(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `count` QoS 1 messages to `topic`, payloads "0", "1", ..., each acknowledged.
async fn publish_in_order(client: Client, topic: String, count: usize) {
    for n in 0..count {
        client
            .publish(topic.clone(), n.to_string(), QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|error| panic!("{topic} {n}: {error}"));
    }
}

/// Receives `count` messages, returning (topic, payload) pairs in arrival order.
async fn receive(messages: &mut Subscription, count: usize) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let message = tokio::time::timeout(TIMEOUT, messages.recv())
            .await
            .unwrap_or_else(|_| panic!("message {} of {count} in time", got.len()))
            .expect("the subscription is open");
        got.push((
            message.topic().to_string(),
            String::from_utf8_lossy(message.payload()).into_owned(),
        ));
    }
    got
}

/// Ten publishers feed one subscriber that stops reading, then reads again: every message each
/// publisher had acknowledged arrives once, in that publisher's order, and nothing is dropped.
#[tokio::test]
async fn fan_in_to_a_stalled_subscriber_loses_nothing_acknowledged() {
    const PUBLISHERS: usize = 10;
    const EACH: usize = 300;
    for version in BOTH {
        let broker = broker().await;
        let subscriber = connect(&broker, version, "sub").await;
        // A small queue: the client stops reading from the network once it is full.
        let mut messages = subscriber
            .subscribe_with(
                SubscribeOptions::new("in/+")
                    .qos(QoS::AtLeastOnce)
                    .capacity(16),
            )
            .await
            .expect("subscribe");
        let mut publishers = tokio::task::JoinSet::new();
        for i in 0..PUBLISHERS {
            let client = connect(&broker, version, &format!("pub-{i}")).await;
            publishers.spawn(publish_in_order(client, format!("in/{i}"), EACH));
        }
        // The subscriber's queue in the broker fills: the publishers are held back.
        wait_for(&broker, "publishers held back", |s| s.held_acks > 0).await;
        let got = receive(&mut messages, PUBLISHERS * EACH).await;
        while let Some(done) = tokio::time::timeout(TIMEOUT, publishers.join_next())
            .await
            .expect("publishers finish")
        {
            done.expect("every publish acknowledged");
        }
        for i in 0..PUBLISHERS {
            let topic = format!("in/{i}");
            let payloads: Vec<&str> = got
                .iter()
                .filter(|(t, _)| *t == topic)
                .map(|(_, p)| p.as_str())
                .collect();
            let expected: Vec<String> = (0..EACH).map(|n| n.to_string()).collect();
            assert_eq!(payloads, expected, "{version:?} {topic}");
        }
        let stats = broker.handle.stats().await.expect("the broker runs");
        assert_eq!(stats.dropped, Default::default(), "{version:?}");
        assert_eq!(stats.held_acks, 0);
        broker.stop().await;
    }
}

/// One publisher, ten subscribers, one of which stalls and then reads slowly: all ten receive
/// every message, in order.
#[tokio::test]
async fn fan_out_with_a_slow_subscriber_loses_nothing() {
    const COUNT: usize = 2000;
    for version in BOTH {
        let broker = broker().await;
        let mut fast = tokio::task::JoinSet::new();
        for i in 0..9 {
            let client = connect(&broker, version, &format!("fast-{i}")).await;
            let mut messages = client
                .subscribe("out", QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            fast.spawn(async move {
                let got = receive(&mut messages, COUNT).await;
                drop(client);
                got
            });
        }
        let slow = connect(&broker, version, "slow").await;
        let mut slow_messages = slow
            .subscribe_with(
                SubscribeOptions::new("out")
                    .qos(QoS::AtLeastOnce)
                    .capacity(16),
            )
            .await
            .expect("subscribe");
        let publisher = connect(&broker, version, "pub").await;
        let publishing = tokio::spawn(publish_in_order(publisher, "out".into(), COUNT));
        wait_for(&broker, "the publisher held back", |s| s.held_acks > 0).await;
        let mut slow_got = Vec::new();
        while slow_got.len() < COUNT {
            slow_got.extend(receive(&mut slow_messages, 50).await);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publishing.await.expect("every publish acknowledged");
        let expected: Vec<(String, String)> =
            (0..COUNT).map(|n| ("out".into(), n.to_string())).collect();
        assert_eq!(slow_got, expected, "{version:?}: the slow subscriber");
        while let Some(got) = fast.join_next().await {
            assert_eq!(got.expect("a fast subscriber"), expected, "{version:?}");
        }
        let stats = broker.handle.stats().await.expect("the broker runs");
        assert_eq!(stats.dropped, Default::default(), "{version:?}");
        broker.stop().await;
    }
}

/// A persistent session whose client is away while 3,000 QoS 1 messages are published to it
/// receives all 3,000, in order, once its client is back (the broker's default limits keep
/// 100,000 messages or 64 MiB per disconnected session).
#[tokio::test]
async fn a_persistent_session_offline_receives_a_3000_message_backlog() {
    const COUNT: usize = 3000;
    for version in BOTH {
        let broker = broker().await;
        // The subscriber reaches the broker through a proxy that can drop it, as a network would.
        let proxy = Proxy::start::<TokioRuntime>(broker.addr).await;
        let options = ClientOptions::new("127.0.0.1", proxy.addr().port())
            .version(version)
            .client_id("backlog")
            .clean_start(false)
            .session_expiry(Duration::from_secs(300));
        let subscriber = tokio::time::timeout(TIMEOUT, Client::connect(options))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut messages = subscriber
            .subscribe("backlog", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        proxy.set_open(false);
        wait_for(&broker, "the subscriber gone", |s| s.connections == 0).await;
        let publisher = connect(&broker, version, "pub").await;
        publish_in_order(publisher, "backlog".into(), COUNT).await;
        let stats = broker.handle.stats().await.expect("the broker runs");
        assert!(stats.queued_bytes > 0, "{version:?}: kept for the session");
        proxy.set_open(true);
        let got = receive(&mut messages, COUNT).await;
        let expected: Vec<(String, String)> = (0..COUNT)
            .map(|n| ("backlog".into(), n.to_string()))
            .collect();
        assert_eq!(got, expected, "{version:?}");
        let stats = broker.handle.stats().await.expect("the broker runs");
        assert_eq!(stats.dropped, Default::default(), "{version:?}");
        broker.stop().await;
    }
}

/// 1 MiB and 16 MiB payloads pass with the defaults, in 3.1.1 (whose clients cannot learn a
/// maximum packet size) and in 5.0.
#[tokio::test]
async fn large_payloads_pass_with_the_defaults() {
    for version in BOTH {
        let broker = broker().await;
        let subscriber = connect(&broker, version, "big-sub").await;
        let mut messages = subscriber
            .subscribe("big", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let publisher = connect(&broker, version, "big-pub").await;
        for size in [1024 * 1024, 16 * 1024 * 1024] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            tokio::time::timeout(
                TIMEOUT,
                publisher.publish("big", payload.clone(), QoS::AtLeastOnce),
            )
            .await
            .expect("PUBACK in time")
            .unwrap_or_else(|error| panic!("{version:?} {size}: {error}"));
            let message = tokio::time::timeout(TIMEOUT, messages.recv())
                .await
                .expect("the message in time")
                .expect("the subscription is open");
            assert!(
                message.payload() == &payload[..],
                "{version:?} {size} intact"
            );
        }
        broker.stop().await;
    }
}

/// A 5.0 QoS 2 PUBLISH to `t` with packet identifier `id` and no properties.
fn publish_qos2_v5(id: u16) -> Vec<u8> {
    let mut packet = vec![0x34, 0, 0, 1, b't'];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.push(0);
    packet.extend_from_slice(b"overrun");
    packet[1] = u8::try_from(packet.len() - 2).expect("short packet");
    packet
}

/// MQTT-3.3.4-9: a client that sends more QoS 1/2 messages than the broker's Receive Maximum
/// without completing them gets DISCONNECT with 0x93 Receive Maximum exceeded, and reads it: the
/// broker shuts its side down and drains what the client was still writing, rather than close a
/// socket with unread input (which resets the connection and loses the DISCONNECT).
#[tokio::test]
async fn mqtt_3_3_4_9_a_client_overrunning_receive_maximum_reads_disconnect_0x93() {
    let broker = broker().await;
    let mut stream = TcpStream::connect(broker.addr).await.expect("connect");
    // QoS 2 messages count against the Receive Maximum (100) until PUBCOMP; this client never
    // sends PUBREL, and keeps writing about 4 MB (past the broker's failure) before it reads.
    let mut wire = connect_v5("overrun");
    for id in 1..=u16::MAX {
        wire.extend_from_slice(&publish_qos2_v5(id));
    }
    for _ in 0..3 {
        wire.extend_from_slice(&wire.clone()[connect_v5("overrun").len()..]);
    }
    tokio::time::timeout(TIMEOUT, stream.write_all(&wire))
        .await
        .expect("the broker drains what it does not process")
        .expect("no reset while writing");
    let mut received = Vec::new();
    let ended = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut received))
        .await
        .expect("the broker closes in time");
    assert!(
        ended.is_ok(),
        "the connection ends with end of file, not a reset: {ended:?}"
    );
    // CONNACK, 100 PUBRECs, then DISCONNECT (0xE0) with reason 0x93.
    let mut at = 0;
    let mut last = None;
    while at < received.len() {
        let header = received[at];
        let len = usize::from(received[at + 1]);
        last = Some((header, received.get(at + 2).copied()));
        at += 2 + len;
    }
    assert_eq!(last, Some((0xe0, Some(0x93))), "the last packet read");
    broker.stop().await;
}

/// Blocks for client `slow` until the test lets it through; lets everyone else in at once.
struct SlowAuthenticator {
    entered: async_channel::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Authenticator for SlowAuthenticator {
    fn connect(&mut self, connect: &Connect) -> AuthDecision {
        if &*connect.client_id == "slow" {
            let _ = self.entered.send_blocking(());
            // A bounded wait, so that a failing test does not hang.
            let _ = self.release.recv_timeout(TIMEOUT);
        }
        AuthDecision::Accept
    }
}

/// While the authenticator takes its time over one client, the broker goes on routing for
/// the clients already connected.
#[tokio::test]
async fn routing_goes_on_while_an_authenticator_is_slow() {
    let (release, wait) = std::sync::mpsc::channel();
    let (entered_tx, entered) = async_channel::bounded(1);
    let broker = Hooked::start(
        Broker::builder()
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .authenticator(SlowAuthenticator {
                entered: entered_tx,
                release: wait,
            }),
    )
    .await;
    let subscriber = connect(&broker, Version::V5, "sub").await;
    let mut messages = subscriber
        .subscribe("t", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let publisher = connect(&broker, Version::V5, "pub").await;
    let options = broker.options("slow");
    let slow = tokio::spawn(async move { Client::connect(options).await });
    tokio::time::timeout(TIMEOUT, entered.recv())
        .await
        .expect("the slow client reaches the authenticator")
        .expect("the authenticator runs");
    // The authenticator is busy with it; messages still flow between the others.
    for n in 0..20 {
        tokio::time::timeout(
            TIMEOUT,
            publisher.publish("t", n.to_string(), QoS::AtLeastOnce),
        )
        .await
        .expect("routing goes on")
        .expect("acknowledged");
        let got = receive(&mut messages, 1).await;
        assert_eq!(got[0].1, n.to_string());
    }
    assert!(
        !slow.is_finished(),
        "the slow client is still being decided"
    );
    release.send(()).expect("the authenticator waits");
    let slow = tokio::time::timeout(TIMEOUT, slow)
        .await
        .expect("the slow client connects once released")
        .expect("the task")
        .expect("accepted");
    drop(slow);
    broker.stop().await;
}
