//! MQTT over WebSocket (RFC 6455; MQTT 5.0 and 3.1.1, section 6), in both roles, over any
//! [`Transport`](crate::runtime::Transport): TCP or TLS from any runtime, so tokio, smol and
//! async-std share it.
//!
//! The [`Client`](crate::Client) (`ws://` and `wss://` URLs, [`ClientOptions::websocket`]) and
//! the `Broker` (`ListenerConfig::websocket`, with the `broker` feature) use it; [`connect`] and
//! [`accept`] are here for drivers of your own around the sans-I/O core: each turns a transport
//! into one that carries MQTT's bytes in WebSocket frames.
//!
//! [`ClientOptions::websocket`]: crate::ClientOptions::websocket
//!
//! Framing is tungstenite's (through async-tungstenite, with no runtime of its own). The broker
//! parses the HTTP upgrade request itself (with httparse, the parser tungstenite uses) so that
//! every refused request gets its HTTP status and the header limit is ours; the client uses
//! tungstenite's handshake, which checks that the server chose the `mqtt` subprotocol.
//!
//! What goes over the WebSocket is a byte stream, as MQTT asks: packets are sent in binary
//! frames ([MQTT-6.0.0-1]), a frame may hold part of a packet or several packets, and the
//! receiver does not assume packets are aligned on frames ([MQTT-6.0.0-2]). The transport
//! turns the frames back into that stream, so the MQTT core sees the same bytes as over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message};
use bytes::{Buf, Bytes};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, Stream};
use futures_sink::Sink;

use crate::runtime::BoxTransport;

/// The WebSocket subprotocol of MQTT: a client offers it, a server selects it
/// ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOL: &str = "mqtt";

/// The subprotocol MQTT 3.1 clients offer instead, accepted as mosquitto does.
const SUBPROTOCOL_V31: &str = "mqttv3.1";

/// The path a WebSocket listener serves and a `ws://` URL without one connects to.
pub const DEFAULT_PATH: &str = "/mqtt";

/// The most bytes an upgrade request's line and headers may take (browsers send cookies; 8 KiB
/// is what common HTTP servers allow for all headers too). A longer request is refused with
/// 431.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The most headers an upgrade request may have.
const MAX_HEADERS: usize = 64;

/// The smallest frame limit, whatever the maximum packet size: room for several small packets
/// in one frame, as some clients batch them.
const MIN_FRAME_LIMIT: usize = 64 * 1024;

/// The largest frame limit, whatever the maximum packet size. tungstenite reserves a frame's
/// announced length when its header arrives, so the limit is what one connection can make the
/// broker reserve before it sends the frame: a packet larger than this is sent in several
/// frames (which MQTT allows, and which our client does).
const MAX_FRAME_LIMIT: usize = 16 * 1024 * 1024;

/// The most bytes one write puts in one frame: our large writes (a backlog of messages) go out
/// as frames a receiver with a small frame limit accepts.
const MAX_WRITE_FRAME: usize = 64 * 1024;

/// The read buffer of a connection, allocated when it opens and kept while it lives: the same
/// as the broker's read chunk over TCP.
const READ_BUFFER: usize = 16 * 1024;

/// The frame size limit for a connection whose MQTT packets are at most `max_packet_size`.
pub(crate) fn frame_limit(max_packet_size: usize) -> usize {
    max_packet_size.clamp(MIN_FRAME_LIMIT, MAX_FRAME_LIMIT)
}

fn config(frame_limit: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(Some(frame_limit))
        .max_message_size(Some(frame_limit))
}

