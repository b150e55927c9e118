//! The receive side of a slot: its multishot receive, what it received and not read yet
//! (queued buffers, then the spill), the reads that copy or take it, and the limits that
//! keep a reader who stopped reading from taking every buffer.

use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use io_uring::{cqueue, opcode, types};
use tokio::io::ReadBuf;

use crate::bufring::{BUFFERS, BUFFER_SIZE, GROUP};
use crate::send::WRITE_LIMIT;
use crate::slots::{user_data, RECV};
use crate::state::Inner;
use crate::stream::Received;
use crate::sys;

/// Received buffers a stream may hold unread: past this its receive is cancelled (and
/// armed again once the reader catches up), and what still arrives before the cancel
/// lands is copied out of the ring's buffers (its spill), so one slow reader cannot take
/// every buffer.
pub(crate) const RX_LIMIT: usize = 8;
/// Received buffers all streams together may hold unread: past this, what arrives is
/// copied into each stream's spill and the buffer goes straight back, so readers that
/// stopped reading (a task waiting to write to a peer that never reads) can never hold
/// the ring's buffers all at once and starve every other stream's receives.
pub(crate) const RX_HELD_MAX: usize = BUFFERS as usize / 2;
/// The most a stream's spill may hold while the stream cannot send (its peer does not
/// read what it is sent). A multishot receive on a socket that never runs dry cannot
/// always be cancelled (the kernel finds it only between its turns), so a peer that keeps
/// sending without reading the replies would otherwise grow the spill without bound: past
/// this the stream fails with an error and its connection is reset, which ends the
/// receive. A reader that is only behind (a burst larger than it reads per round, a large
/// message) may spill up to [`SPILL_HARD_MAX`], as a socket's receive buffer holds what
/// its reader has not read yet.
const SPILL_MAX: usize = 1024 * 1024;
/// The most a stream's spill may hold in any case.
const SPILL_HARD_MAX: usize = 64 * 1024 * 1024;

impl Inner {
    pub(crate) fn queue_recv(&mut self, i: usize) {
        let fd = self.slot(i).fd.as_raw_fd();
        self.slot_mut(i).receiving = true;
        // Multishot: armed once, it receives whenever data arrives (a completion per
        // buffer) until it is cancelled, fails, or finds no buffer.
        let e = opcode::RecvMulti::new(types::Fd(fd), GROUP)
            .build()
            .user_data(user_data(i, RECV));
        self.push(&e);
    }

    pub(crate) fn poll_read(
        &mut self,
        i: usize,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut copied = false;
        while buf.remaining() > 0 {
            let Some((bid, start, end)) = self.slot(i).rx.front() else {
                break;
            };
            let (start, end) = (start as usize, end as usize);
            let n = (end - start).min(buf.remaining());
            buf.put_slice(&self.bufs.get(bid, end)[start..start + n]);
            copied = true;
            self.consume_front(i, bid, start + n == end, n);
        }
        // Spilled bytes came after every queued buffer.
        let rx = &mut self.slot_mut(i).rx;
        if buf.remaining() > 0 && rx.front().is_none() {
            copied |= rx.read_spill(buf);
        }
        if copied {
            return Poll::Ready(Ok(()));
        }
        self.poll_nothing_received(i, cx)
    }

    /// Marks `n` bytes of slot `i`'s first received run (in buffer `bid`) read; when that
    /// was all of it (`whole`), the buffer goes back.
    fn consume_front(&mut self, i: usize, bid: u16, whole: bool, n: usize) {
        let s = self.slot_mut(i);
        if whole {
            s.rx.pop_front();
            self.rx_held -= 1;
            self.give_back(bid);
        } else {
            s.rx.advance_front(n as u32);
        }
    }

    /// Nothing received is left to read: the receive's error, the end of the stream
    /// (`Ok`), or pending with the receive armed.
    fn poll_nothing_received(&mut self, i: usize, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = self.slot_mut(i);
        if let Some(e) = s.read_error.take() {
            return Poll::Ready(Err(e));
        }
        if s.eof {
            return Poll::Ready(Ok(()));
        }
        s.read_waker = Some(cx.waker().clone());
        if !s.receiving {
            self.queue_recv(i);
        }
        Poll::Pending
    }

