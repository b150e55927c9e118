//! One thread's ring: the io_uring instance (its state behind a lock), its completion task,
//! the run that submits, collects and wakes, and the hooks a runtime calls
//! ([`before_park`], [`on_idle`]).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;

use io_uring::{types, IoUring};
use tokio::io::unix::AsyncFd;

use crate::bufring::{BufRing, IDLE_RESIDENT};
use crate::state::Inner;
use crate::sys;
use crate::task::{DropTasks, Live, RingTask};

/// Submission queue entries per ring (queued work is submitted in batches well below it).
const ENTRIES: u32 = 1024;
/// Completion queue entries per ring: room for a round's completions of many streams.
const CQ_ENTRIES: u32 = 8192;
/// How long a thread must receive nothing before its cold buffers are given back.
pub(crate) const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);
/// Polls of woken [`spawn`](crate::spawn)ed tasks per [`Ring::run`] (in rounds, each
/// followed by a submission of what they queued and a look at what completed): past it the
/// rest wait for the next run, so a busy ring still lets the thread's tokio tasks run.
const TASK_BUDGET: usize = 1024;

thread_local! {
    static RING: RefCell<Option<Arc<Ring>>> = const { RefCell::new(None) };
    /// An empty waker list with capacity, swapped into a ring as [`Ring::run`] takes its own.
    static WAKE_SPARE: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
    /// The ring whose [`Ring::run`] this thread is in (null outside it): a task it wakes
    /// is polled in that run, without poking the eventfd.
    pub(crate) static RUNNING: Cell<*const Ring> = const { Cell::new(std::ptr::null()) };
    /// An empty task list with capacity, swapped into a ring as [`Ring::run`] takes its own.
    static READY_SPARE: RefCell<Vec<Arc<RingTask>>> = const { RefCell::new(Vec::new()) };
}

/// Submits the ring work this thread queued and wakes the tasks whose operations completed.
///
/// Install it with [`tokio::runtime::Builder::on_thread_park`]. Without it every operation
/// is submitted as it is queued: correct, but one system call each, like epoll.
pub fn before_park() {
    let ring = RING.with(|r| r.borrow().clone());
    if let Some(ring) = ring {
        ring.run(true);
    }
}

/// What [`on_idle`] set.
static IDLE_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets a function to run each time a thread's ring goes idle (it received nothing for
/// 500 ms) and frees its cold receive buffers. That is the moment to ask the allocator to
/// give freed memory back to the system: mimalloc, for one, does so only while the thread
/// goes on allocating, which an idle thread does not (`switchboard serve` calls
/// `mi_collect` here). It runs on the thread that handles the ring's completions (usually
/// the ring's own), outside the ring's lock. It can be set once; returns `false` if it
/// already was.
///
/// ```
/// fn collect() { /* e.g. the allocator's collect call */ }
/// assert!(switchboard_uring::on_idle(collect));
/// assert!(!switchboard_uring::on_idle(collect));
/// ```
pub fn on_idle(hook: fn()) -> bool {
    IDLE_HOOK.set(hook).is_ok()
}

/// Checks that io_uring, with what this crate needs, works here.
///
/// # Errors
/// Says what is missing: io_uring itself (an old kernel, or
/// `/proc/sys/kernel/io_uring_disabled` set, or a seccomp filter) or provided-buffer rings
/// (Linux before 5.19).
pub fn available() -> io::Result<()> {
    let ring = Ring::create(false)?;
    drop(ring);
    Ok(())
}

/// One thread's ring: the io_uring instance, its streams and its receive buffers.
pub(crate) struct Ring {
    inner: Mutex<Inner>,
    /// A multi-thread runtime: tasks woken in [`before_park`] go to its shared queue, which
    /// the parking worker does not look at again, so the eventfd is poked to keep it awake.
    multi_thread: bool,
    /// The eventfd the completion task waits on.
    eventfd: OnceLock<RawFd>,
    /// [`spawn`](crate::spawn)ed tasks woken and waiting to be polled.
    pub(crate) ready: Mutex<Vec<Arc<RingTask>>>,
    /// The eventfd was poked for a woken task, and no run has started since.
    pub(crate) poked: AtomicBool,
    /// The runtime, to see whether tasks wait in its shared queue.
    runtime: Option<tokio::runtime::Handle>,
    /// Every [`spawn`](crate::spawn)ed task not finished yet.
    pub(crate) live: Mutex<Live>,
}

