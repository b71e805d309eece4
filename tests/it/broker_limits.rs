//! Our broker over real sockets with clients that misbehave: one that stops reading, and ones
//! that send bytes that are not MQTT. Each is cut off while a well-behaved pair of clients on
//! the same broker keeps exchanging QoS 1 messages, which is what "the other clients never
//! notice" means here.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mqtt_tokio::broker::Stats;
use mqtt_tokio::{Broker, Client, DisconnectReason, PeerEvent, QoS, ReasonCode, Subscription};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peer_events::Hooked;

/// How long any one wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A broker with an event hook, and a publisher and a subscriber that behave.
struct Fixture {
    broker: Hooked,
    publisher: Client,
    /// Kept: dropping the last handle disconnects the client.
    _subscriber: Client,
    subscription: Subscription,
    sent: u32,
}

impl Fixture {
    async fn start() -> Fixture {
        let broker =
            Hooked::start(Broker::builder().bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
        let options = |id: &str| broker.options(id);
        let subscriber = Client::connect(options("good-sub")).await.expect("connect");
        let subscription = subscriber
            .subscribe("good/t", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let publisher = Client::connect(options("good-pub")).await.expect("connect");
        let mut fixture = Fixture {
            broker,
            publisher,
            _subscriber: subscriber,
            subscription,
            sent: 0,
        };
        // Both good clients' connects are seen; what follows is about the others.
        for _ in 0..2 {
            assert!(matches!(
                fixture.broker.next().await,
                PeerEvent::Connected { .. }
            ));
        }
        fixture.round_trip().await;
        fixture
    }

    /// One QoS 1 message from the good publisher reaches the good subscriber, in order.
    async fn round_trip(&mut self) {
        self.sent += 1;
        let payload = self.sent.to_string();
        let publish = self
            .publisher
            .publish("good/t", payload.clone(), QoS::AtLeastOnce);
        tokio::time::timeout(TIMEOUT, publish)
            .await
            .expect("PUBACK in time")
            .expect("the publish is accepted");
        let message = tokio::time::timeout(TIMEOUT, self.subscription.recv())
            .await
            .expect("the message in time")
            .expect("the subscription is open");
        assert_eq!(message.payload(), payload.as_bytes());
    }

    /// Waits, up to a deadline, until the broker's counters satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&Stats) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let stats = self.broker.handle.stats().await.expect("the broker runs");
            if done(&stats) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the good clients are the broker's only connections again (a connection that
    /// was just closed may take a moment to be counted out).
    async fn wait_for_only_good_clients(&self) {
        self.wait_for("only the good clients", |stats| stats.connections == 2)
            .await;
    }
}

/// A 5.0 CONNECT with client identifier `id` and a keep-alive of 60 s.
pub(crate) fn connect_v5(id: &str) -> Vec<u8> {
    let mut packet = vec![0x10, 0];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0]);
    packet.extend_from_slice(&u16::try_from(id.len()).expect("short id").to_be_bytes());
    packet.extend_from_slice(id.as_bytes());
    packet[1] = u8::try_from(packet.len() - 2).expect("short packet");
    packet
}

/// A 5.0 SUBSCRIBE to `filter` at QoS 0, packet identifier 1.
fn subscribe_v5(filter: &str) -> Vec<u8> {
    let mut packet = vec![0x82, 0, 0, 1, 0];
    packet.extend_from_slice(&u16::try_from(filter.len()).expect("short").to_be_bytes());
    packet.extend_from_slice(filter.as_bytes());
    packet.push(0);
    packet[1] = u8::try_from(packet.len() - 2).expect("short packet");
    packet
}

/// What a connection received until the broker closed it.
#[derive(Debug, Default)]
struct Received {
    /// Complete packets.
    packets: usize,
    /// The last one's first byte and body.
    last: Option<(u8, Vec<u8>)>,
}

