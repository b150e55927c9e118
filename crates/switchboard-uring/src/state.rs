//! The ring's state behind its lock: the io_uring instance, the streams' slots, and the
//! loop that submits queued entries and hands each completion to its slot (the receive side
//! in `recv`, the send side in `send` and `owned`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::Waker;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::{BufRing, IDLE_RESIDENT};
use crate::owned::OwnedSend;
use crate::slots::{
    slot_and_kind, user_data, Slot, Slots, CANCEL_ALL, CANCEL_RECV, CANCEL_SEND, RECV, SEND,
    SLOT_CHUNK, TIMER,
};
use crate::sys;

/// Queued entries that are submitted at once, without waiting for the park.
const SUBMIT_BATCH: usize = 256;

pub(crate) struct Inner {
    // Dropped first (after `Drop for Inner` waited for what still ran), then the buffers.
    pub(crate) uring: IoUring,
    pub(crate) slots: Slots,
    /// Empty write buffers, lent to streams that write and taken back once their sends
    /// are done, so an idle stream holds none (and a busy one allocates none per write).
    pub(crate) spare: Vec<Vec<u8>>,
    /// Emptied owned-send states, reused.
    #[allow(clippy::vec_box)]
    pub(crate) owned_spare: Vec<Box<OwnedSend>>,
    pub(crate) free: Vec<usize>,
    pub(crate) bufs: BufRing,
    /// Streams whose receive found no free buffer, in order; queued again as buffers return.
    pub(crate) starved: std::collections::VecDeque<usize>,
    /// Received buffers held unread in streams' queues (at most
    /// [`RX_HELD_MAX`](crate::recv::RX_HELD_MAX)).
    pub(crate) rx_held: usize,
    /// Tasks to wake once the lock is released.
    pub(crate) wake: Vec<Waker>,
    /// Whether the eventfd is armed (with the park hook: from each park until the owner runs).
    pub(crate) eventfd_on: bool,
    /// Whether the owner thread runs [`before_park`](crate::before_park), so its queued work
    /// may wait for it.
    pub(crate) hooked: bool,
    /// `reap` is running (it is not re-entered).
    pub(crate) reaping: bool,
    /// The idle timer is running, armed when [`BufRing::taken_total`] was this.
    pub(crate) timer: Option<u64>,
    /// Its duration (the kernel reads it when the timer is submitted).
    pub(crate) timer_span: types::Timespec,
    /// The idle timer freed the cold buffers: `Ring::run` calls the
    /// [`on_idle`](crate::on_idle) hook once the lock is released.
    pub(crate) went_idle: bool,
    pub(crate) owner: std::thread::ThreadId,
}

impl Inner {
    /// The state of a new ring, around `uring` and its receive buffers.
    pub(crate) fn new(uring: IoUring, bufs: BufRing, timer_span: types::Timespec) -> Self {
        Self {
            uring,
            slots: Slots::default(),
            spare: Vec::new(),
            owned_spare: Vec::new(),
            free: Vec::new(),
            bufs,
            starved: std::collections::VecDeque::new(),
            rx_held: 0,
            wake: Vec::new(),
            eventfd_on: true,
            hooked: false,
            reaping: false,
            timer: None,
            timer_span,
            went_idle: false,
            owner: std::thread::current().id(),
        }
    }

