//! The client's session store across a crash: a publisher *process* (the `durable_publisher`
//! example, with a store) reaches our broker through a proxy that stops carrying one direction
//! of its traffic, is killed with SIGKILL while its publishes wait for acknowledgements, and is
//! run again with the same client identifier and store, directly to the broker.
//!
//! What must hold: the publishes that completed before the crash are not sent again; those that
//! had not completed are (QoS 1 at least once, QoS 2 exactly once, whether or not the broker had
//! received them); the second run's own publishes complete, and the store is left with nothing
//! pending.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, QoS, SessionStore, Subscription};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::examples::example;

/// How long any one wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Publishes per batch: at most the client's in-flight window (10), so that every publish of
/// the batch that waits for an acknowledgement has been written, and so saved, before the
/// process is killed (a publish still queued behind the window is saved too, but the test could
/// not tell when it has been taken).
const BATCH: usize = 10;

const TOPIC: &str = "store/t";

/// The broker does receive the unacknowledged publishes (its acknowledgements are lost): the
/// QoS 1 ones arrive twice, the QoS 2 ones once, the broker recognising their packet
/// identifiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_publishes_are_resent_after_sigkill_and_qos2_arrives_once() {
    crash_and_restart(Direction::ToClient).await;
}

/// The broker never receives the unacknowledged publishes: only the store can bring them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_lost_on_the_way_are_resent_after_sigkill() {
    crash_and_restart(Direction::ToBroker).await;
}

/// The direction the proxy stops carrying during the second batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToBroker,
    ToClient,
}

