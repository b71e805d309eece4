//! The blocking client ([`mqtt_async::blocking::Client`]) from plain threads, with no async
//! code in the test: against our broker started with `Broker::start_in_thread`, the same cases
//! on tokio, smol and async-std.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use mqtt_async::blocking::{Client, Subscription};
use mqtt_async::broker::BrokerHandle;
use mqtt_async::runtime::Runtime;
use mqtt_async::{
    Broker, ClientOptions, ConnectionEvent, DisconnectReason, PeerEvent, QoS, SubscribeOptions,
    Version,
};

/// How long one test may take in all.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one wait for a message or an event may take.
const WAIT: Duration = Duration::from_secs(10);

/// Every case, for one runtime.
macro_rules! blocking_suite {
    ($name:ident, $runtime:ty; $($case:ident),* $(,)?) => {
        mod $name {
            $(
                #[test]
                fn $case() {
                    super::run(super::$case::<$runtime>);
                }
            )*
        }
    };
}

macro_rules! every_runtime {
    ($($case:ident),* $(,)?) => {
        blocking_suite!(tokio, mqtt_tokio::TokioRuntime; $($case),*);
        blocking_suite!(smol, mqtt_smol::SmolRuntime; $($case),*);
        blocking_suite!(async_std, mqtt_async_std::AsyncStdRuntime; $($case),*);
    };
}

every_runtime!(
    round_trip_at_each_qos,
    manual_ack_from_blocking_code,
    recv_timeout_returns_on_time,
    drop_disconnects,
    calls_after_disconnect_fail_at_once,
);

/// Runs a case on a thread of its own, failing it if it does not finish in time (a blocking
/// call that never returns would otherwise hang the test binary).
fn run(case: fn()) {
    let (done_tx, done) = mpsc::channel();
    let test = thread::spawn(move || {
        case();
        let _ = done_tx.send(());
    });
    match done.recv_timeout(TEST_TIMEOUT) {
        // Finished, or panicked (the sender is dropped): join reports which.
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = test.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("the test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Our broker on runtime `R`, on a thread of its own, with its peer events on a channel.
struct Server {
    addr: SocketAddr,
    handle: BrokerHandle,
    events: mpsc::Receiver<PeerEvent>,
}

impl Server {
    fn start<R: Runtime + Default>() -> Server {
        let (events_tx, events) = mpsc::channel();
        let (handle, addrs) = Broker::<R>::start_in_thread(
            Broker::<R>::builder()
                .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .on_event(move |event| {
                    let _ = events_tx.send(event.clone());
                }),
        )
        .expect("start the broker");
        Server {
            addr: addrs[0],
            handle,
            events,
        }
    }

    /// Options for a 5.0 client `id` of this broker that does not reconnect.
    fn options(&self, id: &str) -> ClientOptions {
        ClientOptions::new("127.0.0.1", self.addr.port())
            .version(Version::V5)
            .client_id(id)
            .reconnect(None)
    }

    /// The next peer event (connects, disconnects), in time.
    fn next_event(&self) -> PeerEvent {
        self.events
            .recv_timeout(WAIT)
            .expect("a peer event in time")
    }

    fn stop(self) {
        futures_lite::future::block_on(self.handle.stop());
    }
}

/// The next message, in time.
fn next(subscription: &mut Subscription) -> mqtt_async::blocking::Message {
    subscription.recv_timeout(WAIT).expect("a message in time")
}

/// A blocking client is shared between threads like the async one.
fn assert_send_sync<T: Send + Sync + Clone>() {}

/// Subscribes and publishes to itself at QoS 0, 1 and 2, from another thread through a clone;
/// every publish returns with the broker's answer and every message comes back at its QoS.
fn round_trip_at_each_qos<R: Runtime + Default>() {
    assert_send_sync::<Client<R>>();
    let server = Server::start::<R>();
    let client = Client::<R>::connect(server.options("round-trip")).expect("connect");
    assert_eq!(
        client.events().try_recv().ok(),
        Some(ConnectionEvent::Connected {
            session_present: false
        })
    );
    let mut messages = client
        .subscribe("round-trip/#", QoS::ExactlyOnce)
        .expect("subscribe");
    assert_eq!(messages.reason_code(), mqtt_async::ReasonCode::GrantedQoS2);

    let publisher = client.clone();
    let published = thread::spawn(move || {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].map(|qos| {
            let payload = format!("at QoS {}", qos.as_u8());
            publisher
                .publish("round-trip/greeting", payload, qos)
                .expect("publish")
        })
    })
    .join()
    .expect("the publishing thread");
    assert_eq!(published[0].packet_id, None, "QoS 0 has no packet id");
    assert!(published[1].packet_id.is_some() && published[2].packet_id.is_some());

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let message = next(&mut messages);
        assert_eq!(message.topic(), "round-trip/greeting");
        assert_eq!(message.qos(), qos);
        assert_eq!(
            message.payload().as_ref(),
            format!("at QoS {}", qos.as_u8()).as_bytes()
        );
        assert!(!message.needs_ack());
    }
    client.disconnect().expect("disconnect");
    assert!(
        client
            .publish("round-trip/late", "", QoS::AtLeastOnce)
            .is_err(),
        "a disconnected client takes no more publishes"
    );
    server.stop();
}

/// Messages under manual acknowledgement, acked from plain threads out of order: acks reach the
/// wire in arrival order (MQTT-4.6.0-2). Acking 1 and 3 but not 2, then leaving, makes the
/// broker redeliver 2 and 3 (3's PUBACK waits behind 2's) and not 1 when the session resumes.
fn manual_ack_from_blocking_code<R: Runtime + Default>() {
    let server = Server::start::<R>();
    let persistent = || {
        server
            .options("manual")
            .session_expiry(Duration::from_secs(60))
    };
    let worker = Client::<R>::connect(persistent()).expect("connect the worker");
    let mut jobs = worker
        .subscribe_with(
            SubscribeOptions::new("jobs/#")
                .qos(QoS::AtLeastOnce)
                .manual_ack(),
        )
        .expect("subscribe");
    let producer = Client::<R>::connect(server.options("producer")).expect("connect");
    for n in 1..=3 {
        producer
            .publish(format!("jobs/{n}"), "", QoS::AtLeastOnce)
            .expect("publish");
    }
    let mut received: Vec<_> = (1..=3).map(|_| next(&mut jobs)).collect();
    for (n, job) in (1..).zip(&received) {
        assert_eq!(job.topic(), format!("jobs/{n}"));
        assert!(job.needs_ack());
    }
    let third = received.pop().expect("job 3");
    let _second = received.pop().expect("job 2");
    let first = received.pop().expect("job 1");
    thread::spawn(move || third.ack())
        .join()
        .expect("the acking thread")
        .expect("ack job 3");
    first.ack().expect("ack job 1");
    // Commands are handled in order: once this publish is acknowledged, PUBACK 1 was written.
    worker
        .publish("sync", "", QoS::AtLeastOnce)
        .expect("publish");
    worker.disconnect().expect("disconnect");
    drop((worker, jobs));

    let worker = Client::<R>::connect(persistent().clean_start(false)).expect("resume");
    let mut jobs = worker
        .subscribe_with(
            SubscribeOptions::new("jobs/#")
                .qos(QoS::AtLeastOnce)
                .manual_ack(),
        )
        .expect("subscribe again");
    for n in [2, 3] {
        let again = next(&mut jobs);
        assert_eq!(again.topic(), format!("jobs/{n}"), "redelivered");
        assert!(
            again.publish().dup,
            "a redelivery carries DUP (MQTT-3.3.1-1)"
        );
        again.ack().expect("ack the redelivery");
    }
    assert!(
        matches!(
            jobs.recv_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout)
        ),
        "job 1 was acknowledged: not redelivered"
    );
    drop((producer, worker));
    server.stop();
}

