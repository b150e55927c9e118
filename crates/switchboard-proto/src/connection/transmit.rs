//! The transport-facing buffers: the receive buffer a transport reads into, and the
//! transmit queue (shared chunks, then the transmit buffer) it writes from.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::{slot_bytes, slot_mut, Connection, State};

/// The shared part of the transmit queue: chunks in order, written before `out`.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    queue: VecDeque<Bytes>,
    /// Total bytes in `queue`.
    len: usize,
}

impl Connection {
    fn chunks(&self) -> Option<&Chunks> {
        self.extras()?.chunks.as_deref()
    }

    fn chunks_mut(&mut self) -> Option<&mut Chunks> {
        self.extras.as_deref_mut()?.chunks.as_deref_mut()
    }

    /// The receive buffer, for reading from the network straight into it (no extra copy).
    /// Made, empty, if the connection holds none.
    pub fn read_buf_mut(&mut self) -> &mut BytesMut {
        slot_mut(&mut self.read_buf)
    }

    /// The receive buffer's slot, for transports that pool buffers: put a buffer in before
    /// reading, take it out once it is empty. `None` holds no memory. Only an empty buffer
    /// may be taken: what it holds is input not yet processed.
    ///
    /// ```
    /// use switchboard_proto::{Config, Connection, Role};
    /// let mut c = Connection::new(Role::Server, Config::default());
    /// *c.read_buf_slot() = Some(Box::new(bytes::BytesMut::with_capacity(4096)));
    /// assert_eq!(c.poll_event().unwrap(), None);
    /// let pooled = c.read_buf_slot().take().unwrap();
    /// assert!(pooled.is_empty() && pooled.capacity() >= 4096);
    /// ```
    pub fn read_buf_slot(&mut self) -> &mut Option<Box<BytesMut>> {
        &mut self.read_buf
    }

    /// How many payload bytes the frame being read still needs, if one is partly read; lets
    /// the transport size its next read.
    pub fn read_hint(&self) -> usize {
        match &self.cur {
            Some(f) => f.len().saturating_sub(slot_bytes(&self.read_buf).len()),
            None => 0,
        }
    }

    /// Moves what `out` holds into the chunk queue, then appends `b` after it.
    pub(super) fn push_chunk(&mut self, b: Bytes) {
        let head = match self.out.as_deref_mut() {
            Some(out) if !out.is_empty() => Some(out.split().freeze()),
            _ => None,
        };
        let chunks = self.extras_mut().chunks.get_or_insert_with(Box::default);
        if let Some(head) = head {
            chunks.len += head.len();
            chunks.queue.push_back(head);
        }
        if !b.is_empty() {
            chunks.len += b.len();
            chunks.queue.push_back(b);
        }
    }

    /// Bytes queued for the network, shared chunks and the transmit buffer together.
    pub fn queued_transmit(&self) -> usize {
        slot_bytes(&self.out).len() + self.chunks().map_or(0, |c| c.len)
    }

    // ----- output ------------------------------------------------------------------------

    /// The first contiguous run of bytes waiting to be written to the network (empty when
    /// nothing is queued). When shared frames are queued ([`send_shared`](Self::send_shared),
    /// large server payloads) there may be more after it: write it, call
    /// [`advance_transmit`](Self::advance_transmit), and ask again, or take every run at once
    /// with [`transmit_slices`](Self::transmit_slices) for a vectored write.
    pub fn pending_transmit(&self) -> &[u8] {
        match self.chunks().and_then(|c| c.queue.front()) {
            Some(front) => front,
            None => slot_bytes(&self.out),
        }
    }

    /// Fills `dst` with the queued runs of bytes, in order, for a vectored write; returns how
    /// many slices it filled.
    pub fn transmit_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let chunks = self
            .chunks()
            .into_iter()
            .flat_map(|c| c.queue.iter().map(|b| &b[..]));
        let out = slot_bytes(&self.out);
        let runs = chunks.chain((!out.is_empty()).then_some(out));
        for (slot, run) in dst.iter_mut().zip(runs) {
            *slot = IoSlice::new(run);
            n += 1;
        }
        n
    }

    /// Marks `n` queued bytes as written (across runs, in order).
    pub fn advance_transmit(&mut self, mut n: usize) {
        if let Some(c) = self.chunks_mut() {
            while n > 0 {
                let Some(front) = c.queue.front_mut() else {
                    break;
                };
                let step = n.min(front.len());
                front.advance(step);
                c.len -= step;
                n -= step;
                if front.is_empty() {
                    c.queue.pop_front();
                }
            }
        }
        if let Some(out) = self.out.as_deref_mut() {
            if n >= out.len() {
                // All written: rewind instead of advancing, so the buffer keeps its whole
                // capacity and goes back to a pool as it came.
                out.clear();
            } else {
                out.advance(n);
            }
        }
    }

    /// Whether nothing is queued for the network.
    pub fn transmit_is_empty(&self) -> bool {
        slot_bytes(&self.out).is_empty() && self.chunks().is_none_or(|c| c.queue.is_empty())
    }

    /// Takes the first queued run of bytes as an owned [`Bytes`], for transports that hand
    /// buffers to an owned write (the same order as [`pending_transmit`](Self::pending_transmit)).
    pub fn take_transmit_chunk(&mut self) -> Option<Bytes> {
        if let Some(c) = self.chunks_mut() {
            if let Some(b) = c.queue.pop_front() {
                c.len -= b.len();
                return Some(b);
            }
        }
        let out = self.out.as_deref_mut()?;
        (!out.is_empty()).then(|| out.split().freeze())
    }

    /// The transmit buffer that new frames are encoded into (after any shared chunks). Made,
    /// empty, if the connection holds none.
    pub fn transmit_buf_mut(&mut self) -> &mut BytesMut {
        slot_mut(&mut self.out)
    }

    /// The transmit buffer's slot, for transports that lend it pooled memory: put a buffer in
    /// before queueing frames, take it out once everything was written (see
    /// [`read_buf_slot`](Self::read_buf_slot)). Only an empty buffer may be taken.
    pub fn transmit_buf_slot(&mut self) -> &mut Option<Box<BytesMut>> {
        &mut self.out
    }

    /// Whether everything queued was written and the TCP connection should now be closed:
    /// the close handshake completed or the connection failed.
    ///
    /// RFC 6455 §7.1.1 wants the server to close TCP first; a client should give the server
    /// [`Config::close_timeout`](crate::Config::close_timeout) to do so before closing itself.
    pub fn should_close_tcp(&self) -> bool {
        self.state == State::Closed && self.transmit_is_empty()
    }

    /// Drops the read and write buffers' memory when both are empty, so an idle connection
    /// holds no buffer. Returns whether anything was released.
    pub fn release_idle_buffers(&mut self) -> bool {
        let mut released = false;
        if slot_bytes(&self.read_buf).is_empty() && self.cur.is_none() {
            released |= self.read_buf.take().is_some();
        }
        if slot_bytes(&self.out).is_empty() {
            released |= self.out.take().is_some();
        }
        if let Some(x) = self.extras.as_deref_mut() {
            released |= x.room.take().is_some();
        }
        released
    }
}
