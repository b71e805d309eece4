//! Waiting for a future on the calling thread, with or without a deadline.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

pub(crate) use futures_lite::future::block_on;

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it completes (`Some`) or `deadline` passes (`None`; the
/// future is dropped, so it must be cancel-safe).
///
/// A wake-up that comes before the thread parks is not lost (the park returns at once), and a
/// spurious one only costs another poll.
pub(crate) fn block_on_until<F: Future>(future: F, deadline: Instant) -> Option<F::Output> {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

/// Polls `future` once: its output if it is ready now.
pub(crate) fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_value_sent_from_another_thread_wakes_the_waiter() {
        let (tx, rx) = async_channel::bounded(1);
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send_blocking(7)
        });
        let got = block_on_until(rx.recv(), Instant::now() + Duration::from_secs(10));
        assert_eq!(got, Some(Ok(7)));
        assert!(sender.join().is_ok_and(|sent| sent.is_ok()));
    }

    #[test]
    fn the_deadline_ends_the_wait() {
        let (_tx, rx) = async_channel::bounded::<()>(1);
        let start = Instant::now();
        let got = block_on_until(rx.recv(), start + Duration::from_millis(50));
        assert_eq!(got, None);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn poll_once_tells_ready_from_pending() {
        let (tx, rx) = async_channel::bounded(1);
        assert_eq!(poll_once(rx.recv()), None);
        assert!(tx.try_send(1).is_ok());
        assert_eq!(poll_once(rx.recv()), Some(Ok(1)));
        drop(tx);
        assert!(matches!(poll_once(rx.recv()), Some(Err(_))));
    }
}
