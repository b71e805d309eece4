//! A minimal load client: the sans-I/O core over a tokio `TcpStream` (or MQTT over WebSocket
//! on one, with our `mqtt_tokio::ws::connect`), in one task, and the stamp a relay payload
//! carries.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use mqtt_proto::ReasonCode;
use mqtt_proto::connection::{ClientConfig, ClientConnection, ClientEvent};
use mqtt_proto::packet::{
    Disconnect, QoS, SubscribeProperties, Subscription, TopicFilter, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::{INFLIGHT, PAYLOAD, STALL};

/// Where a load client connects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    /// MQTT over TCP.
    Tcp(SocketAddr),
    /// MQTT over WebSocket (path `/mqtt`) over TCP.
    Ws(SocketAddr),
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Tcp(addr)
    }
}

/// The client's byte stream.
enum Stream {
    Tcp(TcpStream),
    /// Our WebSocket transport (futures-io), back in tokio's traits.
    Ws(Compat<mqtt_tokio::runtime::BoxTransport>),
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes).await,
            Stream::Ws(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Ws(s) => s.read(buf).await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Ws(s) => s.shutdown().await,
        }
    }

    fn try_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read(buf),
            Stream::Ws(s) => {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let mut read = tokio::io::ReadBuf::new(buf);
                match std::pin::Pin::new(s).poll_read(&mut cx, &mut read) {
                    std::task::Poll::Ready(Ok(())) => Ok(read.filled().len()),
                    std::task::Poll::Ready(Err(e)) => Err(e),
                    std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

pub(crate) struct Raw {
    stream: Stream,
    pub(crate) conn: ClientConnection,
    out: BytesMut,
    buf: Vec<u8>,
}

impl Raw {
    /// The load clients' configuration: keep alive 10 minutes, `INFLIGHT` QoS 1 publishes in
    /// flight, a queue that never refuses.
    pub(crate) fn config(id: &str, version: Version) -> ClientConfig {
        let mut config = ClientConfig::new(version, id.to_owned());
        config.keep_alive = 600;
        config.max_inflight = INFLIGHT;
        config.max_queued = 1_000_000;
        config
    }

    /// `Raw::config` for a persistent session, which a persisting broker writes to disk: Clean
    /// Session 0 (3.1.1), or Clean Start 0 with a Session Expiry Interval of an hour (5.0).
    pub(crate) fn persistent_config(id: &str, version: Version) -> ClientConfig {
        let mut config = Self::config(id, version);
        config.clean_start = false;
        if version == Version::V5 {
            config.properties.session_expiry_interval = Some(3600);
        }
        config
    }

    /// Connects with `Raw::config` and waits for CONNACK (at most `STALL`).
    pub(crate) async fn connect(
        addr: impl Into<Endpoint>,
        id: &str,
        version: Version,
    ) -> anyhow::Result<Self> {
        Self::connect_with(addr, Self::config(id, version)).await
    }

    /// Connects and waits for CONNACK (at most `STALL`).
    pub(crate) async fn connect_with(
        addr: impl Into<Endpoint>,
        config: ClientConfig,
    ) -> anyhow::Result<Self> {
        let id = config.client_id.clone();
        tokio::time::timeout(STALL, Self::connect_now(addr.into(), config))
            .await
            .with_context(|| format!("{id}: no CONNACK"))?
    }

    async fn connect_now(endpoint: Endpoint, config: ClientConfig) -> anyhow::Result<Self> {
        let stream = match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            Endpoint::Ws(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let ws = mqtt_tokio::ws::connect(
                    Box::new(stream.compat()),
                    "127.0.0.1",
                    addr.port(),
                    "/mqtt",
                    false,
                    usize::MAX,
                )
                .await?;
                Stream::Ws(ws.compat())
            }
        };
        let id = config.client_id.clone();
        let conn = ClientConnection::new(config, None, Instant::now());
        let mut raw = Raw {
            stream,
            conn,
            out: BytesMut::with_capacity(64 * 1024),
            buf: vec![0; 64 * 1024],
        };
        raw.flush().await?;
        loop {
            raw.read().await?;
            while let Some(event) = raw.conn.poll_event() {
                match event {
                    ClientEvent::Connected { .. } => return Ok(raw),
                    ClientEvent::Disconnected(why) => bail!("{id} refused: {why:?}"),
                    _ => {}
                }
            }
        }
    }

    /// Subscribes and waits for SUBACK (at most `STALL`).
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        self.conn.subscribe(
            Instant::now(),
            vec![Subscription::new(TopicFilter::new(filter)?, qos)],
            SubscribeProperties::default(),
        )?;
        self.flush().await?;
        let suback = async {
            loop {
                self.read().await?;
                while let Some(event) = self.conn.poll_event() {
                    if let ClientEvent::Subscribed(_) = event {
                        return Ok(());
                    }
                }
            }
        };
        tokio::time::timeout(STALL, suback)
            .await
            .context("no SUBACK")?
    }

    /// Sends DISCONNECT and closes the connection.
    pub(crate) async fn disconnect(mut self) -> anyhow::Result<()> {
        self.conn
            .disconnect(Instant::now(), Disconnect::new(ReasonCode::Success))?;
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Closes the connection without DISCONNECT, as a client that goes away does.
    pub(crate) async fn close(mut self) -> anyhow::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Writes everything the core has to send.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        self.out.clear();
        if self.conn.poll_transmit(Instant::now(), &mut self.out) {
            self.stream.write_all(&self.out).await?;
        }
        Ok(())
    }

    /// Reads once; cancel safe (the bytes are handled after the only await).
    pub(crate) async fn read(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            bail!("connection closed by the broker");
        }
        self.conn.handle_bytes(Instant::now(), &self.buf[..n]);
        Ok(())
    }

    /// Reads what is there without waiting.
    pub(crate) fn try_read(&mut self) -> anyhow::Result<()> {
        loop {
            match self.stream.try_read(&mut self.buf) {
                Ok(0) => bail!("connection closed by the broker"),
                Ok(n) => self.conn.handle_bytes(Instant::now(), &self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The clock payload timestamps are relative to (publishers and subscribers share a process).
pub(crate) fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn nanos_since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What a relay payload carries: its send time, its publisher and its place in that publisher's
/// sequence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    sent_ns: u64,
    pub(crate) publisher: usize,
    pub(crate) seq: u64,
}

impl Stamp {
    /// A payload of `PAYLOAD` bytes sent now.
    pub(crate) fn payload(publisher: usize, seq: u64) -> Bytes {
        let mut payload = [0u8; PAYLOAD];
        payload[..8].copy_from_slice(&nanos_since_epoch().to_be_bytes());
        payload[8..12].copy_from_slice(&(publisher as u32).to_be_bytes());
        payload[12..20].copy_from_slice(&seq.to_be_bytes());
        Bytes::copy_from_slice(&payload)
    }

    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| {
            payload
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let publisher = payload
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)?;
        Some(Stamp {
            sent_ns: u64_at(0)?,
            publisher: publisher as usize,
            seq: u64_at(12)?,
        })
    }

    pub(crate) fn latency_us(&self) -> u64 {
        nanos_since_epoch().saturating_sub(self.sent_ns) / 1000
    }
}