/// A WebSocket as a byte stream: what is read is the payload of binary frames, what is written
/// goes out in binary frames. A text frame, a frame over the limit or a broken frame ends the
/// stream with an error, after a Close frame saying why.
pub(crate) struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// Payload received and not yet read.
    read: Bytes,
    /// A Close frame was queued (by a failure); nothing more is sent.
    closing: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTransport<S> {
    fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            read: Bytes::new(),
            closing: false,
        }
    }

    /// Queues a Close frame with `code` and tries to send it now; the stream fails with
    /// `error` either way.
    fn fail(&mut self, cx: &mut Context<'_>, code: CloseCode, error: String) -> io::Error {
        if !self.closing {
            self.closing = true;
            let frame = CloseFrame {
                code,
                reason: error.chars().take(120).collect::<String>().into(),
            };
            if let Poll::Ready(Ok(())) = Pin::new(&mut self.ws).poll_ready(cx)
                && Pin::new(&mut self.ws)
                    .start_send(Message::Close(Some(frame)))
                    .is_ok()
            {
                let _ = Pin::new(&mut self.ws).poll_flush(cx);
            }
        }
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTransport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.len());
                buf[..n].copy_from_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(n));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(0)),
                Some(Ok(Message::Binary(bytes))) => this.read = bytes,
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) | Some(Err(tungstenite::Error::Utf8(_))) => {
                    let error = "a text frame: MQTT is sent in binary frames [MQTT-6.0.0-1]";
                    return Poll::Ready(Err(this.fail(cx, CloseCode::Unsupported, error.into())));
                }
                Some(Err(tungstenite::Error::Io(error))) => return Poll::Ready(Err(error)),
                Some(Err(error @ tungstenite::Error::Capacity(_))) => {
                    let error = format!("WebSocket: {error}");
                    return Poll::Ready(Err(this.fail(cx, CloseCode::Size, error)));
                }
                Some(Err(error)) => {
                    let error = format!("WebSocket: {error}");
                    return Poll::Ready(Err(this.fail(cx, CloseCode::Protocol, error)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTransport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        let n = buf.len().min(MAX_WRITE_FRAME);
        let frame = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        Pin::new(&mut this.ws).start_send(frame).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    /// Sends a Close frame (1000, normal closure) and flushes; the peer answers with its own
    /// and closes the TCP connection.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing {
            return Pin::new(&mut this.ws).poll_flush(cx).map_err(io_error);
        }
        Pin::new(&mut this.ws).poll_close(cx).map_err(io_error)
    }
}

fn io_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        other => io::Error::other(other),
    }
}

/// Why [`accept`] refused a WebSocket upgrade, with the HTTP status it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status sent (0: none, the connection failed first).
    pub status: u16,
    /// What was wrong.
    pub reason: String,
}

impl std::error::Error for Refused {}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "WebSocket upgrade failed: {}", self.reason)
        } else {
            write!(
                f,
                "WebSocket upgrade refused with HTTP {}: {}",
                self.status, self.reason
            )
        }
    }
}

/// The server's side of the upgrade: reads the client's HTTP request, checks it (GET on `path`,
/// an upgrade to WebSocket version 13, the `mqtt` subprotocol offered, at most 8 KiB and 64
/// headers), answers 101 and returns the stream. A request that fails a check is answered with
/// its HTTP status and an explanation, and the connection is closed. Frames are limited by
/// `max_packet_size` (at least 64 KiB, at most 16 MiB).
///
/// It puts no bound on time: a caller facing untrusted peers wraps it in a timeout.
pub async fn accept(
    mut transport: BoxTransport,
    path: &str,
    max_packet_size: usize,
) -> Result<BoxTransport, Refused> {
    let io_failed = |error: io::Error| Refused {
        status: 0,
        reason: error.to_string(),
    };
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (head, checked) = loop {
        let n = transport.read(&mut chunk).await.map_err(io_failed)?;
        if n == 0 {
            return Err(io_failed(io::ErrorKind::UnexpectedEof.into()));
        }
        request.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&request) {
            Ok(httparse::Status::Complete(head)) if head <= MAX_REQUEST_BYTES => {
                break (head, check(&parsed, path));
            }
            Ok(httparse::Status::Partial) if request.len() <= MAX_REQUEST_BYTES => {}
            Ok(_) | Err(httparse::Error::TooManyHeaders) => {
                let reason = format!(
                    "the request is longer than {MAX_REQUEST_BYTES} bytes or has more than \
                     {MAX_HEADERS} headers"
                );
                return Err(refuse(transport, 431, reason).await);
            }
            Err(error) => {
                let reason = format!("not an HTTP request ({error})");
                return Err(refuse(transport, 400, reason).await);
            }
        }
    };
    let Accepted { key, subprotocol } = match checked {
        Ok(accepted) => accepted,
        Err((status, reason)) => return Err(refuse(transport, status, reason).await),
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes()),
    );
    transport
        .write_all(response.as_bytes())
        .await
        .map_err(io_failed)?;
    transport.flush().await.map_err(io_failed)?;
    // A client may send its first frames right behind the request.
    let tail = request.split_off(head);
    let config = config(frame_limit(max_packet_size));
    let ws =
        WebSocketStream::from_partially_read(transport, tail, Role::Server, Some(config)).await;
    Ok(Box::new(WsTransport::new(ws)))
}

