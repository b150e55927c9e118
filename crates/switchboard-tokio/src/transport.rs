//! [`Transport`]: how a [`WebSocket`](crate::WebSocket) moves bytes between a stream and its
//! connection's buffers: read what arrived into the read buffer, write the queued frames.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use switchboard_proto::Connection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::pool;

#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod uring;

/// Runs of queued bytes handed to one vectored write (a burst of broadcast frames).
const MAX_WRITE_SLICES: usize = 64;

/// A stream a [`WebSocket`](crate::WebSocket) runs on: it reads what arrived into the
/// connection's read buffer and writes the connection's queued frames.
///
/// Both methods have defaults that copy, through `AsyncRead` and `AsyncWrite`, which is what
/// a socket read or write does anyway. io_uring's
/// [`UringStream`](crate::uring::UringStream) (feature `io-uring`) overrides them: it reads
/// by taking the buffer the kernel received into, and sends frames queued by reference
/// (large payloads, frames encoded once for many connections) without copying them.
///
/// Implemented for tokio's `TcpStream`, `UnixStream` and `DuplexStream`, rustls' client and
/// server `TlsStream`s, [`MaybeTlsStream`](crate::MaybeTlsStream), hyper's upgraded
/// connections (`TokioIo`), the streams of HTTP/2 connections (`h2::H2Stream`, which hands
/// queued frames to `h2` without copying them, and `h2::H2Io` on hyper's server, features
/// `http2`/`http2-server`), and `Box<dyn Transport>`. For another stream:
///
/// - your own type: `impl Transport for MyStream {}` (the copying defaults);
/// - a type from another crate: wrap it in [`Plain`].
///
/// ```
/// use switchboard_tokio::{Config, Message, Plain, Role, Transport, WebSocket};
///
/// /// A stream of this program, say one that counts bytes.
/// struct Counted(tokio::io::DuplexStream);
/// # impl tokio::io::AsyncRead for Counted {
/// #     fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>,
/// #         buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
/// #         std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
/// #     }
/// # }
/// # impl tokio::io::AsyncWrite for Counted {
/// #     fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>,
/// #         buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
/// #         std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
/// #     }
/// #     fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>)
/// #         -> std::task::Poll<std::io::Result<()>> {
/// #         std::pin::Pin::new(&mut self.0).poll_flush(cx)
/// #     }
/// #     fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>)
/// #         -> std::task::Poll<std::io::Result<()>> {
/// #         std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
/// #     }
/// # }
/// // Its AsyncRead and AsyncWrite are enough: the defaults copy.
/// impl Transport for Counted {}
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), switchboard_tokio::Error> {
/// let (a, b) = tokio::io::duplex(1024);
/// let mut server = WebSocket::from_raw(Counted(a), Role::Server, Config::default());
/// // A stream type of another crate, wrapped.
/// let (r, w) = tokio::io::split(b);
/// let mut client =
///     WebSocket::from_raw(Plain(tokio::io::join(r, w)), Role::Client, Config::default());
/// client.send(&Message::text("hello")).await?;
/// assert_eq!(server.recv().await?, Some(Message::text("hello")));
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Transport` a WebSocket can run on",
    note = "wrap any `AsyncRead + AsyncWrite + Unpin` stream in `switchboard_tokio::Plain`, \
            or give your own stream type `impl switchboard_tokio::Transport for MyStream {{}}`"
)]
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Reads what arrived into `conn`'s read buffer
    /// ([`Connection::read_buf_slot`]), lending it a pooled buffer while bytes are in
    /// flight and taking it back when the read would wait with nothing buffered. `size` is
    /// the connection's adaptive read size. Returns how many bytes were read, 0 at the end
    /// of the stream.
    ///
    /// # Errors
    /// The stream's read error.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
        size: &mut ReadSize,
    ) -> Poll<io::Result<usize>> {
        poll_read_copied(self, cx, conn, size)
    }

    /// Writes everything `conn` has queued ([`Connection::pending_transmit`] and the runs
    /// after it), in order; ready once all of it is handed to the stream (the caller then
    /// flushes the stream).
    ///
    /// # Errors
    /// The stream's write error; `WriteZero` when it takes nothing.
    fn poll_transmit(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
    ) -> Poll<io::Result<()>> {
        poll_write_copied(self, cx, conn)
    }
}

/// A connection's adaptive read size: it doubles while reads fill the buffer (large
/// messages arrive in one read, up to 32 KiB) and halves when they use little of it (down
/// to 8 KiB). A [`WebSocket`](crate::WebSocket) keeps one and hands it to
/// [`Transport::poll_fill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSize(u32);

impl Default for ReadSize {
    fn default() -> Self {
        Self(pool::BUF_SIZE as u32)
    }
}

/// The copying read: into `conn`'s read buffer (a pooled one if it has none), as many
/// bytes as the stream has, at least `size` of room (or what the frame being read needs).
pub(crate) fn poll_read_copied<R: AsyncRead + Unpin + ?Sized>(
    stream: &mut R,
    cx: &mut Context<'_>,
    conn: &mut Connection,
    size: &mut ReadSize,
) -> Poll<io::Result<usize>> {
    // At the base read size, any pooled buffer's room will do (at least MIN_ROOM), so
    // small messages never make it grow or rewind.
    let base = if size.0 as usize <= pool::BUF_SIZE {
        pool::MIN_ROOM
    } else {
        size.0 as usize
    };
    let want = conn.read_hint().max(base);
    let slot = conn.read_buf_slot();
    let buf = pool::fill(slot);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let room = buf.capacity() - buf.len();
    let r = poll_read_buf(Pin::new(stream), cx, buf);
    match &r {
        Poll::Ready(Ok(n)) if *n == room => {
            size.0 = (size.0 * 2).min(pool::MAX_READ_SIZE as u32);
        }
        Poll::Ready(Ok(n)) if *n < room / 4 => {
            size.0 = (size.0 / 2).max(pool::BUF_SIZE as u32);
        }
        Poll::Pending => pool::give_back(slot),
        _ => {}
    }
    r
}

/// The copying write: everything `conn` has queued, one run with a plain write (on a socket
/// that is `send(2)`, cheaper in the kernel than `writev(2)`), several with a vectored one.
pub(crate) fn poll_write_copied<W: AsyncWrite + Unpin + ?Sized>(
    stream: &mut W,
    cx: &mut Context<'_>,
    conn: &mut Connection,
) -> Poll<io::Result<()>> {
    while !conn.transmit_is_empty() {
        let first = conn.pending_transmit();
        let r = if first.len() == conn.queued_transmit() || !stream.is_write_vectored() {
            Pin::new(&mut *stream).poll_write(cx, first)
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
            let n = conn.transmit_slices(&mut slices);
            Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])
        };
        match ready!(r)? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => conn.advance_transmit(n),
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(any(feature = "client", feature = "server", feature = "io-uring"))]
impl Transport for tokio::net::TcpStream {}

