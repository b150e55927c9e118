//! Streams' slots: what the ring keeps per stream (its socket, what it received and not
//! read yet, what it wrote and not sent yet), and the operation kinds completions name.

use std::io;
use std::os::fd::OwnedFd;
use std::task::Waker;

use bytes::{Buf, BytesMut};
use tokio::io::ReadBuf;

use crate::owned::OwnedSend;
use crate::recv::RX_LIMIT;

/// A slot's multishot receive.
pub(crate) const RECV: u64 = 1;
/// A slot's send (copied or owned).
pub(crate) const SEND: u64 = 2;
/// A cancel of the slot's receive, or of its send.
pub(crate) const CANCEL_RECV: u64 = 3;
pub(crate) const CANCEL_SEND: u64 = 4;
/// The cancel of everything, when the ring is dropped.
pub(crate) const CANCEL_ALL: u64 = 5;
/// The ring's idle timer (slot 0, kind 0).
pub(crate) const TIMER: u64 = 0;

/// An operation's `user_data`: its slot and kind.
pub(crate) fn user_data(slot: usize, kind: u64) -> u64 {
    ((slot as u64) << 3) | kind
}

/// The slot and kind a completion's `user_data` names.
pub(crate) fn slot_and_kind(user_data: u64) -> (usize, u64) {
    ((user_data >> 3) as usize, user_data & 7)
}

/// One stream's state, shared by its handle and its completions.
pub(crate) struct Slot {
    pub(crate) fd: OwnedFd,
    /// A receive is queued or running, or waits for a buffer (`starved`).
    pub(crate) receiving: bool,
    /// The last receive found every buffer taken; it is queued again when one returns.
    pub(crate) starved: bool,
    /// Received bytes not read yet: buffer id, offset, end.
    pub(crate) rx: RxQueue,
    pub(crate) eof: bool,
    pub(crate) read_error: Option<io::Error>,
    pub(crate) read_waker: Option<Waker>,
    /// A send is queued or running, for `inflight[sent..]`.
    pub(crate) sending: bool,
    pub(crate) inflight: Vec<u8>,
    pub(crate) sent: usize,
    /// Bytes written since the running send started.
    pub(crate) filling: Vec<u8>,
    /// A send of buffers held by reference ([`UringStream::poll_send_owned`]), running;
    /// sent before `owned_next` and `filling`.
    ///
    /// [`UringStream::poll_send_owned`]: crate::UringStream::poll_send_owned
    pub(crate) owned: Option<Box<OwnedSend>>,
    /// Buffers held by reference queued while `owned` runs (never without it): sent next,
    /// before `filling`.
    pub(crate) owned_next: Option<Box<OwnedSend>>,
    /// A cancel of the multishot receive is on its way (the reader fell behind).
    pub(crate) cancelling: bool,
    pub(crate) write_error: Option<io::Error>,
    pub(crate) write_waker: Option<Waker>,
    /// The handle was dropped: free the slot once nothing runs.
    pub(crate) orphan: bool,
    /// Reset the connection when the handle is dropped
    /// ([`UringStream::reset_on_drop`](crate::UringStream::reset_on_drop)).
    pub(crate) reset: bool,
}

impl Slot {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            receiving: false,
            starved: false,
            rx: RxQueue::default(),
            eof: false,
            read_error: None,
            read_waker: None,
            sending: false,
            inflight: Vec::new(),
            sent: 0,
            filling: Vec::new(),
            owned: None,
            owned_next: None,
            cancelling: false,
            write_error: None,
            write_waker: None,
            orphan: false,
            reset: false,
        }
    }

    /// Bytes waiting to be sent (written and not sent yet).
    pub(crate) fn unsent(&self) -> usize {
        self.copied_unsent()
            + self.owned.as_ref().map_or(0, |o| o.unsent())
            + self.owned_next.as_ref().map_or(0, |o| o.unsent())
    }

    /// Copied bytes waiting to be sent (`poll_write`'s, as opposed to owned sends').
    pub(crate) fn copied_unsent(&self) -> usize {
        self.filling.len() + (self.inflight.len() - self.sent)
    }
}

/// Slots in chunks of `SLOT_CHUNK`: a full chunk is never moved or doubled, so many
/// streams cost their slots and at most one chunk more (a `Vec` may hold twice as many).
#[derive(Default)]
pub(crate) struct Slots {
    chunks: Vec<Box<[Option<Slot>]>>,
}

pub(crate) const SLOT_CHUNK: usize = 256;

impl Slots {
    pub(crate) fn get(&self, i: usize) -> Option<&Slot> {
        self.chunks.get(i / SLOT_CHUNK)?[i % SLOT_CHUNK].as_ref()
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.chunks.get_mut(i / SLOT_CHUNK)?[i % SLOT_CHUNK].as_mut()
    }

    /// The entry of slot `i`, which must be below [`grow`](Self::grow)'s results.
    pub(crate) fn entry(&mut self, i: usize) -> &mut Option<Slot> {
        &mut self.chunks[i / SLOT_CHUNK][i % SLOT_CHUNK]
    }

    /// Adds a chunk, returning its first index; the caller keeps the others as free.
    pub(crate) fn grow(&mut self) -> usize {
        self.chunks
            .push(std::iter::repeat_with(|| None).take(SLOT_CHUNK).collect());
        (self.chunks.len() - 1) * SLOT_CHUNK
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.chunks.iter_mut().flat_map(|c| c.iter_mut().flatten())
    }
}

/// A stream's received, unread buffers (id, start, end), in order. The first is kept
/// inline: a stream that reads what it gets holds one at a time and allocates nothing.
#[derive(Default)]
pub(crate) struct RxQueue {
    first: Option<(u16, u32, u32)>,
    /// Boxed: only a stream that falls behind its receives needs it.
    #[allow(clippy::box_collection)]
    rest: Option<Box<std::collections::VecDeque<(u16, u32, u32)>>>,
    /// Bytes received after every queued buffer, copied out of the ring's buffers because
    /// the stream (or all streams together) held too many unread ([`RX_LIMIT`],
    /// [`RX_HELD_MAX`](crate::recv::RX_HELD_MAX)). Read after the buffers; while it holds
    /// anything, newer bytes join it, so the order stays the order of arrival. Bounded by
    /// what arrives before the stream's receive is cancelled.
    pub(crate) spill: Option<Box<BytesMut>>,
}

impl RxQueue {
    /// Whether newly received bytes must be copied into the spill rather than queued.
    pub(crate) fn spilling(&self) -> bool {
        self.spill.is_some() || self.len() >= RX_LIMIT
    }

    /// Copies up to `buf.remaining()` spilled bytes into `buf`; whether any were.
    pub(crate) fn read_spill(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some(spill) = self.spill.as_deref_mut() else {
            return false;
        };
        let n = spill.len().min(buf.remaining());
        buf.put_slice(&spill[..n]);
        spill.advance(n);
        if spill.is_empty() {
            self.spill = None;
        }
        n > 0
    }

    pub(crate) fn push_back(&mut self, e: (u16, u32, u32)) {
        if self.first.is_none() {
            self.first = Some(e);
        } else {
            self.rest.get_or_insert_default().push_back(e);
        }
    }

    pub(crate) fn front(&self) -> Option<(u16, u32, u32)> {
        self.first
    }

    pub(crate) fn pop_front(&mut self) -> Option<(u16, u32, u32)> {
        let e = self.first.take();
        self.first = self.rest.as_mut().and_then(|r| r.pop_front());
        e
    }

    pub(crate) fn advance_front(&mut self, n: u32) {
        if let Some(f) = &mut self.first {
            f.1 += n;
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }
}
