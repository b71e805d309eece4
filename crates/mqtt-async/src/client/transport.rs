//! The client's transport, with a bound on every wait: opened (resolve, TCP, TLS) before the
//! connect deadline, and written to with a bound on how long a write may make no progress.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_io::AsyncWrite;
use futures_lite::future;

use crate::error::TimedOut;
use crate::runtime::{BoxFuture, BoxTransport, SharedRuntime};
#[cfg(feature = "tls")]
use crate::tls;
use crate::{ClientOptions, Error};

/// Awaits `future` until `deadline`; past it, the error is a timeout of `what`.
async fn within<T>(
    runtime: &SharedRuntime,
    deadline: Instant,
    what: TimedOut,
    future: impl Future<Output = T>,
) -> Result<T, Error> {
    // `or` polls the operation first: one that is done wins over a timer that is due.
    future::or(async { Ok(future.await) }, async {
        runtime.sleep_until(deadline).await;
        Err(Error::Timeout(what))
    })
    .await
}

/// Opens the connection the options describe, all before `deadline`: resolves the host, opens
/// a TCP connection to one of its addresses (or connects to the Unix socket), runs the TLS
/// handshake if the options ask for TLS, then the WebSocket upgrade if they ask for WebSocket.
pub(crate) async fn open(
    runtime: &SharedRuntime,
    options: &ClientOptions,
    deadline: Instant,
) -> Result<BoxTransport, Error> {
    let transport = match &options.unix {
        _ if options.transport.is_some() => {
            let connect = options.transport.as_ref().map(|c| (c.0)());
            let connect = async move {
                match connect {
                    Some(connect) => connect.await,
                    None => Err(io::ErrorKind::NotConnected.into()),
                }
            };
            within(runtime, deadline, TimedOut::Connect, connect).await??
        }
        Some(path) => {
            let connect = runtime.connect_unix(path);
            within(runtime, deadline, TimedOut::Connect, connect).await??
        }
        None => open_tcp(runtime, options, deadline).await?,
    };
    #[cfg(feature = "ws")]
    if let Some(path) = &options.websocket {
        let max_packet_size = usize::try_from(options.config.max_packet_size).unwrap_or(usize::MAX);
        #[cfg(feature = "tls")]
        let tls = options.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        let upgrade = crate::ws::connect(
            transport,
            &options.host,
            options.port,
            path,
            tls,
            max_packet_size,
        );
        return within(runtime, deadline, TimedOut::WebSocketHandshake, upgrade).await?;
    }
    Ok(transport)
}

/// Resolves the host, opens a TCP connection to one of its addresses and runs the TLS
/// handshake if the options ask for TLS.
async fn open_tcp(
    runtime: &SharedRuntime,
    options: &ClientOptions,
    deadline: Instant,
) -> Result<BoxTransport, Error> {
    // Built once per options (before the first connect); this is a clone of an `Arc` after.
    #[cfg(feature = "tls")]
    let tls = options.tls_connector().await?;
    let resolve = runtime.resolve(&options.host, options.port);
    let addrs = within(runtime, deadline, TimedOut::Resolve, resolve).await??;
    let mut last = Error::Io(io::Error::new(
        io::ErrorKind::NotFound,
        "host resolved to no address",
    ));
    let mut untried = addrs.len();
    for addr in addrs {
        // An equal share of the time left for each address, and all of it for the last: an
        // address that drops packets does not leave the others no time.
        let now = runtime.now();
        let share = deadline.saturating_duration_since(now) / u32::try_from(untried).unwrap_or(1);
        untried -= 1;
        let connect = runtime.connect_tcp(addr);
        let transport = match within(runtime, now + share, TimedOut::Connect, connect).await {
            Ok(Ok(transport)) => transport,
            Ok(Err(error)) => {
                last = Error::Io(error);
                continue;
            }
            Err(timeout) => {
                last = timeout;
                continue;
            }
        };
        #[cfg(feature = "tls")]
        if let (Some(connector), Some(tls)) = (&tls, &options.tls) {
            let name = tls.server_name_for(&options.host)?;
            let handshake = tls::handshake(connector, name, transport);
            return within(runtime, deadline, TimedOut::TlsHandshake, handshake).await?;
        }
        return Ok(transport);
    }
    Err(last)
}

/// Writes all of `bytes` and flushes. With a `timeout`, fails with [`TimedOut::Write`] once the
/// transport has taken nothing for that long; a write that progresses slowly goes on.
///
/// The timer starts only when the transport first pushes back, and is replaced only when it
/// fires after progress: a write that goes through at once costs no timer.
pub(super) async fn write_all(
    runtime: &SharedRuntime,
    transport: &mut BoxTransport,
    mut bytes: &[u8],
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let mut timer: Option<BoxFuture<'static, ()>> = None;
    // Since when nothing went through, once the timer runs.
    let mut quiet_since = None;
    future::poll_fn(|cx| {
        loop {
            let step = if bytes.is_empty() {
                Pin::new(&mut *transport).poll_flush(cx).map_ok(|()| None)
            } else {
                Pin::new(&mut *transport).poll_write(cx, bytes).map_ok(Some)
            };
            match step {
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(Some(0))) => {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(Some(n))) => {
                    bytes = bytes.get(n..).unwrap_or_default();
                    if timer.is_some() {
                        quiet_since = Some(runtime.now());
                    }
                    continue;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(Error::Io(error))),
                Poll::Pending => {}
            }
            let Some(timeout) = timeout else {
                return Poll::Pending;
            };
            loop {
                let running = timer.get_or_insert_with(|| {
                    let now = runtime.now();
                    quiet_since = Some(now);
                    runtime.sleep_until(now + timeout)
                });
                if running.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = quiet_since.unwrap_or_else(|| runtime.now()) + timeout;
                if runtime.now() >= due {
                    return Poll::Ready(Err(Error::Timeout(TimedOut::Write)));
                }
                // Something went through since the timer started: count from then.
                timer = Some(runtime.sleep_until(due));
            }
        }
    })
    .await
}

/// How long a closing client waits for the broker to close its side.
const LINGER: Duration = Duration::from_secs(1);

/// Closes the transport (a TLS close_notify, a TCP FIN), giving up after the write timeout:
/// the peer takes nothing. Then waits, up to [`LINGER`], for the broker to close its side,
/// discarding what it still sends: the broker has then read everything, DISCONNECT included, so
/// a connection that comes next with the same client identifier cannot overtake it (a broker
/// that reads the new CONNECT first would take the session over from a connection it still
/// thinks is alive, and route to it messages that then go nowhere).
pub(super) async fn close(
    runtime: &SharedRuntime,
    transport: &mut BoxTransport,
    timeout: Option<Duration>,
) {
    let close = futures_lite::AsyncWriteExt::close(transport);
    let closed = match timeout {
        Some(timeout) => within(runtime, runtime.now() + timeout, TimedOut::Write, close)
            .await
            .is_ok_and(|r| r.is_ok()),
        None => close.await.is_ok(),
    };
    if !closed {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = futures_lite::AsyncReadExt::read(transport, &mut buf).await {
            if n == 0 {
                break;
            }
        }
        Ok::<(), Error>(())
    };
    let _ = within(runtime, runtime.now() + LINGER, TimedOut::Write, drain).await;
}
