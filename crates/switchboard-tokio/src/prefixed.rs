//! [`Prefixed`]: a stream whose first bytes were read already, put back in front of it, so
//! another HTTP implementation (hyper) can read the connection from its start.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream with bytes in front of it: reads drain `prefix` first, then read the stream;
/// writes go straight to the stream, and, with a [write timeout](Self::write_timeout), fail
/// with `TimedOut` once they have made no progress for that long (a peer that does not read
/// cannot hold the connection: HTTP implementations such as hyper have no write timeout).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let (a, mut b) = tokio::io::duplex(64);
/// b.write_all(b" world").await?;
/// drop(b);
/// let mut s = switchboard_tokio::Prefixed::new("hello".into(), a);
/// let mut all = String::new();
/// s.read_to_string(&mut all).await?;
/// assert_eq!(all, "hello world");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    write_timeout: Option<Duration>,
    /// Armed while a write waits: when it fires, the write fails.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Prefixed<S> {
    /// `inner`, whose reads start with `prefix`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self {
            prefix,
            inner,
            write_timeout: None,
            stalled: None,
        }
    }

    /// Writes (and flushes) that make no progress for `timeout` fail with `TimedOut`.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = Some(timeout);
        self
    }

    /// `r`, a write's outcome, past the write timeout: a wait is timed from its first
    /// `Pending`, progress disarms the timer.
    fn timed<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Poll::Pending = r else {
            self.stalled = None;
            return r;
        };
        let Some(timeout) = self.write_timeout else {
            return Poll::Pending;
        };
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The bytes of the prefix not read yet, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Let go of the buffer the prefix was read into.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> crate::Transport for Prefixed<S> {}

#[cfg(feature = "server")]
impl<S: crate::SocketControl> crate::SocketControl for Prefixed<S> {
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        self.inner.set_send_buffer(bytes)
    }

    fn reset_on_drop(&self) {
        self.inner.reset_on_drop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_the_prefix_in_small_reads_then_the_stream_and_writes_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = Prefixed::new(Bytes::from_static(b"abcdef"), a);
        let mut two = [0u8; 4];
        assert_eq!(s.read(&mut two).await.unwrap(), 4);
        assert_eq!(&two, b"abcd");
        b.write_all(b"gh").await.unwrap();
        assert_eq!(s.read(&mut two).await.unwrap(), 2);
        assert_eq!(&two[..2], b"ef");
        assert_eq!(s.read(&mut two).await.unwrap(), 2);
        assert_eq!(&two[..2], b"gh");
        s.write_all(b"out").await.unwrap();
        let mut back = [0u8; 3];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"out");
        let (rest, _) = s.into_parts();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_write_the_peer_does_not_read_fails_after_the_write_timeout() {
        let timeout = Duration::from_millis(300);
        let (a, mut b) = tokio::io::duplex(16);
        let mut s = Prefixed::new(Bytes::new(), a).write_timeout(timeout);
        let started = std::time::Instant::now();
        let e = s.write_all(&[7u8; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        // Progress disarms it: a peer that reads more often than the timeout keeps the
        // stream, however long the whole write takes.
        let mut s = Prefixed::new(Bytes::new(), s.into_parts().1).write_timeout(timeout);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(timeout / 3).await;
                if b.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        });
        let started = std::time::Instant::now();
        s.write_all(&[7u8; 128]).await.unwrap();
        assert!(started.elapsed() > timeout, "{:?}", started.elapsed());
        drop(s);
        reader.await.unwrap();
    }
}
