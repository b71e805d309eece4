//! Operating the broker: its `$SYS/broker/…` topics.

use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, Error, QoS, ReasonCode, Subscription, Version};

const STEP: Duration = Duration::from_secs(10);

async fn client(port: u16, id: &str) -> Client {
    let options = ClientOptions::new("127.0.0.1", port)
        .version(Version::V5)
        .client_id(id)
        .reconnect(None);
    tokio::time::timeout(STEP, Client::connect(options))
        .await
        .expect("in time")
        .expect("connect")
}

/// Reads `$SYS` values until one equals `want`.
async fn until(subscription: &mut Subscription, want: &str) {
    let deadline = tokio::time::Instant::now() + STEP;
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout_at(deadline, subscription.recv())
            .await
            .unwrap_or_else(|_| panic!("never {want:?}; saw {seen:?}"))
            .expect("subscribed");
        let value = String::from_utf8_lossy(message.payload()).to_string();
        if value == want {
            return;
        }
        seen.push(value);
    }
}

#[tokio::test]
async fn sys_topics_follow_the_clients_and_clients_cannot_publish_there() {
    let broker = Broker::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .sys_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let port = broker.local_addrs()[0].port();
    let handle = broker.spawn();

    let watcher = client(port, "watcher").await;
    let mut connected = watcher
        .subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await
        .unwrap();
    until(&mut connected, "1").await;
    let other = client(port, "other").await;
    until(&mut connected, "2").await;
    other.disconnect().await.unwrap();
    until(&mut connected, "1").await;

    // Retained: a client subscribing later gets the current values at once.
    let mut version = watcher
        .subscribe("$SYS/broker/version", QoS::AtMostOnce)
        .await
        .unwrap();
    let message = tokio::time::timeout(STEP, version.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(message.retain());
    assert!(
        std::str::from_utf8(message.payload())
            .unwrap()
            .starts_with("mqtt-rs ")
    );

    // MQTT-4.7.2-1: `$` topics are not for clients to exchange messages on.
    let forged = watcher
        .publish("$SYS/broker/clients/connected", "999", QoS::AtLeastOnce)
        .await;
    assert!(
        matches!(
            forged,
            Err(Error::Rejected {
                reason_code: ReasonCode::NotAuthorized,
                ..
            })
        ),
        "{forged:?}"
    );
    for _ in 0..3 {
        let message = tokio::time::timeout(STEP, connected.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &message.payload()[..],
            b"1",
            "the broker's value, not the client's"
        );
    }
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats.dropped.not_authorized, 1);
    tokio::time::timeout(STEP, handle.stop()).await.unwrap();
}

/// Renewed certificates: `reload_tls` makes new connections use the files as they are now, and
/// files that do not load leave the configuration in use.
#[tokio::test]
async fn reload_tls_takes_renewed_certificates_and_keeps_the_old_ones_when_the_new_fail() {
    use mqtt_tokio::{ServerTls, TlsOptions};

    use crate::pki::Pki;

    let old = Pki::new();
    let new = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let broker = Broker::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap(), ServerTls::new(&cert, &key))
        .build()
        .await
        .unwrap();
    let port = broker.local_addrs()[0].port();
    let handle = broker.spawn();
    let trusting = |pki: &Pki| {
        let options = ClientOptions::new("127.0.0.1", port)
            .tls(TlsOptions::ca_file(&pki.ca).server_name("localhost"))
            .reconnect(None);
        async move {
            tokio::time::timeout(STEP, Client::connect(options))
                .await
                .expect("in time")
        }
    };
    assert!(trusting(&old).await.is_ok());
    assert!(
        trusting(&new).await.is_err(),
        "a certificate from the new CA already"
    );

    std::fs::copy(&new.cert, &cert).unwrap();
    std::fs::copy(&new.key, &key).unwrap();
    assert_eq!(handle.reload_tls().await.unwrap(), 1);
    assert!(
        trusting(&new).await.is_ok(),
        "the renewed certificate is not used"
    );
    assert!(
        trusting(&old).await.is_err(),
        "the old certificate is still used"
    );

    std::fs::write(&key, "not a key").unwrap();
    assert!(handle.reload_tls().await.is_err(), "a broken key was taken");
    assert!(
        trusting(&new).await.is_ok(),
        "the configuration in use was lost"
    );
    tokio::time::timeout(STEP, handle.stop()).await.unwrap();
}

