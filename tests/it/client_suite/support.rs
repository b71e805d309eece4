//! What the cases share: a broker to talk to (ours, in-process, or a real mosquitto), a TCP proxy
//! that can cut connections, and waits that end at a deadline.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use mqtt_async::broker::{BrokerConfig, ListenerConfig};
use mqtt_async::runtime::{BoxFuture, Runtime};
use mqtt_async::{
    BackoffConfig, Broker, BrokerHandle, Client, ClientOptions, ConnectionEvent, Message,
    ServerTls, Subscription, TlsOptions, Version,
};

use crate::mosquitto::Mosquitto;
use crate::pki::Pki;

/// How long one wait for a condition may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The broker a case runs against, and how the client reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Our broker, in-process on the test's runtime.
    Ours,
    /// A real mosquitto.
    Mosquitto,
    /// Our broker, over WebSocket (`ws://127.0.0.1:port/mqtt`).
    OursWs,
    /// Our broker, over WebSocket over TLS with certificates made for the test.
    OursWss,
    /// Our broker, over a Unix domain socket.
    OursUnix,
}

/// How clients reach a broker beyond its TCP address.
#[derive(Clone)]
enum Reach {
    Tcp,
    Ws,
    Wss(Arc<Pki>),
    /// The socket's path, in a scratch directory kept with the server.
    Unix {
        path: PathBuf,
        _dir: Arc<tempfile::TempDir>,
    },
}

/// mosquitto's limits, set explicitly: the defaults of a stock install, 20 QoS 1/2 messages in
/// flight each way and 1,000 queued per client, so that the client must respect them.
const MOSQUITTO_LIMITS: [&str; 3] = [
    "max_inflight_messages 20",
    "max_queued_messages 1000",
    "max_queued_bytes 0",
];

use crate::mosquitto::PERSISTENCE as MOSQUITTO_PERSISTENCE;

/// A running broker of either kind.
pub(crate) struct Server {
    addr: SocketAddr,
    kind: ServerKind,
    reach: Reach,
}

enum ServerKind {
    Ours(BrokerHandle),
    Mosquitto(Mosquitto),
}

impl Server {
    /// Starts a broker on 127.0.0.1, on a port the kernel picks; `None` when mosquitto is not
    /// installed and the test should be skipped (the helper fails instead under CI).
    pub(crate) async fn start<R: Runtime + Default>(target: Target) -> Option<Server> {
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let reach = match target {
            Target::Mosquitto => return Self::mosquitto(&[]),
            Target::Ours => Reach::Tcp,
            Target::OursWs => Reach::Ws,
            Target::OursWss => Reach::Wss(Arc::new(Pki::new())),
            Target::OursUnix => {
                let dir = tempfile::Builder::new()
                    .prefix("mqtt-tests-unix-")
                    .tempdir()
                    .expect("temporary directory");
                Reach::Unix {
                    path: dir.path().join("broker.sock"),
                    _dir: Arc::new(dir),
                }
            }
        };
        Some(Self::ours::<R>(any_port, reach).await)
    }

    /// Starts a broker that keeps sessions across [`Server::restart`]: mosquitto with
    /// persistence; ours keeps nothing (its sessions live in memory).
    pub(crate) async fn start_persistent<R: Runtime + Default>(target: Target) -> Option<Server> {
        match target {
            Target::Mosquitto => Self::mosquitto(&MOSQUITTO_PERSISTENCE),
            _ => Self::start::<R>(target).await,
        }
    }

