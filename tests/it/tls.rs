//! TLS with certificates made in the test: a CA, and a server certificate it signed for
//! `localhost` and 127.0.0.1. Our broker and mosquitto serve it; our client trusts the CA.
//! A client trusting another CA is refused at once with a TLS error, and the listener goes on
//! serving others.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::mosquitto::Mosquitto;
use crate::pki::Pki;
use mqtt_tokio::{Broker, Client, ClientOptions, Error, QoS, ServerTls, TlsOptions, Version};

/// How long any one step (connect, subscribe, publish, receive) may take.
const STEP: Duration = Duration::from_secs(10);

async fn step<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {STEP:?}"))
}

/// Connects over TLS, subscribes at QoS 1, publishes at QoS 1 to itself and checks delivery.
async fn round_trip(port: u16, tls: TlsOptions, version: Version, client_id: &str) {
    let options = ClientOptions::new("127.0.0.1", port)
        .version(version)
        .client_id(client_id)
        .tls(tls);
    let client = step("connect", Client::connect(options))
        .await
        .unwrap_or_else(|error| panic!("{client_id}: TLS connect failed: {error}"));
    let topic = format!("tls/{client_id}");
    let mut messages = step(
        "subscribe",
        client.subscribe(topic.as_str(), QoS::AtLeastOnce),
    )
    .await
    .expect("subscribe");
    step(
        "publish",
        client.publish(topic.as_str(), "over TLS", QoS::AtLeastOnce),
    )
    .await
    .expect("publish");
    let message = step("receive", messages.recv())
        .await
        .expect("subscription ended");
    assert_eq!(message.topic(), topic);
    assert_eq!(&message.payload()[..], b"over TLS");
    assert_eq!(message.qos(), QoS::AtLeastOnce);
    step("disconnect", client.disconnect())
        .await
        .expect("disconnect");
}

/// A client trusting `ca` (or checking the wrong name) must fail quickly with a TLS error.
async fn expect_refused(port: u16, tls: TlsOptions, why: &str) {
    let options = ClientOptions::new("127.0.0.1", port)
        .client_id("untrusting")
        .tls(tls);
    match step(why, Client::connect(options)).await {
        Ok(_) => panic!("{why}: the connection was accepted"),
        Err(Error::Tls(message)) => {
            assert!(
                message.contains("certificate") || message.contains("Certificate"),
                "{why}: {message}"
            );
        }
        Err(other) => panic!("{why}: expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn our_broker_serves_tls() {
    let pki = Pki::new();
    let broker = Broker::builder()
        .bind_tls(
            (Ipv4Addr::LOCALHOST, 0).into(),
            ServerTls::new(&pki.cert, &pki.key),
        )
        .build()
        .await
        .expect("broker with a TLS listener");
    let port = broker.local_addrs()[0].port();
    let handle = broker.spawn();

    for (version, id) in [(Version::V5, "tls-v5"), (Version::V3_1_1, "tls-v311")] {
        let tls = TlsOptions::ca_file(&pki.ca).server_name("localhost");
        round_trip(port, tls, version, id).await;
    }
    // Without a server name, the host connected to, 127.0.0.1, is checked (an IP SAN).
    round_trip(port, TlsOptions::ca_file(&pki.ca), Version::V5, "tls-ip").await;

    expect_refused(
        port,
        TlsOptions::ca_file(pki.unrelated_ca()).server_name("localhost"),
        "a client trusting another CA",
    )
    .await;
    expect_refused(
        port,
        TlsOptions::ca_file(&pki.ca).server_name("example.com"),
        "a client expecting another name",
    )
    .await;
    // The failed handshakes left the listener serving.
    let tls = TlsOptions::ca_file(&pki.ca).server_name("localhost");
    round_trip(port, tls, Version::V5, "tls-after").await;

    step("stop", handle.stop()).await;
}

#[tokio::test]
async fn plain_clients_get_nothing_from_a_tls_listener() {
    let pki = Pki::new();
    let broker = Broker::builder()
        .bind_tls(
            (Ipv4Addr::LOCALHOST, 0).into(),
            ServerTls::new(&pki.cert, &pki.key),
        )
        .build()
        .await
        .expect("broker with a TLS listener");
    let port = broker.local_addrs()[0].port();
    let handle = broker.spawn();
    // MQTT bytes are not a TLS ClientHello: the connection fails, it does not hang.
    let options = ClientOptions::new("127.0.0.1", port).client_id("plain");
    let outcome = step("plain connect to TLS", Client::connect(options)).await;
    assert!(outcome.is_err(), "a plain client connected to a TLS port");
    step("stop", handle.stop()).await;
}

#[tokio::test]
async fn mosquitto_serves_tls_to_our_client() {
    let pki = Pki::new();
    let tls_port = free_port();
    let config = [
        format!("listener {tls_port} 127.0.0.1"),
        format!("cafile {}", pki.ca.display()),
        format!("certfile {}", pki.cert.display()),
        format!("keyfile {}", pki.key.display()),
    ];
    let lines: Vec<&str> = config.iter().map(String::as_str).collect();
    let Some(broker) = Mosquitto::start_with(&lines) else {
        return;
    };
    wait_for_port(tls_port, &broker);

    for (version, id) in [
        (Version::V5, "mosq-tls-v5"),
        (Version::V3_1_1, "mosq-tls-v311"),
    ] {
        let tls = TlsOptions::ca_file(&pki.ca).server_name("localhost");
        round_trip(tls_port, tls, version, id).await;
    }
    expect_refused(
        tls_port,
        TlsOptions::ca_file(pki.unrelated_ca()).server_name("localhost"),
        "a client trusting another CA, against mosquitto",
    )
    .await;
}

/// A port that was free a moment ago: the kernel's choice for a listener on port 0.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Mosquitto is ready on its first listener; its second opens right after. Poll it.
pub(crate) fn wait_for_port(port: u16, broker: &Mosquitto) {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + STEP;
    while TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto's second listener on {port} did not open; its log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
