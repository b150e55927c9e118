//! `WebSocket<S>`: a connection over any `AsyncRead + AsyncWrite`.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use switchboard_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, Role, Side, State,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use crate::error::Error;
use crate::pool;

/// Runs of queued bytes handed to one vectored write (a burst of broadcast frames).
const MAX_WRITE_SLICES: usize = 64;
/// Payloads sent by reference over io_uring from this size (those the connection already
/// queues by reference).
#[cfg(all(feature = "io-uring", target_os = "linux"))]
const OWNED_SEND_MIN: usize = 4096;
/// Received runs taken from the io_uring ring, not copied, from this size (smaller ones
/// cost less to copy than to lend and reclaim a buffer for).
#[cfg(all(feature = "io-uring", target_os = "linux"))]
const TAKE_MIN: usize = 2048;

/// A WebSocket connection after the handshake, over a stream `S` (TCP, TLS, a Unix socket, a
/// hyper upgrade, an in-memory duplex).
///
/// Reading ([`recv`](Self::recv), [`next_event`](Self::next_event)) answers pings and close
/// frames by itself. Writing is batched: [`feed`](Self::feed) queues a message without a
/// system call, [`flush`](Self::flush) writes everything queued in as few writes as possible,
/// and reading flushes what is queued before it waits for the network, so an echo loop
/// written with `feed` answers a burst of messages with one write.
///
/// ```no_run
/// # async fn run(stream: tokio::net::TcpStream) -> Result<(), switchboard_tokio::Error> {
/// use switchboard_tokio::{accept, Config};
/// let mut ws = accept(stream, Config::default()).await?;
/// while let Some(msg) = ws.recv().await? {
///     ws.feed(&msg)?; // echo; written before the next read blocks
/// }
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// [`recv`](Self::recv) and [`next_event`](Self::next_event) are cancel safe: dropping the
/// future loses no data (bytes already read stay buffered). [`flush`](Self::flush) and
/// [`send`](Self::send) are not: a cancelled flush may have written part of a frame, and the
/// connection must then be dropped.
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    tcp_closed: bool,
    /// Adaptive read size: doubles while reads fill the buffer (large messages arrive in
    /// one read), halves when they use little of it.
    read_size: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose handshake is already done.
    pub fn from_raw(stream: S, role: Role, config: impl Into<Arc<Config>>) -> Self {
        Self::from_partial(stream, role, config, &[])
    }

    /// Like [`from_raw`](Self::from_raw), with bytes read past the handshake (the start of
    /// the first frames).
    pub fn from_partial(
        stream: S,
        role: Role,
        config: impl Into<Arc<Config>>,
        leftover: &[u8],
    ) -> Self {
        let mut conn = Connection::new(role, config);
        conn.handle_read(leftover);
        Self::from_connection(stream, conn)
    }

    /// Wraps a stream and a protocol state built by the caller (for example with
    /// [`Connection::with_deflate`] after a handshake that negotiated compression). Bytes read
    /// past the handshake go in with [`Connection::handle_read`] first.
    pub fn from_connection(stream: S, conn: Connection) -> Self {
        Self {
            stream,
            conn,
            tcp_closed: false,
            read_size: pool::BUF_SIZE as u32,
        }
    }

    /// The protocol state: lifecycle, who closed first, the close frames exchanged.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Records every frame sent and received for [`poll_trace`](Self::poll_trace) (see
    /// [`Connection::set_trace`]).
    pub fn set_trace(&mut self, on: bool) {
        self.conn.set_trace(on);
    }

    /// The oldest frame recorded since [`set_trace`](Self::set_trace) not yet taken.
    pub fn poll_trace(&mut self) -> Option<switchboard_proto::FrameTrace> {
        self.conn.poll_trace()
    }

    /// Whether the peer closed the TCP connection (seen as end of stream).
    pub fn peer_closed_tcp(&self) -> bool {
        self.tcp_closed
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably (writing to it directly corrupts the framing).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The next text or binary message; `Ok(None)` once the connection closed cleanly.
    /// Pings, pongs and the peer's close frame are handled on the way.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match self.next_event().await? {
                Some(Event::Message(m)) => return Ok(Some(m)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next event of any kind; `Ok(None)` once the connection closed cleanly.
    ///
    /// After the peer's close frame the reply is sent and (server) TCP is closed or (client)
    /// the server is given [`Config::close_timeout`] to close it, before `Close` is returned.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        match poll_fn(|cx| self.poll_next_event(cx)).await {
            Ok(Some(ev)) => {
                if matches!(ev, Event::Close(_)) {
                    // Boxed: this cold path would otherwise grow every connection's future.
                    Box::pin(self.finish()).await?;
                }
                Ok(Some(ev))
            }
            Err(Error::Protocol(e)) => {
                // Best effort: the close frame with the error's code, then TCP.
                let _ = Box::pin(self.finish()).await;
                Err(Error::Protocol(e))
            }
            other => other,
        }
    }

    /// The poll-based core of [`next_event`](Self::next_event), for hand-written futures
    /// that keep a connection's state small: reads, answers pings, flushes queued frames, and
    /// returns the next event.
    ///
    /// Unlike `next_event` it does not run the closing steps: after it returns
    /// `Event::Close` or a protocol error, await [`finish`](Self::finish) (the reply or the
    /// error's close frame is already queued).
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        self.poll_next_event_with(cx, Self::poll_fill, Self::poll_flush)
    }

    /// [`poll_next_event`](Self::poll_next_event) with the read a transport does best.
    #[inline(always)]
    fn poll_next_event_with(
        &mut self,
        cx: &mut Context<'_>,
        fill: fn(&mut Self, &mut Context<'_>) -> Poll<io::Result<usize>>,
        flush: fn(&mut Self, &mut Context<'_>) -> Poll<Result<(), Error>>,
    ) -> Poll<Result<Option<Event>, Error>> {
        loop {
            match self.conn.poll_event() {
                Ok(Some(ev)) => return Poll::Ready(Ok(Some(ev))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(Error::Protocol(e))),
            }
            if self.conn.state() == State::Closed {
                return Poll::Ready(Ok(None));
            }
            if !self.conn.transmit_is_empty() {
                match flush(self, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match fill(self, cx) {
                Poll::Ready(Ok(0)) => {
                    self.tcp_closed = true;
                    return Poll::Ready(Err(Error::Disconnected));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes everything queued, poll-based (see [`flush`](Self::flush)).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.conn.transmit_is_empty() {
            let first = self.conn.pending_transmit();
            // One run of bytes (the usual case) goes out with a plain write: on a socket
            // that is `send(2)`, cheaper in the kernel than `writev(2)`.
            let r =
                if first.len() == self.conn.queued_transmit() || !self.stream.is_write_vectored() {
                    Pin::new(&mut self.stream).poll_write(cx, first)
                } else {
                    let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
                    let n = self.conn.transmit_slices(&mut slices);
                    Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..n])
                };
            let n = match r {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => return Poll::Pending,
            };
            self.conn.advance_transmit(n);
        }
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
            Poll::Pending => return Poll::Pending,
        }
        pool::give_back(self.conn.transmit_buf_slot());
        Poll::Ready(Ok(()))
    }

    /// Reads from the stream into the connection's buffer, taking a pooled buffer if it has
    /// none and giving it back when the read would block with nothing buffered.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // At the base read size, any pooled buffer's room will do (at least MIN_ROOM), so
        // small messages never make it grow or rewind.
        let base = if self.read_size as usize <= pool::BUF_SIZE {
            pool::MIN_ROOM
        } else {
            self.read_size as usize
        };
        let want = self.conn.read_hint().max(base);
        let slot = self.conn.read_buf_slot();
        let buf = pool::fill(slot);
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        let room = buf.capacity() - buf.len();
        let r = poll_read_buf(Pin::new(&mut self.stream), cx, buf);
        match &r {
            Poll::Ready(Ok(n)) if *n == room => {
                self.read_size = (self.read_size * 2).min(pool::MAX_READ_SIZE as u32);
            }
            Poll::Ready(Ok(n)) if *n < room / 4 => {
                self.read_size = (self.read_size / 2).max(pool::BUF_SIZE as u32);
            }
            Poll::Pending => pool::give_back(slot),
            _ => {}
        }
        r
    }

    /// Queues a message without writing it. Fails with
    /// [`SendError::WriteBufferFull`](switchboard_proto::SendError::WriteBufferFull) when
    /// [`Config::max_write_buffer`] bytes are already queued: [`flush`](Self::flush) first.
    pub fn feed(&mut self, msg: &Message) -> Result<(), Error> {
        self.ensure_out_buf();
        self.conn.send(msg)?;
        Ok(())
    }

    /// Queues a complete server frame encoded once for many connections
    /// ([`proto::frame::encode_shared`](switchboard_proto::frame::encode_shared)), by
    /// reference: broadcasting to N connections copies the payload zero times in user space
    /// (the next flush hands it to one vectored write). See
    /// [`Connection::send_shared`] for which frames are accepted.
    ///
    /// ```no_run
    /// # async fn run(mut sockets: Vec<switchboard_tokio::WebSocket<tokio::net::TcpStream>>) -> Result<(), switchboard_tokio::Error> {
    /// use switchboard_tokio::{proto::frame::encode_shared, Message};
    /// let frame = encode_shared(&Message::text("to everyone"));
    /// for ws in &mut sockets {
    ///     ws.feed_shared(frame.clone())?;
    ///     ws.flush().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn feed_shared(&mut self, frame: switchboard_proto::SharedFrame) -> Result<(), Error> {
        self.conn.send_shared(frame)?;
        Ok(())
    }

    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, msg: &Message) -> Result<(), Error> {
        self.feed(msg)?;
        self.flush().await
    }

    /// Starts the closing handshake without waiting: queues a close frame, which the next
    /// flush or read writes. Messages the peer sent before its close reply keep arriving from
    /// [`next_event`](Self::next_event) until its `Event::Close` (then `None`). For clients
    /// that want to see them; [`close`](Self::close) discards them and waits.
    pub fn feed_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.ensure_out_buf();
        self.conn.close(Some(CloseFrame::new(code, reason)))?;
        Ok(())
    }

    /// Queues a ping without writing it (see [`feed`](Self::feed)).
    pub fn feed_ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.ensure_out_buf();
        self.conn.ping(payload)?;
        Ok(())
    }

    /// Sends a ping.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.ensure_out_buf();
        self.conn.ping(payload)?;
        self.flush().await
    }

    fn ensure_out_buf(&mut self) {
        pool::fill(self.conn.transmit_buf_slot());
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Runs the closing handshake: sends a close frame, waits (up to
    /// [`Config::close_timeout`]) for the peer's, discarding messages that arrive meanwhile,
    /// then closes TCP the way RFC 6455 §7.1.1 says.
    ///
    /// ```no_run
    /// # async fn run(mut ws: switchboard_tokio::WebSocket<tokio::net::TcpStream>) -> Result<(), switchboard_tokio::Error> {
    /// use switchboard_proto::CloseCode;
    /// ws.close(CloseCode::NORMAL, "bye").await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.close_frame(Some(CloseFrame::new(code, reason))).await
    }

    /// [`close`](Self::close) with an explicit frame (`None`: a close frame without a code).
    pub async fn close_frame(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.conn.sent_close().is_none() {
            self.ensure_out_buf();
            self.conn.close(frame)?;
        }
        self.flush().await?;
        let timeout = self.conn.config().close_timeout;
        let wait = async {
            loop {
                match self.next_event().await {
                    Ok(Some(Event::Close(_))) | Ok(None) => return Ok(()),
                    Ok(Some(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        // Boxed: the timer and the nested read loop are only needed while closing.
        match Box::pin(tokio::time::timeout(timeout, wait)).await {
            Ok(r) => r,
            Err(_) => {
                self.shutdown().await;
                Err(Error::CloseTimeout(timeout))
            }
        }
    }

    /// After the close handshake (or a protocol error): sends what is queued, then closes TCP.
    /// The server closes at once; the client waits for the server to close first (up to the
    /// close timeout). [`next_event`](Self::next_event) calls it by itself; users of
    /// [`poll_next_event`](Self::poll_next_event) await it after `Event::Close` or an error.
    pub async fn finish(&mut self) -> Result<(), Error> {
        self.flush().await?;
        if self.conn.role() == Role::Client && !self.tcp_closed {
            let timeout = self.conn.config().close_timeout;
            let _ = tokio::time::timeout(timeout, self.wait_eof()).await;
        }
        self.shutdown().await;
        Ok(())
    }

    /// Reads and discards until the peer closes TCP.
    async fn wait_eof(&mut self) {
        loop {
            let mut sink = BytesMut::with_capacity(256);
            match poll_fn(|cx| poll_read_buf(Pin::new(&mut self.stream), cx, &mut sink)).await {
                Ok(0) | Err(_) => {
                    self.tcp_closed = true;
                    return;
                }
                Ok(_) => continue,
            }
        }
    }

    async fn shutdown(&mut self) {
        if !self.tcp_closed {
            let _ = self.stream.shutdown().await;
            self.tcp_closed = true;
        }
    }

    /// Who sent the first close frame, once the closing handshake started.
    pub fn close_initiator(&self) -> Option<Side> {
        self.conn.close_initiator()
    }

    /// Splits into a reader and a writer that can be used from different tasks.
    pub fn split(self) -> (crate::split::WsReader<S>, crate::split::WsWriter<S>) {
        crate::split::split(self.stream, self.conn, self.tcp_closed)
    }
}

/// Over io_uring, reads take the ring's receive buffers instead of copying them.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
impl WebSocket<crate::uring::UringStream> {
    /// [`poll_next_event`](Self::poll_next_event), reading with
    /// [`UringStream::poll_read_take`](crate::uring::UringStream::poll_read_take): a
    /// message that arrives in one receive is parsed where the kernel put it, so its bytes
    /// are not copied once more. Messages it returns hold ring memory: drop them soon
    /// (the echo loop writes them back at once).
    pub fn poll_next_event_take(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Event>, Error>> {
        self.poll_next_event_with(cx, Self::poll_fill_take, Self::poll_flush_take)
    }

    /// [`poll_flush`](Self::poll_flush), but a large message queued by reference (a
    /// header and a payload, nothing else) is handed to the ring as it is
    /// ([`UringStream::send_owned`](crate::uring::UringStream::send_owned)), not copied.
    pub fn poll_flush_take(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut runs = [IoSlice::new(&[]); 3];
        if self.conn.transmit_slices(&mut runs) == 2
            && runs[1].len() >= OWNED_SEND_MIN
            && self.stream.send_idle()
        {
            if let (Some(head), Some(payload)) = (
                self.conn.take_transmit_chunk(),
                self.conn.take_transmit_chunk(),
            ) {
                // A header in the transmit buffer is copied and let go at once, so the
                // buffer is whole again when it goes back to the pool; one written in
                // front of the payload goes out with it, as one run.
                self.stream.send_owned(head, payload).map_err(Error::Io)?;
            }
        }
        self.poll_flush(cx)
    }

    /// Reads into the connection's buffer: with nothing buffered, by taking the next
    /// received buffer; in the middle of a frame, by copying (as `poll_fill`).
    fn poll_fill_take(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let slot = self.conn.read_buf_slot();
        if slot.as_ref().is_some_and(|b| !b.is_empty()) {
            return self.poll_fill(cx);
        }
        match self.stream.poll_read_take(cx, TAKE_MIN, slot) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                match slot.take() {
                    // A taken buffer used up (or none yet): let go of the ring's memory and
                    // keep the box for the next take, not in this idle connection.
                    Some(mut b) if b.capacity() == 0 => {
                        *b = BytesMut::new();
                        pool::keep_box(b);
                    }
                    other => {
                        *slot = other;
                        pool::give_back(slot);
                    }
                }
                Poll::Pending
            }
        }
    }
}
