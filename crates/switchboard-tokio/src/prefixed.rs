//! [`Prefixed`]: a stream whose first bytes were read already, put back in front of it, so
//! another HTTP implementation (hyper) can read the connection from its start.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream with bytes in front of it: reads drain `prefix` first, then read the stream;
/// writes go straight to the stream.
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
}

impl<S> Prefixed<S> {
    /// `inner`, whose reads start with `prefix`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
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
}
