//! Bridges: our broker connected to a real mosquitto (out, in and both ways, prefixes, QoS 0/1/2,
//! retained messages, 5.0 properties, with 3.1.1 and 5.0 on the remote side), across an outage
//! of the remote broker, and two of our brokers bridged both ways without a loop.

use std::net::SocketAddr;
use std::time::Duration;

use mqtt_tokio::broker::{BridgeOptions, BridgeStatus, BridgeTopic, Direction};
use mqtt_tokio::{
    Broker, BrokerHandle, Client, ClientOptions, Message, Publish, QoS, Subscription, TopicName,
    UserProperty, Version,
};

use crate::mosquitto::Mosquitto;

/// The most any one step may take.
const STEP: Duration = Duration::from_secs(15);

/// After a marker that follows the path an echo would take arrived, how long an echo has to
/// show up anyway.
const GRACE: Duration = Duration::from_millis(300);

const VERSIONS: [Version; 2] = [Version::V3_1_1, Version::V5];

async fn start_ours(bridge: Option<BridgeOptions>) -> (BrokerHandle, SocketAddr) {
    let mut builder = Broker::builder().bind("127.0.0.1:0".parse().unwrap());
    if let Some(bridge) = bridge {
        builder = builder.bridge(bridge);
    }
    let broker = builder.build().await.expect("broker");
    let addr = broker.local_addrs()[0];
    (broker.spawn(), addr)
}

/// The remote side of a bridge: a persistent session, as a bridge should have.
fn remote(address: &str, version: Version, client_id: &str) -> ClientOptions {
    let options = ClientOptions::from_url(&format!("mqtt://{address}"))
        .unwrap()
        .version(version)
        .client_id(client_id)
        .clean_start(false);
    match version {
        Version::V5 => options.session_expiry(Duration::from_secs(3600)),
        _ => options,
    }
}

