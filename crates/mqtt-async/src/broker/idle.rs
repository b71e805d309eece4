//! Idle connections without a task: one set, on a thread of its own, watches every parked
//! socket.
//!
//! A plain TCP connection with nothing to read or write for a while (see
//! [`BrokerBuilder::idle_after`](super::BrokerBuilder::idle_after)) leaves its task: its socket
//! is taken out of the runtime ([`Runtime::take_std_tcp`](crate::runtime::Runtime::take_std_tcp))
//! and parked here, where it costs one slot (the socket, its connection id and its outbox), with
//! no task, no timer and no runtime registration. One epoll instance (mio's, whose API is safe;
//! `polling`'s `add` is `unsafe`) watches all of them. When a parked socket becomes readable
//! (bytes, the end of the stream, an error), or when the router adds to its outbox or closes it,
//! the connection goes back to the runtime and a task serves it again: the router's bytes wait
//! in the outbox meanwhile, so nothing is lost or reordered, and keep alive is the router's
//! timer, which runs on.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use async_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use mqtt_proto::broker::ConnectionId;

use super::ToRouter;
use super::connection::{Connection, Outbox, Serving};

/// The token of the set's own waker: the router added to a parked connection's outbox, or the
/// broker stops.
const WAKE: Token = Token(usize::MAX);

/// Events taken from the kernel in one go.
const EVENTS: usize = 1024;

/// A parked connection: all that is left of it.
pub(super) struct Parked {
    stream: TcpStream,
    id: ConnectionId,
    outbox: Arc<Outbox>,
}

/// One slot of the set: a parked connection, or the next free slot.
enum Slot {
    Parked(Parked),
    Free(usize),
}

/// The parked connections, by the token their socket is registered with.
struct Slots {
    slots: Vec<Slot>,
    /// The first free slot (`slots.len()` when none is).
    free: usize,
    /// The broker stops: nothing is parked any more.
    stopping: bool,
    /// Connections parked now.
    parked: u64,
    /// Connections parked since the start.
    parks: u64,
}

impl Slots {
    fn insert(&mut self, parked: Parked) -> usize {
        self.parked += 1;
        self.parks += 1;
        let key = self.free;
        match self.slots.get_mut(key) {
            Some(slot) => {
                if let Slot::Free(next) = slot {
                    self.free = *next;
                }
                *slot = Slot::Parked(parked);
            }
            None => {
                self.slots.push(Slot::Parked(parked));
                self.free = self.slots.len();
            }
        }
        key
    }

    fn remove(&mut self, key: usize) -> Option<Parked> {
        let slot = self.slots.get_mut(key)?;
        if matches!(slot, Slot::Free(_)) {
            return None;
        }
        match std::mem::replace(slot, Slot::Free(self.free)) {
            Slot::Parked(parked) => {
                self.parked -= 1;
                self.free = key;
                Some(parked)
            }
            Slot::Free(_) => None,
        }
    }
}

/// What the set's thread and everyone who parks or wakes a connection share.
pub(super) struct Shared {
    registry: mio::Registry,
    waker: mio::Waker,
    slots: Mutex<Slots>,
    /// Slots whose outbox has something for them.
    woken: Mutex<Vec<usize>>,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn woken(&self) -> MutexGuard<'_, Vec<usize>> {
        self.woken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How the outbox of a parked connection wakes it: the set and the connection's slot.
pub(super) struct ParkedWaker {
    shared: Arc<Shared>,
    key: usize,
}

impl ParkedWaker {
    /// Hands the connection back to a task. A slot that was already woken, and serves another
    /// connection now, is woken for nothing: that connection is served by a task until it is
    /// idle again.
    pub(super) fn wake(self) {
        self.shared.woken().push(self.key);
        let _ = self.shared.waker.wake();
    }
}

/// The broker's idle set.
pub(super) struct IdleSet {
    shared: Arc<Shared>,
}

impl IdleSet {
    /// Starts the set's thread; woken connections come out of the receiver, for a task of the
    /// runtime to serve (see [`unpark`]). An error when the kernel or the thread refuses.
    pub(super) fn start() -> io::Result<(Self, Receiver<Parked>)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let shared = Arc::new(Shared {
            registry,
            waker,
            slots: Mutex::new(Slots {
                slots: Vec::new(),
                free: 0,
                stopping: false,
                parked: 0,
                parks: 0,
            }),
            woken: Mutex::new(Vec::new()),
        });
        let (woke, woken) = async_channel::unbounded();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("mqtt-idle".into())
            .spawn(move || watch(poll, &thread_shared, &woke))?;
        Ok((Self { shared }, woken))
    }

    /// Parks a connection, unless its outbox has something to do (bytes, closing, reading
    /// paused) or the broker stops: the socket comes back then.
    pub(super) fn park(
        &self,
        stream: TcpStream,
        id: ConnectionId,
        outbox: &Arc<Outbox>,
    ) -> Result<(), TcpStream> {
        let mut stream = Some(stream);
        // Under the outbox's lock: what the router adds from now on wakes the set.
        outbox.park(|| {
            let parked = Parked {
                stream: stream.take()?,
                id,
                outbox: outbox.clone(),
            };
            match self.insert(parked) {
                Ok(key) => Some(ParkedWaker {
                    shared: self.shared.clone(),
                    key,
                }),
                Err(parked) => {
                    stream = Some(parked.stream);
                    None
                }
            }
        });
        match stream {
            Some(stream) => Err(stream),
            None => Ok(()),
        }
    }