    fn mosquitto(extra: &[&str]) -> Option<Server> {
        let config: Vec<&str> = MOSQUITTO_LIMITS.iter().chain(extra).copied().collect();
        let broker = Mosquitto::start_with(&config)?;
        Some(Server {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, broker.port())),
            kind: ServerKind::Mosquitto(broker),
            reach: Reach::Tcp,
        })
    }

    async fn ours<R: Runtime + Default>(addr: SocketAddr, reach: Reach) -> Server {
        let (handle, addr) = spawn_our_broker::<R>(addr, &reach).await;
        Server {
            addr,
            kind: ServerKind::Ours(handle),
            reach,
        }
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Options for a client of this broker: fast reconnects, so that tests do not wait long.
    pub(crate) fn options(&self, version: Version, client_id: &str) -> ClientOptions {
        self.options_at(self.addr, version, client_id)
    }

    /// Options for a client of this broker through a TCP proxy at `addr` (TCP targets, and
    /// WebSocket ones, whose bytes a TCP proxy carries as well).
    pub(crate) fn options_at(
        &self,
        addr: SocketAddr,
        version: Version,
        client_id: &str,
    ) -> ClientOptions {
        let options = options_for(addr, version, client_id);
        match &self.reach {
            Reach::Tcp => options,
            Reach::Ws => options.websocket("/mqtt"),
            Reach::Wss(pki) => options
                .websocket("/mqtt")
                .tls(TlsOptions::ca_file(&pki.ca).server_name("localhost")),
            Reach::Unix { path, .. } => {
                let mut backoff = BackoffConfig::default();
                backoff.initial = Duration::from_millis(20);
                backoff.max = Duration::from_millis(200);
                ClientOptions::unix(path)
                    .version(version)
                    .client_id(client_id)
                    .reconnect(Some(backoff))
            }
        }
    }

    /// Stops the broker and starts it again on the same port. mosquitto (started with
    /// [`Server::start_persistent`]) keeps its sessions; ours starts empty.
    pub(crate) async fn restart<R: Runtime + Default>(&mut self) {
        match &mut self.kind {
            ServerKind::Ours(handle) => {
                // `stop` returns once the port is free: binding it again succeeds at once.
                handle.stop().await;
                *handle = spawn_our_broker::<R>(self.addr, &self.reach).await.0;
            }
            ServerKind::Mosquitto(broker) => broker.restart(),
        }
    }

    /// Stops our broker (mosquitto stops when dropped).
    pub(crate) async fn stop(self) {
        if let ServerKind::Ours(handle) = self.kind {
            handle.stop().await;
        }
    }
}

/// Our broker's configuration for the suite: the defaults.
fn our_config() -> BrokerConfig {
    BrokerConfig::default()
}

async fn spawn_our_broker<R: Runtime + Default>(
    addr: SocketAddr,
    reach: &Reach,
) -> (BrokerHandle, SocketAddr) {
    let listener = match reach {
        Reach::Tcp => ListenerConfig::tcp(addr),
        Reach::Ws => ListenerConfig::tcp(addr).websocket(),
        Reach::Wss(pki) => ListenerConfig::tcp(addr)
            .tls(ServerTls::new(&pki.cert, &pki.key))
            .websocket(),
        // Listening on TCP too gives the server an address for the cases to print.
        Reach::Unix { path, .. } => ListenerConfig::unix(path),
    };
    let mut builder = Broker::<R>::builder().listener(listener);
    if matches!(reach, Reach::Unix { .. }) {
        builder = builder.bind(addr);
    }
    let broker = builder
        .config(our_config())
        .build()
        .await
        .expect("binding our broker on 127.0.0.1");
    let addr = broker.local_addrs()[0];
    (broker.spawn(), addr)
}

/// Client options for `addr`: fast reconnects.
pub(crate) fn options_for(addr: SocketAddr, version: Version, client_id: &str) -> ClientOptions {
    let mut backoff = BackoffConfig::default();
    backoff.initial = Duration::from_millis(20);
    backoff.max = Duration::from_millis(200);
    ClientOptions::new(addr.ip().to_string(), addr.port())
        .version(version)
        .client_id(client_id)
        .reconnect(Some(backoff))
}

/// Options of a persistent session: a fixed identifier, no clean start, and (5.0) a session
/// expiry long enough for the test.
pub(crate) fn persistent(options: ClientOptions) -> ClientOptions {
    options
        .clean_start(false)
        .session_expiry(Duration::from_secs(300))
}

/// Connects, within the deadline.
pub(crate) async fn connect<R: Runtime + Default>(options: ClientOptions) -> Client<R> {
    within::<R, _>("connecting", Client::<R>::connect(options))
        .await
        .expect("connecting")
}