/// Reads until the broker closes the connection (an error counts: it may reset it), walking the
/// fixed headers of everything that arrives.
async fn read_to_close(stream: &mut TcpStream) -> Received {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = Received::default();
    loop {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("the broker closes the connection in time");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
        // Drop every complete packet from the front, remembering the last.
        loop {
            let mut len = 0usize;
            let mut at = 1;
            let mut complete = false;
            while at < data.len() && at <= 4 {
                let byte = data[at];
                len |= usize::from(byte & 0x7f) << (7 * (at - 1));
                at += 1;
                if byte & 0x80 == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete || data.len() < at + len {
                break;
            }
            received.packets += 1;
            received.last = Some((data[0], data[at..at + len].to_vec()));
            data.drain(..at + len);
        }
    }
}

/// A subscriber that stops reading is disconnected with Quota Exceeded once its queue limit is
/// passed; the broker neither stalls nor grows without bound, and the good pair keeps going.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_the_others_carry_on() {
    let mut fixture = Fixture::start().await;
    let mut stalled = TcpStream::connect(fixture.broker.addr)
        .await
        .expect("connect");
    stalled
        .write_all(&[connect_v5("stalled"), subscribe_v5("flood/#")].concat())
        .await
        .expect("write CONNECT and SUBSCRIBE");
    assert!(matches!(
        fixture.broker.next().await,
        PeerEvent::Connected { .. }
    ));
    // Its subscription (two, with the good one) before flooding.
    fixture
        .wait_for("the subscription", |stats| stats.subscriptions == 2)
        .await;

    // 64 KiB QoS 0 messages until the broker gives up on the stalled client: the kernel's
    // socket buffers take a few MiB, the broker's outbox 16 MiB or 256 batches at most.
    let payload = vec![0x5a; 64 * 1024];
    let mut disconnected = None;
    for n in 0..8_000u32 {
        fixture
            .publisher
            .publish("flood/x", payload.clone(), QoS::AtMostOnce)
            .await
            .expect("publish");
        if n % 64 == 0 {
            fixture.round_trip().await;
        }
        if let Ok(event) = fixture.broker.events.try_recv() {
            disconnected = Some(event);
            break;
        }
    }
    let Some(event) = disconnected else {
        panic!("the stalled client was never disconnected");
    };
    match event {
        PeerEvent::Disconnected {
            client_id,
            reason: DisconnectReason::Local(disconnect),
            ..
        } => {
            assert_eq!(client_id.as_deref(), Some("stalled"));
            assert_eq!(disconnect.reason_code, ReasonCode::QuotaExceeded);
        }
        other => panic!("expected the stalled client's disconnect, got {other:?}"),
    }
    fixture.round_trip().await;
    fixture.wait_for_only_good_clients().await;

    // What was queued still comes out, ending in DISCONNECT with Quota Exceeded (0x97). The
    // outbox was full with 256 chunks or 16 MiB, at least 256 of these messages either way;
    // besides them come CONNACK, SUBACK and the DISCONNECT.
    let received = read_to_close(&mut stalled).await;
    assert!(received.packets >= 256 + 3, "{} packets", received.packets);
    let (header, body) = received.last.expect("packets before the close");
    assert_eq!(header, 0xe0, "the last packet is a DISCONNECT");
    assert_eq!(body.first(), Some(&0x97));
    fixture.round_trip().await;
    fixture.broker.stop().await;
}

/// A small deterministic generator (xorshift64*), so that a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes()[0]
        })
        .collect()
}

/// Connections that send garbage are closed, each on its own, while the good pair keeps
/// exchanging messages between them and the broker keeps only the good connections.
#[tokio::test]
async fn garbage_from_one_connection_leaves_the_others_untouched() {
    let mut fixture = Fixture::start().await;
    let valid = connect_v5("noisy");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", noise(1, 64 * 1024)),
        (
            "random bytes after CONNECT",
            [valid.clone(), noise(2, 4096)].concat(),
        ),
        // MQTT-1.5.5-1: a variable byte integer of at most four bytes.
        (
            "a five-byte remaining length",
            [valid.clone(), vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]].concat(),
        ),
        // A 256 MiB PUBLISH announced: refused from its fixed header, nothing reserved.
        (
            "a packet larger than the limit",
            [valid.clone(), vec![0x30, 0xff, 0xff, 0xff, 0x7f]].concat(),
        ),
        // MQTT-3.1.0-2: a second CONNECT is a protocol error.
        ("two CONNECTs", [valid.clone(), valid.clone()].concat()),
        // MQTT-3.1.0-1: the first packet must be CONNECT.
        (
            "PUBLISH before CONNECT",
            vec![0x30, 5, 0, 1, b'a', b'h', b'i'],
        ),
        // MQTT-3.1.2-2: an unsupported protocol level.
        (
            "protocol level 9",
            vec![
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 9, 2, 0, 60, 0, 1, b'x',
            ],
        ),
        // MQTT-3.3.1-4: QoS 3 is malformed.
        (
            "QoS 3",
            [valid.clone(), vec![0x36, 5, 0, 1, b'a', 0, 1]].concat(),
        ),
    ];
    for (seed, (what, bytes)) in (10u64..).zip(cases) {
        let mut noisy = TcpStream::connect(fixture.broker.addr)
            .await
            .expect("connect");
        // The broker may close before it has read everything: a failed write is fine.
        let _ = noisy.write_all(&bytes).await;
        let _ = read_to_close(&mut noisy).await;
        // Between and after each, the good pair is unaffected.
        fixture.round_trip().await;
        fixture.wait_for_only_good_clients().await;
        // And a client that now connects properly is served as usual.
        let mut fresh = TcpStream::connect(fixture.broker.addr)
            .await
            .expect("connect");
        fresh
            .write_all(&connect_v5(&format!("fresh-{seed}")))
            .await
            .expect("write CONNECT");
        let mut connack = [0u8; 4];
        tokio::time::timeout(TIMEOUT, fresh.read_exact(&mut connack[..2]))
            .await
            .expect("CONNACK in time")
            .expect("read CONNACK");
        assert_eq!(connack[0], 0x20, "after {what}: CONNACK");
        drop(fresh);
    }
    // Drain the hook: every noisy connection ended, none of the good ones did.
    while let Ok(event) = fixture.broker.events.try_recv() {
        if let PeerEvent::Disconnected { client_id, .. } = event {
            let id = client_id.as_deref().unwrap_or("");
            assert!(!id.starts_with("good"), "{id} was disconnected");
        }
    }
    fixture.round_trip().await;
    fixture.broker.stop().await;
}
