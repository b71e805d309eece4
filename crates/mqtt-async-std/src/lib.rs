//! MQTT for async-std: the [`mqtt_async`] client and broker on the async-std runtime.
//!
//! async-std is discontinued upstream (smol is its successor, see `mqtt-smol`); this crate stays
//! a thin adapter for programs that still run on it.
//!
//! ```no_run
//! use mqtt_async_std::{Client, ClientOptions, QoS, Version};
//!
//! # async fn run() -> Result<(), mqtt_async_std::Error> {
//! let client = Client::connect(ClientOptions::new("127.0.0.1", 1883).version(Version::V5)).await?;
//! let mut messages = client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! client.publish("sensors/temperature", "23.5", QoS::AtLeastOnce).await?;
//! while let Some(msg) = messages.recv().await {
//!     println!("{} {:?}", msg.topic(), msg.payload());
//! }
//! # Ok(()) }
//! # async_std::task::block_on(async { let _ = run().await; });
//! ```
//!
//! # Features
//!
//! The features of [`mqtt_async`], passed through, all on by default: `tls`, `ws`, `broker` and
//! `auth-file` (see [its table](mqtt_async#features)). For a client only,
//! `default-features = false`, adding `tls` and `ws` as needed:
//!
//! ```toml
//! mqtt-async-std = { version = "0.1", default-features = false, features = ["tls"] }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use async_std::os::unix::net::{UnixListener, UnixStream};
use mqtt_async::runtime::{BoxFuture, BoxTransport, Listener, downcast_transport};
pub use mqtt_async::*;

/// The async-std runtime, as the async layer sees it. Spawns onto async-std's global executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

/// A client on async-std.
pub type Client = mqtt_async::Client<AsyncStdRuntime>;
#[cfg(feature = "broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
/// A broker on async-std.
pub type Broker = mqtt_async::Broker<AsyncStdRuntime>;

/// The client for blocking code (see [`mqtt_async::blocking`]), on async-std.
pub mod blocking {
    pub use mqtt_async::blocking::*;

    /// A blocking client on async-std.
    pub type Client = mqtt_async::blocking::Client<super::AsyncStdRuntime>;
}

/// A listener and the accept in progress (`accept` borrows the listener, so the future holds a
/// shared handle of its own).
struct AsyncStdListener {
    listener: Arc<TcpListener>,
    accepting: Option<BoxFuture<'static, io::Result<(TcpStream, SocketAddr)>>>,
}

impl Listener for AsyncStdListener {
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
struct AsyncStdUnixListener {
    listener: Arc<UnixListener>,
    accepting: Option<BoxFuture<'static, io::Result<UnixStream>>>,
}

#[cfg(unix)]
impl Listener for AsyncStdUnixListener {
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

impl Runtime for AsyncStdRuntime {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let delay = deadline.saturating_duration_since(Instant::now());
        Box::pin(async_std::task::sleep(delay))
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        // Detached: dropping the handle lets the task run on.
        drop(async_std::task::spawn(future));
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { Ok((host.as_str(), port).to_socket_addrs().await?.collect()) })
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
            Ok(Box::new(AsyncStdListener {
                listener: Arc::new(listener),
                accepting: None,
            }) as Box<dyn Listener>)
        })
    }

    fn take_std_tcp(
        &self,
        transport: BoxTransport,
    ) -> Result<io::Result<std::net::TcpStream>, BoxTransport> {
        let stream = downcast_transport::<TcpStream>(transport)?;
        // The broker never clones a stream, so this is its only reference. async-std makes the
        // socket blocking on the way out.
        Ok(std::net::TcpStream::try_from(*stream).and_then(|stream| {
            stream.set_nonblocking(true)?;
            Ok(stream)
        }))
    }

    fn wrap_std_tcp(&self, stream: std::net::TcpStream) -> io::Result<BoxTransport> {
        // async-std's conversion panics when the reactor refuses the socket (out of memory);
        // nothing fallible is offered. The broker catches that and closes the connection.
        Ok(Box::new(TcpStream::from(stream)) as BoxTransport)
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
            let listener = UnixListener::bind(path).await?;
            Ok(Box::new(AsyncStdUnixListener {
                listener: Arc::new(listener),
                accepting: None,
            }) as Box<dyn Listener>)
        })
    }

    fn block_on(&self, future: BoxFuture<'static, ()>) {
        async_std::task::block_on(future);
    }
}
