//! Listeners: where the broker accepts connections (TCP or a Unix domain socket) and what it
//! runs over them before MQTT (TLS, with or without client certificates; a WebSocket upgrade).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_channel::Receiver;
use futures_lite::future;
#[cfg(feature = "tls")]
use futures_rustls::TlsAcceptor;
use mqtt_proto::packet::ByteString;

use super::ToRouter;
use super::connection::{self, Serving};
use crate::Error;
use crate::runtime::{BoxTransport, Listener, PeerAddr, SharedRuntime, accept};
#[cfg(feature = "tls")]
use crate::tls::{ServerTls, certificate_identity};
#[cfg(feature = "ws")]
use crate::ws;

/// The longest pause of an accept loop whose `accept` keeps failing (out of file descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a client has to complete the TLS handshake and the WebSocket upgrade (the connect
/// timeout starts only after them).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address (port 0: the kernel picks one).
    Tcp(std::net::SocketAddr),
    /// A Unix domain socket's path.
    Unix(PathBuf),
}

/// One listener: where, and what runs over its connections before MQTT (TLS with the `tls`
/// feature, WebSocket with `ws`).
///
/// ```
/// # #[cfg(all(feature = "tls", feature = "ws"))] {
/// use mqtt_async::ServerTls;
/// use mqtt_async::broker::ListenerConfig;
/// // MQTT over secure WebSocket on port 8884, at /mqtt.
/// let wss = ListenerConfig::tcp("0.0.0.0:8884".parse().unwrap())
///     .tls(ServerTls::new("server.pem", "server.key"))
///     .websocket();
/// // Plain MQTT for local services.
/// let local = ListenerConfig::unix("/run/mqtt.sock");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    addr: ListenAddr,
    #[cfg(feature = "tls")]
    tls: Option<ServerTls>,
    #[cfg(feature = "ws")]
    websocket: Option<String>,
}

impl ListenerConfig {
    /// Plain MQTT on a TCP address.
    pub fn tcp(addr: std::net::SocketAddr) -> Self {
        Self {
            addr: ListenAddr::Tcp(addr),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "ws")]
            websocket: None,
        }
    }

    /// Plain MQTT on a Unix domain socket (see [`BrokerBuilder::bind_unix`](super::BrokerBuilder::bind_unix)).
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self {
            addr: ListenAddr::Unix(path.into()),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "ws")]
            websocket: None,
        }
    }

    /// With TLS (and, as [`ServerTls`] says, client certificates).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// MQTT over WebSocket (RFC 6455, subprotocol `mqtt`) at the path `/mqtt`: with
    /// [`tls`](Self::tls), that is `wss`.
    ///
    /// The upgrade request must be a GET of the path, an upgrade to WebSocket version 13
    /// offering the subprotocol `mqtt` (or `mqttv3.1`) in at most 8 KiB and 64 headers; any
    /// other request is answered with its HTTP status (400, 404, 405, 426 or 431) and an
    /// explanation, and never reaches MQTT. Frames must be binary (a text frame closes the
    /// connection with 1003) and at most the maximum packet size, at least 64 KiB and at most
    /// 16 MiB (a larger one closes it with 1009; a larger packet is sent in several frames,
    /// which MQTT allows).
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn websocket(self) -> Self {
        self.websocket_path(ws::DEFAULT_PATH)
    }

    /// MQTT over WebSocket at `path` instead of `/mqtt`.
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn websocket_path(mut self, path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        self.websocket = Some(path);
        self
    }

    /// Where it listens.
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }
}

/// A listener's TLS configuration, which [`BrokerHandle::reload_tls`](super::BrokerHandle::reload_tls)
/// reads again from its files.
#[cfg(feature = "tls")]
pub(super) struct ReloadableTls {
    config: ServerTls,
    acceptor: std::sync::Mutex<TlsAcceptor>,
}

#[cfg(feature = "tls")]
impl ReloadableTls {
    fn new(config: ServerTls) -> Result<Self, Error> {
        let acceptor = config.acceptor()?;
        Ok(Self {
            config,
            acceptor: std::sync::Mutex::new(acceptor),
        })
    }

