//! MQTT for tokio: the [`mqtt_async`] client and broker on the tokio runtime.
//!
//! ```no_run
//! use mqtt_tokio::{Client, ClientOptions, QoS, Version};
//!
//! # async fn run() -> Result<(), mqtt_tokio::Error> {
//! let client = Client::connect(ClientOptions::new("127.0.0.1", 1883).version(Version::V5)).await?;
//! let mut messages = client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! client.publish("sensors/temperature", "23.5", QoS::AtLeastOnce).await?;
//! while let Some(msg) = messages.recv().await {
//!     println!("{} {:?}", msg.topic(), msg.payload());
//! }
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! The features of [`mqtt_async`], passed through, all on by default: `tls`, `ws`, `broker` and
//! `auth-file` (see [its table](mqtt_async#features)). For a client only,
//! `default-features = false`, adding `tls` and `ws` as needed:
//!
//! ```toml
//! mqtt-tokio = { version = "0.1", default-features = false, features = ["tls"] }
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
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// The tokio runtime, as the async layer sees it. Spawns onto the current tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

/// A client on tokio.
pub type Client = mqtt_async::Client<TokioRuntime>;
#[cfg(feature = "broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "broker")))]
/// A broker on tokio.
pub type Broker = mqtt_async::Broker<TokioRuntime>;

/// The client for blocking code (see [`mqtt_async::blocking`]), on tokio: no tokio runtime is
/// needed in the program, the client's thread starts one.
///
/// ```
/// use std::time::Duration;
/// use mqtt_tokio::blocking::Client;
/// use mqtt_tokio::{Broker, ClientOptions, QoS};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (_broker, addrs) = Broker::start_in_thread(Broker::builder().bind("127.0.0.1:0".parse()?))?;
/// let client = Client::connect(ClientOptions::new("127.0.0.1", addrs[0].port()))?;
/// let mut messages = client.subscribe("greetings/#", QoS::AtLeastOnce)?;
/// client.publish("greetings/en", "hello", QoS::AtLeastOnce)?; // returns on PUBACK
/// let message = messages.recv_timeout(Duration::from_secs(5))?;
/// assert_eq!(message.payload().as_ref(), b"hello");
/// # Ok(()) }
/// ```
pub mod blocking {
    pub use mqtt_async::blocking::*;

    /// A blocking client on tokio.
    pub type Client = mqtt_async::blocking::Client<super::TokioRuntime>;
}

struct TokioListener(tokio::net::TcpListener);

impl Listener for TokioListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(BoxTransport, PeerAddr)>> {
        self.0.poll_accept(cx).map_ok(|(stream, peer)| {
            let _ = stream.set_nodelay(true);
            (
                Box::new(stream.compat()) as BoxTransport,
                PeerAddr::Tcp(peer),
            )
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(unix)]
struct TokioUnixListener(tokio::net::UnixListener);

#[cfg(unix)]
impl Listener for TokioUnixListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(BoxTransport, PeerAddr)>> {
        self.0
            .poll_accept(cx)
            .map_ok(|(stream, _)| (Box::new(stream.compat()) as BoxTransport, PeerAddr::Unix))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Runtime for TokioRuntime {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        tokio::spawn(future);
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }

    fn connect_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxTransport>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream.compat()) as BoxTransport)
        })
    }

    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TokioListener(listener)) as Box<dyn Listener>)
        })
    }

    fn take_std_tcp(
        &self,
        transport: BoxTransport,
    ) -> Result<io::Result<std::net::TcpStream>, BoxTransport> {
        let stream = downcast_transport::<Compat<tokio::net::TcpStream>>(transport)?;
        Ok(stream.into_inner().into_std())
    }

    fn wrap_std_tcp(&self, stream: std::net::TcpStream) -> io::Result<BoxTransport> {
        Ok(Box::new(tokio::net::TcpStream::from_std(stream)?.compat()) as BoxTransport)
    }

    #[cfg(unix)]
    fn connect_unix(&self, path: &Path) -> BoxFuture<'static, io::Result<BoxTransport>> {
        let path = path.to_owned();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok(Box::new(stream.compat()) as BoxTransport)
        })
    }

    #[cfg(unix)]
    fn bind_unix(&self, path: &Path) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let path = path.to_owned();
        Box::pin(async move {
            let listener = tokio::net::UnixListener::bind(path)?;
            Ok(Box::new(TokioUnixListener(listener)) as Box<dyn Listener>)
        })
    }

    fn block_on(&self, future: BoxFuture<'static, ()>) {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(future),
            Err(error) => panic_free_report(error),
        }
    }
}

/// A runtime that cannot be built leaves nothing to run; say so on stderr rather than panic.
fn panic_free_report(error: io::Error) {
    eprintln!("mqtt-tokio: cannot start a tokio runtime: {error}");
}
