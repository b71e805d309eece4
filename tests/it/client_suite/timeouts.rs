//! Every wait of the client has a bound. Against servers that take the connection and then
//! say nothing, or stop reading, connecting and writing fail within their timeout, with an
//! error that says what timed out. These cases need no broker, so they run once per runtime
//! (not per broker and version).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use async_channel::Sender;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use mqtt_async::runtime::{BoxTransport, Runtime};
use mqtt_async::{
    Client, ClientOptions, ConnectionEvent, DisconnectReason, Error, QoS, TimedOut, Version,
};

use super::support::{WAIT, connect, options_for, spawn, wait_event, within};

/// The connect timeout of these cases: short, so that they are quick.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The write timeout of these cases.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// Large enough that a few of them fill the loopback's socket buffers (a few MiB each way).
const PAYLOAD: usize = 1 << 20;

/// `mqtt://` to a server that accepts the TCP connection and never answers: no CONNACK comes,
/// and `Client::connect` fails with that timeout once the connect timeout is up.
pub(crate) async fn connect_to_a_silent_server_times_out_waiting_for_connack<
    R: Runtime + Default,
>() {
    let server = Server::start::<R>(Behaviour::Silent).await;
    let options = options_for(server.addr, Version::V5, "silent-tcp")
        .connect_timeout(CONNECT_TIMEOUT)
        .reconnect(None);
    let (outcome, took) = timed::<R, _>(Client::<R>::connect(options)).await;
    match outcome {
        Err(Error::Timeout(TimedOut::ConnAck)) => {}
        Err(other) => panic!("expected a CONNACK timeout, got {other:?}"),
        Ok(_) => panic!("connected to a server that never answers"),
    }
    assert!(took >= CONNECT_TIMEOUT, "gave up after {took:?}");
}

/// `mqtts://` to a server that accepts the TCP connection and never answers the ClientHello:
/// the handshake, which had no bound before, fails once the connect timeout is up.
pub(crate) async fn connect_to_a_silent_server_times_out_in_the_tls_handshake<
    R: Runtime + Default,
>() {
    let server = Server::start::<R>(Behaviour::Silent).await;
    let url = format!("mqtts://127.0.0.1:{}", server.addr.port());
    let options = ClientOptions::from_url(&url)
        .expect("an mqtts:// URL")
        .client_id("silent-tls")
        .connect_timeout(CONNECT_TIMEOUT)
        .reconnect(None);
    let (outcome, took) = timed::<R, _>(Client::<R>::connect(options)).await;
    match outcome {
        Err(Error::Timeout(TimedOut::TlsHandshake)) => {}
        Err(other) => panic!("expected a TLS handshake timeout, got {other:?}"),
        Ok(_) => panic!("connected to a server that never answers"),
    }
    assert!(took >= CONNECT_TIMEOUT, "gave up after {took:?}");
}

/// A server that accepts the first connection, then drops it and is silent: with automatic
/// reconnect on, the attempt whose CONNACK does not come ends at the connect timeout, shows as
/// an event, and the client tries again.
pub(crate) async fn a_silent_server_on_reconnect_times_out_and_the_client_tries_again<
    R: Runtime + Default,
>() {
    let server = Server::start::<R>(Behaviour::AnswerOnceThenSilent).await;
    let options =
        options_for(server.addr, Version::V5, "silent-later").connect_timeout(CONNECT_TIMEOUT);
    let client = connect::<R>(options).await;
    let events = client.events();
    let (timed_out, took) = timed::<R, _>(async {
        loop {
            let event = events.recv().await.expect("the client ended");
            if event == ConnectionEvent::Disconnected(DisconnectReason::ConnectTimeout) {
                return event;
            }
        }
    })
    .await;
    assert!(
        took >= CONNECT_TIMEOUT,
        "gave up after {took:?}: {timed_out:?}"
    );
    wait_event::<R>(&events, "for the next attempt", |event| {
        matches!(event, ConnectionEvent::Reconnecting(_))
    })
    .await;
}

/// A server that accepts CONNECT and then stops reading: QoS 0 publishes go out while the
/// socket buffers take them, then one write makes no progress, and its publish fails with the
/// write timeout (before, it hung; and had the write failed, its publish would have reported
/// success once the next connection wrote anything). The event stream shows the timeout, and
/// the client reconnects.
pub(crate) async fn qos0_publish_to_a_server_that_stops_reading_fails_with_the_write_timeout<
    R: Runtime + Default,