impl Ring {
    /// This thread's ring, created (with its completion task) on first use.
    pub(crate) fn current() -> io::Result<Arc<Self>> {
        if let Some(r) = RING.with(|r| r.borrow().clone()) {
            return Ok(r);
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("UringStream::new must be called inside a tokio runtime")
        })?;
        let multi_thread = handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread;
        let mut ring = Self::create(multi_thread)?;
        ring.runtime = Some(handle.clone());
        let ring = Arc::new(ring);
        let eventfd = ring.eventfd()?;
        // SAFETY: the eventfd is owned by the AsyncFd, open for its whole life.
        let afd =
            unsafe { AsyncFd::register_with_interest(eventfd, tokio::io::Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        let weak = Arc::downgrade(&ring);
        handle.spawn(async move {
            // Dropped with this task, when the runtime shuts down: the ring's own tasks
            // ([`spawn`](crate::spawn)) are dropped then too, as tokio drops its tasks.
            let _tasks = DropTasks(weak.clone());
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                sys::eventfd_read(afd.as_raw_fd());
                guard.clear_ready();
                let Some(ring) = weak.upgrade() else {
                    return;
                };
                ring.run(false);
            }
        });
        RING.with(|r| *r.borrow_mut() = Some(Arc::clone(&ring)));
        Ok(ring)
    }

