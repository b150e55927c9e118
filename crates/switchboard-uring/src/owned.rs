//! Owned sends: runs of bytes (`Bytes`) the ring holds by reference until the kernel is
//! done with them, instead of copying them into the stream's write buffer
//! ([`UringStream::poll_send_owned`](crate::UringStream::poll_send_owned)).
//!
//! One owned send runs per stream at a time; runs queued meanwhile wait in a second one,
//! sent next. Copied bytes (`poll_write`'s) always go after both, so the order is the order
//! of writing: runs are taken by reference only while no copied bytes wait.

use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use bytes::Bytes;
use io_uring::{opcode, squeue, types};

use crate::send::{SPARES, WRITE_LIMIT};
use crate::slots::{user_data, SEND};
use crate::state::Inner;

/// Runs this long or shorter are copied rather than held (a frame header, a pong: copying a
/// few bytes costs less than holding a buffer, and a buffer they were split from is whole
/// again at once), unless they end where the next run starts.
pub(crate) const COPY_MAX: usize = 32;
/// Runs one owned send takes at most (its `sendmsg(2)`'s iovecs, before adjacent runs are
/// joined).
pub(crate) const RUNS_MAX: usize = 64;

/// One run of an owned send.
enum Run {
    /// Held by reference.
    Held(Bytes),
    /// Copied into the send's `copied` bytes.
    Copied(Range<usize>),
}

/// One send of runs held by reference: a `send(2)` when what is not sent yet is one run of
/// memory (a header written in front of its payload), else a `sendmsg(2)` of every run.
pub(crate) struct OwnedSend {
    runs: Vec<Run>,
    /// The short runs, copied.
    copied: Vec<u8>,
    /// Bytes in all runs.
    len: usize,
    /// How much of the runs (together) is sent.
    sent: usize,
    /// What the submitted entry points at (stable: boxed, and kept until completion).
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

// SAFETY: the raw pointers point into `runs` and `copied` (owned here) and `iov`.
unsafe impl Send for OwnedSend {}

impl OwnedSend {
    fn new() -> Self {
        Self {
            runs: Vec::new(),
            copied: Vec::new(),
            len: 0,
            sent: 0,
            iov: Vec::new(),
            // SAFETY: all-zero is a valid (empty) msghdr.
            msg: unsafe { std::mem::zeroed() },
        }
    }

    /// Bytes not sent yet.
    pub(crate) fn unsent(&self) -> usize {
        self.len - self.sent
    }

    fn is_full(&self) -> bool {
        self.runs.len() >= RUNS_MAX
    }

    /// Appends `run`. A short run before it that does not end where `run` starts is copied.
    fn push(&mut self, run: Bytes) {
        if run.is_empty() {
            return;
        }
        self.copy_last_unless_joined(Some(&run));
        self.len += run.len();
        self.runs.push(Run::Held(run));
    }

    /// Copies the last run if it is short and does not end where `next` starts (so it
    /// cannot go out as one run of memory with it).
    fn copy_last_unless_joined(&mut self, next: Option<&Bytes>) {
        let Some(Run::Held(last)) = self.runs.last() else {
            return;
        };
        let joined = next.is_some_and(|n| last.as_ptr_range().end == n.as_ptr());
        if last.len() > COPY_MAX || joined {
            return;
        }
        let start = self.copied.len();
        self.copied.extend_from_slice(last);
        let end = self.copied.len();
        if let Some(r) = self.runs.last_mut() {
            *r = Run::Copied(start..end);
        }
    }

    /// Lets go of every run, keeping the memory for the next send.
    fn clear(&mut self) {
        self.runs.clear();
        self.copied.clear();
        self.iov.clear();
        self.len = 0;
        self.sent = 0;
    }

