//! One side of a bridge: a client core and its transport, written to without waiting.

use std::io::ErrorKind;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_io::AsyncWrite;
use futures_lite::future;
use mqtt_proto::connection::{ClientConnection, Session};
use mqtt_proto::packet::Disconnect;

use crate::runtime::{BoxTransport, SharedRuntime};

/// Bytes read from a connection in one go.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// One side of the bridge: a client core and its transport.
pub(super) struct Link {
    pub(super) conn: ClientConnection,
    pub(super) io: BoxTransport,
    /// Encoded, not yet taken by the transport.
    out: BytesMut,
    /// Taken by the transport, not yet flushed.
    unflushed: bool,
    /// Since when the transport has taken nothing of `out`.
    pub(super) stuck_since: Option<Instant>,
}

impl Link {
    pub(super) fn new(conn: ClientConnection, io: BoxTransport) -> Self {
        Self {
            conn,
            io,
            out: BytesMut::new(),
            unflushed: false,
            stuck_since: None,
        }
    }

    /// Moves what the core has to send behind what waits.
    pub(super) fn fill(&mut self, now: Instant) {
        self.conn.poll_transmit(now, &mut self.out);
    }

    /// Writes what waits as far as the transport takes it: `Ready(Err)` when it failed,
    /// `Pending` otherwise (everything written and flushed, or the transport pushes back).
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<std::io::Error> {
        while !self.out.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.unflushed = true;
                    self.stuck_since = None;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(error),
                Poll::Pending => {
                    self.stuck_since.get_or_insert(now);
                    return Poll::Pending;
                }
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Poll::Ready(error),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Says goodbye: a DISCONNECT, written within `within`, then the transport closed. The
    /// session stays for the next connection.
    pub(super) async fn close(mut self, runtime: &SharedRuntime, within: Duration) -> Session {
        // Refused only by a connection already closed: then there is nothing to say.
        let _ = self.conn.disconnect(runtime.now(), Disconnect::default());
        self.drain(runtime, within).await;
        let _ = futures_lite::AsyncWriteExt::close(&mut self.io).await;
        self.conn.into_session()
    }

    /// Sends what the core has and waits until it is written (at most `within`).
    pub(super) async fn drain(&mut self, runtime: &SharedRuntime, within: Duration) {
        let now = runtime.now();
        self.fill(now);
        let written = future::poll_fn(|cx| {
            if self.poll_write(cx, now).is_ready() {
                return Poll::Ready(());
            }
            if self.out.is_empty() && !self.unflushed {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        future::or(written, runtime.sleep_until(now + within)).await;
    }
}