    /// Reads the next run of received bytes: handed over as it is when `take_min` bytes or
    /// more, else copied into the buffer `copy_into` gives (see
    /// [`UringStream::poll_read_take`](crate::UringStream::poll_read_take)).
    /// `Copied(0)` at the end of the stream.
    pub(crate) fn poll_read_take<'b>(
        &mut self,
        i: usize,
        cx: &mut Context<'_>,
        take_min: usize,
        copy_into: impl FnOnce() -> &'b mut BytesMut,
    ) -> Poll<io::Result<Received>> {
        if let Some((bid, start, end)) = self.slot(i).rx.front() {
            let (start, end) = (start as usize, end as usize);
            if end - start >= take_min {
                self.slot_mut(i).rx.pop_front();
                self.rx_held -= 1;
                let bytes = self.bufs.lend(bid, start, end);
                if !self.starved.is_empty() {
                    self.feed_starved();
                }
                return Poll::Ready(Ok(Received::Lent(bytes)));
            }
            // Copied whole.
            let buf = copy_into();
            buf.reserve(end - start);
            buf.extend_from_slice(&self.bufs.get(bid, end)[start..end]);
            self.consume_front(i, bid, true, end - start);
            return Poll::Ready(Ok(Received::Copied(end - start)));
        }
        let rx = &mut self.slot_mut(i).rx;
        if let Some(spill) = rx.spill.as_deref_mut() {
            // Rare (a reader that fell behind): copied, a buffer's worth at a time, as
            // the ring's buffers would have handed it over.
            let n = spill.len().min(BUFFER_SIZE);
            copy_into().extend_from_slice(&spill[..n]);
            spill.advance(n);
            if spill.is_empty() {
                rx.spill = None;
            }
            return Poll::Ready(Ok(Received::Copied(n)));
        }
        self.poll_nothing_received(i, cx)
            .map_ok(|()| Received::Copied(0))
    }

    /// Slot `i`'s peer sent more than [`SPILL_MAX`] past what its reader read while not
    /// reading what it was sent (or [`SPILL_HARD_MAX`] in any case): what it
    /// holds is let go, its reader gets an error, and the connection is reset (which ends
    /// a receive that cancelling could not).
    fn overrun(&mut self, i: usize) {
        let spilled = self.discard_received(i);
        let s = self.slot_mut(i);
        s.eof = true;
        s.read_error = Some(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "receive overrun: the peer kept sending ({} KiB beyond what was read) while \
                 not reading what it is sent; connection reset",
                spilled / 1024
            ),
        ));
        sys::reset(s.fd.as_raw_fd());
        if let Some(w) = s.read_waker.take() {
            self.wake.push(w);
        }
    }

    /// Lets go of what slot `i` received and has not read: its buffers go back to the
    /// kernel, its spill is freed. Returns how many bytes the spill held.
    pub(crate) fn discard_received(&mut self, i: usize) -> usize {
        let spilled = self.slot_mut(i).rx.spill.take().map_or(0, |b| b.len());
        while let Some((bid, _, _)) = self.slot_mut(i).rx.pop_front() {
            self.rx_held -= 1;
            self.give_back(bid);
        }
        spilled
    }

    /// Queues a cancel of slot `i`'s receive unless one is on its way.
    pub(crate) fn cancel_receive(&mut self, i: usize) {
        let s = self.slot_mut(i);
        if !s.cancelling {
            s.cancelling = true;
            self.cancel(i, RECV);
        }
    }

    /// Returns a receive buffer to the kernel, and lets a receive that waited for one go.
    fn give_back(&mut self, bid: u16) {
        self.bufs.recycle(bid);
        if !self.starved.is_empty() {
            self.feed_starved();
        }
    }

    /// Arms again as many receives that found no buffer as buffers were handed to the
    /// kernel since the last time: each may take one, in the order they starved (so a
    /// ring with every buffer taken does not spin).
    pub(crate) fn feed_starved(&mut self) {
        self.bufs.top_up();
        let n = std::mem::take(&mut self.bufs.handed);
        for _ in 0..n {
            let Some(i) = self.starved.pop_front() else {
                return;
            };
            if let Some(s) = self.slots.get_mut(i) {
                s.starved = false;
                if s.rx.spilling() {
                    // It holds enough unread: armed again when its reader catches up.
                    s.receiving = false;
                    continue;
                }
                self.queue_recv(i);
            }
        }
    }

    /// Slot `i`'s receive (the stream is not dropped) found every buffer taken.
    pub(crate) fn no_buffer(&mut self, i: usize) {
        let s = self.slot_mut(i);
        if s.rx.spilling() {
            // This stream holds enough unread: its reader arms the receive again once it
            // has caught up.
            s.receiving = false;
            s.cancelling = false;
            return;
        }
        // Wait for a buffer without waking the reader (which would only ask again).
        s.starved = true;
        self.starved.push_back(i);
        self.bufs.starved();
    }

    /// Slot `i`'s receive completed with `res` (and the completion's `flags`).
    pub(crate) fn recv_completed(&mut self, i: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let s = self.slot_mut(i);
        if !more {
            // Ended: the next read arms it again.
            s.receiving = false;
            s.cancelling = false;
        }
        if res > 0 {
            self.bufs.taken();
            let bid = cqueue::buffer_select(flags).unwrap_or(0);
            self.received(i, bid, res.unsigned_abs(), more);
        } else if res == 0 {
            s.eof = true;
        } else if res == -libc::EAGAIN {
            // Not an error: the next read arms the receive again.
        } else if res == -libc::ECANCELED {
            // Our cancel (a slow reader, or the handle dropped): not an error.
        } else if !s.orphan && !s.eof {
            s.read_error = Some(io::Error::from_raw_os_error(-res));
        }
        if let Some(w) = self.slot_mut(i).read_waker.take() {
            self.wake.push(w);
        }
    }

    /// Slot `i` received `n` bytes into buffer `bid` (its receive goes on if `more`):
    /// queued for its reader, or copied into its spill, or let go.
    fn received(&mut self, i: usize, bid: u16, n: u32, more: bool) {
        let s = self.slot_mut(i);
        let spilled = s.rx.spill.as_ref().map_or(0, |b| b.len());
        let spill_max = if s.unsent() >= WRITE_LIMIT {
            SPILL_MAX
        } else {
            SPILL_HARD_MAX
        };
        if s.orphan || s.eof {
            // Given up on, or reset for an overrun: nothing more is read.
            if more {
                self.cancel_receive(i);
            }
            self.give_back(bid);
        } else if spilled + n as usize > spill_max {
            self.overrun(i);
            self.give_back(bid);
        } else {
            let Some(s) = self.slots.get_mut(i) else {
                return;
            };
            let spill = s.rx.spilling() || self.rx_held >= RX_HELD_MAX;
            if spill {
                // Copied out, and the buffer goes straight back to the kernel.
                let data = self.bufs.get(bid, n as usize);
                s.rx.spill
                    .get_or_insert_with(|| Box::new(BytesMut::new()))
                    .extend_from_slice(data);
            } else {
                s.rx.push_back((bid, 0, n));
                self.rx_held += 1;
            }
            if more && s.rx.spilling() {
                self.cancel_receive(i);
            }
            if spill {
                self.give_back(bid);
            }
        }
    }
}
