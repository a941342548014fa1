//! What both binaries' listeners need of a connection: whether its client
//! is mid-request, so that a connection cut for a slow head is told from
//! an idle keep-alive connection closed (the first is counted as a
//! refusal, the second is normal); and the bytes someone else already read
//! from it, read again first (how the agent's fast path hands a connection
//! to hyper).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An IO that notes bytes read since its last write: set when the client
/// sends, cleared when an answer is written.
pub struct Tracked<I> {
    inner: I,
    /// Bytes already read from `inner`, read again before it.
    prefix: Bytes,
    mid_request: Arc<AtomicBool>,
}

impl<I> Tracked<I> {
    /// The IO, and the flag that tells whether the client has sent bytes
    /// not yet answered.
    pub fn new(inner: I) -> (Tracked<I>, Arc<AtomicBool>) {
        Tracked::with_prefix(inner, Bytes::new())
    }

    /// The same for an IO whose first bytes were already read: `prefix`
    /// is read first, then the IO.
    pub fn with_prefix(inner: I, prefix: Bytes) -> (Tracked<I>, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (
            Tracked {
                inner,
                prefix,
                mid_request: flag.clone(),
            },
            flag,
        )
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            self.mid_request.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.mid_request.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.mid_request.store(false, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.mid_request.store(false, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
