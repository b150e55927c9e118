//! [`H2Stream`]: one stream of an HTTP/2 connection (the `h2` crate) as a [`Transport`], so
//! a WebSocket opened by an extended CONNECT (RFC 8441) runs on it like on a socket.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use switchboard_proto::Connection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::{poll_read_copied, ReadSize, Transport};

/// A stream of an HTTP/2 connection carrying a WebSocket: DATA frames in, DATA frames out.
///
/// Made by [`H2Client::websocket`](super::H2Client::websocket),
/// [`websocket_on`](super::websocket_on) or [`extended_connect`](super::extended_connect);
/// or from the halves of any extended CONNECT the caller made with the `h2` crate
/// ([`H2Stream::new`]). A `WebSocket<H2Stream>` behaves as over TCP (limits, pings, the close
/// handshake).
///
/// - Reading copies each DATA frame into the WebSocket's read buffer (as a socket read
///   does) and gives the bytes back to HTTP/2 flow control (`release_capacity`) only then:
///   a WebSocket the application does not read stops its peer after one stream window, and
///   leaves the connection's other streams alone.
/// - Writing hands the queued frames to `h2` as they are, without copying
///   ([`Connection::take_transmit_chunk`]), as fast as the stream's send window allows
///   (`reserve_capacity`/`poll_capacity`). `h2` copies them once more into its connection
///   buffer unless they are large; over HTTP/1.1 there is no such step, so HTTP/2 costs a
///   copy per small frame and a task hop (the connection driver) per write.
/// - Shutting down ends the stream (END_STREAM); dropping it without that resets it
///   (`RST_STREAM CANCEL`, by `h2`).
#[derive(Debug)]
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// The DATA frame being read.
    reading: Bytes,
    /// Bytes taken from the connection (or written) that `h2` has no capacity for yet.
    sending: Bytes,
    /// END_STREAM sent.
    ended: bool,
}

/// `h2`'s error as an I/O error (its own I/O errors as they were).
pub(crate) fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    let kind = if e.is_go_away() || e.is_reset() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl H2Stream {
    /// The two halves of an HTTP/2 stream whose extended CONNECT was answered 2xx.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            reading: Bytes::new(),
            sending: Bytes::new(),
            ended: false,
        }
    }

    /// The stream's identifier on its connection.
    pub fn stream_id(&self) -> h2::StreamId {
        self.send.stream_id()
    }

    /// The halves, for direct use of the `h2` API.
    pub fn into_parts(self) -> (SendStream<Bytes>, RecvStream) {
        (self.send, self.recv)
    }

    /// Hands `self.sending` to `h2` as its send window allows; ready once all of it is.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.sending.is_empty() {
            self.send.reserve_capacity(self.sending.len());
            let mut capacity = self.send.capacity();
            if capacity == 0 {
                capacity = match ready!(self.send.poll_capacity(cx)) {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                    None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                };
            }
            let n = capacity.min(self.sending.len());
            if n == 0 {
                continue;
            }
            let chunk = self.sending.split_to(n);
            self.send.send_data(chunk, false).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends what is pending, without waiting: a read must not wait for the send window,
    /// but should not leave bytes behind either when there is room.
    fn push_pending(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send_pending(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }
}

impl Transport for H2Stream {
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
        size: &mut ReadSize,
    ) -> Poll<io::Result<usize>> {
        // Bytes a flush left with h2 waiting for window must keep going while we read.
        self.push_pending(cx)?;
        poll_read_copied(self, cx, conn, size)
    }

    fn poll_transmit(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send_pending(cx))?;
            match conn.take_transmit_chunk() {
                Some(chunk) => self.sending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.reading.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.reading = data,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.reading.len().min(buf.remaining());
        buf.put_slice(&this.reading[..n]);
        this.reading.advance(n);
        // Read by the WebSocket now: the peer may send that much more.
        this.recv
            .flow_control()
            .release_capacity(n)
            .map_err(io_error)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    /// Copies `buf` into a DATA frame (the [`Transport`] write does not copy).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_pending(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.sending = Bytes::copy_from_slice(buf);
        // Taken whole: what the window does not allow yet goes with the next call.
        this.push_pending(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut joined = Vec::with_capacity(total);
        for b in bufs {
            joined.extend_from_slice(b);
        }
        this.sending = Bytes::from(joined);
        this.push_pending(cx)?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Ready once everything written is with `h2` (its connection task writes it out).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_pending(cx)
    }

    /// Sends what is pending, then END_STREAM.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_pending(cx))?;
        if !this.ended {
            this.ended = true;
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "server")]
impl crate::SocketControl for H2Stream {
    /// Nothing: the socket is the HTTP/2 connection's, shared by its streams; a stream's
    /// flow-control window bounds what it holds.
    fn set_send_buffer(&self, _bytes: usize) -> io::Result<()> {
        Ok(())
    }

    /// Nothing: dropping the stream without ending it resets it (`RST_STREAM`).
    fn reset_on_drop(&self) {}
}
