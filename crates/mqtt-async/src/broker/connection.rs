//! One connection's I/O: a single task that writes what the router left in the connection's
//! [`Outbox`] and reads what the client sends, at the same time.
//!
//! An idle connection holds no buffer: reads go through a buffer on the stack that lives for one
//! poll, and the outbox's bytes are handed to the task whole and freed once written. A plain TCP
//! connection idle for a while holds no task either: it waits in the idle set (`idle.rs`). That
//! is what keeps ten thousand idle clients cheap.

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
#[cfg(unix)]
use super::idle::{IdleSet, ParkedWaker};
use crate::runtime::{BoxFuture, BoxTransport, PeerAddr, SharedRuntime};

/// Bytes read in one go; on the stack, for the length of one poll.
const READ_CHUNK: usize = 16 * 1024;

/// How long a connection the broker closed may take to write what it has left (a last
/// DISCONNECT) and to read what the client still sends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, after its last packet went out, the connection reads (and discards) what the
/// client still sends, so that closing does not reset the connection and lose the DISCONNECT
/// the client has not read yet.
const LINGER: Duration = Duration::from_secs(1);

/// What every connection of a broker shares, once rather than in each task.
pub(super) struct Serving {
    pub(super) runtime: SharedRuntime,
    pub(super) to_router: Sender<ToRouter>,
    /// Where idle plain TCP connections go; `None`: they keep their tasks.
    #[cfg(unix)]
    pub(super) idle: Option<IdleSet>,
    /// How long a connection has nothing to read or write before it is parked.
    pub(super) idle_after: Duration,
}

impl Serving {
    /// What the connections share; with parking (`idle_after` not zero, on Unix), the idle set's
    /// thread and the task that hands its connections back to the runtime. Without a thread,
    /// connections keep their tasks.
    pub(super) fn start(
        runtime: &SharedRuntime,
        to_router: &Sender<ToRouter>,
        idle_after: std::time::Duration,
    ) -> Arc<Self> {
        #[cfg(unix)]
        let (idle, woken) = match idle_after.is_zero() {
            true => (None, None),
            false => match IdleSet::start() {
                Ok((idle, woken)) => (Some(idle), Some(woken)),
                Err(_) => (None, None),
            },
        };
        let serving = Arc::new(Serving {
            runtime: runtime.clone(),
            to_router: to_router.clone(),
            #[cfg(unix)]
            idle,
            idle_after,
        });
        #[cfg(unix)]
        if let Some(woken) = woken {
            runtime.spawn(Box::pin(super::idle::unpark(serving.clone(), woken)));
        }
        serving
    }
}

/// What the router has for one connection to write. The router appends encoded packets; the
/// connection's task takes them all at once.
#[derive(Debug, Default)]
pub(super) struct Outbox(Mutex<OutboxState>);

#[derive(Debug, Default)]
struct OutboxState {
    bytes: BytesMut,
    /// How many times the router added to `bytes` since the task last took them.
    chunks: usize,
    /// The connection's task, or the idle set, waiting for bytes.
    waker: Option<Wakeup>,
    /// Nothing more will come: write what is there, then close the transport.
    closed: bool,
    /// The router cannot take this connection's input now: do not read.
    read_paused: bool,
}

/// Who waits for an outbox.
enum Wakeup {
    /// The connection's task.
    Task(Waker),
    /// The idle set, which holds the connection without a task.
    #[cfg(unix)]
    Parked(ParkedWaker),
}

impl std::fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wakeup::Task(_) => f.write_str("Task"),
            #[cfg(unix)]
            Wakeup::Parked(_) => f.write_str("Parked"),
        }
    }
}

impl Wakeup {
    fn wake(self) {
        match self {
            Wakeup::Task(waker) => waker.wake(),
            #[cfg(unix)]
            Wakeup::Parked(parked) => parked.wake(),
        }
    }
}

impl OutboxState {
    /// Nothing to write, not closing, reading: a connection could be parked.
    fn is_idle(&self) -> bool {
        self.bytes.is_empty() && !self.closed && !self.read_paused
    }