/// `recv_timeout` gives up after its timeout when nothing comes, returns a message that comes
/// in time, and tells a closed client apart from a timeout; `try_recv` does not wait.
fn recv_timeout_returns_on_time<R: Runtime + Default>() {
    let server = Server::start::<R>();
    let client = Client::<R>::connect(server.options("timeouts")).expect("connect");
    let mut quiet = client
        .subscribe("quiet/#", QoS::AtLeastOnce)
        .expect("subscribe");

    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    assert!(matches!(
        quiet.recv_timeout(timeout),
        Err(RecvTimeoutError::Timeout)
    ));
    let waited = start.elapsed();
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(1),
        "waited {waited:?} for a {timeout:?} timeout"
    );
    assert!(matches!(quiet.try_recv(), Err(TryRecvError::Empty)));

    let publisher = client.clone();
    let later = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        publisher.publish("quiet/1", "late", QoS::AtLeastOnce)
    });
    let message = next(&mut quiet);
    assert_eq!(message.payload().as_ref(), b"late");
    later
        .join()
        .expect("the publishing thread")
        .expect("publish");

    client.disconnect().expect("disconnect");
    let start = Instant::now();
    assert!(matches!(
        quiet.recv_timeout(WAIT),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(
        start.elapsed() < WAIT,
        "a closed client ends the wait at once"
    );
    assert!(matches!(quiet.try_recv(), Err(TryRecvError::Disconnected)));
    server.stop();
}

/// Dropping the last clone disconnects gracefully: the broker sees the client send DISCONNECT
/// (not a lost connection), and its subscriptions end.
fn drop_disconnects<R: Runtime + Default>() {
    let server = Server::start::<R>();
    let client = Client::<R>::connect(server.options("leaver")).expect("connect");
    match server.next_event() {
        PeerEvent::Connected { client_id, .. } => assert_eq!(&*client_id, "leaver"),
        other => panic!("expected Connected, got {other:?}"),
    }
    let mut messages = client
        .subscribe("leaver/#", QoS::AtLeastOnce)
        .expect("subscribe");
    let clone = client.clone();
    drop(client);
    assert!(
        matches!(messages.try_recv(), Err(TryRecvError::Empty)),
        "a clone keeps the connection open"
    );

    let start = Instant::now();
    drop(clone);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        start.elapsed()
    );
    match server.next_event() {
        PeerEvent::Disconnected {
            client_id,
            reason: DisconnectReason::Remote(_),
            ..
        } => assert_eq!(client_id.as_deref(), Some("leaver")),
        other => panic!("expected the client's DISCONNECT, got {other:?}"),
    }
    assert!(messages.next().is_none(), "the subscription ends");
    server.stop();
}

/// Calls made right after `disconnect` returned fail at once rather than wait for a reply that
/// never comes (the connection's task may still be ending when they are queued), and dropping
/// the client then is quick. Repeated, as that race is a matter of timing.
fn calls_after_disconnect_fail_at_once<R: Runtime + Default>() {
    let server = Server::start::<R>();
    for round in 0..10 {
        let client = Client::<R>::connect(server.options("quick")).expect("connect");
        client.disconnect().expect("disconnect");
        let start = Instant::now();
        assert!(client.publish("late", "", QoS::AtLeastOnce).is_err());
        assert!(client.subscribe("late", QoS::AtLeastOnce).is_err());
        let _ = client.disconnect();
        drop(client);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "round {round}: took {:?}",
            start.elapsed()
        );
    }
    server.stop();
}
