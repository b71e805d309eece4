//! One connection's I/O: a single task that writes what the router left in the connection's
//! [`Outbox`] and reads what the client sends, at the same time.
//!
//! An idle connection holds no buffer: reads go through a buffer on the stack that lives for one
//! poll, and the outbox's bytes are handed to the task whole and freed once written. That is
//! what keeps ten thousand idle clients cheap.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_channel::{Sender, TrySendError};
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use mqtt_proto::broker::ConnectionId;

use super::ToRouter;
use crate::runtime::{BoxTransport, PeerAddr, SharedRuntime};

/// Bytes read in one go; on the stack, for the length of one poll.
const READ_CHUNK: usize = 16 * 1024;

/// How long a connection the broker closed may take to write what it has left (a last
/// DISCONNECT) and to read what the client still sends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, after its last packet went out, the connection reads (and discards) what the
/// client still sends, so that closing does not reset the connection and lose the DISCONNECT
/// the client has not read yet.
const LINGER: Duration = Duration::from_secs(1);

/// What the router has for one connection to write. The router appends encoded packets; the
/// connection's task takes them all at once.
#[derive(Debug, Default)]
pub(super) struct Outbox(Mutex<OutboxState>);

#[derive(Debug, Default)]
struct OutboxState {
    bytes: BytesMut,
    /// How many times the router added to `bytes` since the task last took them.
    chunks: usize,
    /// The connection's task, waiting for bytes.
    waker: Option<Waker>,
    /// Nothing more will come: write what is there, then close the transport.
    closed: bool,
    /// The router cannot take this connection's input now: do not read.
    read_paused: bool,
}

impl OutboxState {
    /// Registers the task to be woken when the router adds bytes, closes or resumes reading.
    fn wake_me(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }
}

impl Outbox {
    fn state(&self) -> MutexGuard<'_, OutboxState> {
        // A panic while holding the lock leaves bytes that are still well formed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the router added bytes `chunks` times, or at least `bytes` bytes in more than
    /// one go, that the task has not taken yet: the client is not reading. One large addition
    /// alone (a large message, or a window's worth) does not count.
    pub(super) fn is_full(&self, chunks: usize, bytes: usize) -> bool {
        let state = self.state();
        state.chunks >= chunks || (state.bytes.len() >= bytes && state.chunks >= 2)
    }

