//! `WebSocket<S>`: a connection over a [`Transport`] (any `AsyncRead + AsyncWrite` stream).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use switchboard_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, Role, Side, State,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use crate::error::Error;
use crate::pool;
use crate::transport::{ReadSize, Transport};

/// A WebSocket connection after the handshake, over a stream `S` (TCP, TLS, a Unix socket, a
/// hyper upgrade, an in-memory duplex, io_uring's `UringStream`): reading and writing need
/// `S:` [`Transport`], which all of those are (wrap another stream in
/// [`Plain`](crate::Plain)).
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
    read_size: ReadSize,
}

impl<S> WebSocket<S> {
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
            read_size: ReadSize::default(),
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
    /// reference: broadcasting to N connections copies the frame zero times in user space
    /// (the next flush hands it to one vectored write, or over io_uring to the ring as it
    /// is, see [`Transport`]). See
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

    fn ensure_out_buf(&mut self) {
        pool::fill(self.conn.transmit_buf_slot());
    }

    /// Who sent the first close frame, once the closing handshake started.
    pub fn close_initiator(&self) -> Option<Side> {
        self.conn.close_initiator()
    }
}

impl<S: Transport> WebSocket<S> {
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
                ready!(self.poll_flush(cx))?;
            }
            let filled = self
                .stream
                .poll_fill(cx, &mut self.conn, &mut self.read_size);
            match ready!(filled) {
                Ok(0) => {
                    self.tcp_closed = true;
                    return Poll::Ready(Err(Error::Disconnected));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    /// Writes everything queued, poll-based (see [`flush`](Self::flush)), the way the
    /// transport does best ([`Transport::poll_transmit`]).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.stream.poll_transmit(cx, &mut self.conn)).map_err(Error::Io)?;
        ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(Error::Io)?;
        pool::give_back(self.conn.transmit_buf_slot());
        Poll::Ready(Ok(()))
    }

    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, msg: &Message) -> Result<(), Error> {
        self.feed(msg)?;
        self.flush().await
    }

    /// Sends a ping.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.ensure_out_buf();
        self.conn.ping(payload)?;
        self.flush().await
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
}

impl<S: AsyncRead + AsyncWrite> WebSocket<S> {
    /// Splits into a reader and a writer that can be used from different tasks.
    pub fn split(self) -> (crate::split::WsReader<S>, crate::split::WsWriter<S>) {
        crate::split::split(self.stream, self.conn, self.tcp_closed)
    }
}