    /// What new connections use.
    fn current(&self) -> TlsAcceptor {
        self.acceptor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the files again; on an error the configuration in use stays.
    pub(super) fn reload(&self) -> Result<(), Error> {
        let acceptor = self.config.acceptor()?;
        *self
            .acceptor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = acceptor;
        Ok(())
    }
}

/// What runs over a listener's connections before MQTT.
struct Layers {
    #[cfg(feature = "tls")]
    tls: Option<Arc<ReloadableTls>>,
    /// The certificate's name is the client's user name.
    #[cfg(feature = "tls")]
    identity: bool,
    #[cfg(feature = "ws")]
    websocket: Option<String>,
    #[cfg(feature = "ws")]
    max_packet_size: usize,
}

impl Layers {
    /// Plain MQTT: nothing runs before it.
    fn is_plain(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return false;
        }
        #[cfg(feature = "ws")]
        if self.websocket.is_some() {
            return false;
        }
        true
    }

    /// What to tell the router when the handshakes took too long (nothing when there are
    /// none).
    fn timed_out(&self, peer: PeerAddr) -> Option<ToRouter> {
        let error = format!("no handshake within {HANDSHAKE_TIMEOUT:?}");
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return Some(ToRouter::TlsFailed(peer, error));
        }
        #[cfg(feature = "ws")]
        if self.websocket.is_some() {
            return Some(ToRouter::WebSocketFailed(peer, error));
        }
        let _ = (peer, error);
        None
    }
}

/// A bound listener.
pub(super) struct Bound {
    pub(super) listener: Box<dyn Listener>,
    layers: Arc<Layers>,
    /// The socket file, removed when the listener closes.
    unix_path: Option<PathBuf>,
}

impl Bound {
    /// Its TLS configuration, if it has one.
    #[cfg(feature = "tls")]
    pub(super) fn tls(&self) -> Option<Arc<ReloadableTls>> {
        self.layers.tls.clone()
    }
}

/// Binds a listener (and loads its TLS configuration).
pub(super) async fn bind(
    runtime: &SharedRuntime,
    config: ListenerConfig,
    max_packet_size: u32,
) -> Result<Bound, Error> {
    #[cfg(feature = "tls")]
    let tls = config
        .tls
        .clone()
        .map(ReloadableTls::new)
        .transpose()?
        .map(Arc::new);
    #[cfg(not(feature = "ws"))]
    let _ = max_packet_size;
    let layers = Arc::new(Layers {
        #[cfg(feature = "tls")]
        tls,
        #[cfg(feature = "tls")]
        identity: config
            .tls
            .as_ref()
            .is_some_and(|t| t.use_identity_as_username),
        #[cfg(feature = "ws")]
        websocket: config.websocket,
        #[cfg(feature = "ws")]
        max_packet_size: usize::try_from(max_packet_size).unwrap_or(usize::MAX),
    });
    let (listener, unix_path) = match config.addr {
        ListenAddr::Tcp(addr) => (runtime.bind_tcp(addr).await?, None),
        ListenAddr::Unix(path) => {
            remove_stale_socket(&path)?;
            (runtime.bind_unix(&path).await?, Some(path))
        }
    };
    Ok(Bound {
        listener,
        layers,
        unix_path,
    })
}

/// Removes a socket file left by a broker that did not stop cleanly (nothing listens on it);
/// any other file at `path` is left alone and binding fails.
fn remove_stale_socket(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.file_type().is_socket()
            && std::os::unix::net::UnixStream::connect(path).is_err()
        {
            std::fs::remove_file(path)?;
        }
    }
    let _ = path;
    Ok(())
}