/// paho's interoperability case for subscription failure: an ACL that allows `#` and denies
/// `test/nosubscribe`. The SUBSCRIBE is refused (5.0: 0x87, 3.1.1: 0x80), and a message on the
/// denied topic (published by a user allowed to) does not reach the client through `#`.
#[tokio::test]
async fn a_deny_rule_refuses_the_subscription_and_the_delivery_through_a_wider_one() {
    use mqtt_tokio::broker::AclFile;

    let acl = AclFile::parse(
        "topic readwrite #\ntopic deny test/nosubscribe\n\nuser admin\ntopic readwrite #\n",
    )
    .unwrap();
    let broker = Broker::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .authorizer(acl)
        .build()
        .await
        .unwrap();
    let port = broker.local_addrs()[0].port();
    let handle = broker.spawn();
    for version in [Version::V5, Version::V3_1_1] {
        let options = ClientOptions::new("127.0.0.1", port)
            .version(version)
            .client_id(format!("anon-{version:?}"))
            .reconnect(None);
        let anonymous = Client::connect(options).await.unwrap();
        let refused = anonymous
            .subscribe("test/nosubscribe", QoS::AtLeastOnce)
            .await;
        let expected = match version {
            Version::V5 => ReasonCode::NotAuthorized,
            _ => ReasonCode::UnspecifiedError,
        };
        assert!(
            matches!(&refused, Err(Error::Rejected { reason_code, .. }) if *reason_code == expected),
            "{version:?}: {refused:?}"
        );
        let mut everything = anonymous.subscribe("#", QoS::AtLeastOnce).await.unwrap();
        let admin = ClientOptions::new("127.0.0.1", port)
            .credentials("admin", "any")
            .client_id(format!("admin-{version:?}"))
            .reconnect(None);
        let admin = Client::connect(admin).await.unwrap();
        admin
            .publish("test/nosubscribe", "hidden", QoS::AtLeastOnce)
            .await
            .unwrap();
        admin
            .publish("test/ok", "shown", QoS::AtLeastOnce)
            .await
            .unwrap();
        let message = tokio::time::timeout(STEP, everything.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.topic(), "test/ok", "{version:?}");
        admin.disconnect().await.unwrap();
        anonymous.disconnect().await.unwrap();
    }
    let stats = handle.stats().await.unwrap();
    assert_eq!(
        stats.dropped.not_authorized, 2,
        "one refused delivery per version"
    );
    tokio::time::timeout(STEP, handle.stop()).await.unwrap();
}

/// The driver's counters: router batches always, store commits and their time with a data
/// directory.
#[tokio::test]
async fn driver_stats_count_router_turns_and_store_commits() {
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .data_dir(data.path())
        .build()
        .await
        .unwrap();
    let port = broker.local_addrs()[0].port();
    let handle = broker.spawn();
    let options = ClientOptions::new("127.0.0.1", port)
        .client_id("durable")
        .clean_start(false)
        .session_expiry(Duration::from_secs(600))
        .reconnect(None);
    let client = Client::connect(options).await.unwrap();
    let _subscription = client.subscribe("kept/#", QoS::AtLeastOnce).await.unwrap();
    for n in 0..10 {
        client
            .publish(format!("kept/{n}"), "x", QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let driver = handle.driver_stats().await.unwrap();
    assert!(driver.router_turns > 0 && driver.router_messages >= driver.router_turns);
    assert!(driver.store_commits > 0, "{driver:?}");
    assert!(driver.store_ops >= driver.store_commits, "{driver:?}");
    assert!(!driver.store_commit_time.is_zero(), "{driver:?}");
    assert!(
        driver.store_commit_max <= driver.store_commit_time,
        "{driver:?}"
    );
    client.disconnect().await.unwrap();
    tokio::time::timeout(STEP, handle.stop()).await.unwrap();
}