    pub(crate) fn insert(&mut self, fd: OwnedFd) -> usize {
        let slot = Slot::new(fd);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let first = self.slots.grow();
                self.free.extend((first + 1..first + SLOT_CHUNK).rev());
                first
            }
        };
        *self.slots.entry(i) = Some(slot);
        i
    }

    pub(crate) fn slot(&self, i: usize) -> &Slot {
        match self.slots.get(i) {
            Some(s) => s,
            _ => unreachable!("a live stream's slot is occupied"),
        }
    }

    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        match self.slots.get_mut(i) {
            Some(s) => s,
            _ => unreachable!("a live stream's slot is occupied"),
        }
    }

    /// Whether queued entries must be submitted now rather than at the thread's next park.
    fn submit_now(&self) -> bool {
        !self.hooked || std::thread::current().id() != self.owner
    }

    /// Tops up the receive buffers, then hands the queued entries to the kernel.
    ///
    /// With nothing queued, the kernel is entered only when it has work to do for us: task
    /// work pending (completions it has yet to post: receives whose data came, sends that
    /// went) or completions held back by a full completion queue. Otherwise the entry would
    /// do nothing; task work flagged just after this look runs at the thread's next system
    /// call anyway (its `epoll_wait` included), and posts with the eventfd armed if it parks.
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        self.bufs.reclaim();
        self.bufs.top_up();
        let mut sq = self.uring.submission();
        sq.sync();
        if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
            return Ok(0);
        }
        drop(sq);
        self.uring.submit()
    }

    pub(crate) fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points at is owned by a slot (or the buffer
            // ring) that outlives the operation: slots are freed only when nothing runs.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                break;
            }
            // Full: hand the queue to the kernel and retry. If the kernel refuses (its
            // completion queue is full), make room by handling completions first.
            if self.submit().is_err() {
                self.reap();
                std::thread::yield_now();
            }
        }
        // Submit now from a thread that will not park this ring, or when many wait (so a
        // thread that never parks still makes progress, and completions are collected).
        if self.submit_now() {
            let _ = self.submit();
        } else if self.uring.submission().len() >= SUBMIT_BATCH {
            let _ = self.submit();
            self.reap();
        }
    }

    /// Queues a cancel of slot `i`'s operation of `kind` (its completion says
    /// `ECANCELED`).
    pub(crate) fn cancel(&mut self, i: usize, kind: u64) {
        let on = if kind == RECV {
            CANCEL_RECV
        } else {
            CANCEL_SEND
        };
        let e = opcode::AsyncCancel::new(user_data(i, kind))
            .build()
            .user_data(user_data(i, on));
        self.push(&e);
    }

    /// Arms the idle timer (see [`timer_fired`](Self::timer_fired)).
    pub(crate) fn start_timer(&mut self) {
        self.timer = Some(self.bufs.taken_total);
        let e = opcode::Timeout::new(&self.timer_span)
            .build()
            .user_data(user_data(0, TIMER));
        self.push(&e);
        let _ = self.submit();
    }

    /// The idle timer completed. Nothing received since it was armed: the thread is idle,
    /// so free buffers beyond the hottest few are given back. (A steady load keeps them:
    /// releasing and faulting them in again cost ~4 % of the CPU at 100 x 20 B.)
    fn timer_fired(&mut self) {
        if self.timer.take() == Some(self.bufs.taken_total) {
            self.bufs.release_cold(IDLE_RESIDENT);
            self.went_idle = true;
        }
    }

    /// The handle is gone: cancel its receive and any send still running, and free the
    /// slot (closing the descriptor) as soon as the kernel has let go of both. Bytes not
    /// sent yet are dropped, as a socket's owner drops what it never wrote: a send still
    /// running here waits for a peer that does not read, and must not keep the socket
    /// open. (The kernel still sends what it took, as after `close(2)`.)
    pub(crate) fn release(&mut self, i: usize) {
        let s = self.slot_mut(i);
        s.orphan = true;
        s.read_waker = None;
        s.write_waker = None;
        if s.reset {
            // Given up on: RST now, which also ends whatever still runs on it.
            sys::reset(s.fd.as_raw_fd());
        }
        self.discard_received(i);
        let s = self.slot_mut(i);
        // Never submitted: let go of what it holds now.
        s.owned_next = None;
        if s.sending {
            // Nothing more is queued once this send ends (`write_error` stops it).
            s.write_error = Some(io::Error::from(io::ErrorKind::BrokenPipe));
            s.filling.clear();
            self.cancel(i, SEND);
        }
        let s = self.slot_mut(i);
        if s.starved {
            // Nothing runs for it: it only waited for a buffer.
            s.starved = false;
            s.receiving = false;
            self.starved.retain(|&j| j != i);
        }
        let s = self.slot(i);
        if s.receiving {
            self.cancel(i, RECV);
        }
        self.maybe_free(i);
    }

    /// Frees an orphaned slot with nothing running; the descriptor closes with it.
    pub(crate) fn maybe_free(&mut self, i: usize) {
        // Already freed: a push that submitted and reaped (a full batch) may have completed
        // the slot's last operation and freed it there.
        let Some(s) = self.slots.get(i) else {
            return;
        };
        if s.orphan && !s.receiving && !s.sending {
            *self.slots.entry(i) = None;
            self.free.push(i);
        }
    }

    pub(crate) fn set_eventfd(&mut self, on: bool) {
        if self.eventfd_on != on {
            self.eventfd_on = on;
            let cq = self.uring.completion();
            if on {
                cq.enable_eventfd();
            } else {
                cq.disable_eventfd();
            }
        }
    }

    /// Submits everything queued and handles the completions, until handling them queues
    /// nothing more (a partial send queues the rest; a starved receive is retried).
    pub(crate) fn flush(&mut self) {
        let mut retried = false;
        loop {
            let _ = self.submit();
            self.reap();
            // Once per flush: while every buffer is taken, a retry fails again at once.
            if !retried && !self.starved.is_empty() {
                self.feed_starved();
                retried = true;
            }
            // Completions that found the completion queue full wait in the kernel until the
            // next submit (which collects them): go round again for them too.
            let mut sq = self.uring.submission();
            sq.sync();
            if sq.is_empty() && !sq.cq_overflow() {
                return;
            }
        }
    }

    /// Handles every completion waiting in the queue. (Handling one may queue entries, and
    /// queueing may reap: the nested call returns at once, the outer loop goes on.)
    pub(crate) fn reap(&mut self) {
        if self.reaping {
            return;
        }
        self.reaping = true;
        loop {
            let Some(cqe) = self.uring.completion().next() else {
                break;
            };
            self.complete(&cqe);
        }
        self.reaping = false;
    }

    fn complete(&mut self, cqe: &cqueue::Entry) {
        let (i, kind) = slot_and_kind(cqe.user_data());
        let res = cqe.result();
        if kind == TIMER {
            self.timer_fired();
            return;
        }
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        match kind {
            CANCEL_RECV | CANCEL_SEND if res == -libc::ENOENT || res == -libc::EALREADY => {
                cancel_missed(s, kind);
                return;
            }
            RECV if res == -libc::ENOBUFS && !s.orphan => {
                self.no_buffer(i);
                return;
            }
            RECV => self.recv_completed(i, res, cqe.flags()),
            SEND if s.owned.is_some() => {
                self.owned_sent(i, res);
                if let Some(w) = self.slot_mut(i).write_waker.take() {
                    self.wake.push(w);
                }
            }
            SEND => self.send_completed(i, res),
            _ => {}
        }
        self.maybe_free(i);
    }
}