    fn create(multi_thread: bool) -> io::Result<Self> {
        let uring = IoUring::builder()
            .setup_coop_taskrun()
            // The kernel flags pending task work, so a round with nothing queued and no
            // task work pending can skip `io_uring_enter` (see `Inner::submit`).
            .setup_taskrun_flag()
            .setup_cqsize(CQ_ENTRIES)
            .build(ENTRIES)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring is not available here ({e}); it needs Linux 6.0+ with \
                         /proc/sys/kernel/io_uring_disabled = 0, or use the epoll transport"
                    ),
                )
            })?;
        let bufs = BufRing::new(&uring)?;
        let inner = Inner::new(uring, bufs, types::Timespec::from(IDLE_AFTER));
        Ok(Self {
            inner: Mutex::new(inner),
            multi_thread,
            eventfd: OnceLock::new(),
            ready: Mutex::new(Vec::new()),
            poked: AtomicBool::new(false),
            runtime: None,
            live: Mutex::new(Live::default()),
        })
    }

    /// A fresh eventfd registered with the ring (notifications start disabled).
    fn eventfd(&self) -> io::Result<OwnedFd> {
        let fd = sys::eventfd()?;
        self.lock()
            .uring
            .submitter()
            .register_eventfd(fd.as_raw_fd())?;
        let _ = self.eventfd.set(fd.as_raw_fd());
        Ok(fd)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits queued work and handles completions, then wakes their tasks.
    ///
    /// `parking`: called by [`before_park`] on the owner thread. Once that hook runs, the
    /// eventfd is armed only while the thread parks with nothing completed; before (or
    /// without the hook) it stays armed, so completions always wake the ring's task.
    fn run(&self, parking: bool) {
        let outer = RUNNING.with(|r| r.replace(std::ptr::from_ref(self)));
        self.poked.store(false, Ordering::Release);
        self.run_round(parking);
        let mut budget = TASK_BUDGET;
        loop {
            let spare = READY_SPARE.with(|r| std::mem::take(&mut *r.borrow_mut()));
            let mut ready = std::mem::replace(
                &mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()),
                spare,
            );
            if ready.is_empty() {
                READY_SPARE.with(|r| *r.borrow_mut() = ready);
                break;
            }
            if budget == 0 {
                // Out of budget: the rest run once the eventfd brings the ring back.
                self.ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&mut ready);
                READY_SPARE.with(|r| *r.borrow_mut() = ready);
                self.poke();
                break;
            }
            budget = budget.saturating_sub(ready.len());
            for t in ready.drain(..) {
                t.run();
            }
            READY_SPARE.with(|r| *r.borrow_mut() = ready);
            // Submits what they queued, and collects what completed meanwhile.
            self.run_round(parking);
        }
        RUNNING.with(|r| r.set(outer));
        // A task woken here, with no scheduler core (in the park hook), waits in the
        // runtime's shared queue, which the parking worker does not look at again.
        if parking && self.multi_thread && self.tokio_queued() {
            self.poke();
        }
    }

    /// Whether tasks wait in the runtime's shared queue.
    fn tokio_queued(&self) -> bool {
        self.runtime
            .as_ref()
            .is_some_and(|h| h.metrics().global_queue_depth() > 0)
    }

    /// One round of [`run`](Self::run): submits, collects, wakes.
    fn run_round(&self, parking: bool) {
        let mut inner = self.lock();
        if parking {
            inner.hooked = true;
        }
        inner.flush();
        let starving = !inner.starved.is_empty();
        inner.bufs.adapt(starving);
        // Parking with nothing to wake and free buffers held: the thread may go idle. An
        // idle timer tells (its completion wakes the ring's task) whether it stayed so.
        if parking
            && inner.wake.is_empty()
            && inner.timer.is_none()
            && inner.bufs.resident > IDLE_RESIDENT
        {
            inner.start_timer();
        }
        if parking {
            // The thread may sleep after this hook, even with tasks just woken: they go to
            // the runtime's shared queue, another worker may take them, and a worker woken
            // with nothing to do parks again without calling the hook. So the eventfd is
            // armed whenever the owner parks; it is disarmed only by the owner while it
            // runs (below), which always passes through this hook before it sleeps.
            inner.set_eventfd(true);
            if inner.wake.is_empty() {
                // A completion between the reap and arming would not signal: look again.
                inner.flush();
            }
        } else if inner.hooked && std::thread::current().id() == inner.owner {
            // The owner is running: it collects completions when it parks next. (Elsewhere
            // the owner may be parked with the eventfd armed, which must stay so.)
            inner.set_eventfd(false);
        }
        // The wakers move out to be called after the lock is released; the ring keeps an
        // empty list with capacity (this thread's spare), so a round allocates nothing.
        let spare = WAKE_SPARE.with(|w| std::mem::take(&mut *w.borrow_mut()));
        let mut wake = std::mem::replace(&mut inner.wake, spare);
        let went_idle = std::mem::take(&mut inner.went_idle);
        drop(inner);
        // Outside the lock: the hook is the caller's code, and may take its time.
        if went_idle {
            if let Some(hook) = IDLE_HOOK.get() {
                hook();
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
        WAKE_SPARE.with(|w| *w.borrow_mut() = wake);
    }

    /// Makes the eventfd readable, so the runtime does not sleep.
    pub(crate) fn poke(&self) {
        if let Some(&fd) = self.eventfd.get() {
            // Our own eventfd, which lives as long as the ring's completion task (the ring
            // is only reached through it).
            sys::eventfd_write(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;
    use crate::UringStream;

    /// A thread that received nothing for `IDLE_AFTER` gives its cold buffers back (the
    /// ring's own timer wakes it).
    #[test]
    fn an_idle_thread_gives_its_cold_buffers_back() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_park(before_park)
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let mut pairs = Vec::new();
                for _ in 0..40 {
                    let (peer, accepted) =
                        tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
                    let ours = UringStream::from_tokio(accepted.unwrap().0).unwrap();
                    pairs.push((ours, peer.unwrap()));
                }
                // Each stream receives into its own buffer at once, then all are read.
                let mut got = [0u8; 5];
                for (ours, _) in &mut pairs {
                    let mut rb = ReadBuf::new(&mut got);
                    let r = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(Pin::new(&mut *ours).poll_read(cx, &mut rb))
                    });
                    assert!(r.await.is_pending());
                }
                for (_, peer) in &mut pairs {
                    peer.write_all(b"hello").await.unwrap();
                }
                for (ours, _) in &mut pairs {
                    ours.read_exact(&mut got).await.unwrap();
                }
                let ring = Ring::current().unwrap();
                let resident = || ring.lock().bufs.resident;
                assert!(resident() > IDLE_RESIDENT, "{} resident", resident());
                tokio::time::sleep(IDLE_AFTER * 2).await;
                assert!(resident() <= IDLE_RESIDENT, "{} resident", resident());
            })
            .await
            .unwrap();
        });
    }
}
