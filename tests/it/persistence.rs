//! `mqtt broker --data-dir` under `kill -9`: publishers and a persistent subscriber keep busy
//! while the broker is killed at random moments and started again on the same directory; every
//! message a publisher saw acknowledged reaches the subscriber, QoS 2 exactly once.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqtt_tokio::{BackoffConfig, Client, ClientOptions, QoS, Version};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The `mqtt` binary, built once.
fn mqtt_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = &*built {
        return path.clone();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace root");
    let run = escargot::CargoBuild::new()
        .manifest_path(workspace.join("Cargo.toml"))
        .package("mqtt-cli")
        .bin("mqtt")
        .current_release()
        .arg("--locked")
        .run()
        .unwrap_or_else(|error| panic!("building mqtt: {error}"));
    let path = run.path().to_path_buf();
    *built = Some(path.clone());
    path
}

/// `mqtt broker` on a port, with a data directory; killed (SIGKILL) on drop.
struct BrokerProcess(Child);

impl BrokerProcess {
    fn start(port: u16, dir: &Path) -> BrokerProcess {
        let child = Command::new(mqtt_binary())
            .args(["broker", "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mqtt broker");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < deadline, "the broker listens on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        BrokerProcess(child)
    }

    /// `kill -9`.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a: SocketAddr| a.port())
        .expect("a free port")
}

/// A persistent session that reconnects quickly.
fn options(port: u16, id: &str) -> ClientOptions {
    let mut backoff = BackoffConfig::default();
    backoff.initial = Duration::from_millis(50);
    backoff.max = Duration::from_millis(500);
    ClientOptions::new("127.0.0.1", port)
        .version(Version::V5)
        .client_id(id)
        .clean_start(false)
        .session_expiry(Duration::from_secs(3600))
        .reconnect(Some(backoff))
}

/// A small deterministic generator (xorshift64*): the kill moments, replayable from the seed
/// printed on failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 500;
    const KILLS: usize = 4;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("a scratch directory");
    let data = dir.path().join("data");
    let port = free_port();
    let mut broker = Some(BrokerProcess::start(port, &data));

    // The subscriber: every message it receives, by payload, with the QoS it came at.
    let subscriber = Client::connect(options(port, "kill9-sub"))
        .await
        .expect("connect the subscriber");
    let mut messages = subscriber
        .subscribe("kill9/#", QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    let received: Arc<Mutex<BTreeMap<String, (usize, QoS)>>> = Arc::default();
    let counting = received.clone();
    let receiving = tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            let payload = String::from_utf8_lossy(message.payload()).into_owned();
            let mut received = counting.lock().expect("not poisoned");
            received.entry(payload).or_insert((0, message.qos())).0 += 1;
        }
    });

    // The publishers: each message it saw acknowledged.
    let acked: Arc<Mutex<Vec<(String, QoS)>>> = Arc::default();
    let mut publishing = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let publisher = Client::connect(options(port, &format!("kill9-pub-{p}")))
            .await
            .expect("connect a publisher");
        let acked = acked.clone();
        publishing.spawn(async move {
            for n in 0..EACH {
                let payload = format!("{p}-{n}");
                let qos = if n % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                let topic = format!("kill9/{p}");
                match publisher.publish(topic, payload.clone(), qos).await {
                    Ok(done) if done.reason_code.is_success() => {
                        acked.lock().expect("not poisoned").push((payload, qos))
                    }
                    other => eprintln!("publish {payload} failed: {other:?}"),
                }
            }
            publisher
        });
    }

    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        if let Some(running) = broker.take() {
            running.kill();
        }
        broker = Some(BrokerProcess::start(port, &data));
    }

    let mut publishers = Vec::new();
    while let Some(done) = tokio::time::timeout(TIMEOUT, publishing.join_next())
        .await
        .expect("the publishers finish")
    {
        publishers.push(done.expect("a publisher"));
    }
    let acked = acked.lock().expect("not poisoned").clone();
    assert_eq!(
        acked.len(),
        PUBLISHERS * EACH,
        "every publish completes (seed {seed})"
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let missing: Vec<String> = {
            let received = received.lock().expect("not poisoned");
            acked
                .iter()
                .filter(|(payload, _)| !received.contains_key(payload))
                .map(|(payload, _)| payload.clone())
                .take(10)
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acknowledged but never delivered (seed {seed}): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = received.lock().expect("not poisoned").clone();
    for (payload, qos) in &acked {
        let (count, _) = received[payload];
        if *qos == QoS::ExactlyOnce {
            assert_eq!(
                count, 1,
                "QoS 2 message {payload} delivered {count} times (seed {seed})"
            );
        }
    }
    drop(publishers);
    drop(subscriber);
    receiving.abort();
    drop(broker);
}

/// A store that refuses to write (a full disk): a message that cannot be stored is not
/// acknowledged (the publisher's connection is closed instead), the broker keeps serving, and
/// once the store takes writes again the publisher's retry goes through and the message arrives.
#[tokio::test]
async fn a_failing_store_acknowledges_nothing_and_recovers() {
    use mqtt_tokio::Broker;
    use mqtt_tokio::broker::MemoryStore;
    use mqtt_tokio::broker::store::FailingStore;

    let (store, faults) = FailingStore::new(MemoryStore::default());
    let broker = crate::peer_events::Hooked::start(
        Broker::builder()
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .store(store),
    )
    .await;
    let port = broker.addr.port();
    let subscriber = Client::connect(options(port, "full-sub"))
        .await
        .expect("connect");
    let mut messages = subscriber
        .subscribe("full/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let publisher = Client::connect(options(port, "full-pub"))
        .await
        .expect("connect");
    let events = publisher.events();
    faults.fail_until_healed();
    let publishing = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish("full/t", "kept", QoS::AtLeastOnce).await }
    });
    // The broker cannot store it: the publisher is disconnected, not acknowledged.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the publisher is disconnected in time")
            .expect("events");
        if matches!(event, mqtt_tokio::ConnectionEvent::Disconnected(_)) {
            break;
        }
    }
    assert!(!publishing.is_finished(), "not acknowledged");
    faults.heal();
    let outcome = tokio::time::timeout(TIMEOUT, publishing)
        .await
        .expect("acknowledged once the store takes writes")
        .expect("the task");
    assert!(outcome.is_ok(), "{outcome:?}");
    let message = tokio::time::timeout(TIMEOUT, messages.recv())
        .await
        .expect("delivered")
        .expect("the subscription is open");
    assert_eq!(message.payload().as_ref(), b"kept");
    broker.stop().await;
}
