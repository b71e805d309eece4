//! The broker on a Unix domain socket, and our client over `unix://` URLs: a round trip, a
//! socket file left by a broker that did not stop cleanly, another file in the way, and the
//! file removed when the broker stops. (Every runtime's client suite runs over a Unix socket
//! too: `client_suite::*::unix`.)
#![cfg(unix)]

use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, Error, QoS};

const STEP: Duration = Duration::from_secs(10);

async fn round_trip(url: &str) {
    let options = ClientOptions::from_url(url)
        .expect("a unix URL")
        .reconnect(None);
    let client = tokio::time::timeout(STEP, Client::connect(options))
        .await
        .expect("in time")
        .expect("connect over the Unix socket");
    let mut messages = client.subscribe("local/#", QoS::ExactlyOnce).await.unwrap();
    client
        .publish("local/x", "over a Unix socket", QoS::ExactlyOnce)
        .await
        .unwrap();
    let message = tokio::time::timeout(STEP, messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(&message.payload()[..], b"over a Unix socket");
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn round_trip_stale_socket_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqtt.sock");
    // A socket file nobody listens on any more, as a killed broker leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let broker = Broker::builder()
        .bind_unix(&path)
        .build()
        .await
        .expect("bind");
    assert!(
        broker.local_addrs().is_empty(),
        "a Unix socket has no TCP address"
    );
    let handle = broker.spawn();
    round_trip(&format!("unix://{}", path.display())).await;

    // A second broker may not take a socket that is in use.
    let second = Broker::builder().bind_unix(&path).build().await;
    assert!(second.is_err(), "a second broker bound a socket in use");

    tokio::time::timeout(STEP, handle.stop())
        .await
        .expect("stops");
    assert!(
        !path.exists(),
        "the socket file is removed when the broker stops"
    );
}

#[tokio::test]
async fn another_file_in_the_way_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.txt");
    std::fs::write(&path, "keep me").unwrap();
    let built = Broker::builder().bind_unix(&path).build().await;
    assert!(matches!(built, Err(Error::Io(_))), "{built:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = ClientOptions::unix(dir.path().join("nobody.sock")).reconnect(None);
    let outcome = tokio::time::timeout(STEP, Client::connect(options))
        .await
        .expect("in time");
    assert!(matches!(outcome, Err(Error::Io(_))), "{outcome:?}");
}