>() {
    let server = Server::start::<R>(Behaviour::AcceptThenStopReading).await;
    let options =
        options_for(server.addr, Version::V5, "stalled-qos0").write_timeout(WRITE_TIMEOUT);
    let client = connect::<R>(options).await;
    let events = client.events();
    let payload = vec![0u8; PAYLOAD];
    let (failed, _) = timed::<R, _>(async {
        loop {
            match client
                .publish("stalled/qos0", payload.clone(), QoS::AtMostOnce)
                .await
            {
                Ok(_) => continue,
                Err(error) => return error,
            }
        }
    })
    .await;
    assert!(
        matches!(failed, Error::Timeout(TimedOut::Write)),
        "expected a write timeout, got {failed:?}"
    );
    wait_event::<R>(&events, "for the write timeout event", |event| {
        *event == ConnectionEvent::TimedOut(TimedOut::Write)
    })
    .await;
    wait_event::<R>(&events, "for the reconnection", |event| {
        matches!(event, ConnectionEvent::Connected { .. })
    })
    .await;
}

/// The same server, QoS 1 publishes and no reconnect: the publishes in flight when a write
/// stops making progress fail with the write timeout, and the client disconnects.
pub(crate) async fn qos1_publish_to_a_server_that_stops_reading_fails_with_the_write_timeout<
    R: Runtime + Default,
>() {
    let server = Server::start::<R>(Behaviour::AcceptThenStopReading).await;
    let options = options_for(server.addr, Version::V5, "stalled-qos1")
        .write_timeout(WRITE_TIMEOUT)
        .reconnect(None);
    let client = connect::<R>(options).await;
    let events = client.events();
    // 40 MiB, more than the loopback's socket buffers hold; the in-flight window (10) lets
    // them all go out.
    let publishes: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            spawn::<R, _>(async move {
                client
                    .publish("stalled/qos1", vec![0u8; 4 * PAYLOAD], QoS::AtLeastOnce)
                    .await
            })
        })
        .collect();
    let (outcomes, _) = timed::<R, _>(async {
        let mut outcomes = Vec::new();
        for publish in publishes {
            outcomes.push(publish.recv().await.expect("the publish task ended"));
        }
        outcomes
    })
    .await;
    // Those the connection took fail with the write timeout; one whose task was scheduled
    // only after the client had ended (a loaded machine) finds it closed.
    let timed_out = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Error::Timeout(TimedOut::Write))))
        .count();
    for outcome in &outcomes {
        assert!(
            matches!(
                outcome,
                Err(Error::Timeout(TimedOut::Write)) | Err(Error::Closed)
            ),
            "expected a write timeout, got {outcome:?}"
        );
    }
    assert!(timed_out > 0, "{outcomes:?}");
    wait_event::<R>(&events, "for the write timeout event", |event| {
        *event == ConnectionEvent::TimedOut(TimedOut::Write)
    })
    .await;
    let disconnected = wait_event::<R>(&events, "for the disconnection", |event| {
        matches!(event, ConnectionEvent::Disconnected(_))
    })
    .await;
    assert_eq!(
        disconnected,
        ConnectionEvent::Disconnected(DisconnectReason::ConnectionLost)
    );
}

/// A server that reads slowly but steadily: a write that lasts longer than the write timeout
/// while making progress is not cut, and every publish succeeds.
pub(crate) async fn a_slow_reader_does_not_trip_the_write_timeout<R: Runtime + Default>() {
    let server = Server::start::<R>(Behaviour::AcceptThenReadSlowly).await;
    let options = options_for(server.addr, Version::V5, "slow-reader")
        .write_timeout(WRITE_TIMEOUT)
        .reconnect(None);
    let client = connect::<R>(options).await;
    let events = client.events();
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let (published, took) =
            timed::<R, _>(client.publish("slow/reader", vec![0u8; 8 * PAYLOAD], QoS::AtMostOnce))
                .await;
        published.expect("a publish to a server that reads, slowly");
        longest = longest.max(took);
    }
    assert!(
        longest > 2 * WRITE_TIMEOUT,
        "no write lasted longer than the write timeout (the longest took {longest:?}): the \
         socket buffers hold more than this case expects"
    );
    // The connection is still up: the only event is the first connection.
    assert!(
        matches!(events.try_recv(), Ok(ConnectionEvent::Connected { .. })),
        "the first event is the connection"
    );
    assert!(events.is_empty(), "{:?}", events.try_recv());
}

