//! The cases, each generic over the runtime and run for both protocol versions against both
//! brokers. Every wait ends at a deadline (`within`, `next`, `wait_event`).

use std::collections::BTreeSet;
use std::time::Duration;

use futures_lite::future;
use mqtt_async::runtime::Runtime;
use mqtt_async::topic::{TopicError, TopicName};
use mqtt_async::{
    ConnectionEvent, Error, Publish, QoS, SubscribeOptions, UsageError, Version, Will,
};

use super::support::{
    Proxy, Server, Target, connect, next, persistent, sleep, spawn, wait_event, within,
};

const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// `text` as a [`TopicName`], for cases that spell out valid names.
fn name(text: &str) -> TopicName {
    TopicName::new(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

/// Two clients publish to each other at QoS 0, 1 and 2; each message arrives once, at the QoS
/// it was sent with, and a subscription granted a lower QoS downgrades delivery.
pub(crate) async fn qos_both_ways<R: Runtime + Default>(target: Target, version: Version) {
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let a = connect::<R>(server.options(version, "qos-a")).await;
    let b = connect::<R>(server.options(version, "qos-b")).await;
    let mut to_a = a.subscribe("qos/to-a", QoS::ExactlyOnce).await.unwrap();
    let mut to_b = b.subscribe("qos/to-b", QoS::ExactlyOnce).await.unwrap();
    for (from, to, topic) in [(&a, &mut to_b, "qos/to-b"), (&b, &mut to_a, "qos/to-a")] {
        for qos in ALL_QOS {
            let payload = format!("at QoS {}", qos.as_u8());
            let published = from.publish(topic, payload.clone(), qos).await.unwrap();
            assert_eq!(published.packet_id.is_some(), qos != QoS::AtMostOnce);
            let message = next::<R>(to).await;
            assert_eq!(
                (message.topic(), &message.payload()[..], message.qos()),
                (topic, payload.as_bytes(), qos)
            );
        }
    }
    // An invalid filter (MQTT-4.7.1-1) or topic name (MQTT-3.3.2-2) is refused before anything
    // is sent; the client goes on.
    assert!(matches!(
        a.subscribe("qos/#/down", QoS::AtLeastOnce).await,
        Err(Error::Usage(UsageError::InvalidTopic(
            TopicError::MisplacedWildcard
        )))
    ));
    assert!(matches!(
        a.publish("qos/+", "x", QoS::AtLeastOnce).await,
        Err(Error::Usage(UsageError::InvalidTopic(
            TopicError::WildcardInName
        )))
    ));
    // Granted QoS 1: a QoS 2 message is delivered at QoS 1 (MQTT-3.8.4-8).
    let mut downgraded = a.subscribe("qos/down", QoS::AtLeastOnce).await.unwrap();
    b.publish("qos/down", "two", QoS::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(next::<R>(&mut downgraded).await.qos(), QoS::AtLeastOnce);
    server.stop().await;
}

/// A retained message reaches a later subscriber flagged as retained; live messages are not
/// flagged (MQTT-3.3.1-9); an empty retained message clears the topic (MQTT-3.3.1-10).
pub(crate) async fn retained<R: Runtime + Default>(target: Target, version: Version) {
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let retain = |payload: &'static str| {
        let mut publish = Publish::new(name("retained/x"), payload);
        publish.qos = QoS::AtLeastOnce;
        publish.retain = true;
        publish
    };
    let a = connect::<R>(server.options(version, "retained-a")).await;
    a.publish_with(retain("one")).await.unwrap();

    let b = connect::<R>(server.options(version, "retained-b")).await;
    let mut messages = b.subscribe("retained/#", QoS::AtLeastOnce).await.unwrap();
    let first = next::<R>(&mut messages).await;
    assert_eq!((first.retain(), &first.payload()[..]), (true, &b"one"[..]));

    a.publish_with(retain("two")).await.unwrap();
    let live = next::<R>(&mut messages).await;
    assert_eq!((live.retain(), &live.payload()[..]), (false, &b"two"[..]));

    a.publish_with(retain("")).await.unwrap();
    assert!(next::<R>(&mut messages).await.payload().is_empty());

    // Nothing retained is left: a new subscriber's first message is one published after it
    // subscribed.
    let c = connect::<R>(server.options(version, "retained-c")).await;
    let mut late = c.subscribe("retained/#", QoS::AtLeastOnce).await.unwrap();
    a.publish("retained/marker", "after", QoS::AtLeastOnce)
        .await
        .unwrap();
    let marker = next::<R>(&mut late).await;
    assert_eq!(
        (marker.topic(), marker.retain()),
        ("retained/marker", false)
    );
    server.stop().await;
}

/// The will of a client whose connection drops is published (MQTT-3.1.2-8); the will of one
/// that disconnects normally is not (MQTT-3.1.2-10).
pub(crate) async fn will<R: Runtime + Default>(target: Target, version: Version) {
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let proxy = Proxy::start::<R>(server.addr()).await;
    let watcher = connect::<R>(server.options(version, "will-watcher")).await;
    let mut wills = watcher.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();

    let polite = connect::<R>(server.options(version, "will-polite").will(Will::new(
        name("will/polite"),
        "gone",
        QoS::AtLeastOnce,
    )))
    .await;
    polite.disconnect().await.unwrap();

    let lost = connect::<R>(
        server
            .options_at(proxy.addr(), version, "will-lost")
            .will(Will::new(name("will/lost"), "gone", QoS::AtLeastOnce))
            .reconnect(None),
    )
    .await;
    proxy.cut();
    let will = next::<R>(&mut wills).await;
    assert_eq!(
        (will.topic(), &will.payload()[..], will.qos()),
        ("will/lost", &b"gone"[..], QoS::AtLeastOnce)
    );
    // The client saw its connection end, and does not come back.
    wait_event::<R>(
        &lost.events(),
        "for the lost client's disconnection",
        |event| matches!(event, ConnectionEvent::Disconnected(_)),
    )
    .await;

    watcher
        .publish("will/marker", "", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next::<R>(&mut wills).await.topic(), "will/marker");
    server.stop().await;
}

/// A persistent session keeps the subscription and the QoS 1 and 2 messages published while
/// the client was away; a new client with the same identifier receives them.
pub(crate) async fn session_resume<R: Runtime + Default>(target: Target, version: Version) {
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let options = persistent(server.options(version, "resume-a"));
    let a = connect::<R>(options.clone()).await;
    let subscription = a.subscribe("resume/#", QoS::ExactlyOnce).await.unwrap();
    a.disconnect().await.unwrap();
    drop(subscription);
    drop(a);

    let b = connect::<R>(server.options(version, "resume-b")).await;
    let sent: Vec<(String, QoS)> = (0..6)
        .map(|i| {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            (format!("resume/{i}"), qos)
        })
        .collect();
    for (topic, qos) in &sent {
        b.publish(topic.clone(), "kept", *qos).await.unwrap();
    }

    let a = connect::<R>(options).await;
    let connected = wait_event::<R>(&a.events(), "for the connection event", |event| {
        matches!(event, ConnectionEvent::Connected { .. })
    })
    .await;
    assert_eq!(
        connected,
        ConnectionEvent::Connected {
            session_present: true
        }
    );
    let mut messages = a.subscribe("resume/#", QoS::ExactlyOnce).await.unwrap();
    for (topic, qos) in &sent {
        let message = next::<R>(&mut messages).await;
        assert_eq!((message.topic(), message.qos()), (topic.as_str(), *qos));
    }
    server.stop().await;
}

/// Manual acknowledgement: acks reach the wire in arrival order whatever order the application
/// acks in (MQTT-4.6.0-2), so after acking 3 and 1 but not 2, a dropped connection makes the
/// broker redeliver 2 and 3, flagged DUP.
pub(crate) async fn manual_ack_order<R: Runtime + Default>(target: Target, version: Version) {
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let proxy = Proxy::start::<R>(server.addr()).await;
    let a = connect::<R>(persistent(server.options_at(
        proxy.addr(),
        version,
        "manual-a",
    )))
    .await;
    let events = a.events();
    let mut messages = a
        .subscribe_with(
            SubscribeOptions::new("manual/#")
                .qos(QoS::AtLeastOnce)
                .manual_ack(),
        )
        .await
        .unwrap();
    let b = connect::<R>(server.options(version, "manual-b")).await;
    for i in 1..=3 {
        b.publish(format!("manual/{i}"), "", QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    for i in 1..=3 {
        let message = next::<R>(&mut messages).await;
        assert_eq!(message.topic(), format!("manual/{i}"));
        assert!(message.needs_ack());
        received.push(message);
    }
    let third = received.pop().unwrap();
    let second = received.pop().unwrap();
    let first = received.pop().unwrap();
    third.ack().await.unwrap();
    first.ack().await.unwrap();
    // Commands are handled in order: once this publish is acknowledged, PUBACK 1 was written
    // before it (and PUBACK 3 is held back behind the unacknowledged 2).
    a.publish("manual-sync", "", QoS::AtLeastOnce)
        .await
        .unwrap();

    proxy.cut();
    wait_event::<R>(&events, "for the session to resume", |event| {
        matches!(
            event,
            ConnectionEvent::Connected {
                session_present: true
            }
        )
    })
    .await;
    for i in [2, 3] {
        let again = next::<R>(&mut messages).await;
        assert_eq!(again.topic(), format!("manual/{i}"), "redelivered");
        assert!(
            again.publish().dup,
            "a redelivery carries DUP (MQTT-3.3.1-1)"
        );
        again.ack().await.unwrap();
    }
    // The stale copy came on the old connection: acking it does nothing.
    second.ack().await.unwrap();
    b.publish("manual/4", "", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(next::<R>(&mut messages).await.topic(), "manual/4");
    server.stop().await;
}

/// A subscriber that reads slowly, through a queue of 4, loses none of 500 QoS 1 messages of
/// 64 KiB (far more than the sockets buffer) published as fast as the broker takes them: while
/// its queue is full the client stops reading from the network, and the broker, bounded by the
/// client's Receive Maximum (5.0) or its own in-flight window (3.1.1), holds the rest; ours
/// holds the publisher back (its PUBACKs wait) once the subscriber's queue is full, mosquitto
/// queues without limit as configured here. Every publish is acknowledged and every message
/// arrives, in order.
pub(crate) async fn slow_consumer_loses_no_qos1<R: Runtime + Default>(
    target: Target,
    version: Version,
) {
    const COUNT: usize = 500;
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let a = connect::<R>(server.options(version, "slow-a")).await;
    let mut messages = a
        .subscribe_with(
            SubscribeOptions::new("slow/#")
                .qos(QoS::AtLeastOnce)
                .capacity(4),
        )
        .await
        .unwrap();
    let b = connect::<R>(server.options(version, "slow-b")).await;
    let padding = "x".repeat(64 * 1024);
    let publish = async {
        for i in 0..COUNT {
            let payload = format!("{i:08} {padding}");
            b.publish("slow/t", payload, QoS::AtLeastOnce)
                .await
                .expect("every publish acknowledged");
        }
    };
    let consume = async {
        // The subscriber stalls first, then reads slowly.
        sleep::<R>(Duration::from_millis(200)).await;
        for i in 0..COUNT {
            if i % 50 == 0 {
                sleep::<R>(Duration::from_millis(10)).await;
            }
            let message = next::<R>(&mut messages).await;
            let number = format!("{i:08} ");
            assert_eq!(&message.payload()[..9], number.as_bytes(), "in order");
        }
    };
    within::<R, _>("for the relay", future::zip(publish, consume)).await;
    server.stop().await;
}

/// The broker stops and starts again on the same port while the client is offline. The client
/// reconnects, and no QoS 1 message is lost: those it published while offline go out after the
/// reconnect, and messages published after the restart arrive. mosquitto persists the session,
/// so the messages queued for the client before the restart arrive too; our broker keeps
/// sessions in memory, so the client re-subscribes.
pub(crate) async fn restart<R: Runtime + Default>(target: Target, version: Version) {
    let Some(mut server) = Server::start_persistent::<R>(target).await else {
        return;
    };
    let proxy = Proxy::start::<R>(server.addr()).await;
    let a = connect::<R>(persistent(server.options_at(
        proxy.addr(),
        version,
        "restart-a",
    )))
    .await;
    let events = a.events();
    let mut messages = a.subscribe("restart/#", QoS::AtLeastOnce).await.unwrap();
    let b = connect::<R>(server.options(version, "restart-b")).await;

    proxy.set_open(false);
    wait_event::<R>(&events, "for the disconnection", |event| {
        matches!(event, ConnectionEvent::Disconnected(_))
    })
    .await;
    // Published while offline: they wait in the client's queue.
    let offline: Vec<_> = (0..3)
        .map(|i| {
            let a = a.clone();
            spawn::<R, _>(async move {
                a.publish(format!("restart/a/{i}"), "", QoS::AtLeastOnce)
                    .await
            })
        })
        .collect();
    // Queued by the broker for the offline session.
    for i in 0..3 {
        b.publish(format!("restart/b/{i}"), "", QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    server.restart::<R>().await;
    proxy.set_open(true);
    let connected = wait_event::<R>(&events, "for the reconnection", |event| {
        matches!(event, ConnectionEvent::Connected { .. })
    })
    .await;
    let kept = target == Target::Mosquitto;
    assert_eq!(
        connected,
        ConnectionEvent::Connected {
            session_present: kept
        }
    );
    for published in offline {
        within::<R, _>("for an offline publish", published.recv())
            .await
            .unwrap()
            .expect("an offline publish, acknowledged after the reconnect");
    }
    let mut expected: BTreeSet<String> = (0..3).map(|i| format!("restart/a/{i}")).collect();
    if kept {
        expected.extend((0..3).map(|i| format!("restart/b/{i}")));
    }
    receive_all::<R>(&mut messages, expected).await;

    // The subscription is active again (its own messages came back): a publication after the
    // restart arrives.
    for i in 0..3 {
        b.publish(format!("restart/c/{i}"), "", QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    receive_all::<R>(
        &mut messages,
        (0..3).map(|i| format!("restart/c/{i}")).collect(),
    )
    .await;
    server.stop().await;
}

/// Receives until every topic in `expected` arrived; anything else (but a redelivery) fails.
async fn receive_all<R: Runtime + Default>(
    messages: &mut mqtt_async::Subscription,
    mut expected: BTreeSet<String>,
) {
    let mut seen = BTreeSet::new();
    while !expected.is_empty() {
        let message = next::<R>(messages).await;
        let topic = message.topic().to_owned();
        if !expected.remove(&topic) {
            assert!(
                seen.contains(&topic) && message.publish().dup,
                "unexpected {topic} (still waiting for {expected:?})"
            );
        }
        seen.insert(topic);
    }
}

/// A clean-session subscriber with manual acknowledgement drops the first of 400 QoS 1 messages
/// without acking it and acks the rest: all 399 arrive (the dropped one no longer holds back
/// every acknowledgement after it, which stopped the broker's window after 19 or 99 more), and
/// the client reports that it acknowledged the dropped one in its place.
pub(crate) async fn manual_ack_dropped_message_does_not_stall<R: Runtime + Default>(
    target: Target,
    version: Version,
) {
    const COUNT: usize = 400;
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let a = connect::<R>(server.options(version, "drop-a")).await;
    let events = a.events();
    let mut messages = a
        .subscribe_with(
            SubscribeOptions::new("drop/#")
                .qos(QoS::AtLeastOnce)
                .manual_ack(),
        )
        .await
        .unwrap();
    let b = connect::<R>(server.options(version, "drop-b")).await;
    let publishing = spawn::<R, _>(async move {
        for i in 0..COUNT {
            b.publish("drop/t", i.to_string(), QoS::AtLeastOnce)
                .await
                .expect("acknowledged");
        }
        b
    });
    let first = next::<R>(&mut messages).await;
    assert_eq!(first.payload().as_ref(), b"0");
    drop(first);
    for i in 1..COUNT {
        let message = next::<R>(&mut messages).await;
        assert_eq!(message.payload().as_ref(), i.to_string().as_bytes());
        message.ack().await.unwrap();
    }
    within::<R, _>("for the publisher", publishing.recv())
        .await
        .expect("the publisher finished");
    let dropped = wait_event::<R>(&events, "for the report", |event| {
        matches!(event, ConnectionEvent::DroppedUnacked { .. })
    })
    .await;
    assert!(
        matches!(&dropped, ConnectionEvent::DroppedUnacked { topic, redelivered: false } if *topic == "drop/t"),
        "{dropped:?}"
    );
    server.stop().await;
}

/// With a persistent session, a manual-ack message dropped without its ack comes back: the
/// client reconnects at once and the broker redelivers it (DUP set) with whatever followed it
/// unacknowledged; every one of the 400 messages reaches the application.
pub(crate) async fn manual_ack_dropped_message_is_redelivered<R: Runtime + Default>(
    target: Target,
    version: Version,
) {
    const COUNT: usize = 400;
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let a = connect::<R>(persistent(server.options(version, "redeliver-a"))).await;
    let events = a.events();
    let mut messages = a
        .subscribe_with(
            SubscribeOptions::new("redeliver/#")
                .qos(QoS::AtLeastOnce)
                .manual_ack(),
        )
        .await
        .unwrap();
    let b = connect::<R>(server.options(version, "redeliver-b")).await;
    let publishing = spawn::<R, _>(async move {
        for i in 0..COUNT {
            b.publish("redeliver/t", i.to_string(), QoS::AtLeastOnce)
                .await
                .expect("acknowledged");
        }
        b
    });
    let first = next::<R>(&mut messages).await;
    assert_eq!(first.payload().as_ref(), b"0");
    drop(first);
    let mut seen = BTreeSet::new();
    let mut again = None;
    while seen.len() < COUNT {
        let message = next::<R>(&mut messages).await;
        let n: usize = std::str::from_utf8(message.payload())
            .expect("text")
            .parse()
            .expect("a number");
        if n == 0 {
            again = Some(message.publish().dup);
        }
        seen.insert(n);
        message.ack().await.unwrap();
    }
    assert_eq!(
        again,
        Some(true),
        "the dropped message came again, as a redelivery"
    );
    within::<R, _>("for the publisher", publishing.recv())
        .await
        .expect("the publisher finished");
    let dropped = wait_event::<R>(&events, "for the report", |event| {
        matches!(event, ConnectionEvent::DroppedUnacked { .. })
    })
    .await;
    assert!(
        matches!(
            &dropped,
            ConnectionEvent::DroppedUnacked {
                redelivered: true,
                ..
            }
        ),
        "{dropped:?}"
    );
    server.stop().await;
}

/// A consumer that is busy far longer than its keep alive loses neither its connection nor a
/// message: while its subscription's queue is full the client keeps reading (the broker, held
/// by our Receive Maximum, sends no more than it may), so PINGRESP is seen. This scales down a
/// consumer busy for 45 s with a keep alive of 2 s: keep alive 1 s, a ping timeout of 2 s, busy
/// for 5 s.
pub(crate) async fn busy_consumer_keeps_its_connection<R: Runtime + Default>(
    target: Target,
    version: Version,
) {
    const COUNT: usize = 300;
    let Some(server) = Server::start::<R>(target).await else {
        return;
    };
    let mut options = server
        .options(version, "busy-a")
        .keep_alive(Duration::from_secs(1));
    options.config_mut().ping_timeout = Duration::from_secs(2);
    let a = connect::<R>(options).await;
    let events = a.events();
    let mut messages = a
        .subscribe_with(
            SubscribeOptions::new("busy/#")
                .qos(QoS::AtLeastOnce)
                .capacity(4),
        )
        .await
        .unwrap();
    let b = connect::<R>(server.options(version, "busy-b")).await;
    let publishing = spawn::<R, _>(async move {
        for i in 0..COUNT {
            b.publish("busy/t", i.to_string(), QoS::AtLeastOnce)
                .await
                .expect("acknowledged");
        }
        b
    });
    // Busy, for five ping timeouts.
    sleep::<R>(Duration::from_secs(5)).await;
    for i in 0..COUNT {
        let message = next::<R>(&mut messages).await;
        assert_eq!(message.payload().as_ref(), i.to_string().as_bytes());
    }
    within::<R, _>("for the publisher", publishing.recv())
        .await
        .expect("the publisher finished");
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ConnectionEvent::Disconnected(_)),
            "the busy consumer was disconnected: {event:?}"
        );
    }
    server.stop().await;
}
