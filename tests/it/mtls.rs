//! Client certificates on our broker's TLS listener (`require_certificate`, a CA for client
//! certificates, `use_identity_as_username`), with certificates made in the test: a client
//! without a certificate or with one from another CA is refused in the handshake; a client with
//! a good certificate connects, and the name in its certificate is its user name for the ACL,
//! whatever its CONNECT says.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use mqtt_tokio::broker::{Authorizer, ClientInfo};
use mqtt_tokio::{
    Broker, Client, ClientOptions, Error, PeerEvent, QoS, ReasonCode, ServerTls, TlsOptions,
    Version,
};

use crate::peer_events::Hooked;
use crate::pki::Pki;

const STEP: Duration = Duration::from_secs(10);

/// Publishing only under `devices/<user name>/`; subscribing anywhere.
struct PerDevice;

impl Authorizer for PerDevice {
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        client
            .username
            .is_some_and(|user| topic.starts_with(&format!("devices/{user}/")))
    }
    fn subscribe(&self, _client: ClientInfo<'_>, _filter: &str) -> bool {
        true
    }
}

async fn broker(pki: &Pki, identity: bool) -> Hooked {
    let tls = ServerTls::new(&pki.cert, &pki.key)
        .client_ca(&pki.ca)
        .require_certificate(true)
        .use_identity_as_username(identity);
    Hooked::start(
        Broker::builder()
            .bind_tls((Ipv4Addr::LOCALHOST, 0).into(), tls)
            .authorizer(PerDevice),
    )
    .await
}

fn options(
    broker: &Hooked,
    pki: &Pki,
    id: &str,
    cert: Option<&(PathBuf, PathBuf)>,
) -> ClientOptions {
    let mut tls = TlsOptions::ca_file(&pki.ca).server_name("localhost");
    if let Some((cert, key)) = cert {
        tls = tls.client_cert(cert, key);
    }
    broker.options(id).tls(tls)
}

async fn connect(options: ClientOptions) -> Result<Client, Error> {
    tokio::time::timeout(STEP, Client::connect(options))
        .await
        .expect("an outcome in time")
}

/// The next hook event that is a failed TLS handshake, with its error.
async fn tls_failure(broker: &Hooked) -> String {
    loop {
        if let PeerEvent::TlsFailed { error, .. } = broker.next().await {
            return error;
        }
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let broker = broker(&pki, true).await;
    let outcome = connect(options(&broker, &pki, "no-cert", None)).await;
    assert!(outcome.is_err(), "a client without a certificate connected");
    let error = tls_failure(&broker).await;
    assert!(error.contains("certificate"), "{error}");
    broker.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let broker = broker(&pki, true).await;
    let foreign = pki.foreign_client("foreign", "device-7");
    let outcome = connect(options(&broker, &pki, "foreign", Some(&foreign))).await;
    assert!(
        outcome.is_err(),
        "a certificate from another CA was accepted"
    );
    let error = tls_failure(&broker).await;
    assert!(
        error.to_lowercase().contains("issuer") || error.contains("certificate"),
        "{error}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn the_certificate_name_is_the_user_name_for_the_acl() {
    let pki = Pki::new();
    let broker = broker(&pki, true).await;
    let device = pki.client("device-7", Some("device-7"), &[]);
    // The CONNECT claims to be someone else, with a password: neither counts.
    let client = connect(options(&broker, &pki, "d7", Some(&device)).credentials("admin", "guess"))
        .await
        .expect("a client with a good certificate connects");
    match broker.next().await {
        PeerEvent::Connected { username, .. } => {
            assert_eq!(username.as_deref(), Some("device-7"))
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    let mut messages = client
        .subscribe("devices/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("devices/device-7/temp", "21", QoS::AtLeastOnce)
        .await
        .expect("its own topic");
    let message = tokio::time::timeout(STEP, messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(message.topic(), "devices/device-7/temp");
    match client
        .publish("devices/admin/temp", "21", QoS::AtLeastOnce)
        .await
    {
        Err(Error::Rejected { reason_code, .. }) => {
            assert_eq!(reason_code, ReasonCode::NotAuthorized)
        }
        other => panic!("publishing as another device: {other:?}"),
    }
    client.disconnect().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn without_a_common_name_the_first_alternative_name_is_the_user_name() {
    let pki = Pki::new();
    let broker = broker(&pki, true).await;
    let device = pki.client("san-only", None, &["sensor-3.example"]);
    let client = connect(options(&broker, &pki, "s3", Some(&device)).version(Version::V3_1_1))
        .await
        .expect("connects");
    match broker.next().await {
        PeerEvent::Connected { username, .. } => {
            assert_eq!(username.as_deref(), Some("sensor-3.example"))
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    client.disconnect().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_certificate_without_a_name_fails_when_the_name_is_the_user_name() {
    let pki = Pki::new();
    let broker = broker(&pki, true).await;
    let nameless = pki.client("nameless", None, &[]);
    let outcome = connect(options(&broker, &pki, "nameless", Some(&nameless))).await;
    assert!(outcome.is_err(), "a certificate without a name connected");
    let error = tls_failure(&broker).await;
    assert!(error.contains("use_identity_as_username"), "{error}");
    broker.stop().await;
}

#[tokio::test]
async fn without_identity_as_user_name_the_connect_user_name_counts() {
    let pki = Pki::new();
    let broker = broker(&pki, false).await;
    let device = pki.client("device-8", Some("device-8"), &[]);
    let client = connect(options(&broker, &pki, "d8", Some(&device)).credentials("device-9", ""))
        .await
        .expect("connects");
    match broker.next().await {
        PeerEvent::Connected { username, .. } => {
            assert_eq!(username.as_deref(), Some("device-9"))
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    client.disconnect().await.unwrap();
    broker.stop().await;
}

#[test]
fn inconsistent_settings_are_refused_when_the_broker_is_built() {
    let pki = Pki::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (what, tls) in [
        (
            "require_certificate without a CA",
            ServerTls::new(&pki.cert, &pki.key).require_certificate(true),
        ),
        (
            "use_identity_as_username without require_certificate",
            ServerTls::new(&pki.cert, &pki.key)
                .client_ca(&pki.ca)
                .use_identity_as_username(true),
        ),
    ] {
        let built = runtime.block_on(
            Broker::builder()
                .bind_tls((Ipv4Addr::LOCALHOST, 0).into(), tls)
                .build(),
        );
        match built {
            Err(Error::Tls(message)) => {
                assert!(message.contains("require_certificate"), "{what}: {message}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}