/// Sleeps on the runtime's timer.
pub(crate) async fn sleep<R: Runtime + Default>(duration: Duration) {
    R::default().sleep_until(Instant::now() + duration).await;
}

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub(crate) async fn within<R: Runtime + Default, T>(
    what: &str,
    future: impl Future<Output = T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    let timeout = async {
        R::default().sleep_until(deadline).await;
        None
    };
    future::or(async { Some(future.await) }, timeout)
        .await
        .unwrap_or_else(|| panic!("timed out after {WAIT:?} {what}"))
}

/// The next message of a subscription, within the deadline.
pub(crate) async fn next<R: Runtime + Default>(subscription: &mut Subscription) -> Message {
    within::<R, _>("for a message", subscription.recv())
        .await
        .expect("the subscription ended")
}

/// Waits for a connection event that `wanted` accepts, skipping others.
pub(crate) async fn wait_event<R: Runtime + Default>(
    events: &Receiver<ConnectionEvent>,
    what: &str,
    wanted: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    within::<R, _>(what, async {
        loop {
            let event = events.recv().await.expect("the client ended");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
}

/// Runs `future` in the background; its output arrives on the returned channel.
pub(crate) fn spawn<R: Runtime + Default, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> Receiver<T> {
    let (done, output) = async_channel::bounded(1);
    R::default().spawn(Box::pin(async move {
        let _ = done.send(future.await).await;
    }));
    output
}

/// A TCP proxy in front of a broker, to drop clients' connections as a network would.
///
/// `cut` drops every connection through it (both sides see the TCP connection close, neither
/// sends a DISCONNECT); `set_open(false)` also refuses new ones until reopened.
pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    /// Dropped with the proxy, which ends its accept loop.
    _stop: Sender<()>,
}

struct ProxyState {
    open: bool,
    /// One sender per connection: dropping it ends the connection.
    links: Vec<Sender<()>>,
}

impl Proxy {
    /// A proxy on a port the kernel picks, forwarding to `upstream`.
    pub(crate) async fn start<R: Runtime + Default>(upstream: SocketAddr) -> Proxy {
        let runtime = R::default();
        let mut listener = runtime
            .bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(ProxyState {
            open: true,
            links: Vec::new(),
        }));
        let (stop_tx, stop) = async_channel::bounded::<()>(1);
        let shared = state.clone();
        runtime.spawn(Box::pin(async move {
            loop {
                let accepted = future::or(
                    async { Some(future::poll_fn(|cx| listener.poll_accept(cx)).await) },
                    async {
                        let _ = stop.recv().await;
                        None
                    },
                )
                .await;
                let Some(Ok((downstream, _))) = accepted else {
                    return;
                };
                let (link, cut) = async_channel::bounded::<()>(1);
                {
                    let mut state = shared.lock().unwrap();
                    if !state.open {
                        continue; // dropping `downstream` refuses the connection
                    }
                    state.links.push(link);
                }
                R::default().spawn(forward::<R>(downstream, upstream, cut));
            }
        }));
        Proxy {
            addr,
            state,
            _stop: stop_tx,
        }
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection through the proxy.
    pub(crate) fn cut(&self) {
        self.state.lock().unwrap().links.clear();
    }

    /// Opens, or closes (cutting every connection and refusing new ones).
    pub(crate) fn set_open(&self, open: bool) {
        let mut state = self.state.lock().unwrap();
        state.open = open;
        if !open {
            state.links.clear();
        }
    }
}

/// Copies bytes both ways until either side closes or the link is cut.
fn forward<R: Runtime + Default>(
    downstream: mqtt_async::runtime::BoxTransport,
    upstream: SocketAddr,
    cut: Receiver<()>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let Ok(upstream) = R::default().connect_tcp(upstream).await else {
            return;
        };
        let (down_read, down_write) = futures_lite::io::split(downstream);
        let (up_read, up_write) = futures_lite::io::split(upstream);
        let copy = future::or(
            async {
                let _ = futures_lite::io::copy(down_read, up_write).await;
            },
            async {
                let _ = futures_lite::io::copy(up_read, down_write).await;
            },
        );
        future::or(copy, async {
            let _ = cut.recv().await;
        })
        .await;
        // Both transports drop here: each side sees its connection close.
    })
}
