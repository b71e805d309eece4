//! An in-memory, bounded, full-duplex byte stream: how a bridge's local client talks to the
//! broker it belongs to, without a socket (and so without a port, a file descriptor or a
//! listener of the broker's). Runtime-agnostic: only wakers.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_io::{AsyncRead, AsyncWrite};

/// Bytes one direction holds before the writer waits for the reader.
const CAPACITY: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Half {
    bytes: VecDeque<u8>,
    /// The writer closed (or dropped) its end: the reader sees end of file once drained.
    closed: bool,
    /// The reader dropped its end: writes fail.
    gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

#[derive(Debug, Default)]
struct Shared(Mutex<Half>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Half> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One end of a [`pair`]: reads what the other end writes, and the other way round.
#[derive(Debug)]
pub(crate) struct PipeEnd {
    incoming: Arc<Shared>,
    outgoing: Arc<Shared>,
}

/// Two connected ends.
pub(crate) fn pair() -> (PipeEnd, PipeEnd) {
    let a = Arc::new(Shared::default());
    let b = Arc::new(Shared::default());
    (
        PipeEnd {
            incoming: a.clone(),
            outgoing: b.clone(),
        },
        PipeEnd {
            incoming: b,
            outgoing: a,
        },
    )
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut half = self.incoming.lock();
        if half.bytes.is_empty() {
            if half.closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            half.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(half.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(half.bytes.drain(..n)) {
            *slot = byte;
        }
        let writer = half.writer.take();
        drop(half);
        wake(writer);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut half = self.outgoing.lock();
        if half.gone || half.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = CAPACITY.saturating_sub(half.bytes.len());
        if room == 0 {
            half.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        half.bytes.extend(&buf[..n]);
        let reader = half.reader.take();
        drop(half);
        wake(reader);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let reader = {
            let mut half = self.outgoing.lock();
            half.closed = true;
            half.reader.take()
        };
        wake(reader);
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let reader = {
            let mut half = self.outgoing.lock();
            half.closed = true;
            half.reader.take()
        };
        wake(reader);
        let writer = {
            let mut half = self.incoming.lock();
            half.gone = true;
            half.writer.take()
        };
        wake(writer);
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

    use super::*;

    #[test]
    fn bytes_cross_both_ways_and_close_is_end_of_file() {
        future::block_on(async {
            let (mut a, mut b) = pair();
            a.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            b.write_all(b"pong").await.unwrap();
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
            a.close().await.unwrap();
            assert_eq!(b.read(&mut buf).await.unwrap(), 0);
        });
    }

    #[test]
    fn a_full_pipe_waits_for_the_reader_and_a_dropped_reader_breaks_it() {
        future::block_on(async {
            let (mut a, mut b) = pair();
            let big = vec![7u8; CAPACITY + 10];
            let writer = async {
                a.write_all(&big).await.unwrap();
                a
            };
            let reader = async {
                let mut got = vec![0u8; CAPACITY + 10];
                b.read_exact(&mut got).await.unwrap();
                assert!(got.iter().all(|&x| x == 7));
                b
            };
            let (mut a, b) = future::zip(writer, reader).await;
            drop(b);
            let error = a.write_all(b"x").await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        });
    }
}