async fn crash_and_restart(cut: Direction) {
    let broker = Broker::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .build()
        .await
        .expect("binding our broker");
    let broker_addr = broker.local_addrs()[0];
    let broker = broker.spawn();
    let subscriber = Client::connect(
        ClientOptions::new("127.0.0.1", broker_addr.port()).client_id("store-subscriber"),
    )
    .await
    .expect("the subscriber connects");
    let mut messages = subscriber
        .subscribe("store/#", QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    let proxy = GateProxy::start(broker_addr).await;
    let dir = tempfile::tempdir().expect("a scratch directory");
    let store = dir.path().join("durable.session");
    let mut received = Received::default();

    // First run: a batch that completes, then one whose acknowledgements never come back.
    let mut first = Publisher::start(proxy.addr, &store);
    first.wait_for("connected").await;
    let completed = batch("a");
    first.send(&completed);
    for (_, payload) in &completed {
        first.wait_for(&format!("acked {payload}")).await;
    }
    received.until(&mut messages, &completed).await;
    let unacknowledged = batch("b");
    match cut {
        Direction::ToBroker => proxy.to_broker.close(),
        Direction::ToClient => proxy.to_client.close(),
    }
    first.send(&unacknowledged);
    match cut {
        // Every publish of the batch has been written (and so saved) once the proxy swallowed it.
        Direction::ToBroker => proxy.to_broker.wait_dropped(BATCH).await,
        // Every publish reached the broker, which delivered it and acknowledged it in vain.
        Direction::ToClient => received.until(&mut messages, &unacknowledged).await,
    }
    let lines = first.kill();
    assert!(
        !lines.iter().any(|line| line.starts_with("acked b")),
        "no acknowledgement of the second batch came through: {lines:?}"
    );

    // Second run, same client identifier and store, straight to the broker.
    let mut second = Publisher::start(broker_addr, &store);
    second.wait_for("connected").await;
    let after = batch("c");
    second.send(&after);
    let (status, lines, stderr) = second.finish().await;
    assert!(status.success(), "{status}\n{lines:?}\n{stderr}");
    for (_, payload) in &after {
        assert!(
            lines.contains(&format!("acked {payload}")),
            "{payload} completed: {lines:?}"
        );
    }
    // The resent messages went out before the new ones, and the subscriber's queue keeps the
    // order: once the new ones are here, so are the resent ones. A moment more shows any
    // extra copy.
    received.until(&mut messages, &after).await;
    received
        .drain(&mut messages, Duration::from_millis(300))
        .await;

    for (_, payload) in completed.iter().chain(&after) {
        assert_eq!(received.count(payload), 1, "{payload}: {received:?}");
    }
    for (qos, payload) in &unacknowledged {
        let expected = match (qos, cut) {
            // Delivered before the crash and again, with DUP, after it.
            (QoS::AtLeastOnce, Direction::ToClient) => 2,
            _ => 1,
        };
        assert_eq!(
            received.count(payload),
            expected,
            "{payload} at {qos:?}: {received:?}"
        );
    }
    // Everything completed: the store holds the session of our client, with nothing pending.
    let (client_id, session) = SessionStore::new(&store)
        .load()
        .expect("the store reads")
        .expect("the store exists");
    assert_eq!(&*client_id, "durable");
    assert_eq!(session.pending_packet_ids(), Vec::new());
    assert_eq!((session.inflight(), session.queued()), (0, 0));

    subscriber.disconnect().await.expect("disconnect");
    broker.stop().await;
}

/// `BATCH` messages named `{prefix}0`, `{prefix}1`, …, alternately at QoS 1 and 2.
fn batch(prefix: &str) -> Vec<(QoS, String)> {
    (0..BATCH)
        .map(|n| {
            let qos = if n % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            (qos, format!("{prefix}{n}"))
        })
        .collect()
}

/// What the subscriber received: how many times each payload.
#[derive(Debug, Default)]
struct Received(HashMap<String, usize>);

impl Received {
    fn count(&self, payload: &str) -> usize {
        self.0.get(payload).copied().unwrap_or(0)
    }

    fn record(&mut self, message: mqtt_tokio::Message) {
        let payload = String::from_utf8_lossy(message.payload()).into_owned();
        *self.0.entry(payload).or_default() += 1;
    }

    /// Receives until every message of `batch` has arrived at least once.
    async fn until(&mut self, messages: &mut Subscription, batch: &[(QoS, String)]) {
        while batch.iter().any(|(_, payload)| self.count(payload) == 0) {
            let message = tokio::time::timeout(TIMEOUT, messages.recv())
                .await
                .unwrap_or_else(|_| panic!("waiting for {batch:?}, received {self:?}"))
                .expect("the subscription is open");
            self.record(message);
        }
    }

    /// Receives whatever else arrives within `quiet`.
    async fn drain(&mut self, messages: &mut Subscription, quiet: Duration) {
        while let Ok(Some(message)) = tokio::time::timeout(quiet, messages.recv()).await {
            self.record(message);
        }
    }
}

/// A run of the `durable_publisher` example as client `durable` with the store at `store`.
struct Publisher {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Publisher {
    fn start(broker: SocketAddr, store: &Path) -> Publisher {
        let mut child = Command::new(example("durable_publisher"))
            .arg(broker.to_string())
            .arg("durable")
            .arg(store)
            .arg(TOPIC)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting durable_publisher");
        let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped");
        let stderr = Some(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        }));
        Publisher {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn send(&mut self, batch: &[(QoS, String)]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        for (qos, payload) in batch {
            writeln!(stdin, "{} {payload}", qos.as_u8()).expect("writing to durable_publisher");
        }
        stdin.flush().expect("writing to durable_publisher");
    }

    /// Waits for this line of output.
    async fn wait_for(&mut self, wanted: &str) {
        while !self.seen.iter().any(|line| line == wanted) {
            match tokio::time::timeout(TIMEOUT, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => {
                    let stderr = self.stderr();
                    panic!(
                        "durable_publisher ended before {wanted:?}: {:?}\n{stderr}",
                        self.seen
                    );
                }
                Err(_) => panic!("no {wanted:?} in time: {:?}", self.seen),
            }
        }
    }

    /// Its error output, once it has exited.
    fn stderr(&mut self) -> String {
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|stderr| stderr.join().ok())
            .unwrap_or_default()
    }

    /// SIGKILL: no chance to write anything more, to the network or to the store. Returns the
    /// output seen.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping durable_publisher");
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen
    }

    /// Closes the input, so that it waits for its acknowledgements and exits; returns its exit
    /// status and output.
    async fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(status) = self.child.try_wait().expect("waiting") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let status = match status {
            Ok(status) => status,
            Err(_) => {
                let _ = self.child.kill();
                panic!("durable_publisher did not exit: {:?}", self.seen);
            }
        };
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        let stderr = self.stderr();
        (status, self.seen, stderr)
    }
}

