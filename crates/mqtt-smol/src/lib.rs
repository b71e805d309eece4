//! MQTT for smol: the [`mqtt_async`] client and broker on the smol runtime.
//!
//! ```no_run
//! use mqtt_smol::{Client, ClientOptions, QoS, Version};
//!
//! # async fn run() -> Result<(), mqtt_smol::Error> {
//! let client = Client::connect(ClientOptions::new("127.0.0.1", 1883).version(Version::V5)).await?;
//! let mut messages = client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! client.publish("sensors/temperature", "23.5", QoS::AtLeastOnce).await?;
//! while let Some(msg) = messages.recv().await {
//!     println!("{} {:?}", msg.topic(), msg.payload());
//! }
//! # Ok(()) }
//! # smol::block_on(async { let _ = run().await; });
//! ```
//!
//! Background tasks (each client's connection, the broker's router and connections) run on
//! smol's global executor ([`smol::spawn`]), which drives them on threads of its own: they make
//! progress whether the application polls them from `smol::block_on`, from another executor, or
//! not at all. `SMOL_THREADS` sets how many threads that executor uses (default one).
//!
//! # Features
//!
//! The features of [`mqtt_async`], passed through, all on by default: `tls`, `ws`, `broker` and
//! `auth-file` (see [its table](mqtt_async#features)). For a client only,
//! `default-features = false`, adding `tls` and `ws` as needed:
//!
//! ```toml
//! mqtt-smol = { version = "0.1", default-features = false, features = ["tls"] }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::Path;
use std::task::{Context, Poll};
use std::time::Instant;

use mqtt_async::runtime::{BoxFuture, BoxTransport, Listener, downcast_transport};
pub use mqtt_async::*;
#[cfg(unix)]
use smol::net::unix::{UnixListener, UnixStream};
use smol::net::{TcpListener, TcpStream};

/// The smol runtime, as the async layer sees it. Spawns onto smol's global executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

/// A client on smol.
pub type Client = mqtt_async::Client<SmolRuntime>;
#[cfg(feature = "broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
/// A broker on smol.
pub type Broker = mqtt_async::Broker<SmolRuntime>;

/// The client for blocking code (see [`mqtt_async::blocking`]), on smol.
pub mod blocking {
    pub use mqtt_async::blocking::*;

    /// A blocking client on smol.
    pub type Client = mqtt_async::blocking::Client<super::SmolRuntime>;
}

/// A listener and the accept in progress (`accept` borrows the listener, so the future holds a
/// clone of its own; clones share one socket).
struct SmolListener {
    listener: TcpListener,
    accepting: Option<BoxFuture<'static, io::Result<(TcpStream, SocketAddr)>>>,
}

impl Listener for SmolListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(BoxTransport, PeerAddr)>> {
        let accepting = self.accepting.get_or_insert_with(|| {
            let listener = self.listener.clone();
            Box::pin(async move { listener.accept().await })
        });
        let accepted = std::task::ready!(accepting.as_mut().poll(cx));
        self.accepting = None;
        Poll::Ready(accepted.map(|(stream, peer)| {
            let _ = stream.set_nodelay(true);
            (Box::new(stream) as BoxTransport, PeerAddr::Tcp(peer))
        }))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A Unix domain socket listener and the accept in progress, as for TCP.
#[cfg(unix)]
struct SmolUnixListener {
    listener: UnixListener,
    accepting: Option<BoxFuture<'static, io::Result<UnixStream>>>,
}

#[cfg(unix)]
impl Listener for SmolUnixListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(BoxTransport, PeerAddr)>> {
        let accepting = self.accepting.get_or_insert_with(|| {
            let listener = self.listener.clone();
            Box::pin(async move { listener.accept().await.map(|(stream, _)| stream) })
        });
        let accepted = std::task::ready!(accepting.as_mut().poll(cx));
        self.accepting = None;
        Poll::Ready(accepted.map(|stream| (Box::new(stream) as BoxTransport, PeerAddr::Unix)))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Runtime for SmolRuntime {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let timer = smol::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        smol::spawn(future).detach();
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { smol::net::resolve((host.as_str(), port)).await })
    }

    fn connect_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxTransport>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxTransport)
        })
    }

    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = TcpListener::bind(addr).await?;
            Ok(Box::new(SmolListener {
                listener,
                accepting: None,
            }) as Box<dyn Listener>)
        })
    }

    fn take_std_tcp(
        &self,
        transport: BoxTransport,
    ) -> Result<io::Result<std::net::TcpStream>, BoxTransport> {
        let stream = downcast_transport::<TcpStream>(transport)?;
        let source: std::sync::Arc<smol::Async<std::net::TcpStream>> = (*stream).into();
        // The broker never clones a stream, so this is its only reference.
        Ok(std::sync::Arc::try_unwrap(source)
            .map_err(|_| io::Error::other("the TCP stream is shared"))
            .and_then(smol::Async::into_inner))
    }

    fn wrap_std_tcp(&self, stream: std::net::TcpStream) -> io::Result<BoxTransport> {
        Ok(Box::new(TcpStream::try_from(stream)?) as BoxTransport)
    }

    #[cfg(unix)]
    fn connect_unix(&self, path: &Path) -> BoxFuture<'static, io::Result<BoxTransport>> {
        let path = path.to_owned();
        Box::pin(async move {
            let stream = UnixStream::connect(path).await?;
            Ok(Box::new(stream) as BoxTransport)
        })
    }

    #[cfg(unix)]
    fn bind_unix(&self, path: &Path) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let path = path.to_owned();
        Box::pin(async move {
            let listener = UnixListener::bind(path)?;
            Ok(Box::new(SmolUnixListener {
                listener,
                accepting: None,
            }) as Box<dyn Listener>)
        })
    }

    fn block_on(&self, future: BoxFuture<'static, ()>) {
        smol::block_on(future);
    }
}