    /// The entry that sends what is not sent yet. Runs that are one run of memory (a header
    /// written where its payload starts) go out as one iovec: each pointer stays inside its
    /// own buffer, and the kernel reads on across the boundary, into the next run (held
    /// with it until the send completes).
    fn entry(&mut self, fd: types::Fd) -> squeue::Entry {
        self.iov.clear();
        let mut skip = self.sent;
        for run in &self.runs {
            let bytes = match run {
                Run::Held(b) => &b[..],
                Run::Copied(r) => &self.copied[r.clone()],
            };
            if skip >= bytes.len() {
                skip -= bytes.len();
                continue;
            }
            let rest = &bytes[skip..];
            skip = 0;
            match self.iov.last_mut() {
                Some(last)
                    if last
                        .iov_base
                        .cast_const()
                        .cast::<u8>()
                        .wrapping_add(last.iov_len)
                        == rest.as_ptr() =>
                {
                    last.iov_len += rest.len();
                }
                _ => self.iov.push(libc::iovec {
                    iov_base: rest.as_ptr().cast_mut().cast(),
                    iov_len: rest.len(),
                }),
            }
        }
        if let [one] = self.iov[..] {
            // At most 4 GiB per entry: a longer send goes out in parts (`owned_sent`
            // queues the rest).
            let len = u32::try_from(one.iov_len).unwrap_or(u32::MAX);
            return opcode::Send::new(fd, one.iov_base.cast_const().cast(), len).build();
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len() as _;
        opcode::SendMsg::new(fd, &self.msg).build()
    }
}

impl Inner {
    /// Takes runs from `runs` to send by reference after what waits, while it can (see
    /// [`UringStream::poll_send_owned`](crate::UringStream::poll_send_owned)): how many it
    /// took, or pending (with the writer to be woken) when [`WRITE_LIMIT`] waits already.
    pub(crate) fn poll_send_owned(
        &mut self,
        i: usize,
        cx: &mut Context<'_>,
        runs: &mut dyn Iterator<Item = Bytes>,
    ) -> Poll<io::Result<usize>> {
        let s = self.slot_mut(i);
        if let Some(e) = s.write_error.take() {
            return Poll::Ready(Err(e));
        }
        if s.copied_unsent() > 0 {
            // Copied bytes wait: whatever comes next goes after them, copied too.
            return Poll::Ready(Ok(0));
        }
        // Bytes waiting, the queued runs included (when they are added to).
        let waiting = s.unsent();
        if waiting >= WRITE_LIMIT {
            self.wait_for_sends(i, cx);
            return Poll::Pending;
        }
        let start = s.owned.is_none();
        let mut o = self
            .owned_spare
            .pop()
            .unwrap_or_else(|| Box::new(OwnedSend::new()));
        let s = self.slot_mut(i);
        let target = match (start, s.owned_next.as_mut()) {
            (false, Some(next)) => next,
            _ => &mut o,
        };
        let (mut taken, mut added) = (0, 0);
        while !target.is_full() && waiting + added < WRITE_LIMIT {
            let Some(run) = runs.next() else {
                break;
            };
            added += run.len();
            target.push(run);
            taken += 1;
        }
        target.copy_last_unless_joined(None);
        if o.len == 0 {
            self.recycle_owned(Some(o));
        } else if start {
            s.owned = Some(o);
            self.queue_owned(i);
        } else {
            s.owned_next = Some(o);
        }
        Poll::Ready(Ok(taken))
    }

    /// Keeps an emptied owned send for reuse (a bounded number).
    fn recycle_owned(&mut self, o: Option<Box<OwnedSend>>) {
        if let Some(mut o) = o {
            o.clear();
            if self.owned_spare.len() < SPARES {
                self.owned_spare.push(o);
            }
        }
    }

    /// Queues the slot's owned send (what of it is not sent yet).
    fn queue_owned(&mut self, i: usize) {
        let s = self.slot_mut(i);
        let fd = types::Fd(s.fd.as_raw_fd());
        let Some(o) = s.owned.as_deref_mut() else {
            return;
        };
        let e = o.entry(fd).user_data(user_data(i, SEND));
        s.sending = true;
        self.push(&e);
    }

    /// An owned send completed with `res`.
    pub(crate) fn owned_sent(&mut self, i: usize, res: i32) {
        let s = self.slot_mut(i);
        s.sending = false;
        let Some(o) = s.owned.as_deref_mut() else {
            return;
        };
        if res >= 0 {
            o.sent += res.unsigned_abs() as usize;
            if o.sent < o.len {
                if s.write_error.is_none() {
                    self.queue_owned(i);
                }
                return;
            }
        } else if res == -libc::EAGAIN {
            if s.write_error.is_none() {
                self.queue_owned(i);
            }
            return;
        } else {
            s.write_error = Some(io::Error::from_raw_os_error(-res));
            s.filling.clear();
        }
        // Done (or failed): the runs are let go, so their memory can be reused.
        let done = s.owned.take();
        let next = s.owned_next.take();
        let failed = s.write_error.is_some();
        self.recycle_owned(done);
        if failed {
            self.recycle_owned(next);
            return;
        }
        // What waits next: runs queued by reference meanwhile, then copied bytes.
        let s = self.slot_mut(i);
        if let Some(next) = next {
            s.owned = Some(next);
            self.queue_owned(i);
        } else if !s.filling.is_empty() {
            self.queue_send(i);
        }
    }
}
