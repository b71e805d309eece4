//! What our async client promises against a real mosquitto and against our broker, beyond the
//! client suite: a resumed session's backlog, sent before the application has subscribed again
//! (and by mosquitto 2.0 past our Receive Maximum), reaches the application whole, with no
//! disconnect.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, ConnectionEvent, QoS, Version};

use crate::mosquitto::Mosquitto;
use crate::peer_events::Hooked;

const TIMEOUT: Duration = Duration::from_secs(60);

const BOTH: [Version; 2] = [Version::V3_1_1, Version::V5];

fn options(port: u16, version: Version, id: &str) -> ClientOptions {
    ClientOptions::new("127.0.0.1", port)
        .version(version)
        .client_id(id)
}

/// A persistent session is left with 3,000 QoS 1 messages queued; a new client (a restarted
/// process) resumes it. The backlog arrives right after CONNACK, before the application
/// subscribes again: it is held unacknowledged (never acknowledged and dropped), the client
/// stops reading once it holds `queue_capacity` of them, and the subscription takes them all,
/// in order, followed by the rest.
///
/// Both versions use the same client identifier, one right after the other: a disconnect
/// returns once the broker has closed its side, so the next connection cannot overtake the
/// last one's DISCONNECT (mosquitto then took the session over from a connection it still
/// thought alive, and messages routed to it were lost).
async fn resumed_backlog_arrives_whole(port: u16, version: Version) {
    const COUNT: usize = 3000;
    let persistent = || {
        options(port, version, "resumer")
            .clean_start(false)
            .session_expiry(Duration::from_secs(300))
    };
    let first = tokio::time::timeout(TIMEOUT, Client::connect(persistent()))
        .await
        .expect("connect in time")
        .expect("connect");
    let subscription = first
        .subscribe("backlog/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    // Leave without unsubscribing: the broker keeps the session and its subscription (dropping
    // the subscription while connected would unsubscribe).
    first.disconnect().await.expect("disconnect");
    drop((subscription, first));
    let publisher = tokio::time::timeout(
        TIMEOUT,
        Client::connect(options(port, version, &format!("feeder-{version:?}"))),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    for n in 0..COUNT {
        publisher
            .publish("backlog/t", n.to_string(), QoS::AtLeastOnce)
            .await
            .expect("acknowledged");
    }
    let second = tokio::time::timeout(TIMEOUT, Client::connect(persistent()))
        .await
        .expect("connect in time")
        .expect("connect");
    let events = second.events();
    let mut messages = second
        .subscribe("backlog/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    for n in 0..COUNT {
        let message = tokio::time::timeout(TIMEOUT, messages.recv())
            .await
            .unwrap_or_else(|_| panic!("{version:?}: message {n} in time"))
            .expect("the subscription is open");
        assert_eq!(
            message.payload().as_ref(),
            n.to_string().as_bytes(),
            "{version:?}"
        );
    }
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ConnectionEvent::Disconnected(_)),
            "{version:?}: {event:?}"
        );
    }
    second.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn a_resumed_backlog_from_mosquitto_arrives_whole() {
    // Queues without limit (its default of 1,000 would drop two thirds of the backlog).
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    for version in BOTH {
        resumed_backlog_arrives_whole(broker.port(), version).await;
    }
}

#[tokio::test]
async fn a_resumed_backlog_from_our_broker_arrives_whole() {
    let broker =
        Hooked::start(Broker::builder().bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
    for version in BOTH {
        resumed_backlog_arrives_whole(broker.addr.port(), version).await;
    }
    broker.stop().await;
}

/// `start_publish` as a pipeline: one task starts 2,000 QoS 1 and 2 publishes, keeping at most
/// 500 unresolved, far beyond the in-flight window (10); every handle resolves with its packet
/// identifier, and the subscriber gets every message, in order.
#[tokio::test]
async fn start_publish_pipelines_beyond_the_window_and_keeps_the_order() {
    use std::collections::VecDeque;

    use mqtt_tokio::{Publish, TopicName};

    let broker =
        Hooked::start(Broker::builder().bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
    let port = broker.addr.port();
    for version in BOTH {
        let subscriber = Client::connect(options(port, version, "pipe-sub"))
            .await
            .unwrap();
        let mut messages = subscriber
            .subscribe("pipe/#", QoS::ExactlyOnce)
            .await
            .unwrap();
        let publisher = Client::connect(options(port, version, "pipe-pub"))
            .await
            .unwrap();
        const COUNT: usize = 2_000;
        let mut handles = VecDeque::new();
        let mut resolved = 0;
        for n in 0..COUNT {
            let mut publish = Publish::new(TopicName::new("pipe/x").unwrap(), n.to_string());
            publish.qos = if n % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            handles.push_back(publisher.start_publish(publish).await.unwrap());
            if handles.len() >= 500 {
                let done = handles.pop_front().unwrap().wait().await.unwrap();
                assert!(done.packet_id.is_some());
                resolved += 1;
            }
        }
        for handle in handles {
            assert!(handle.wait().await.unwrap().packet_id.is_some());
            resolved += 1;
        }
        assert_eq!(resolved, COUNT);
        for n in 0..COUNT {
            let message = tokio::time::timeout(TIMEOUT, messages.recv())
                .await
                .expect("in time")
                .expect("a message");
            assert_eq!(message.payload(), n.to_string().as_bytes(), "{version:?}");
        }
        publisher.disconnect().await.unwrap();
        subscriber.disconnect().await.unwrap();
    }
    broker.stop().await;
}