#[cfg(all(
    unix,
    any(feature = "client", feature = "server", feature = "io-uring")
))]
impl Transport for tokio::net::UnixStream {}

impl Transport for tokio::io::DuplexStream {}

#[cfg(feature = "rustls")]
impl<S: AsyncRead + AsyncWrite + Unpin> Transport for tokio_rustls::client::TlsStream<S> {}

#[cfg(feature = "rustls")]
impl<S: AsyncRead + AsyncWrite + Unpin> Transport for tokio_rustls::server::TlsStream<S> {}

#[cfg(feature = "hyper")]
impl<T> Transport for hyper_util::rt::TokioIo<T> where Self: AsyncRead + AsyncWrite + Unpin {}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
        size: &mut ReadSize,
    ) -> Poll<io::Result<usize>> {
        (**self).poll_fill(cx, conn, size)
    }

    fn poll_transmit(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
    ) -> Poll<io::Result<()>> {
        (**self).poll_transmit(cx, conn)
    }
}

/// Any `AsyncRead + AsyncWrite + Unpin` stream as a [`Transport`] that copies (as every
/// transport but io_uring's does): for stream types of other crates, which cannot be given
/// the trait here. See [`Transport`] for an example.
#[derive(Debug, Default)]
pub struct Plain<T>(pub T);

impl<T> Plain<T> {
    /// The stream inside.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for Plain<T> {}

impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(feature = "server")]
impl<T: crate::SocketControl> crate::SocketControl for Plain<T> {
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        self.0.set_send_buffer(bytes)
    }

    fn reset_on_drop(&self) {
        self.0.reset_on_drop();
    }
}