/// A cancel found nothing to cancel. A multishot receive that finds data at every turn is
/// between turns (queued to run again) more often than waiting, and a cancel finds it only
/// waiting. The next completion that still wants it cancels again; a dropped stream's socket
/// is reset instead, which ends both operations at once (it is given up on: nothing is read
/// or sent any more).
fn cancel_missed(s: &mut Slot, kind: u64) {
    let running = if kind == CANCEL_RECV {
        s.receiving
    } else {
        s.sending
    };
    if running && s.orphan {
        sys::reset(s.fd.as_raw_fd());
    } else if kind == CANCEL_RECV && s.receiving && s.cancelling {
        s.cancelling = false;
    }
}

impl Drop for Inner {
    /// Cancels what still runs and waits (up to a second) for the kernel to finish with it,
    /// so no operation touches a buffer after it is freed. A ring is dropped when its
    /// thread ends, for example when a runtime shuts down.
    fn drop(&mut self) {
        let busy = |inner: &Self| {
            inner
                .slots
                .iter()
                .any(|s| (s.receiving && !s.starved) || s.sending)
        };
        if !busy(self) {
            return;
        }
        // Nothing new may start: no more sends, cancels or re-armed receives.
        self.starved.clear();
        for s in self.slots.iter_mut() {
            s.cancelling = true;
            s.write_error = Some(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let all = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(0, CANCEL_ALL));
        // SAFETY: a cancel points at no buffer.
        let _ = unsafe { self.uring.submission().push(&all) };
        let ts = types::Timespec::new().nsec(10_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        for _ in 0..100 {
            let _ = self.uring.submitter().submit_with_args(1, &args);
            self.reap();
            if !busy(self) {
                return;
            }
        }
    }
}
