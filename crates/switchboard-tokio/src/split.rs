//! A connection split into a reader and a writer for use from two tasks.
//!
//! Both halves share the protocol state behind a short-held `std::sync::Mutex` (never held
//! across an `.await`) and the write side of the stream behind an async mutex. The reader
//! queues pongs and close replies into the shared state and writes them itself, so a task
//! that only reads still answers pings.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_proto::{CloseCode, CloseFrame, Connection, Event, Message, Role, State};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::io::poll_read_buf;

use crate::error::Error;
use crate::transport::{poll_read_copied, poll_write_copied, ReadSize};

#[derive(Debug)]
struct Shared<S> {
    conn: Mutex<Connection>,
    writer: tokio::sync::Mutex<WriteHalf<S>>,
}

impl<S> Shared<S> {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding this lock cannot leave the connection half-updated in a way
        // that matters more than the panic itself; keep going with the inner value.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: AsyncWrite> Shared<S> {
    /// Writes everything queued in the connection, in queue order (the copying write of
    /// [`Transport`](crate::Transport), one run or a vectored write of several per call).
    async fn flush(&self) -> Result<(), Error> {
        let mut w = self.writer.lock().await;
        // Written under the writer lock, so frames go out in the order they were queued;
        // the connection's lock is held only while a write is polled.
        poll_fn(|cx| poll_write_copied(&mut *w, cx, &mut self.conn())).await?;
        w.flush().await?;
        Ok(())
    }

    async fn shutdown(&self) {
        let _ = self.writer.lock().await.shutdown().await;
    }
}

/// The receiving half of a split [`WebSocket`](crate::WebSocket).
#[derive(Debug)]
pub struct WsReader<S> {
    shared: Arc<Shared<S>>,
    read: ReadHalf<S>,
    tcp_closed: bool,
    read_size: ReadSize,
}

/// The sending half of a split [`WebSocket`](crate::WebSocket). Cloneable: several tasks may
/// send; frames from one `send` are never interleaved with another's.
#[derive(Debug)]
pub struct WsWriter<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for WsWriter<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

pub(crate) fn split<S: AsyncRead + AsyncWrite>(
    stream: S,
    conn: Connection,
    tcp_closed: bool,
) -> (WsReader<S>, WsWriter<S>) {
    let (read, write) = tokio::io::split(stream);
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        writer: tokio::sync::Mutex::new(write),
    });
    (
        WsReader {
            shared: Arc::clone(&shared),
            read,
            tcp_closed,
            read_size: ReadSize::default(),
        },
        WsWriter { shared },
    )
}

impl<S: AsyncRead + AsyncWrite> WsReader<S> {
    /// The next text or binary message; `Ok(None)` once the connection closed cleanly.
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
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            let (result, state, pending, role) = {
                let mut c = self.shared.conn();
                let r = c.poll_event();
                (r, c.state(), !c.transmit_is_empty(), c.role())
            };
            match result {
                Ok(Some(ev)) => {
                    if pending {
                        self.shared.flush().await?;
                    }
                    if matches!(ev, Event::Close(_)) {
                        if role == Role::Client {
                            let timeout = self.shared.conn().config().close_timeout;
                            let _ = tokio::time::timeout(timeout, self.wait_eof()).await;
                        }
                        self.shared.shutdown().await;
                        self.tcp_closed = true;
                    }
                    return Ok(Some(ev));
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = self.shared.flush().await;
                    self.shared.shutdown().await;
                    return Err(Error::Protocol(e));
                }
            }
            if state == State::Closed {
                return Ok(None);
            }
            if pending {
                self.shared.flush().await?;
            }
            let n = poll_fn(|cx| {
                let mut c = self.shared.conn();
                poll_read_copied(&mut self.read, cx, &mut c, &mut self.read_size)
            })
            .await?;
            if n == 0 {
                self.tcp_closed = true;
                return Err(Error::Disconnected);
            }
        }
    }

    async fn wait_eof(&mut self) {
        if self.tcp_closed {
            return;
        }
        let mut sink = bytes::BytesMut::with_capacity(256);
        loop {
            sink.clear();
            match poll_fn(|cx| poll_read_buf(Pin::new(&mut self.read), cx, &mut sink)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite> WsWriter<S> {
    /// Queues a message and writes everything queued.
    pub async fn send(&self, msg: &Message) -> Result<(), Error> {
        self.shared.conn().send(msg)?;
        self.shared.flush().await
    }

    /// Queues a message without writing (see [`flush`](Self::flush)).
    pub fn feed(&self, msg: &Message) -> Result<(), Error> {
        self.shared.conn().send(msg)?;
        Ok(())
    }

    /// Queues a frame encoded once for many connections (see
    /// [`WebSocket::feed_shared`](crate::WebSocket::feed_shared)).
    pub fn feed_shared(&self, frame: switchboard_proto::SharedFrame) -> Result<(), Error> {
        self.shared.conn().send_shared(frame)?;
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), Error> {
        self.shared.flush().await
    }

    /// Sends a ping.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.shared.conn().ping(payload)?;
        self.shared.flush().await
    }

    /// Sends a close frame. The reader sees the peer's reply as `Event::Close` (and then
    /// `None`); TCP is closed by the reader as RFC 6455 §7.1.1 says.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared
            .conn()
            .close(Some(CloseFrame::new(code, reason)))?;
        self.shared.flush().await
    }

    /// The connection's lifecycle state.
    pub fn state(&self) -> State {
        self.shared.conn().state()
    }
}