async fn client(address: &str, version: Version, client_id: &str) -> Client {
    let options = ClientOptions::from_url(&format!("mqtt://{address}"))
        .unwrap()
        .version(version)
        .client_id(client_id);
    tokio::time::timeout(STEP, Client::connect(options))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Waits until the bridge says `connected`.
async fn bridge_state(handle: &BrokerHandle, connected: bool) -> BridgeStatus {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let statuses = handle.bridges().await;
        if let Some(status) = statuses.first()
            && status.connected == connected
        {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge is not {}: {statuses:?}",
            if connected { "connected" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(subscription: &mut Subscription, what: &str) -> Message {
    tokio::time::timeout(STEP, subscription.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {STEP:?}"))
        .unwrap_or_else(|| panic!("{what}: the subscription ended"))
}

/// Nothing more arrives within the grace period.
async fn quiet(subscription: &mut Subscription, what: &str) {
    if let Ok(Some(message)) = tokio::time::timeout(GRACE, subscription.recv()).await {
        panic!("{what}: unexpected {:?}", message.topic());
    }
}

async fn publish(client: &Client, topic: &str, payload: &str, qos: QoS, retain: bool) {
    let mut publish = Publish::new(TopicName::new(topic).unwrap(), payload.to_string());
    publish.qos = qos;
    publish.retain = retain;
    tokio::time::timeout(STEP, client.publish_with(publish))
        .await
        .expect("publish in time")
        .expect("publish");
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test]
async fn bridged_to_mosquitto_out_in_and_both_ways_with_prefixes_qos_and_retain() {
    for version in VERSIONS {
        let Some(mosquitto) = Mosquitto::start() else {
            return;
        };
        let cloud = mosquitto.address();
        let bridge = BridgeOptions::new("cloud", remote(&cloud, version, "edge.cloud"))
            .topic(BridgeTopic::new("up/#", Direction::Out).remote_prefix("edge/"))
            .topic(BridgeTopic::new("down/#", Direction::In).local_prefix("from-cloud/"))
            .topic(BridgeTopic::new("shared/#", Direction::Both));
        let (handle, ours) = start_ours(Some(bridge)).await;
        let ours = ours.to_string();
        bridge_state(&handle, true).await;

        let local = client(&ours, Version::V5, "local").await;
        let far = client(&cloud, version, "far").await;
        let mut local_in = local
            .subscribe("from-cloud/#", QoS::ExactlyOnce)
            .await
            .unwrap();
        let mut local_shared = local.subscribe("shared/#", QoS::ExactlyOnce).await.unwrap();
        let mut far_out = far.subscribe("edge/up/#", QoS::ExactlyOnce).await.unwrap();
        let mut far_shared = far.subscribe("shared/#", QoS::ExactlyOnce).await.unwrap();

        // Out, with the remote prefix added; each message keeps its QoS.
        for qos in QOS {
            publish(&local, &format!("up/q{}", qos as u8), "out", qos, false).await;
        }
        let mut got = Vec::new();
        for _ in QOS {
            let message = next(&mut far_out, "out").await;
            got.push((message.topic().to_string(), message.qos()));
        }
        got.sort_by_key(|(_, qos)| *qos as u8);
        assert_eq!(
            got,
            [
                ("edge/up/q0".to_string(), QoS::AtMostOnce),
                ("edge/up/q1".to_string(), QoS::AtLeastOnce),
                ("edge/up/q2".to_string(), QoS::ExactlyOnce),
            ],
            "{version:?}"
        );

        // In, with the local prefix added.
        for qos in QOS {
            publish(&far, &format!("down/q{}", qos as u8), "in", qos, false).await;
        }
        let mut got = Vec::new();
        for _ in QOS {
            let message = next(&mut local_in, "in").await;
            got.push((message.topic().to_string(), message.qos()));
        }
        got.sort_by_key(|(_, qos)| *qos as u8);
        assert_eq!(
            got,
            [
                ("from-cloud/down/q0".to_string(), QoS::AtMostOnce),
                ("from-cloud/down/q1".to_string(), QoS::AtLeastOnce),
                ("from-cloud/down/q2".to_string(), QoS::ExactlyOnce),
            ],
            "{version:?}"
        );

        // Both ways on the same topics: each side gets each message once, nothing bounces.
        publish(&local, "shared/from-local", "x", QoS::AtLeastOnce, false).await;
        assert_eq!(
            next(&mut far_shared, "both").await.topic(),
            "shared/from-local"
        );
        assert_eq!(
            next(&mut local_shared, "both").await.topic(),
            "shared/from-local"
        );
        publish(&far, "shared/from-far", "y", QoS::AtLeastOnce, false).await;
        assert_eq!(
            next(&mut local_shared, "both").await.topic(),
            "shared/from-far"
        );
        assert_eq!(
            next(&mut far_shared, "both").await.topic(),
            "shared/from-far"
        );
        quiet(&mut local_shared, "an echo on our broker").await;
        quiet(&mut far_shared, "an echo on mosquitto").await;

        // Retained messages are retained on the other side.
        publish(&local, "up/kept", "kept out", QoS::AtLeastOnce, true).await;
        assert_eq!(
            next(&mut far_out, "retained out").await.topic(),
            "edge/up/kept"
        );
        publish(&far, "down/kept", "kept in", QoS::AtLeastOnce, true).await;
        assert_eq!(
            next(&mut local_in, "retained in").await.topic(),
            "from-cloud/down/kept"
        );
        let late = client(&cloud, version, "late-far").await;
        let mut kept = late
            .subscribe("edge/up/kept", QoS::AtLeastOnce)
            .await
            .unwrap();
        let message = next(&mut kept, "retained on mosquitto").await;
        assert!(message.retain(), "{version:?}: not retained on mosquitto");
        assert_eq!(&message.payload()[..], b"kept out");
        let late_local = client(&ours, Version::V5, "late-local").await;
        let mut kept = late_local
            .subscribe("from-cloud/down/kept", QoS::AtLeastOnce)
            .await
            .unwrap();
        let message = next(&mut kept, "retained here").await;
        assert!(message.retain(), "{version:?}: not retained here");
        assert_eq!(&message.payload()[..], b"kept in");

        // 5.0: the properties cross, the message expiry counted down.
        if version == Version::V5 {
            let mut with = Publish::new(TopicName::new("up/props").unwrap(), "p");
            with.qos = QoS::AtLeastOnce;
            with.properties.user_properties = vec![UserProperty::new("site", "7")];
            with.properties.content_type = Some("text/plain".into());
            with.properties.correlation_data = Some("req-1".into());
            with.properties.message_expiry_interval = Some(3600);
            local.publish_with(with).await.unwrap();
            let message = next(&mut far_out, "properties").await;
            let properties = message.properties();
            assert_eq!(properties.user_properties, [UserProperty::new("site", "7")]);
            assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(properties.correlation_data.as_deref(), Some(&b"req-1"[..]));
            assert!(
                properties
                    .message_expiry_interval
                    .is_some_and(|left| left > 0 && left <= 3600),
                "{properties:?}"
            );
        }

        let status = handle.bridges().await.remove(0);
        let extra = u64::from(version == Version::V5);
        assert_eq!(
            (status.sent, status.received, status.refused),
            (3 + 1 + 1 + extra, 3 + 1 + 1, 0),
            "{version:?}: {status:?}"
        );
        tokio::time::timeout(STEP, handle.stop())
            .await
            .expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_remote_broker_loses_nothing_and_duplicates_no_qos_2() {
    for version in VERSIONS {
        let Some(mut mosquitto) = Mosquitto::start_with(&crate::mosquitto::PERSISTENCE) else {
            return;
        };
        let cloud = mosquitto.address();
        let bridge = BridgeOptions::new("cloud", remote(&cloud, version, "edge.cloud"))
            .topic(BridgeTopic::new("up/#", Direction::Out));
        let (handle, ours) = start_ours(Some(bridge)).await;
        let ours = ours.to_string();
        bridge_state(&handle, true).await;
        let local = client(&ours, Version::V5, "local").await;
        let far = tokio::time::timeout(
            STEP,
            Client::connect(remote(&cloud, version, "far-subscriber")),
        )
        .await
        .unwrap()
        .unwrap();
        let mut far_sub = far.subscribe("up/#", QoS::ExactlyOnce).await.unwrap();

        let qos_of = |n: usize| {
            if n.is_multiple_of(2) {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            }
        };
        const BEFORE: usize = 20;
        const DURING: usize = 200;
        for n in 0..BEFORE {
            publish(&local, &format!("up/{n}"), &n.to_string(), qos_of(n), false).await;
        }
        for _ in 0..BEFORE {
            next(&mut far_sub, "before the outage").await;
        }

        tokio::task::block_in_place(|| mosquitto.stop());
        let status = bridge_state(&handle, false).await;
        assert!(status.last_error.is_some(), "{status:?}");
        // Our broker takes (acknowledges) every one while the remote broker is away.
        for n in BEFORE..BEFORE + DURING {
            publish(&local, &format!("up/{n}"), &n.to_string(), qos_of(n), false).await;
        }
        tokio::task::block_in_place(|| mosquitto.start_again());

        let mut seen = vec![0usize; BEFORE + DURING];
        let mut missing = DURING;
        while missing > 0 {
            let Ok(Some(message)) = tokio::time::timeout(STEP, far_sub.recv()).await else {
                panic!(
                    "{version:?}: {missing} of {DURING} missing after the outage; the bridge: \
                     {:?}; mosquitto's log:\n{}",
                    handle.bridges().await,
                    mosquitto.log()
                );
            };
            let n: usize = std::str::from_utf8(message.payload())
                .unwrap()
                .parse()
                .unwrap();
            if (BEFORE..BEFORE + DURING).contains(&n) && seen[n] == 0 {
                missing -= 1;
            }
            seen[n] += 1;
        }
        quiet(&mut far_sub, "after everything arrived").await;
        let twice: Vec<usize> = (0..BEFORE + DURING)
            .filter(|&n| qos_of(n) == QoS::ExactlyOnce && seen[n] > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "{version:?}: QoS 2 messages twice: {twice:?}"
        );
        let status = bridge_state(&handle, true).await;
        assert!(status.sent >= (BEFORE + DURING) as u64, "{status:?}");
        tokio::time::timeout(STEP, handle.stop())
            .await
            .expect("stops");
    }
}

#[tokio::test]
async fn two_of_our_brokers_bridged_both_ways_do_not_loop() {
    for version in VERSIONS {
        let (cloud_handle, cloud) = start_ours(None).await;
        let cloud = cloud.to_string();
        let bridge = BridgeOptions::new("cloud", remote(&cloud, version, "edge.cloud"))
            .topic(BridgeTopic::new("t/#", Direction::Both));
        let (edge_handle, edge) = start_ours(Some(bridge)).await;
        let edge = edge.to_string();
        bridge_state(&edge_handle, true).await;

        let at_edge = client(&edge, version, "at-edge").await;
        let at_cloud = client(&cloud, version, "at-cloud").await;
        let mut edge_sub = at_edge.subscribe("t/#", QoS::ExactlyOnce).await.unwrap();
        let mut cloud_sub = at_cloud.subscribe("t/#", QoS::ExactlyOnce).await.unwrap();

        for (n, qos) in QOS.into_iter().enumerate() {
            publish(&at_edge, &format!("t/edge/{n}"), "e", qos, false).await;
            publish(&at_cloud, &format!("t/cloud/{n}"), "c", qos, false).await;
        }
        for subscription in [&mut edge_sub, &mut cloud_sub] {
            let mut topics = Vec::new();
            for _ in 0..2 * QOS.len() {
                topics.push(next(subscription, "both ways").await.topic().to_string());
            }
            topics.sort();
            assert_eq!(
                topics,
                [
                    "t/cloud/0",
                    "t/cloud/1",
                    "t/cloud/2",
                    "t/edge/0",
                    "t/edge/1",
                    "t/edge/2"
                ],
                "{version:?}"
            );
            quiet(subscription, "a message that bounced").await;
        }
        // Each message crossed the bridge once.
        let status = edge_handle.bridges().await.remove(0);
        assert_eq!(
            (status.sent, status.received),
            (3, 3),
            "{version:?}: {status:?}"
        );
        tokio::time::timeout(STEP, edge_handle.stop())
            .await
            .unwrap();
        tokio::time::timeout(STEP, cloud_handle.stop())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn what_waits_for_an_unreachable_remote_survives_a_restart_of_our_broker() {
    // A port nobody listens on yet: the remote broker comes up there later.
    let cloud_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let bridge = || {
        BridgeOptions::new(
            "cloud",
            remote(&cloud_addr.to_string(), Version::V5, "edge.cloud"),
        )
        .topic(BridgeTopic::new("up/#", Direction::Out))
    };
    let edge = |bridge: BridgeOptions| {
        Broker::builder()
            .bind("127.0.0.1:0".parse().unwrap())
            .data_dir(data.path())
            .bridge(bridge)
            .build()
    };
    const COUNT: usize = 50;
    {
        let broker = edge(bridge()).await.expect("edge broker");
        let addr = broker.local_addrs()[0].to_string();
        let handle = broker.spawn();
        // Accepted only once the bridge's local session keeps what the out topics receive.
        let local = client(&addr, Version::V5, "local").await;
        for n in 0..COUNT {
            publish(
                &local,
                &format!("up/{n}"),
                &n.to_string(),
                QoS::ExactlyOnce,
                false,
            )
            .await;
        }
        let status = handle.bridges().await.remove(0);
        assert!(!status.connected, "{status:?}");
        tokio::time::timeout(STEP, handle.stop())
            .await
            .expect("stops");
    }
    // Our broker again, from its data directory; then the remote broker comes up.
    let broker = edge(bridge()).await.expect("edge broker again");
    let handle = broker.spawn();
    let cloud = Broker::builder()
        .bind(cloud_addr)
        .build()
        .await
        .expect("cloud");
    let cloud_handle = cloud.spawn();
    let far = client(&cloud_addr.to_string(), Version::V5, "far").await;
    // Subscribed before the bridge brings the backlog: wait for it only now.
    let mut far_sub = far.subscribe("up/#", QoS::ExactlyOnce).await.unwrap();
    bridge_state(&handle, true).await;
    let mut got = Vec::new();
    for _ in 0..COUNT {
        let message = next(&mut far_sub, "the backlog").await;
        got.push(String::from_utf8(message.payload().to_vec()).unwrap());
    }
    quiet(&mut far_sub, "a duplicate").await;
    let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
    assert_eq!(got, expected, "in order, each once");
    tokio::time::timeout(STEP, handle.stop()).await.unwrap();
    tokio::time::timeout(STEP, cloud_handle.stop())
        .await
        .unwrap();
}
