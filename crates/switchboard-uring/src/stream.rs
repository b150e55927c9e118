//! [`UringStream`]: a TCP stream's handle on its slot of the thread's ring.

use std::io;
use std::net::TcpStream as StdTcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ring::Ring;
use crate::sys;

/// A TCP stream driven by io_uring; see the [crate docs](crate).
pub struct UringStream {
    ring: Arc<Ring>,
    slot: usize,
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// The next run of received bytes, from [`UringStream::poll_read_take`].
#[derive(Debug)]
pub enum Received {
    /// Handed over as it is: a view into the buffer the kernel received it into, which
    /// goes back to the ring once this and everything split from it are dropped.
    Lent(BytesMut),
    /// Copied, this many bytes, into the buffer the caller gave; 0 at the end of the
    /// stream.
    Copied(usize),
}

impl UringStream {
    /// Takes over a connected TCP stream. Call it inside a tokio runtime (the thread's ring
    /// and its completion task are created on first use).
    ///
    /// # Errors
    /// When io_uring cannot be set up here (an old kernel, or io_uring disabled), or the
    /// descriptor cannot be prepared.
    pub fn new(tcp: StdTcpStream) -> io::Result<Self> {
        // Blocking: io_uring waits for readiness itself, and an O_NONBLOCK socket can make
        // an operation that io_uring hands to a worker thread fail with EAGAIN.
        tcp.set_nonblocking(false)?;
        let ring = Ring::current()?;
        let fd = sys::owned(tcp.into_raw_fd());
        let slot = ring.lock().insert(fd);
        Ok(Self { ring, slot })
    }

    /// Takes over a tokio TCP stream (see [`new`](Self::new)).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_tokio(tcp: tokio::net::TcpStream) -> io::Result<Self> {
        Self::new(tcp.into_std()?)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        let fd = self.ring.lock().slot(self.slot).fd.as_raw_fd();
        // Borrows the descriptor as a std stream without taking ownership.
        sys::borrowed_std(fd).peer_addr()
    }

    /// Makes dropping the stream reset the connection (an RST) instead of closing it
    /// gracefully, so the kernel frees what it holds for it at once rather than trying to
    /// deliver it to a peer that does not read. The reset also ends operations still
    /// running on the socket.
    pub fn reset_on_drop(&self) {
        self.ring.lock().slot_mut(self.slot).reset = true;
    }

    /// Sends runs of bytes taken from `runs`, in order, after what waits, holding them (not
    /// copying them) until the kernel is done with them: up to 64 runs in one
    /// `sendmsg(2)`, or one `send(2)` when they are one run of memory (a header written
    /// where its payload starts). Runs of 32 bytes or less are copied (cheaper than
    /// holding them), unless they end where the next run starts.
    ///
    /// It takes runs only while it can hold them: while no bytes written with
    /// [`poll_write`](AsyncWrite::poll_write) wait to be sent (they go first, so what
    /// comes after them is copied too), up to 64 runs waiting, and until 256 KiB or more
    /// wait in all. Returns how many runs it took (0: write the rest with `poll_write`,
    /// which sends it after these), or pending when 256 KiB or more wait already (the task
    /// is woken as sends complete). Like `poll_write`, the bytes go out with the ring's
    /// next submission.
    ///
    /// # Errors
    /// A failed earlier send's error.
    ///
    /// ```no_run
    /// # async fn run(mut stream: switchboard_uring::UringStream) -> std::io::Result<()> {
    /// use bytes::Bytes;
    /// let frame = Bytes::from(vec![7u8; 64 * 1024]); // say, encoded once for many streams
    /// let mut runs = std::iter::once(frame.clone());
    /// std::future::poll_fn(|cx| stream.poll_send_owned(cx, &mut runs)).await?;
    /// // Copied bytes written after it go out after it.
    /// tokio::io::AsyncWriteExt::write_all(&mut stream, b"and a short tail").await?;
    /// # Ok(()) }
    /// ```
    pub fn poll_send_owned(
        &mut self,
        cx: &mut Context<'_>,
        runs: &mut dyn Iterator<Item = Bytes>,
    ) -> Poll<io::Result<usize>> {
        self.ring.lock().poll_send_owned(self.slot, cx, runs)
    }

    /// Reads the next run of received bytes: a run of `take_min` bytes or more is handed
    /// over as it is ([`Received::Lent`]: the buffer the kernel received it into, a view
    /// into the ring's memory), where [`poll_read`](AsyncRead::poll_read) would copy it; a
    /// shorter one is copied into the buffer `copy_into` gives ([`Received::Copied`]:
    /// copying a few bytes costs less than lending a buffer). Lent memory goes back to the
    /// ring once the buffer and everything split from it are dropped, so keep it briefly:
    /// a reader that holds many starves the ring of buffers (it replaces those held
    /// longest with new memory). `Copied(0)` at the end of the stream.
    ///
    /// # Errors
    /// The receive's error.
    pub fn poll_read_take<'b>(
        &mut self,
        cx: &mut Context<'_>,
        take_min: usize,
        copy_into: impl FnOnce() -> &'b mut BytesMut,
    ) -> Poll<io::Result<Received>> {
        self.ring
            .lock()
            .poll_read_take(self.slot, cx, take_min, copy_into)
    }
}

impl AsFd for UringStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        let fd = self.ring.lock().slot(self.slot).fd.as_raw_fd();
        // SAFETY: the slot owns the descriptor and is freed only after this handle is
        // dropped (and the kernel let go of it), so it stays open while `self` is borrowed.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

impl AsyncRead for UringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.ring.lock().poll_read(self.slot, cx, buf)
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.ring
            .lock()
            .poll_write(self.slot, cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.ring.lock().poll_write(self.slot, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.ring.lock().take_write_error(self.slot))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ring.lock().poll_shutdown(self.slot, cx)
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        self.ring.lock().release(self.slot);
    }
}