    /// Registers the task to be woken when the router adds bytes, closes or resumes reading.
    fn wake_me(&mut self, cx: &Context<'_>) {
        if !matches!(&self.waker, Some(Wakeup::Task(w)) if w.will_wake(cx.waker())) {
            self.waker = Some(Wakeup::Task(cx.waker().clone()));
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

    /// Whether the connection has nothing to do (see [`Outbox::park`]).
    #[cfg(unix)]
    fn is_idle(&self) -> bool {
        self.state().is_idle()
    }

    /// Calls `park` when the connection has nothing to do (no bytes, not closed, reading),
    /// and lets the waker it returns wait for the outbox: under the lock, so that whatever
    /// the router adds from then on wakes the idle set.
    #[cfg(unix)]
    pub(super) fn park(&self, park: impl FnOnce() -> Option<ParkedWaker>) {
        let mut state = self.state();
        if !state.is_idle() {
            return;
        }
        if let Some(waker) = park() {
            state.waker = Some(Wakeup::Parked(waker));
        }
    }

    /// The idle set let go of the connection: it no longer waits for the outbox.
    #[cfg(unix)]
    pub(super) fn unparked(&self) {
        let mut state = self.state();
        if matches!(state.waker, Some(Wakeup::Parked(_))) {
            state.waker = None;
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

/// Serves one connection until either side ends it (or, plain TCP only, until it is idle and
/// parked: see [`Connection`]).
pub(super) fn serve(
    serving: &Arc<Serving>,
    transport: BoxTransport,
    peer: PeerAddr,
    admission: super::Admission,
    parkable: bool,
) -> Connection {
    let outbox = Arc::new(Outbox::default());
    let opening = Box::pin(open(
        serving.to_router.clone(),
        outbox.clone(),
        peer,
        admission,
    ));
    Connection {
        serving: serving.clone(),
        transport: Some(transport),
        outbox,
        id: None,
        writing: Writing::default(),
        parkable: parkable && !serving.idle_after.is_zero(),
        fresh: true,
        state: State::Opening(opening),
        idle_timer: None,
    }
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

/// Sends `message` to the router: `Ok(None)` when it went, `Ok(Some(waiting))` when the inbox
/// is full and `waiting` must be awaited (boxed: only a connection that found the inbox full
/// holds one), `Err` when the router is gone.
fn send(
    to_router: &Sender<ToRouter>,
    message: ToRouter,
) -> Result<Option<BoxFuture<'static, bool>>, ()> {
    match to_router.try_send(message) {
        Ok(()) => Ok(None),
        Err(TrySendError::Full(message)) => {
            let to_router = to_router.clone();
            Ok(Some(Box::pin(async move {
                to_router.send(message).await.is_ok()
            })))
        }
        Err(TrySendError::Closed(_)) => Err(()),
    }
}

/// A connection's task: a hand-written future rather than an `async fn`, whose generator
/// would keep its arguments twice. Every connection with a task holds one (about 130 bytes),
/// so what is rare (the opening exchange with the router, a send waiting for room in its
/// inbox, closing) is boxed and alive only while it runs.
///
/// A plain TCP connection (`parkable`) that read and wrote nothing for
/// [`Serving::idle_after`] (checked by a timer that is re-armed while there is traffic, so
/// it parks between one and two periods after its last byte) and has nothing to write gives its
/// socket to the idle set and its task ends; the set spawns a new one
/// ([`Connection::resume`]) when there is something to do. A connection that just connected
/// parks as soon as its first answer (the CONNACK) is out and nothing else is pending: clients
/// that connect in a burst (a restart, a wave of reconnects) then never all hold a task at once,
/// whose memory the allocator would keep once they are parked.
pub(super) struct Connection {
    serving: Arc<Serving>,
    /// `None` only once it went to the idle set or to the closing state.
    transport: Option<BoxTransport>,
    outbox: Arc<Outbox>,
    /// Known once the router registered the connection.
    id: Option<ConnectionId>,
    writing: Writing,
    /// Plain TCP, on a runtime that can take its socket out: the idle set can hold it.
    parkable: bool,
    /// Not parked yet: parks once its first answer is written.
    fresh: bool,
    state: State,
    /// Armed while a parkable connection runs.
    idle_timer: Option<BoxFuture<'static, ()>>,
}

/// Where a [`Connection`] is.
enum State {
    /// Waiting for the router to register it.
    Opening(Pin<Box<dyn Future<Output = Option<ConnectionId>> + Send>>),
    /// Reading and writing.
    Running,
    /// Waiting for room in the router's inbox for bytes read: then running again (or ended,
    /// when the router is gone). While the router takes them nothing is read or written; it
    /// never waits for anything but its own inbox, so that is brief.
    Sending(BoxFuture<'static, bool>),
    /// Writing what is left, then closing, within [`CLOSE_TIMEOUT`].
    Closing(BoxFuture<'static, ()>),
    /// Telling the router the connection ended, waiting for room in its inbox.
    Ending(BoxFuture<'static, bool>),
    /// Ended (or parked: the connection lives on in the idle set).
    Done,
}

/// What parking did.
#[cfg_attr(
    not(unix),
    allow(
        dead_code,
        reason = "without the idle set nothing is parked or lost on the way"
    )
)]
enum Parking {
    /// The socket is in the idle set: the task ends.
    Parked,
    /// Something came meanwhile, or the runtime cannot: the task goes on.
    Kept,
    /// The socket was lost on the way (the runtime failed): the connection ended.
    Lost,
}

impl Connection {
    /// Serves a connection the idle set woke.
    #[cfg(unix)]
    pub(super) fn resume(
        serving: Arc<Serving>,
        transport: BoxTransport,
        outbox: Arc<Outbox>,
        id: ConnectionId,
    ) -> Self {
        Connection {
            serving,
            transport: Some(transport),
            outbox,
            id: Some(id),
            writing: Writing::default(),
            parkable: true,
            fresh: false,
            state: State::Running,
            idle_timer: None,
        }
    }

    /// Reads and writes until a step changes the state (`Ready`) or there is nothing to do.
    fn poll_running(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(transport), Some(id)) = (&mut self.transport, self.id) else {
            return self.end();
        };
        match self.writing.poll(cx, transport, &self.outbox) {
            Poll::Ready(Step::Read(chunk)) => {
                self.writing.active = true;
                match send(&self.serving.to_router, ToRouter::Bytes(id, chunk)) {
                    Ok(None) => {}
                    Ok(Some(waiting)) => self.state = State::Sending(waiting),
                    // The router is gone: nothing to tell it.
                    Err(()) => self.state = State::Done,
                }
                Poll::Ready(())
            }
            Poll::Ready(Step::Gone) => self.end(),
            Poll::Ready(Step::Closing) => {
                let runtime = self.serving.runtime.clone();
                let sleep = runtime.sleep_until(runtime.now() + CLOSE_TIMEOUT);
                let (mut transport, mut writing, outbox) = (
                    self.transport.take(),
                    std::mem::take(&mut self.writing),
                    self.outbox.clone(),
                );
                self.idle_timer = None;
                self.state = State::Closing(Box::pin(async move {
                    if let Some(transport) = &mut transport {
                        let closing = close(&runtime, transport, &mut writing, &outbox);
                        future::or(closing, sleep).await;
                    }
                }));
                Poll::Ready(())
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }

    /// With nothing to do: parks the connection once it has been idle long enough.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.parkable && self.fresh && self.writing.wrote {
            self.fresh = false;
            return self.park_now();
        }
        while self.parkable {
            let timer = match &mut self.idle_timer {
                Some(timer) => timer,
                None => {
                    let runtime = &self.serving.runtime;
                    self.writing.active = false;
                    self.idle_timer
                        .insert(runtime.sleep_until(runtime.now() + self.serving.idle_after))
                }
            };
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            self.idle_timer = None;
            if self.writing.active {
                continue;
            }
            return self.park_now();
        }
        Poll::Pending
    }

    /// Parks the connection if it can; always ready: the state may have changed.
    fn park_now(&mut self) -> Poll<()> {
        match self.park() {
            Parking::Parked => {
                // Ends the task without telling the router: the connection lives on.
                self.state = State::Done;
                Poll::Ready(())
            }
            Parking::Kept => Poll::Ready(()),
            Parking::Lost => self.end(),
        }
    }

    /// Gives the socket to the idle set if nothing is pending.
    #[cfg(unix)]
    fn park(&mut self) -> Parking {
        let (Some(idle), Some(id)) = (&self.serving.idle, self.id) else {
            self.parkable = false;
            return Parking::Kept;
        };
        // Checked again under the outbox's lock when parking; this spares a connection that
        // is not idle the trip out of the runtime and back.
        if !self.writing.pending.is_empty() || self.writing.unflushed || !self.outbox.is_idle() {
            return Parking::Kept;
        }
        let Some(transport) = self.transport.take() else {
            return Parking::Lost;
        };
        let runtime = &self.serving.runtime;
        let stream = match runtime.take_std_tcp(transport) {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => return Parking::Lost,
            Err(transport) => {
                // Not plain TCP after all, or a runtime that cannot.
                self.transport = Some(transport);
                self.parkable = false;
                return Parking::Kept;
            }
        };
        match idle.park(stream, id, &self.outbox) {
            Ok(()) => Parking::Parked,
            Err(stream) => match runtime.wrap_std_tcp(stream) {
                Ok(transport) => {
                    self.transport = Some(transport);
                    Parking::Kept
                }
                Err(_) => Parking::Lost,
            },
        }
    }

    #[cfg(not(unix))]
    fn park(&mut self) -> Parking {
        self.parkable = false;
        Parking::Kept
    }

    /// The connection ended: tells the router (when it was registered). Always ready: the
    /// state changed.
    fn end(&mut self) -> Poll<()> {
        self.transport = None;
        self.idle_timer = None;
        self.state = match self.id.take() {
            Some(id) => match send(&self.serving.to_router, ToRouter::Eof(id)) {
                Ok(Some(waiting)) => State::Ending(waiting),
                Ok(None) | Err(()) => State::Done,
            },
            None => State::Done,
        };
        Poll::Ready(())
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Ready(Some(id)) => {
                        this.id = Some(id);
                        this.state = State::Running;
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                },
                State::Running => {
                    if this.poll_running(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                State::Sending(waiting) => match waiting.as_mut().poll(cx) {
                    Poll::Ready(true) => this.state = State::Running,
                    // The router is gone: nothing to tell it.
                    Poll::Ready(false) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                },
                State::Closing(closing) => match closing.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let _ = this.end();
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Ending(ending) => return ending.as_mut().poll(cx).map(|_| ()),
                State::Done => return Poll::Ready(()),
            }
        }
    }
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
    /// Read or written since the idle timer was armed.
    active: bool,
    /// Written at all.
    wrote: bool,
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
                    self.active = true;
                    self.wrote = true;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection with a task holds one: it was 256 bytes as an `async fn`.
    #[test]
    fn a_connection_task_is_small() {
        let size = std::mem::size_of::<Connection>();
        println!("Connection: {size} bytes");
        assert!(size <= 136, "{size} bytes");
    }
}
