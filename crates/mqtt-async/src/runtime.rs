//! What the drive loop needs from an async runtime: a clock, timers, spawning, and TCP.
//!
//! One small implementation per runtime lives in `mqtt-tokio`, `mqtt-smol` and
//! `mqtt-async-std`; everything else is written once against these traits. Transports are
//! futures-io streams, which smol and async-std provide natively and tokio through
//! `tokio-util`'s compat layer, so TLS (futures-rustls) works the same on all of them.

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream the client or broker runs MQTT over: TCP, TLS, or anything else.
///
/// `Any` lets a runtime recognize its own TCP streams in a [`BoxTransport`] (see
/// [`downcast_transport`] and [`Runtime::take_std_tcp`]).
pub trait Transport: Any + AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed transport.
pub type BoxTransport = Box<dyn Transport>;

/// The transport as the concrete type `T`, or the transport unchanged when it is something
/// else: what a runtime's [`Runtime::take_std_tcp`] uses to find its own TCP stream.
pub fn downcast_transport<T: Transport>(transport: BoxTransport) -> Result<Box<T>, BoxTransport> {
    // Asked through a reference first: a failed `Box<dyn Any>` downcast could not give the
    // transport back as a `BoxTransport`.
    if !(&*transport as &dyn Any).is::<T>() {
        return Err(transport);
    }
    let any: Box<dyn Any> = transport;
    match any.downcast::<T>() {
        Ok(concrete) => Ok(concrete),
        // Checked above; a transport cannot change its type.
        Err(_) => unreachable!("the type was checked"),
    }
}

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer's address.
    Tcp(SocketAddr),
    /// A peer on a Unix domain socket (clients' sockets are unnamed: there is no address).
    Unix,
    /// The broker's own connection: a bridge's local side, over an in-memory pipe.
    Internal,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => std::fmt::Display::fmt(addr, f),
            PeerAddr::Unix => f.write_str("unix"),
            PeerAddr::Internal => f.write_str("internal"),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        PeerAddr::Tcp(addr)
    }
}

impl PeerAddr {
    /// The TCP address, for a TCP peer.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Tcp(addr) => Some(*addr),
            PeerAddr::Unix | PeerAddr::Internal => None,
        }
    }
}

/// A listening socket: TCP, or a Unix domain socket.
pub trait Listener: Send + 'static {
    /// Accepts the next connection.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(BoxTransport, PeerAddr)>>;
    /// The address it listens on (with the port the kernel chose for port 0); an error for a
    /// Unix domain socket, whose path the caller chose.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// An async runtime: tokio, smol, async-std, or your own.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// The current time. The protocol core never reads a clock; the drive loop asks here.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;

    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture<'static, ()>);

    /// Resolves a host name.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;

    /// Opens a TCP connection (with `TCP_NODELAY`: MQTT packets are small and latency matters).
    fn connect_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxTransport>>;

    /// Listens on a TCP address.
    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;

    /// Connects to a Unix domain socket. The default says [`io::ErrorKind::Unsupported`]; the
    /// runtimes of this project implement it on Unix.
    fn connect_unix(&self, path: &Path) -> BoxFuture<'static, io::Result<BoxTransport>> {
        let _ = path;
        Box::pin(async { Err(io::ErrorKind::Unsupported.into()) })
    }

    /// Listens on a Unix domain socket (creating the socket file, which must not exist). The
    /// default says [`io::ErrorKind::Unsupported`]; the runtimes of this project implement it
    /// on Unix.
    fn bind_unix(&self, path: &Path) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let _ = path;
        Box::pin(async { Err(io::ErrorKind::Unsupported.into()) })
    }

    /// Takes a plain TCP stream this runtime made (one its TCP [`Listener`] accepted, or
    /// [`wrap_std_tcp`](Self::wrap_std_tcp) made) back out of it: `Ok` with a non-blocking std
    /// socket that the runtime no longer watches, or with the error that lost the stream. The
    /// transport comes back unchanged (`Err`) when it is anything else (TLS, WebSocket, a Unix
    /// socket, a pipe) or when the runtime cannot; that is the default.
    ///
    /// With [`wrap_std_tcp`](Self::wrap_std_tcp), this lets the broker keep an idle
    /// connection without a task or a runtime registration (see
    /// `BrokerBuilder::idle_after`).
    fn take_std_tcp(
        &self,
        transport: BoxTransport,
    ) -> Result<io::Result<std::net::TcpStream>, BoxTransport> {
        Err(transport)
    }

    /// Hands a non-blocking std TCP socket (from [`take_std_tcp`](Self::take_std_tcp)) to the
    /// runtime again. Called from a task of this runtime. The default says
    /// [`io::ErrorKind::Unsupported`].
    fn wrap_std_tcp(&self, stream: std::net::TcpStream) -> io::Result<BoxTransport> {
        let _ = stream;
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Runs `future` to completion on the current thread (a thread of its own, for embedding a
    /// broker in a program that is not async).
    fn block_on(&self, future: BoxFuture<'static, ()>);
}

/// A shared runtime handle.
pub type SharedRuntime = Arc<dyn Runtime>;

/// Accepts the next connection of a listener.
#[cfg(feature = "broker")]
pub(crate) fn accept(
    listener: &mut dyn Listener,
) -> impl Future<Output = io::Result<(BoxTransport, PeerAddr)>> + '_ {
    futures_lite::future::poll_fn(move |cx| listener.poll_accept(cx))
}
