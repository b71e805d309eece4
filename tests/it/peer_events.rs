//! The broker's event hook ([`mqtt_tokio::BrokerBuilder::on_event`]): connects, disconnects and
//! refusals, with the client's address.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use async_channel::Receiver;
use mqtt_tokio::broker::{BrokerHandle, PasswordFile};
use mqtt_tokio::{
    Broker, BrokerBuilder, Client, ClientOptions, DisconnectReason, Error, PeerEvent, ReasonCode,
    TokioRuntime, Version,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A running broker whose event hook feeds a channel.
pub(crate) struct Hooked {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: BrokerHandle,
    pub(crate) events: Receiver<PeerEvent>,
}

impl Hooked {
    /// Builds `builder` (with its listener bound) with the hook and spawns it.
    pub(crate) async fn start(builder: BrokerBuilder<TokioRuntime>) -> Hooked {
        let (events_tx, events) = async_channel::unbounded();
        let broker = builder
            .on_event(move |event| {
                let _ = events_tx.try_send(event.clone());
            })
            .build()
            .await
            .expect("build the broker");
        let addr = broker.local_addrs()[0];
        let handle = broker.spawn();
        Hooked {
            addr,
            handle,
            events,
        }
    }

    /// Options for a 5.0 client `id` of this broker that does not reconnect.
    pub(crate) fn options(&self, id: &str) -> ClientOptions {
        ClientOptions::new("127.0.0.1", self.addr.port())
            .version(Version::V5)
            .client_id(id)
            .reconnect(None)
    }

    /// The next event from the hook.
    pub(crate) async fn next(&self) -> PeerEvent {
        tokio::time::timeout(TIMEOUT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the hook is alive")
    }

    /// Stops the broker, in time.
    pub(crate) async fn stop(self) {
        tokio::time::timeout(TIMEOUT, self.handle.stop())
            .await
            .expect("the broker stops");
    }
}

#[tokio::test]
async fn hook_sees_connects_disconnects_and_refusals() {
    // Anonymous clients get in; `mallory` with a wrong password does not.
    let mut passwords = PasswordFile::new().allow_anonymous(true);
    passwords
        .insert(
            "mallory",
            mqtt_tokio::broker::PasswordHash::with_iterations(b"secret", 1).expect("hash"),
        )
        .expect("add a user");
    let broker = Hooked::start(
        Broker::builder()
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .authenticator(passwords),
    )
    .await;
    let next = || broker.next();
    let options = |id: &str| broker.options(id);

    let client = Client::connect(options("alice")).await.expect("connect");
    let local = match next().await {
        PeerEvent::Connected {
            peer,
            client_id,
            username,
            session_present,
        } => {
            assert_eq!((&*client_id, session_present), ("alice", false));
            assert_eq!(username, None);
            peer
        }
        other => panic!("expected Connected, got {other:?}"),
    };
    client.disconnect().await.expect("disconnect");
    match next().await {
        PeerEvent::Disconnected {
            peer,
            client_id,
            reason: DisconnectReason::Remote(_),
            ..
        } => assert_eq!((peer, client_id.as_deref()), (local, Some("alice"))),
        other => panic!("expected a remote Disconnected, got {other:?}"),
    }

    let refused = Client::connect(options("m").credentials("mallory", "x")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Refused {
                reason_code: ReasonCode::BadUserNameOrPassword,
                ..
            })
        ),
        "{refused:?}"
    );
    match next().await {
        PeerEvent::Disconnected {
            reason: DisconnectReason::Refused { reason_code, .. },
            username,
            ..
        } => {
            assert_eq!(reason_code, ReasonCode::BadUserNameOrPassword);
            assert_eq!(username.as_deref(), Some("mallory"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    broker.stop().await;
}

/// A client that does not speak TLS to a TLS listener is reported, with its address.
#[tokio::test]
async fn hook_sees_failed_tls_handshakes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let broker = Hooked::start(Broker::builder().bind_tls(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        mqtt_tokio::ServerTls::new(cert, key),
    ))
    .await;
    // Plain MQTT on the TLS port: the handshake fails on the first bytes.
    let refused = Client::connect(
        ClientOptions::new("127.0.0.1", broker.addr.port())
            .reconnect(None)
            .keep_alive(Duration::from_secs(5)),
    );
    let _ = tokio::time::timeout(TIMEOUT, refused).await;
    match broker.next().await {
        PeerEvent::TlsFailed { peer, error } => {
            assert!(peer.tcp().is_some_and(|a| a.ip().is_loopback()), "{peer}");
            assert!(!error.is_empty());
        }
        other => panic!("expected TlsFailed, got {other:?}"),
    }
    broker.stop().await;
}