/// A TCP proxy that understands MQTT framing, so that each direction can stop carrying packets
/// at a packet boundary (and count the PUBLISHes it swallows) while the connection stays up.
struct GateProxy {
    addr: SocketAddr,
    to_broker: Arc<Gate>,
    to_client: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    dropped_publishes: AtomicUsize,
}

impl Gate {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Waits until this many PUBLISH packets were swallowed.
    async fn wait_dropped(&self, count: usize) {
        tokio::time::timeout(TIMEOUT, async {
            while self.dropped_publishes.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{count} PUBLISHes swallowed, saw {}",
                self.dropped_publishes.load(Ordering::SeqCst)
            )
        });
    }
}

impl GateProxy {
    async fn start(upstream: SocketAddr) -> GateProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let to_broker = Arc::new(Gate::default());
        let to_client = Arc::new(Gate::default());
        let gates = (to_broker.clone(), to_client.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (broker_read, broker_write) = broker.into_split();
                let (up, down) = (gates.0.clone(), gates.1.clone());
                tokio::spawn(async move {
                    // Either side closing ends both: the other sees its connection close.
                    tokio::select! {
                        _ = pump(client_read, broker_write, up) => {}
                        _ = pump(broker_read, client_write, down) => {}
                    }
                });
            }
        });
        GateProxy {
            addr,
            to_broker,
            to_client,
        }
    }
}

/// Copies whole MQTT packets from `from` to `to` while the gate is open, and swallows them once
/// it is closed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Arc<Gate>,
) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(len) = packet_len(&pending) {
            let packet: Vec<u8> = pending.drain(..len).collect();
            if gate.closed.load(Ordering::SeqCst) {
                if packet[0] >> 4 == 3 {
                    gate.dropped_publishes.fetch_add(1, Ordering::SeqCst);
                }
            } else if to.write_all(&packet).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the whole packet at the front of `buf`, once it has all arrived.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let len = 1 + i + 1 + remaining;
            return (buf.len() >= len).then_some(len);
        }
    }
    None
}

/// What the store costs a publisher, against our broker on loopback: one QoS 1 publish at a
/// time, each awaited (each costs two saves: the publish, then its completion), and bursts of
/// concurrent publishes (one save per turn of the client's loop covers what that turn took in
/// or completed; a burst larger than the in-flight window queues, and every save writes the
/// queue). Prints the figures; run with
/// `cargo test -p mqtt-tests --release --test it store_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn store_cost_per_publish() {
    const ONE_BY_ONE: usize = 500;
    let broker = Broker::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .build()
        .await
        .expect("binding our broker");
    let port = broker.local_addrs()[0].port();
    let broker = broker.spawn();
    let dir = tempfile::tempdir().expect("a scratch directory");
    // Without a store, with one, and with one and a larger in-flight window (the default is 10).
    for (with_store, window) in [(false, 10), (true, 10), (true, 100)] {
        let mut options = ClientOptions::new("127.0.0.1", port)
            .client_id(format!("cost-{with_store}-{window}"))
            .clean_start(false)
            .session_expiry(Duration::from_secs(60));
        options.config_mut().max_inflight = window;
        if with_store {
            options = options.session_store(dir.path().join(format!("cost-{window}.session")));
        }
        let client = Client::connect(options).await.expect("connect");
        let start = std::time::Instant::now();
        for n in 0..ONE_BY_ONE {
            client
                .publish("cost/t", n.to_string(), QoS::AtLeastOnce)
                .await
                .expect("acknowledged");
        }
        let mut report = format!(
            "store {with_store}, window {window}: one at a time {:?}",
            start.elapsed() / ONE_BY_ONE as u32
        );
        for (burst, rounds) in [(10, 100), (100, 20), (1_000, 2), (10_000, 1)] {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                let mut publishes = tokio::task::JoinSet::new();
                for n in 0..burst {
                    let client = client.clone();
                    publishes.spawn(async move {
                        client
                            .publish("cost/t", n.to_string(), QoS::AtLeastOnce)
                            .await
                            .expect("acknowledged");
                    });
                }
                while publishes.join_next().await.is_some() {}
            }
            let per = start.elapsed() / (burst * rounds) as u32;
            report.push_str(&format!(", bursts of {burst} {per:?}"));
        }
        println!("{report} (per publish)");
        client.disconnect().await.expect("disconnect");
    }
    broker.stop().await;
}