/// Awaits `future` (failing the test after [`WAIT`]) and measures how long it took.
async fn timed<R: Runtime + Default, T>(future: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let output = within::<R, _>("for the timeout", future).await;
    let took = start.elapsed();
    assert!(took < WAIT, "took {took:?}");
    (output, took)
}

/// What the test server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Nothing: it never reads and never writes.
    Silent,
    /// Reads CONNECT, answers a 5.0 CONNACK (success, no session), then never reads again.
    AcceptThenStopReading,
    /// Answers the first connection's CONNECT and closes it; is silent to the others.
    AnswerOnceThenSilent,
    /// Reads CONNECT, answers CONNACK, then reads at most [`SLOW_READ`] bytes every
    /// [`SLOW_READ_EVERY`].
    AcceptThenReadSlowly,
}

/// How much the slow reader reads at a time.
const SLOW_READ: usize = 256 * 1024;

/// How often the slow reader reads: often enough, next to [`WRITE_TIMEOUT`], that the client
/// sees its writes progress however loaded the machine.
const SLOW_READ_EVERY: Duration = Duration::from_millis(50);

/// A server on 127.0.0.1 (a port the kernel picks) that keeps every connection open, doing
/// what its [`Behaviour`] says, until dropped.
struct Server {
    addr: SocketAddr,
    /// Dropped with the server, which ends its task and closes its connections.
    _stop: Sender<()>,
}

impl Server {
    async fn start<R: Runtime + Default>(behaviour: Behaviour) -> Server {
        let runtime = R::default();
        let mut listener = runtime
            .bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("binding the test server");
        let addr = listener.local_addr().expect("the test server's address");
        let (stop_tx, stop) = async_channel::bounded::<()>(1);
        runtime.spawn(Box::pin(async move {
            let mut open: Vec<BoxTransport> = Vec::new();
            let mut answered = false;
            loop {
                let next = future::or(
                    async { Some(future::poll_fn(|cx| listener.poll_accept(cx)).await) },
                    async {
                        let _ = stop.recv().await;
                        None
                    },
                );
                let Some(Ok((mut transport, _))) = next.await else {
                    return;
                };
                let silent = match behaviour {
                    Behaviour::Silent => true,
                    Behaviour::AnswerOnceThenSilent => std::mem::replace(&mut answered, true),
                    _ => false,
                };
                if silent {
                    open.push(transport);
                    continue;
                }
                if answer_connect(&mut transport).await.is_err() {
                    continue;
                }
                match behaviour {
                    Behaviour::AcceptThenReadSlowly => {
                        R::default().spawn(Box::pin(read_slowly::<R>(transport)));
                    }
                    // Dropped: the client sees its connection close, and reconnects.
                    Behaviour::AnswerOnceThenSilent => drop(transport),
                    _ => open.push(transport),
                }
            }
        }));
        Server {
            addr,
            _stop: stop_tx,
        }
    }
}

/// Reads one CONNECT packet and answers a 5.0 CONNACK: success, no session present, no
/// properties.
async fn answer_connect(transport: &mut BoxTransport) -> std::io::Result<()> {
    let mut packet = Vec::new();
    let mut chunk = [0u8; 1024];
    while !is_complete(&packet) {
        let n = transport.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        packet.extend_from_slice(&chunk[..n]);
    }
    transport.write_all(&[0x20, 3, 0, 0, 0]).await?;
    transport.flush().await
}

/// Reads [`SLOW_READ`] bytes every [`SLOW_READ_EVERY`] until the client closes.
async fn read_slowly<R: Runtime + Default>(mut transport: BoxTransport) {
    let mut buffer = vec![0u8; SLOW_READ];
    while let Ok(1..) = transport.read(&mut buffer).await {
        R::default()
            .sleep_until(Instant::now() + SLOW_READ_EVERY)
            .await;
    }
}

/// Whether `bytes` hold a whole packet: the fixed header's first byte, the remaining length
/// (a variable byte integer), and that many bytes.
fn is_complete(bytes: &[u8]) -> bool {
    let mut length = 0usize;
    for (i, byte) in bytes.iter().skip(1).take(4).enumerate() {
        length |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return bytes.len() >= 1 + (i + 1) + length;
        }
    }
    false
}