    /// Starts or stops reading the connection's transport.
    pub(super) fn set_reading(&self, reading: bool) {
        let waker = {
            let mut state = self.state();
            state.read_paused = !reading;
            if reading { state.waker.take() } else { None }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Appends bytes with `fill` and wakes the connection's task if it wrote any.
    pub(super) fn fill(&self, fill: impl FnOnce(&mut BytesMut) -> bool) {
        let waker = {
            let mut state = self.state();
            if !fill(&mut state.bytes) {
                return;
            }
            state.chunks += 1;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// No more bytes will come: the task writes what is there and closes the transport.
    pub(super) fn close(&self) {
        let waker = {
            let mut state = self.state();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

enum Step {
    /// Bytes from the client.
    Read(Bytes),
    /// The client is gone (end of file or an I/O error).
    Gone,
    /// The router closed the connection: what is left is to be written, then the transport
    /// closed.
    Closing,
}

/// Serves one connection until either side ends it.
///
/// The returned future is what every idle connection's task holds, so it is kept small (about
/// 150 bytes, from 4.5 KB): the opening exchange with the router and the closing state are
/// boxed, alive only while they run, and messages go to the router with `try_send`, boxing a
/// waiting send only when the router's inbox is full.
pub(super) fn serve(
    runtime: SharedRuntime,
    transport: BoxTransport,
    to_router: Sender<ToRouter>,
    peer: PeerAddr,
    admission: super::Admission,
) -> impl Future<Output = ()> + Send + 'static {
    let outbox = Arc::new(Outbox::default());
    let opening = Box::pin(open(to_router.clone(), outbox.clone(), peer, admission));
    drive(runtime, transport, to_router, outbox, opening)
}

/// Registers the connection with the router: its id, or `None` when the router refused it or
/// is gone.
async fn open(
    to_router: Sender<ToRouter>,
    outbox: Arc<Outbox>,
    peer: PeerAddr,
    admission: super::Admission,
) -> Option<ConnectionId> {
    let (reply, id) = async_channel::bounded(1);
    to_router
        .send(ToRouter::Open(outbox, reply, peer, admission))
        .await
        .ok()?;
    id.recv().await.ok().flatten()
}

/// A send to the router's inbox that waits for room, boxed: only a connection that found the
/// inbox full holds one.
type Waiting<'a> = Pin<Box<async_channel::Send<'a, ToRouter>>>;

/// Sends `message` to the router: `Ok(None)` when it went, `Ok(Some(waiting))` when the inbox
/// is full and `waiting` must be awaited, `Err` when the router is gone. Not an `async fn`: its
/// future would hold the message, and every connection's task its future.
fn send(to_router: &Sender<ToRouter>, message: ToRouter) -> Result<Option<Waiting<'_>>, ()> {
    match to_router.try_send(message) {
        Ok(()) => Ok(None),
        Err(TrySendError::Full(message)) => Ok(Some(Box::pin(to_router.send(message)))),
        Err(TrySendError::Closed(_)) => Err(()),
    }
}

/// Finishes what [`send`] started: `false` when the router is gone.
async fn sent(send: Result<Option<Waiting<'_>>, ()>) -> bool {
    match send {
        Ok(None) => true,
        Ok(Some(waiting)) => waiting.await.is_ok(),
        Err(()) => false,
    }
}

async fn drive(
    runtime: SharedRuntime,
    mut transport: BoxTransport,
    to_router: Sender<ToRouter>,
    outbox: Arc<Outbox>,
    opening: Pin<Box<dyn Future<Output = Option<ConnectionId>> + Send>>,
) {
    let Some(id) = opening.await else {
        return;
    };
    let mut writing = Writing::default();
    loop {
        let step = future::poll_fn(|cx| writing.poll(cx, &mut transport, &outbox)).await;
        match step {
            // While the router takes this chunk nothing is read or written; it never waits
            // for anything but its own inbox, so that is brief.
            Step::Read(chunk) => {
                if !sent(send(&to_router, ToRouter::Bytes(id, chunk))).await {
                    return;
                }
            }
            Step::Gone => break,
            Step::Closing => {
                let deadline = runtime.now() + CLOSE_TIMEOUT;
                let sleep = runtime.sleep_until(deadline);
                // Boxed: only a closing connection pays for the closing state (a read buffer).
                let closing = close(&runtime, &mut transport, &mut writing, &outbox);
                Box::pin(future::or(closing, sleep)).await;
                break;
            }
        }
    }
    sent(send(&to_router, ToRouter::Eof(id))).await;
}

/// Writes what the router left, shuts down the write side, then reads and discards what the
/// client still sends until it closes too or [`LINGER`] passes. Closing a socket with unread
/// input makes the kernel reset the connection, and a client that is still writing (one that
/// broke a limit, typically) would then lose the DISCONNECT telling it why.
async fn close(
    runtime: &SharedRuntime,
    transport: &mut BoxTransport,
    writing: &mut Writing,
    outbox: &Outbox,
) {
    let written = future::poll_fn(|cx| match writing.poll_write(cx, transport, outbox) {
        Poll::Ready(Step::Gone) => Poll::Ready(false),
        Poll::Ready(_) => Poll::Ready(true),
        Poll::Pending => Poll::Pending,
    })
    .await;
    if !written || transport.close().await.is_err() {
        return;
    }
    let linger = runtime.sleep_until(runtime.now() + LINGER);
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = transport.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    future::or(drain, linger).await;
}

/// The write side's state between polls.
#[derive(Default)]
struct Writing {
    /// Taken from the outbox, not yet written.
    pending: Bytes,
    /// Written since the last flush.
    unflushed: bool,
}

impl Writing {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        transport: &mut BoxTransport,
        outbox: &Outbox,
    ) -> Poll<Step> {
        if let Poll::Ready(step) = self.poll_write(cx, transport, outbox) {
            return Poll::Ready(step);
        }
        {
            let mut state = outbox.state();
            if state.closed {
                return Poll::Ready(Step::Closing);
            }
            if state.read_paused {
                // Woken by `set_reading`, or by the outbox or the transport's write side.
                state.wake_me(cx);
                return Poll::Pending;
            }
        }
        let mut buf = [0u8; READ_CHUNK];
        match Pin::new(&mut **transport).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Step::Gone),
            Poll::Ready(Ok(n)) => Poll::Ready(Step::Read(Bytes::copy_from_slice(
                buf.get(..n).unwrap_or_default(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes everything the outbox holds, as far as the transport takes it. Ready only when
    /// the connection ended ([`Step::Gone`]) or the outbox is closed and everything was written
    /// ([`Step::Closing`]).
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        transport: &mut BoxTransport,
        outbox: &Outbox,
    ) -> Poll<Step> {
        loop {
            if self.pending.is_empty() {
                let mut state = outbox.state();
                if !state.bytes.is_empty() {
                    self.pending = std::mem::take(&mut state.bytes).freeze();
                    state.chunks = 0;
                } else if self.unflushed {
                    drop(state);
                    match Pin::new(&mut **transport).poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.unflushed = false,
                        Poll::Ready(Err(_)) => return Poll::Ready(Step::Gone),
                        Poll::Pending => return Poll::Pending,
                    }
                    continue;
                } else if state.closed {
                    return Poll::Ready(Step::Closing);
                } else {
                    state.wake_me(cx);
                    return Poll::Pending;
                }
            }
            match Pin::new(&mut **transport).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Step::Gone),
                Poll::Ready(Ok(n)) => {
                    self.pending.advance(n);
                    self.unflushed = true;
                    if self.pending.is_empty() {
                        // Frees the buffer: an idle connection keeps none.
                        self.pending = Bytes::new();
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