/// Accepts connections until `stop`, each served by a task of its own.
pub(super) async fn accept_loop(serving: Arc<Serving>, bound: Bound, stop: Receiver<()>) {
    let runtime = &serving.runtime;
    let to_router = &serving.to_router;
    let Bound {
        mut listener,
        layers,
        unix_path,
    } = bound;
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = future::or(async { Some(accept(listener.as_mut()).await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { break };
        let (transport, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(error) => {
                // Out of file descriptors and the like: the error comes back at once, so
                // trying again at once would spin. Back off (told once per streak) and keep
                // serving the connections there are.
                if backoff.is_zero() {
                    let addr = listener.local_addr().ok();
                    let _ = to_router
                        .send(ToRouter::AcceptFailed(addr, error.to_string()))
                        .await;
                }
                backoff = (backoff * 2)
                    .max(Duration::from_millis(10))
                    .min(ACCEPT_BACKOFF_MAX);
                let sleep = runtime.sleep_until(runtime.now() + backoff);
                let stopped = future::or(
                    async {
                        sleep.await;
                        false
                    },
                    async {
                        let _ = stop.recv().await;
                        true
                    },
                )
                .await;
                if stopped {
                    break;
                }
                continue;
            }
        };
        if layers.is_plain() {
            // Plain MQTT: the task is the connection alone, none of the handshakes' state
            // (which would size every idle connection's future). Over TCP, the idle set may
            // hold it instead of a task.
            let parkable = unix_path.is_none();
            let admission = super::Admission::Client(None);
            let task = connection::serve(&serving, transport, peer, admission, parkable);
            runtime.spawn(Box::pin(task));
            continue;
        }
        let to_router = to_router.clone();
        let inner = runtime.clone();
        let serving = serving.clone();
        let layers = layers.clone();
        runtime.spawn(Box::pin(async move {
            // A peer that never finishes the handshakes must not hold a task and a socket
            // forever.
            let sleep = inner.sleep_until(inner.now() + HANDSHAKE_TIMEOUT);
            let opened = future::or(async { Some(open(&layers, transport).await) }, async {
                sleep.await;
                None
            })
            .await;
            let (transport, identity) = match opened {
                Some(Ok(opened)) => opened,
                Some(Err(failed)) => {
                    let _ = to_router.send(failed.into_message(peer)).await;
                    return;
                }
                None => {
                    if let Some(message) = layers.timed_out(peer) {
                        let _ = to_router.send(message).await;
                    }
                    return;
                }
            };
            // A task of its own, which holds none of the handshakes' state either.
            let admission = super::Admission::Client(identity);
            inner.spawn(Box::pin(connection::serve(
                &serving, transport, peer, admission, false,
            )));
        }));
    }
    drop(listener);
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path);
    }
}

/// A failed handshake.
enum Failed {
    #[cfg(feature = "tls")]
    Tls(String),
    #[cfg(feature = "ws")]
    WebSocket(String),
}

impl Failed {
    #[cfg_attr(
        not(any(feature = "tls", feature = "ws")),
        allow(
            unused_variables,
            reason = "without TLS and WebSocket nothing can fail"
        )
    )]
    fn into_message(self, peer: PeerAddr) -> ToRouter {
        match self {
            #[cfg(feature = "tls")]
            Failed::Tls(error) => ToRouter::TlsFailed(peer, error),
            #[cfg(feature = "ws")]
            Failed::WebSocket(error) => ToRouter::WebSocketFailed(peer, error),
        }
    }
}

/// Runs TLS (taking the client's identity from its certificate when the listener wants it),
/// then the WebSocket upgrade, as the listener has them.
#[cfg_attr(
    not(all(feature = "tls", feature = "ws")),
    allow(
        unused_mut,
        unused_variables,
        reason = "no layer of a feature left out runs"
    )
)]
async fn open(
    layers: &Layers,
    mut transport: BoxTransport,
) -> Result<(BoxTransport, Option<ByteString>), Failed> {
    let mut identity = None;
    #[cfg(feature = "tls")]
    if let Some(tls) = &layers.tls {
        let stream = tls
            .current()
            .accept(transport)
            .await
            .map_err(|e| Failed::Tls(e.to_string()))?;
        if layers.identity {
            let name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| certificate_identity(cert));
            match name {
                Some(name) => identity = Some(ByteString::from(name)),
                None => {
                    return Err(Failed::Tls(
                        "the client certificate has no Common Name or subject alternative name \
                         to use as user name (use_identity_as_username)"
                            .into(),
                    ));
                }
            }
        }
        transport = Box::new(stream);
    }
    #[cfg(feature = "ws")]
    if let Some(path) = &layers.websocket {
        transport = ws::accept(transport, path, layers.max_packet_size)
            .await
            .map_err(|refused| Failed::WebSocket(refused.to_string()))?;
    }
    Ok((transport, identity))
}
