//! Tasks the ring polls itself ([`spawn`]): a connection woken by a completion runs in the
//! round that collected it, with no tokio scheduling per message.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use crate::ring::{Ring, RUNNING};

/// Runs `future` on this thread's ring: it is polled by the ring itself, as its operations
/// complete (from [`before_park`](crate::before_park), or from the ring's completion task),
/// not scheduled as a tokio task. A connection whose reads and writes go through the ring
/// saves the task scheduling per message: woken by a completion, it runs in the same round
/// that collected it, and what it writes is submitted in that round too. Everything a tokio
/// task may use works inside it (timers, `tokio::spawn`, channels): it is polled on a
/// runtime thread, inside the runtime's context.
///
/// The future should be short to poll, like a connection's state machine. One still
/// pending when the runtime shuts down is dropped then, as tokio drops its tasks (with
/// the ring's completion task). A panic while polling drops the future.
///
/// # Errors
/// When io_uring cannot be set up here (see [`UringStream::new`](crate::UringStream::new));
/// the future is dropped.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// switchboard_uring::spawn(async {
///     // e.g. serve a connection on a UringStream
/// })?;
/// # Ok(())
/// # }
/// ```
pub fn spawn<F>(future: F) -> io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let ring = Ring::current()?;
    let mut live = ring.live.lock().unwrap_or_else(|e| e.into_inner());
    let index = live.free.pop().unwrap_or_else(|| {
        live.tasks.push(None);
        live.tasks.len() - 1
    });
    let task = Arc::new(RingTask {
        future: Mutex::new(Some(Box::pin(future))),
        queued: AtomicBool::new(true),
        ring: Arc::downgrade(&ring),
        index,
    });
    live.tasks[index] = Some(Arc::clone(&task));
    drop(live);
    ring.schedule(task);
    Ok(())
}

type TaskFuture = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A [`spawn`]ed future and its waker's state.
pub(crate) struct RingTask {
    future: Mutex<Option<TaskFuture>>,
    /// In its ring's ready list (a wake while it is there does nothing more).
    queued: AtomicBool,
    ring: Weak<Ring>,
    /// Its index in the ring's `live` list.
    index: usize,
}

impl std::task::Wake for RingTask {
    fn wake(self: Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(ring) = self.ring.upgrade() {
            ring.schedule(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.load(Ordering::Acquire) {
            Arc::clone(self).wake();
        }
    }
}

impl RingTask {
    /// Polls the future once (dropping it when it is done or panicked).
    pub(crate) fn run(self: Arc<Self>) {
        self.queued.store(false, Ordering::Release);
        let mut slot = self.future.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fut) = slot.as_mut() else {
            return;
        };
        let waker = Waker::from(Arc::clone(&self));
        let mut cx = Context::from_waker(&waker);
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        if !matches!(r, Ok(Poll::Pending)) {
            // Dropped outside the lock: its streams' drops lock their ring.
            let done = slot.take();
            drop(slot);
            drop(done);
            if let Some(ring) = self.ring.upgrade() {
                let mut live = ring.live.lock().unwrap_or_else(|e| e.into_inner());
                let entry = live.tasks.get_mut(self.index);
                if let Some(e) = entry.filter(|e| e.as_ref().is_some_and(|t| Arc::ptr_eq(t, &self)))
                {
                    *e = None;
                    live.free.push(self.index);
                }
            }
        }
    }
}

/// A ring's unfinished [`spawn`]ed tasks, by index.
#[derive(Default)]
pub(crate) struct Live {
    /// `None`: a free index.
    tasks: Vec<Option<Arc<RingTask>>>,
    /// The free indexes of `tasks`.
    free: Vec<usize>,
}

/// Drops a ring's [`spawn`]ed tasks (their futures hold the ring's streams, and the ring
/// holds them: a cycle that only this breaks).
pub(crate) struct DropTasks(pub(crate) Weak<Ring>);

impl Drop for DropTasks {
    fn drop(&mut self) {
        if let Some(ring) = self.0.upgrade() {
            let live = std::mem::take(&mut *ring.live.lock().unwrap_or_else(|e| e.into_inner()));
            ring.ready.lock().unwrap_or_else(|e| e.into_inner()).clear();
            for t in live.tasks.into_iter().flatten() {
                let fut = t.future.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(fut);
            }
        }
    }
}

impl Ring {
    /// Puts a woken [`spawn`]ed task on the ready list, and makes sure a run polls it.
    fn schedule(&self, task: Arc<RingTask>) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        // Polled without a poke only in the run this thread is in. (A wake from a tokio
        // task on the owner thread was once left to the owner's next park hook: a
        // connection's close-timeout timer then went unanswered for seconds now and then,
        // tests/hostile.rs caught it; a poke costs one eventfd write per run at most.)
        let here = RUNNING.with(|r| std::ptr::eq(r.get(), self));
        if !here && !self.poked.swap(true, Ordering::AcqRel) {
            self.poke();
        }
    }
}