    fn insert(&self, parked: Parked) -> Result<usize, Parked> {
        let mut slots = self.shared.slots();
        if slots.stopping {
            return Err(parked);
        }
        // Registered before it is inserted, with the slot the insertion takes (under the same
        // lock): a socket the kernel refuses is given back as it was. Registering reports a
        // socket that is readable already (bytes that came since the task's last read) at once.
        let fd = parked.stream.as_raw_fd();
        let registered = self.shared.registry.register(
            &mut SourceFd(&fd),
            Token(slots.free),
            Interest::READABLE,
        );
        match registered {
            Ok(()) => Ok(slots.insert(parked)),
            Err(_) => Err(parked),
        }
    }

    /// Connections parked now, and since the start.
    pub(super) fn counts(&self) -> (u64, u64) {
        let slots = self.shared.slots();
        (slots.parked, slots.parks)
    }

    /// Hands every parked connection back and ends the thread: the broker stops (the router
    /// closed every outbox, so each is closed by its task as usual).
    pub(super) fn stop(&self) {
        self.shared.slots().stopping = true;
        let _ = self.shared.waker.wake();
    }
}

/// A broker whose runtime went away without stopping it: its parked sockets close and the
/// thread ends.
impl Drop for IdleSet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The set's thread: waits for parked sockets to become readable and for outboxes to be
/// filled, and sends those connections to [`unpark`].
fn watch(mut poll: Poll, shared: &Shared, woke: &Sender<Parked>) {
    let mut events = Events::with_capacity(EVENTS);
    let mut keys = Vec::new();
    loop {
        if let Err(error) = poll.poll(&mut events, None)
            && error.kind() != io::ErrorKind::Interrupted
        {
            // The kernel refuses to wait: hand everything back to tasks rather than strand it.
            shared.slots().stopping = true;
        }
        keys.extend(
            events
                .iter()
                .map(mio::event::Event::token)
                .filter(|&token| token != WAKE)
                .map(|token| token.0),
        );
        keys.append(&mut shared.woken());
        let stopping = {
            let slots = shared.slots();
            if slots.stopping {
                keys.extend(0..slots.slots.len());
            }
            slots.stopping
        };
        for key in keys.drain(..) {
            let Some(parked) = shared.slots().remove(key) else {
                continue;
            };
            let fd = parked.stream.as_raw_fd();
            let _ = shared.registry.deregister(&mut SourceFd(&fd));
            parked.outbox.unparked();
            // The receiver is gone only when the broker's runtime is: the socket closes.
            let _ = woke.try_send(parked);
        }
        if stopping {
            return;
        }
    }
}

/// Serves the connections the set wakes, each with a task of its own again, until the set
/// stops. Runs on the broker's runtime, whose context `wrap_std_tcp` may need.
pub(super) async fn unpark(serving: Arc<Serving>, woken: Receiver<Parked>) {
    while let Ok(Parked { stream, id, outbox }) = woken.recv().await {
        let runtime = &serving.runtime;
        // A runtime whose conversion panics (async-std's, when its reactor refuses the socket)
        // loses that connection, not every parked one.
        let transport = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.wrap_std_tcp(stream)
        }));
        match transport {
            Ok(Ok(transport)) => {
                let task = Connection::resume(serving.clone(), transport, outbox, id);
                runtime.spawn(Box::pin(task));
            }
            // Lost: the router learns it as the connection's end.
            _ => {
                let _ = serving.to_router.send(ToRouter::Eof(id)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parked connection holds beside the broker core's state: its slot, and the
    /// outbox it shares with the router (in an `Arc`, whose counts add 16 bytes).
    #[test]
    fn a_parked_connection_is_small() {
        let slot = std::mem::size_of::<Slot>();
        let outbox = std::mem::size_of::<Outbox>();
        println!("slot: {slot} B, outbox: {outbox} B");
        assert!(slot <= 32, "{slot} bytes");
        assert!(outbox <= 80, "{outbox} bytes");
    }

    #[test]
    fn slots_are_reused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = || TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let mut slots = Slots {
            slots: Vec::new(),
            free: 0,
            stopping: false,
            parked: 0,
            parks: 0,
        };
        let id = mqtt_proto::broker::Broker::new(Default::default())
            .open(std::time::Instant::now())
            .expect("an id");
        let parked = |stream| Parked {
            stream,
            id,
            outbox: Arc::new(Outbox::default()),
        };
        let a = slots.insert(parked(stream()));
        let b = slots.insert(parked(stream()));
        assert_eq!((a, b), (0, 1));
        assert!(slots.remove(a).is_some());
        assert!(slots.remove(a).is_none(), "removed once");
        assert_eq!(slots.insert(parked(stream())), a, "the free slot first");
        assert_eq!(slots.insert(parked(stream())), 2);
        assert_eq!((slots.parked, slots.parks), (3, 4));
    }
}