/// What a valid upgrade request carries into the response.
struct Accepted {
    key: String,
    subprotocol: &'static str,
}

/// Checks an upgrade request; on failure, the HTTP status to answer and why.
fn check(request: &httparse::Request<'_, '_>, path: &str) -> Result<Accepted, (u16, String)> {
    if request.method != Some("GET") {
        let method = request.method.unwrap_or_default();
        return Err((405, format!("{method}: only GET upgrades to a WebSocket")));
    }
    let target = request.path.unwrap_or_default();
    let requested = target.split('?').next().unwrap_or_default();
    if requested != path {
        return Err((404, format!("{requested}: MQTT is served on {path}")));
    }
    let header = |name: &'static str| header_values(request, name);
    // Comma-separated lists, possibly over several headers, compared without case.
    let tokens = |name: &'static str| {
        header(name)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if !tokens("upgrade").iter().any(|t| t == "websocket")
        || !tokens("connection").iter().any(|t| t == "upgrade")
    {
        return Err((
            426,
            "not a WebSocket upgrade (Upgrade: websocket and Connection: Upgrade expected)".into(),
        ));
    }
    if header("sec-websocket-version").next().map(str::trim) != Some("13") {
        return Err((426, "WebSocket version 13 expected".into()));
    }
    let Some(key) = header("sec-websocket-key").next().map(str::trim) else {
        return Err((400, "no Sec-WebSocket-Key".into()));
    };
    if key.is_empty() || key.len() > 64 {
        return Err((400, "invalid Sec-WebSocket-Key".into()));
    }
    let offered = tokens("sec-websocket-protocol");
    let subprotocol = if offered.iter().any(|t| t == SUBPROTOCOL) {
        SUBPROTOCOL
    } else if offered.iter().any(|t| t == SUBPROTOCOL_V31) {
        SUBPROTOCOL_V31
    } else {
        return Err((
            400,
            "the subprotocol mqtt must be offered (Sec-WebSocket-Protocol: mqtt) [MQTT-6.0.0-3]"
                .into(),
        ));
    };
    Ok(Accepted {
        key: key.to_owned(),
        subprotocol,
    })
}

/// The values of the headers called `name`, in order.
fn header_values<'a>(
    request: &'a httparse::Request<'_, '_>,
    name: &'static str,
) -> impl Iterator<Item = &'a str> {
    request
        .headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Answers `status` with `reason` as a plain-text body and closes the connection.
async fn refuse(mut transport: BoxTransport, status: u16, reason: String) -> Refused {
    let phrase = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut extra = String::new();
    if status == 426 {
        extra.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    if status == 405 {
        extra.push_str("Allow: GET\r\n");
    }
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 {status} {phrase}\r\n{extra}Connection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if transport.write_all(response.as_bytes()).await.is_ok() {
        let _ = transport.flush().await;
        let _ = transport.close().await;
    }
    Refused { status, reason }
}

/// The client's side of the upgrade: asks `host` (as the `Host` header has it, with `port`)
/// for `path` with the `mqtt` subprotocol ([MQTT-6.0.0-3]) and checks that the server selected
/// it; `tls` says whether `transport` is TLS (`wss`). Frames from the server are limited by
/// `max_packet_size` (at least 64 KiB, at most 16 MiB).
pub async fn connect(
    transport: BoxTransport,
    host: &str,
    port: u16,
    path: &str,
    tls: bool,
    max_packet_size: usize,
) -> Result<BoxTransport, crate::Error> {
    use tungstenite::client::IntoClientRequest;
    let scheme = if tls { "wss" } else { "ws" };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("{scheme}://{host}:{port}{path}");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| crate::Error::WebSocket(format!("{url}: {e}")))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = config(frame_limit(max_packet_size));
    let (ws, _response) =
        async_tungstenite::client_async_with_config(request, transport, Some(config))
            .await
            .map_err(|error| match error {
                tungstenite::Error::Io(error) => crate::Error::Io(error),
                tungstenite::Error::Http(response) => crate::Error::WebSocket(format!(
                    "the server answered HTTP {}{}",
                    response.status(),
                    response
                        .body()
                        .as_deref()
                        .map(|b| format!(": {}", String::from_utf8_lossy(b).trim()))
                        .unwrap_or_default()
                )),
                other => crate::Error::WebSocket(other.to_string()),
            })?;
    Ok(Box::new(WsTransport::new(ws)))
}
