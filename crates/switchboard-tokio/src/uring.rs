//! TCP streams whose reads and writes go through io_uring, batched per scheduler round.
//!
//! A [`UringStream`] is an [`AsyncRead`] + [`AsyncWrite`], so a [`WebSocket`](crate::WebSocket)
//! (and everything above it) runs on it unchanged. What differs is how the bytes reach the
//! kernel: instead of one `recv(2)` and one `send(2)` per wake-up, a stream queues its
//! operations on its thread's ring, and the thread submits every queued operation of every
//! stream in one `io_uring_enter(2)` just before the runtime parks ([`before_park`]). On the
//! echo benchmark that removes two system calls per message.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! // The runtime submits the ring's work before each park.
//! let rt = tokio::runtime::Builder::new_multi_thread()
//!     .enable_all()
//!     .on_thread_park(switchboard_tokio::uring::before_park)
//!     .build()?;
//! rt.block_on(async {
//!     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//!     let (tcp, _) = listener.accept()?;
//!     let stream = switchboard_tokio::uring::UringStream::new(tcp)?;
//!     // use `stream` like a tokio TcpStream: accept a WebSocket on it, etc.
//!     # drop(stream);
//!     Ok::<_, std::io::Error>(())
//! })
//! # }
//! ```
//!
//! How it works:
//! - **One ring per runtime thread**, created on first use. Streams lock it (uncontended:
//!   only the thread's own tasks and its completion task touch it).
//! - **Reads** are multishot receives into provided buffers (32 KiB each, up to 512 per
//!   ring, allocated as the ring first needs them): armed once per stream, a receive holds
//!   no buffer until data arrives. `poll_read` copies the bytes into the reader's buffer
//!   and the provided buffer goes back, hottest first; [`UringStream::poll_read_take`]
//!   hands runs of 2 KiB or more over where they are instead, and the buffer goes back
//!   once they are dropped
//!   ([`WebSocket::poll_next_event_take`](crate::WebSocket::poll_next_event_take) reads
//!   so). The kernel's ring holds only a window of them (twice what
//!   the last round took, at least 16): it hands out buffers first-in first-out, so
//!   keeping every free buffer in it would spread receives over 16 MiB of cold memory.
//!   A stream that holds 8 unread buffers has its receive cancelled until its reader
//!   catches up, so a slow reader cannot take every buffer. When the thread goes idle,
//!   free buffers beyond the 16 hottest are given back to the system, and the hook set
//!   with [`on_idle`] runs (to let the allocator return the freed memory).
//! - **Writes** are write-behind: `poll_write` copies into a buffer lent to the stream
//!   and queues a send; the buffer goes back when everything is sent, so an idle stream
//!   holds none. (A direct `sendmsg(2)` for large writes saved the copy but cost more: it
//!   runs at once, outside the round's batch.) `poll_flush` returns once everything is
//!   handed to the ring (submitted at the next park, or at once from a thread without
//!   [`before_park`]); errors surface on the next call. `poll_shutdown` waits until every
//!   byte is sent. At most 256 KiB wait per stream; beyond that `poll_write` is pending
//!   until sends complete. [`UringStream::send_owned`] sends a header and a payload
//!   `Bytes` in one `sendmsg(2)` without copying the payload (the ring holds it until the
//!   kernel is done), when nothing else waits to be sent.
//! - **Costs**, measured in docs/benchmarks.md: less CPU per message than epoll (with
//!   the taking read and the owned send, a 16 KiB echo is not copied in user space at
//!   all; through plain `poll_read`/`poll_write` it is copied once more each way than over
//!   epoll); a little more memory per idle connection (its slot).
//! - **Completions** are collected in [`before_park`], and by a task per ring that waits on
//!   an eventfd. The eventfd is armed whenever the thread parks (a task woken there may
//!   run on another worker while this one sleeps) and disarmed while the thread runs.
//! - **Tasks** ([`spawn`]) are futures the ring polls itself when their wakers fire: a
//!   connection woken by a completion runs in the same [`before_park`] (or completion
//!   task) run that collected it, and what it writes is submitted in that run, with no
//!   tokio scheduling per message. `switchboard serve` runs its connections so.
//! - **Dropping** a stream cancels its receive and any send still running (bytes it has
//!   not sent yet are dropped, as a socket's owner drops what it never wrote: call
//!   `shutdown` first to wait for them), and closes the socket as soon as the kernel lets
//!   go of both. A cancel the kernel cannot match (a receive busy on a socket that never
//!   runs dry) resets the connection instead, so a dropped stream's socket never stays
//!   open.
//! - **A reader that stops reading** (typically a task waiting to write to a peer that
//!   does not read) holds at most 8 receive buffers: past that its receive is cancelled
//!   (at once when its writes back up), and what still arrives is copied out (at most
//!   1 MiB; past it the connection is reset with an error), so it cannot starve the other
//!   streams of the ring. All streams together hold at most half the ring's buffers.
//!
//! Needs Linux 6.0 or later (multishot receives, provided-buffer rings).
//! [`UringStream::new`] fails with an error saying so where io_uring is missing or disabled
//! (`/proc/sys/kernel/io_uring_disabled`).

use std::cell::RefCell;
use std::io;
use std::net::TcpStream as StdTcpStream;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pool;

/// Provided receive buffers per ring (a power of two).
const BUFFERS: u16 = 512;
/// Bytes per provided receive buffer.
const BUFFER_SIZE: usize = 32 * 1024;
/// Receive buffers lent to readers ([`UringStream::poll_read_take`]) that may wait for
/// their views to be dropped; past this the oldest are replaced by new allocations.
const LENT_MAX: usize = 64;
/// Free receive buffers kept resident once the thread has received nothing for
/// [`IDLE_AFTER`] (the hottest; colder ones are given back to the system).
const IDLE_RESIDENT: usize = 16;
/// The fewest receive buffers kept in the kernel's ring (it grows with demand). Small, so
/// few streams receiving large messages cycle through few buffers that stay in cache: at
/// 64, 10 streams of 16 KiB messages cycled through 2 MiB, more than the L2 cache, and the
/// kernel's copy into them cost 50 % more.
const MIN_WINDOW: usize = 16;
/// Received buffers a stream may hold unread: past this its receive is cancelled (and
/// armed again once the reader catches up), and what still arrives before the cancel
/// lands is copied out of the ring's buffers (its spill), so one slow reader cannot take
/// every buffer.
const RX_LIMIT: usize = 8;
/// Received buffers all streams together may hold unread: past this, what arrives is
/// copied into each stream's spill and the buffer goes straight back, so readers that
/// stopped reading (a task waiting to write to a peer that never reads) can never hold
/// the ring's buffers all at once and starve every other stream's receives.
const RX_HELD_MAX: usize = BUFFERS as usize / 2;
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
/// The buffer group id of the receive buffers.
const GROUP: u16 = 0;
/// Spare write buffers kept per ring, and the largest kept.
const SPARES: usize = 64;
const SPARE_MAX: usize = 64 * 1024;
/// Bytes a stream may have waiting to be sent before `poll_write` waits.
const WRITE_LIMIT: usize = 256 * 1024;
/// Submission queue entries per ring (queued work is submitted in batches well below it).
const ENTRIES: u32 = 1024;
/// Completion queue entries per ring: room for a round's completions of many streams.
const CQ_ENTRIES: u32 = 8192;
/// Queued entries that are submitted at once, without waiting for the park.
const SUBMIT_BATCH: usize = 256;

const RECV: u64 = 1;
const SEND: u64 = 2;
/// A cancel of the slot's receive, or of its send.
const CANCEL_RECV: u64 = 3;
const CANCEL_SEND: u64 = 4;
/// The cancel of everything, when the ring is dropped.
const CANCEL_ALL: u64 = 5;
/// The ring's idle timer (slot 0, kind 0).
const TIMER: u64 = 0;
/// How long a thread must receive nothing before its cold buffers are given back.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

thread_local! {
    static RING: RefCell<Option<Arc<Ring>>> = const { RefCell::new(None) };
    /// An empty waker list with capacity, swapped into a ring as [`Ring::run`] takes its own.
    static WAKE_SPARE: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
    /// The ring whose [`Ring::run`] this thread is in (null outside it): a task it wakes
    /// is polled in that run, without poking the eventfd.
    static RUNNING: std::cell::Cell<*const Ring> = const { std::cell::Cell::new(std::ptr::null()) };
    /// An empty task list with capacity, swapped into a ring as [`Ring::run`] takes its own.
    static READY_SPARE: RefCell<Vec<Arc<RingTask>>> = const { RefCell::new(Vec::new()) };
}

/// Polls of woken [`spawn`]ed tasks per [`Ring::run`] (in rounds, each followed by a
/// submission of what they queued and a look at what completed): past it the rest wait
/// for the next run, so a busy ring still lets the thread's tokio tasks run.
const TASK_BUDGET: usize = 1024;

/// Runs `future` on this thread's ring: it is polled by the ring itself, as its operations
/// complete (from [`before_park`], or from the ring's completion task), not scheduled as a
/// tokio task. A connection whose reads and writes go through the ring saves the task
/// scheduling per message: woken by a completion, it runs in the same round that
/// collected it, and what it writes is submitted in that round too. Everything a tokio
/// task may use works inside it (timers, `tokio::spawn`, channels): it is polled on a
/// runtime thread, inside the runtime's context.
///
/// The future should be short to poll, like a connection's state machine. One still
/// pending when the runtime shuts down is dropped then, as tokio drops its tasks (with
/// the ring's completion task). A panic while polling drops the future.
///
/// # Errors
/// When io_uring cannot be set up here (see [`UringStream::new`]); the future is dropped.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// switchboard_tokio::uring::spawn(async {
///     // e.g. accept a WebSocket on a UringStream and echo it
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
        queued: std::sync::atomic::AtomicBool::new(true),
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
struct RingTask {
    future: Mutex<Option<TaskFuture>>,
    /// In its ring's ready list (a wake while it is there does nothing more).
    queued: std::sync::atomic::AtomicBool,
    ring: std::sync::Weak<Ring>,
    /// Its index in the ring's `live` list.
    index: usize,
}

impl std::task::Wake for RingTask {
    fn wake(self: Arc<Self>) {
        if self.queued.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        if let Some(ring) = self.ring.upgrade() {
            ring.schedule(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.load(std::sync::atomic::Ordering::Acquire) {
            Arc::clone(self).wake();
        }
    }
}

impl RingTask {
    /// Polls the future once (dropping it when it is done or panicked).
    fn run(self: Arc<Self>) {
        self.queued
            .store(false, std::sync::atomic::Ordering::Release);
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
static IDLE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

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
/// assert!(switchboard_tokio::uring::on_idle(collect));
/// assert!(!switchboard_tokio::uring::on_idle(collect));
/// ```
pub fn on_idle(hook: fn()) -> bool {
    IDLE_HOOK.set(hook).is_ok()
}

/// Checks that io_uring, with what this module needs, works here.
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

/// A TCP stream driven by io_uring; see the [module docs](self).
pub struct UringStream {
    ring: Arc<Ring>,
    slot: usize,
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl UringStream {
    /// Takes over a connected TCP stream. Call it inside a tokio runtime (the thread's ring
    /// and its completion task are created on first use).
    ///
    /// # Errors
    /// When io_uring cannot be set up here (an old kernel, or io_uring disabled), or the
    /// descriptor cannot be prepared.
    pub fn new(tcp: StdTcpStream) -> io::Result<Self> {
        // Blocking: io_uring waits for readiness itself, and an O_NONBLOCK socket can make
        // an operation that io_uring hands to a worker thread fail with EAGAIN.
        tcp.set_nonblocking(false)?;
        let ring = Ring::current()?;
        let fd = unsafe_owned(tcp.into_raw_fd());
        let slot = ring.lock().insert(fd);
        Ok(Self { ring, slot })
    }

    /// Takes over a tokio TCP stream (see [`new`](Self::new)).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_tokio(tcp: tokio::net::TcpStream) -> io::Result<Self> {
        Self::new(tcp.into_std()?)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        let fd = self.ring.lock().slot(self.slot).fd.as_raw_fd();
        // Borrow the descriptor as a std stream without taking ownership.
        let tcp = std::mem::ManuallyDrop::new(unsafe_std(fd));
        tcp.peer_addr()
    }
}

impl UringStream {
    /// Whether nothing waits to be sent, so [`send_owned`](Self::send_owned) sends by
    /// reference.
    pub fn send_idle(&self) -> bool {
        self.ring.lock().send_idle(self.slot)
    }

    /// Sends `head` then `payload`, holding the payload (not copying it) until the kernel
    /// is done with it, when nothing else waits to be sent (see
    /// [`send_idle`](Self::send_idle)) and `head` is 32 bytes at most (a frame header);
    /// else copying both after what waits. When `head` ends where `payload` starts in
    /// memory (the protocol core writes a reply's header into the room the received
    /// header left), both are held and go out as one run (`send(2)`); otherwise `head` is
    /// copied and the two go out in one `sendmsg(2)`. Never waits itself; like
    /// `poll_write`, the bytes go out with the ring's next submission.
    ///
    /// # Errors
    /// A failed earlier send's error.
    pub fn send_owned(&mut self, head: Bytes, payload: Bytes) -> io::Result<()> {
        self.ring.lock().send_owned(self.slot, head, payload)
    }

    /// Reads the next run of received bytes into `dst`, an empty buffer slot (as
    /// [`Connection::read_buf_slot`](switchboard_proto::Connection::read_buf_slot) gives):
    /// a run of `take_min` bytes or more is handed over as it is, the buffer the kernel
    /// received it into (a view into the ring's memory), where
    /// [`poll_read`](AsyncRead::poll_read) would copy it; a shorter one is copied into a
    /// pooled buffer (copying a few bytes costs less than lending a buffer). Lent memory
    /// goes back to the ring once the buffer and everything split from it are dropped, so
    /// keep it briefly: a reader that holds many starves the ring of buffers (it replaces
    /// those held longest with new memory). Returns how many bytes `dst` got; 0 at the end
    /// of the stream.
    ///
    /// # Errors
    /// The receive's error.
    pub fn poll_read_take(
        &mut self,
        cx: &mut Context<'_>,
        take_min: usize,
        dst: &mut Option<Box<BytesMut>>,
    ) -> Poll<io::Result<usize>> {
        self.ring
            .lock()
            .poll_read_take(self.slot, cx, take_min, dst)
    }
}

#[cfg(feature = "server")]
impl crate::SocketControl for UringStream {
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        let inner = self.ring.lock();
        let fd = std::os::fd::AsFd::as_fd(&inner.slot(self.slot).fd);
        socket2::SockRef::from(&fd).set_send_buffer_size(crate::socket::sndbuf_value(bytes))
    }

    fn reset_on_drop(&self) {
        self.ring.lock().slot_mut(self.slot).reset = true;
    }
}

/// A listening socket whose connections come out as plain `std` streams, ready for
/// [`UringStream::new`]: unlike `tokio::net::TcpListener::accept`, an accepted connection
/// is never registered with tokio's epoll driver it would not use (that costs two
/// `epoll_ctl` calls and a registration per connection).
#[derive(Debug)]
pub struct UringListener {
    fd: AsyncFd<std::net::TcpListener>,
}

impl UringListener {
    /// Takes over a tokio listener (call it inside a runtime).
    ///
    /// # Errors
    /// When the listener cannot be registered for readiness.
    pub fn from_tokio(listener: tokio::net::TcpListener) -> io::Result<Self> {
        // `into_std` keeps the socket non-blocking, as readiness-driven accepts need.
        let listener = listener.into_std()?;
        // SAFETY: the AsyncFd owns the listener, so its descriptor stays open (and is not
        // reused) for as long as it is registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { fd })
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    /// As `accept(2)` (for example `EMFILE` when out of descriptors).
    pub async fn accept(&self) -> io::Result<(StdTcpStream, std::net::SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            if let Ok(r) = ready.try_io(|l| l.get_ref().accept()) {
                return r;
            }
        }
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}

/// Bytes slot `s` has waiting to be sent (written and not sent yet).
fn unsent(s: &Slot) -> usize {
    s.filling.len() + (s.inflight.len() - s.sent) + s.owned.as_ref().map_or(0, |o| o.len() - o.sent)
}

/// Resets a TCP connection at once (RST, both queues dropped, `connect(2)` to
/// `AF_UNSPEC`): operations still running on it end, where a cancel can miss them.
fn reset(fd: RawFd) {
    // SAFETY: an all-zero sockaddr with family AF_UNSPEC, passed with its own size.
    unsafe {
        let mut addr: libc::sockaddr = std::mem::zeroed();
        addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        let _ = libc::connect(
            fd,
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// Wraps a descriptor this module owns from here on.
fn unsafe_owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` comes from `into_raw_fd`, so nothing else owns or closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A std stream over a borrowed descriptor; the caller must not drop it.
fn unsafe_std(fd: RawFd) -> StdTcpStream {
    // SAFETY: the caller wraps the result in `ManuallyDrop`, so the descriptor is not closed.
    unsafe { StdTcpStream::from_raw_fd(fd) }
}

impl AsyncRead for UringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.ring.lock();
        inner.poll_read(self.slot, cx, buf)
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.ring.lock();
        inner.poll_write(self.slot, cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.ring.lock();
        inner.poll_write(self.slot, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.ring.lock();
        let s = inner.slot_mut(self.slot);
        Poll::Ready(match s.write_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.ring.lock();
        let s = inner.slot_mut(self.slot);
        if let Some(e) = s.write_error.take() {
            return Poll::Ready(Err(e));
        }
        if s.sending || s.owned.is_some() || !s.filling.is_empty() {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // SAFETY: shutdown(2) on a descriptor this slot owns.
        if unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_WR) } == 0 {
            return Poll::Ready(Ok(()));
        }
        let e = io::Error::last_os_error();
        // The peer is already gone: nothing left to shut down.
        Poll::Ready(match e.raw_os_error() {
            Some(libc::ENOTCONN) => Ok(()),
            _ => Err(e),
        })
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        self.ring.lock().release(self.slot);
    }
}

/// One thread's ring: the io_uring instance, its streams and its receive buffers.
struct Ring {
    inner: Mutex<Inner>,
    /// A multi-thread runtime: tasks woken in [`before_park`] go to its shared queue, which
    /// the parking worker does not look at again, so the eventfd is poked to keep it awake.
    multi_thread: bool,
    /// The eventfd the completion task waits on.
    eventfd: std::sync::OnceLock<RawFd>,
    /// [`spawn`]ed tasks woken and waiting to be polled.
    ready: Mutex<Vec<Arc<RingTask>>>,
    /// The eventfd was poked for a woken task, and no run has started since.
    poked: std::sync::atomic::AtomicBool,
    /// The runtime, to see whether tasks wait in its shared queue.
    runtime: Option<tokio::runtime::Handle>,
    /// Every [`spawn`]ed task not finished yet.
    live: Mutex<Live>,
}

/// A ring's unfinished [`spawn`]ed tasks, by index.
#[derive(Default)]
struct Live {
    /// `None`: a free index.
    tasks: Vec<Option<Arc<RingTask>>>,
    /// The free indexes of `tasks`.
    free: Vec<usize>,
}

/// Drops a ring's [`spawn`]ed tasks (their futures hold the ring's streams, and the ring
/// holds them: a cycle that only this breaks).
struct DropTasks(std::sync::Weak<Ring>);

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

struct Inner {
    // Dropped first (after `Drop for Inner` waited for what still ran), then the buffers.
    uring: IoUring,
    slots: Slots,
    /// Empty write buffers, lent to streams that write and taken back once their sends
    /// are done, so an idle stream holds none (and a busy one allocates none per write).
    spare: Vec<Vec<u8>>,
    /// Emptied owned-send states, reused.
    #[allow(clippy::vec_box)]
    owned_spare: Vec<Box<OwnedSend>>,
    free: Vec<usize>,
    bufs: BufRing,
    /// Streams whose receive found no free buffer, in order; queued again as buffers return.
    starved: std::collections::VecDeque<usize>,
    /// Received buffers held unread in streams' queues (at most [`RX_HELD_MAX`]).
    rx_held: usize,
    /// Tasks to wake once the lock is released.
    wake: Vec<Waker>,
    /// Whether the eventfd is armed (with the park hook: from each park until the owner runs).
    eventfd_on: bool,
    /// Whether the owner thread runs [`before_park`], so its queued work may wait for it.
    hooked: bool,
    /// `reap` is running (it is not re-entered).
    reaping: bool,
    /// The idle timer is running, armed when [`BufRing::taken_total`] was this.
    timer: Option<u64>,
    /// Its duration (the kernel reads it when the timer is submitted).
    timer_span: types::Timespec,
    /// The idle timer freed the cold buffers: [`Ring::run`] calls the [`on_idle`] hook
    /// once the lock is released.
    went_idle: bool,
    owner: std::thread::ThreadId,
}

/// One stream's state, shared by its handle and its completions.
struct Slot {
    fd: OwnedFd,
    /// A receive is queued or running, or waits for a buffer (`starved`).
    receiving: bool,
    /// The last receive found every buffer taken; it is queued again when one returns.
    starved: bool,
    /// Received bytes not read yet: buffer id, offset, end.
    rx: RxQueue,
    eof: bool,
    read_error: Option<io::Error>,
    read_waker: Option<Waker>,
    /// A send is queued or running, for `inflight[sent..]`.
    sending: bool,
    inflight: Vec<u8>,
    sent: usize,
    /// Bytes written since the running send started.
    filling: Vec<u8>,
    /// A send of buffers held by reference ([`UringStream::send_owned`]), running; sent
    /// before `filling`.
    owned: Option<Box<OwnedSend>>,
    /// A cancel of the multishot receive is on its way (the reader fell behind).
    cancelling: bool,
    write_error: Option<io::Error>,
    write_waker: Option<Waker>,
    /// The handle was dropped: free the slot once nothing runs.
    orphan: bool,
    /// Reset the connection when the handle is dropped ([`SocketControl::reset_on_drop`]).
    ///
    /// [`SocketControl::reset_on_drop`]: crate::SocketControl::reset_on_drop
    reset: bool,
}

/// The longest head [`UringStream::send_owned`] takes (a frame header is at most 14).
const OWNED_HEAD_MAX: usize = 32;

/// One send of a short head and a payload the ring holds until the kernel is done with
/// it: a `sendmsg(2)` of the copied head and the payload, or a `send(2)` of one run when
/// the head ends where the payload starts (`joined`).
struct OwnedSend {
    /// The head, copied (unless `joined` holds it).
    head: [u8; OWNED_HEAD_MAX],
    head_len: usize,
    /// The head when it ends where `payload` starts in memory (else empty): both go out
    /// as one run.
    joined: Bytes,
    payload: Bytes,
    /// How much of the head and payload (together) is sent.
    sent: usize,
    /// What the submitted entry points at (stable: boxed, and kept until completion).
    iov: [libc::iovec; 2],
    msg: libc::msghdr,
}

// SAFETY: the raw pointers point into `runs` (owned here) and `iov`.
unsafe impl Send for OwnedSend {}

impl OwnedSend {
    fn new() -> Self {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            head: [0; OWNED_HEAD_MAX],
            head_len: 0,
            joined: Bytes::new(),
            payload: Bytes::new(),
            sent: 0,
            iov: [iov; 2],
            // SAFETY: all-zero is a valid (empty) msghdr.
            msg: unsafe { std::mem::zeroed() },
        }
    }

    fn len(&self) -> usize {
        self.head_len + self.payload.len()
    }

    /// What is not sent yet as one run of memory, when the head is joined to the payload.
    fn run(&self) -> Option<(*const u8, u32)> {
        if self.joined.is_empty() {
            return None;
        }
        // At most 4 GiB per entry: a longer send goes out in parts (`owned_sent` queues
        // the rest). Never `None` here, as `prepare` knows no joined head.
        let len = u32::try_from(self.len() - self.sent).unwrap_or(u32::MAX);
        // Each pointer stays inside its own buffer; the kernel reads on across the
        // boundary, where `payload` (held with `joined` until the send completes) starts.
        let ptr = match self.joined.get(self.sent..) {
            Some(rest) if !rest.is_empty() => rest.as_ptr(),
            _ => self.payload[self.sent - self.joined.len()..].as_ptr(),
        };
        Some((ptr, len))
    }

    /// Points the message at what is not sent yet.
    fn prepare(&mut self) -> *const libc::msghdr {
        let mut skip = self.sent;
        let mut n = 0;
        for r in [&self.head[..self.head_len], &self.payload[..]] {
            if skip >= r.len() {
                skip -= r.len();
                continue;
            }
            self.iov[n] = libc::iovec {
                iov_base: r[skip..].as_ptr().cast_mut().cast(),
                iov_len: r.len() - skip,
            };
            skip = 0;
            n += 1;
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n as _;
        &self.msg
    }
}

impl Ring {
    /// This thread's ring, created (with its completion task) on first use.
    fn current() -> io::Result<Arc<Self>> {
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
            // ([`spawn`]) are dropped then too, as tokio drops its tasks.
            let _tasks = DropTasks(weak.clone());
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let mut counter = [0u8; 8];
                // SAFETY: reads 8 bytes into a local buffer from our own eventfd.
                let _ = unsafe { libc::read(afd.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
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
        let owner = std::thread::current().id();
        let inner = Inner {
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
            timer_span: types::Timespec::from(IDLE_AFTER),
            went_idle: false,
            owner,
        };
        Ok(Self {
            inner: Mutex::new(inner),
            multi_thread,
            eventfd: std::sync::OnceLock::new(),
            ready: Mutex::new(Vec::new()),
            poked: std::sync::atomic::AtomicBool::new(false),
            runtime: None,
            live: Mutex::new(Live::default()),
        })
    }

    /// A fresh eventfd registered with the ring (notifications start disabled).
    fn eventfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: eventfd(2) with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe_owned(fd);
        self.lock()
            .uring
            .submitter()
            .register_eventfd(fd.as_raw_fd())?;
        let _ = self.eventfd.set(fd.as_raw_fd());
        Ok(fd)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
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
        self.poked
            .store(false, std::sync::atomic::Ordering::Release);
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
        if !here && !self.poked.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.poke();
        }
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
    fn poke(&self) {
        if let Some(&fd) = self.eventfd.get() {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a local buffer to our own eventfd, which lives as
            // long as the ring's completion task (the ring is only reached through it).
            let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
        }
    }
}

impl Inner {
    fn insert(&mut self, fd: OwnedFd) -> usize {
        let slot = Slot {
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
            cancelling: false,
            write_error: None,
            write_waker: None,
            orphan: false,
            reset: false,
        };
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

    fn slot(&self, i: usize) -> &Slot {
        match self.slots.get(i) {
            Some(s) => s,
            _ => unreachable!("a live stream's slot is occupied"),
        }
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
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
    fn submit(&mut self) -> io::Result<usize> {
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

    fn push(&mut self, entry: &squeue::Entry) {
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

    fn queue_recv(&mut self, i: usize) {
        let fd = self.slot(i).fd.as_raw_fd();
        self.slot_mut(i).receiving = true;
        // Multishot: armed once, it receives whenever data arrives (a completion per
        // buffer) until it is cancelled, fails, or finds no buffer.
        let e = opcode::RecvMulti::new(types::Fd(fd), GROUP)
            .build()
            .user_data(user_data(i, RECV));
        self.push(&e);
    }

    /// Queues a cancel of slot `i`'s operation of `kind` (its completion says
    /// `ECANCELED`).
    fn cancel(&mut self, i: usize, kind: u64) {
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

    /// Queues the slot's owned send (what of it is not sent yet).
    fn queue_owned(&mut self, i: usize) {
        let s = self.slot_mut(i);
        let fd = s.fd.as_raw_fd();
        let Some(o) = s.owned.as_deref_mut() else {
            return;
        };
        let e = match o.run() {
            Some((ptr, len)) => opcode::Send::new(types::Fd(fd), ptr, len).build(),
            None => opcode::SendMsg::new(types::Fd(fd), o.prepare()).build(),
        }
        .user_data(user_data(i, SEND));
        s.sending = true;
        self.push(&e);
    }

    /// Whether nothing waits to be sent, so an owned send may start.
    fn send_idle(&mut self, i: usize) -> bool {
        let s = self.slot(i);
        !s.sending && s.owned.is_none() && s.filling.is_empty() && s.inflight.len() == s.sent
    }

    /// Sends `head` (copied) then `payload` (by reference) when nothing else waits to be
    /// sent, else copies both after what does.
    fn send_owned(&mut self, i: usize, head: Bytes, payload: Bytes) -> io::Result<()> {
        if let Some(e) = self.slot_mut(i).write_error.take() {
            return Err(e);
        }
        if !self.send_idle(i) || head.len() > OWNED_HEAD_MAX {
            let s = self.slot_mut(i);
            s.filling.extend_from_slice(&head);
            s.filling.extend_from_slice(&payload);
            if !s.sending {
                self.queue_send(i);
            }
            return Ok(());
        }
        let mut o = self
            .owned_spare
            .pop()
            .unwrap_or_else(|| Box::new(OwnedSend::new()));
        o.head_len = head.len();
        if head.as_ptr_range().end == payload.as_ptr() {
            o.joined = head;
        } else {
            o.head[..head.len()].copy_from_slice(&head);
        }
        o.payload = payload;
        o.sent = 0;
        self.slot_mut(i).owned = Some(o);
        self.queue_owned(i);
        Ok(())
    }

    /// An owned send completed with `res`.
    fn owned_sent(&mut self, i: usize, res: i32) {
        let s = self.slot_mut(i);
        s.sending = false;
        let Some(o) = s.owned.as_deref_mut() else {
            return;
        };
        if res >= 0 {
            o.sent += res.unsigned_abs() as usize;
            if o.sent < o.len() {
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
        if let Some(mut o) = s.owned.take() {
            o.payload = Bytes::new();
            o.joined = Bytes::new();
            if self.owned_spare.len() < SPARES {
                self.owned_spare.push(o);
            }
        }
        let s = self.slot_mut(i);
        if !s.filling.is_empty() && s.write_error.is_none() {
            self.queue_send(i);
        }
    }

    fn queue_send(&mut self, i: usize) {
        let s = self.slot_mut(i);
        if s.inflight.len() == s.sent {
            // The last send is done: the bytes written since become the next one.
            std::mem::swap(&mut s.inflight, &mut s.filling);
            s.filling.clear();
            s.sent = 0;
        }
        let (fd, ptr, len) = (
            s.fd.as_raw_fd(),
            s.inflight[s.sent..].as_ptr(),
            s.inflight.len() - s.sent,
        );
        s.sending = true;
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let e = opcode::Send::new(types::Fd(fd), ptr, len)
            .build()
            .user_data(user_data(i, SEND));
        self.push(&e);
    }

    fn poll_read(
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

    /// Reads the next run of received bytes into the empty buffer slot `dst`: moved in
    /// as it is when `take_min` bytes or more, else copied (see
    /// [`UringStream::poll_read_take`]). `Ok(0)` at the end of the stream.
    fn poll_read_take(
        &mut self,
        i: usize,
        cx: &mut Context<'_>,
        take_min: usize,
        dst: &mut Option<Box<BytesMut>>,
    ) -> Poll<io::Result<usize>> {
        if let Some((bid, start, end)) = self.slot(i).rx.front() {
            let (start, end) = (start as usize, end as usize);
            if end - start >= take_min {
                self.slot_mut(i).rx.pop_front();
                self.rx_held -= 1;
                let bytes = self.bufs.lend(bid, start, end);
                if !self.starved.is_empty() {
                    self.feed_starved();
                }
                pool::put(dst, bytes);
                return Poll::Ready(Ok(end - start));
            }
            // Copied whole (the slot was empty, so the run fits once reserved).
            let buf = pool::fill(dst);
            buf.reserve(end - start);
            buf.extend_from_slice(&self.bufs.get(bid, end)[start..end]);
            self.consume_front(i, bid, true, end - start);
            return Poll::Ready(Ok(end - start));
        }
        let rx = &mut self.slot_mut(i).rx;
        if let Some(spill) = rx.spill.as_deref_mut() {
            // Rare (a reader that fell behind): copied, a buffer's worth at a time, as
            // the ring's buffers would have handed it over.
            let n = spill.len().min(BUFFER_SIZE);
            let buf = pool::fill(dst);
            buf.extend_from_slice(&spill[..n]);
            spill.advance(n);
            if spill.is_empty() {
                rx.spill = None;
            }
            return Poll::Ready(Ok(n));
        }
        self.poll_nothing_received(i, cx).map_ok(|()| 0)
    }

    fn poll_write(
        &mut self,
        i: usize,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = self.slot_mut(i);
        if let Some(e) = s.write_error.take() {
            return Poll::Ready(Err(e));
        }
        let waiting = s.filling.len() + (s.inflight.len() - s.sent);
        if waiting >= WRITE_LIMIT {
            s.write_waker = Some(cx.waker().clone());
            // The writer waits for the peer to read; its reader usually waits for the
            // writer. Stop taking the ring's buffers for it meanwhile (what arrives stays
            // in the socket, as over epoll); the reader arms the receive again once it
            // has read what it holds.
            if s.receiving && !s.starved {
                self.cancel_receive(i);
            }
            return Poll::Pending;
        }
        // Every write is copied and sent through the ring, however large: a direct
        // `sendmsg(2)` saves the copy, but measured 1.2x the CPU per 16 KiB echo (the send
        // runs at once, one per task, instead of batched with the round's others).
        if s.filling.capacity() == 0 {
            if let Some(v) = self.spare.pop() {
                self.slot_mut(i).filling = v;
            }
        }
        let s = self.slot_mut(i);
        let mut queued = 0;
        for b in bufs {
            let take = b.len().min(WRITE_LIMIT - waiting - queued);
            s.filling.extend_from_slice(&b[..take]);
            queued += take;
            if take < b.len() {
                break;
            }
        }
        if !s.sending && queued > 0 {
            self.queue_send(i);
        }
        Poll::Ready(Ok(queued))
    }

    /// Arms the idle timer (see [`complete`](Self::complete)).
    fn start_timer(&mut self) {
        self.timer = Some(self.bufs.taken_total);
        let e = opcode::Timeout::new(&self.timer_span)
            .build()
            .user_data(user_data(0, TIMER));
        self.push(&e);
        let _ = self.submit();
    }

    /// Keeps an emptied write buffer for the next stream that writes (a bounded number, of
    /// bounded size; others are freed).
    fn lend_back(&mut self, mut v: Vec<u8>) {
        if v.capacity() > 0 && v.capacity() <= SPARE_MAX && self.spare.len() < SPARES {
            v.clear();
            self.spare.push(v);
        }
    }

    /// The handle is gone: cancel its receive and any send still running, and free the
    /// slot (closing the descriptor) as soon as the kernel has let go of both. Bytes not
    /// sent yet are dropped, as a socket's owner drops what it never wrote: a send still
    /// running here waits for a peer that does not read, and must not keep the socket
    /// open. (The kernel still sends what it took, as after `close(2)`.)
    fn release(&mut self, i: usize) {
        let s = self.slot_mut(i);
        s.orphan = true;
        s.read_waker = None;
        s.write_waker = None;
        if s.reset {
            // Given up on: RST now, which also ends whatever still runs on it.
            reset(s.fd.as_raw_fd());
        }
        self.discard_received(i);
        let s = self.slot_mut(i);
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
        reset(s.fd.as_raw_fd());
        if let Some(w) = s.read_waker.take() {
            self.wake.push(w);
        }
    }

    /// Lets go of what slot `i` received and has not read: its buffers go back to the
    /// kernel, its spill is freed. Returns how many bytes the spill held.
    fn discard_received(&mut self, i: usize) -> usize {
        let spilled = self.slot_mut(i).rx.spill.take().map_or(0, |b| b.len());
        while let Some((bid, _, _)) = self.slot_mut(i).rx.pop_front() {
            self.rx_held -= 1;
            self.give_back(bid);
        }
        spilled
    }

    /// Queues a cancel of slot `i`'s receive unless one is on its way.
    fn cancel_receive(&mut self, i: usize) {
        let s = self.slot_mut(i);
        if !s.cancelling {
            s.cancelling = true;
            self.cancel(i, RECV);
        }
    }

    /// Frees an orphaned slot with nothing running; the descriptor closes with it.
    fn maybe_free(&mut self, i: usize) {
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

    fn set_eventfd(&mut self, on: bool) {
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
    fn flush(&mut self) {
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
    fn feed_starved(&mut self) {
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

    /// Handles every completion waiting in the queue. (Handling one may queue entries, and
    /// queueing may reap: the nested call returns at once, the outer loop goes on.)
    fn reap(&mut self) {
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
        let (i, kind) = ((cqe.user_data() >> 3) as usize, cqe.user_data() & 7);
        let res = cqe.result();
        if kind == TIMER {
            // Nothing received since it was armed: the thread is idle, so free buffers
            // beyond the hottest few are given back. (A steady load keeps them: releasing
            // and faulting them in again cost ~4 % of the CPU at 100 x 20 B.)
            if self.timer.take() == Some(self.bufs.taken_total) {
                self.bufs.release_cold(IDLE_RESIDENT);
                self.went_idle = true;
            }
            return;
        }
        let more = cqueue::more(cqe.flags());
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        match kind {
            CANCEL_RECV | CANCEL_SEND if res == -libc::ENOENT || res == -libc::EALREADY => {
                // Missed: a multishot receive that finds data at every turn is between
                // turns (queued to run again) more often than waiting, and a cancel finds
                // it only waiting. The next completion that still wants it cancels again;
                // a dropped stream's socket is reset instead, which ends both operations
                // at once (it is given up on: nothing is read or sent any more).
                let running = if kind == CANCEL_RECV {
                    s.receiving
                } else {
                    s.sending
                };
                if running && s.orphan {
                    reset(s.fd.as_raw_fd());
                } else if kind == CANCEL_RECV && s.receiving && s.cancelling {
                    s.cancelling = false;
                }
                return;
            }
            RECV if res == -libc::ENOBUFS && !s.orphan && s.rx.spilling() => {
                // Every buffer is taken, and this stream holds enough unread: its reader
                // arms the receive again once it has caught up.
                s.receiving = false;
                s.cancelling = false;
                return;
            }
            RECV if res == -libc::ENOBUFS && !s.orphan => {
                // Every buffer is taken: wait for one without waking the reader (which
                // would only ask again).
                s.starved = true;
                self.starved.push_back(i);
                self.bufs.starved();
                return;
            }
            RECV => {
                if !more {
                    // Ended: the next read arms it again.
                    s.receiving = false;
                    s.cancelling = false;
                }
                if res > 0 {
                    self.bufs.taken();
                    let bid = cqueue::buffer_select(cqe.flags()).unwrap_or(0);
                    let n = res.unsigned_abs();
                    let spilled = s.rx.spill.as_ref().map_or(0, |b| b.len());
                    if s.orphan || s.eof {
                        // Given up on, or reset for an overrun: nothing more is read.
                        if more {
                            self.cancel_receive(i);
                        }
                        self.give_back(bid);
                    } else if spilled + n as usize
                        > if unsent(s) >= WRITE_LIMIT {
                            SPILL_MAX
                        } else {
                            SPILL_HARD_MAX
                        }
                    {
                        self.overrun(i);
                        self.give_back(bid);
                    } else {
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
            SEND if s.owned.is_some() => {
                self.owned_sent(i, res);
                if let Some(w) = self.slot_mut(i).write_waker.take() {
                    self.wake.push(w);
                }
            }
            SEND => {
                s.sending = false;
                if res >= 0 {
                    s.sent += res.unsigned_abs() as usize;
                    let more = s.sent < s.inflight.len() || !s.filling.is_empty();
                    if more && s.write_error.is_none() {
                        self.queue_send(i);
                    } else if !more {
                        // All sent: the buffers go back to the spares.
                        let (a, b) = (
                            std::mem::take(&mut s.inflight),
                            std::mem::take(&mut s.filling),
                        );
                        s.sent = 0;
                        self.lend_back(a);
                        self.lend_back(b);
                    }
                } else if res == -libc::EAGAIN {
                    // Not an error: send the same bytes again.
                    if s.write_error.is_none() {
                        self.queue_send(i);
                    }
                } else {
                    s.write_error = Some(io::Error::from_raw_os_error(-res));
                    s.filling.clear();
                }
                let s = self.slot_mut(i);
                if let Some(w) = s.write_waker.take() {
                    self.wake.push(w);
                }
            }
            _ => {}
        }
        self.maybe_free(i);
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

/// Slots in chunks of `SLOT_CHUNK`: a full chunk is never moved or doubled, so many
/// streams cost their slots and at most one chunk more (a `Vec` may hold twice as many).
#[derive(Default)]
struct Slots {
    chunks: Vec<Box<[Option<Slot>]>>,
}

const SLOT_CHUNK: usize = 256;

impl Slots {
    fn get(&self, i: usize) -> Option<&Slot> {
        self.chunks.get(i / SLOT_CHUNK)?[i % SLOT_CHUNK].as_ref()
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.chunks.get_mut(i / SLOT_CHUNK)?[i % SLOT_CHUNK].as_mut()
    }

    /// The entry of slot `i`, which must be below [`grow`](Self::grow)'s results.
    fn entry(&mut self, i: usize) -> &mut Option<Slot> {
        &mut self.chunks[i / SLOT_CHUNK][i % SLOT_CHUNK]
    }

    /// Adds a chunk, returning its first index; the caller keeps the others as free.
    fn grow(&mut self) -> usize {
        self.chunks
            .push(std::iter::repeat_with(|| None).take(SLOT_CHUNK).collect());
        (self.chunks.len() - 1) * SLOT_CHUNK
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.chunks.iter_mut().flat_map(|c| c.iter_mut().flatten())
    }
}

/// A stream's received, unread buffers (id, start, end), in order. The first is kept
/// inline: a stream that reads what it gets holds one at a time and allocates nothing.
#[derive(Default)]
struct RxQueue {
    first: Option<(u16, u32, u32)>,
    /// Boxed: only a stream that falls behind its receives needs it.
    #[allow(clippy::box_collection)]
    rest: Option<Box<std::collections::VecDeque<(u16, u32, u32)>>>,
    /// Bytes received after every queued buffer, copied out of the ring's buffers because
    /// the stream (or all streams together) held too many unread ([`RX_LIMIT`],
    /// [`RX_HELD_MAX`]). Read after the buffers; while it holds anything, newer bytes
    /// join it, so the order stays the order of arrival. Bounded by what arrives before
    /// the stream's receive is cancelled.
    spill: Option<Box<BytesMut>>,
}

impl RxQueue {
    /// Whether newly received bytes must be copied into the spill rather than queued.
    fn spilling(&self) -> bool {
        self.spill.is_some() || self.len() >= RX_LIMIT
    }

    /// Copies up to `buf.remaining()` spilled bytes into `buf`; whether any were.
    fn read_spill(&mut self, buf: &mut ReadBuf<'_>) -> bool {
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

    fn push_back(&mut self, e: (u16, u32, u32)) {
        if self.first.is_none() {
            self.first = Some(e);
        } else {
            self.rest.get_or_insert_default().push_back(e);
        }
    }

    fn front(&self) -> Option<(u16, u32, u32)> {
        self.first
    }

    fn pop_front(&mut self) -> Option<(u16, u32, u32)> {
        let e = self.first.take();
        self.first = self.rest.as_mut().and_then(|r| r.pop_front());
        e
    }

    fn advance_front(&mut self, n: u32) {
        if let Some(f) = &mut self.first {
            f.1 += n;
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }
}

fn user_data(slot: usize, kind: u64) -> u64 {
    ((slot as u64) << 3) | kind
}

/// A ring of provided receive buffers (`IORING_REGISTER_PBUF_RING`).
struct BufRing {
    /// The entries the kernel reads: page-aligned, `BUFFERS` of them.
    entries: *mut types::BufRingEntry,
    layout: std::alloc::Layout,
    /// The buffers themselves, `BUFFER_SIZE` bytes each, allocated when first handed to
    /// the kernel and freed when cold. The kernel writes a buffer's spare capacity (it
    /// stays empty: what a completion says was received is read through [`get`]
    /// (Self::get), or lent by [`lend`](Self::lend), which moves the bytes out). A
    /// buffer's allocation does not move while the kernel may write it.
    homes: Vec<BytesMut>,
    /// Buffers lent out with their bytes ([`lend`](Self::lend)): each comes back to the
    /// stack once the views into it are gone ([`reclaim`](Self::reclaim)).
    lent: Vec<u16>,
    /// Touched buffers on the stack.
    resident: usize,
    /// Buffers the kernel ever filled (the idle timer compares it).
    taken_total: u64,
    tail: u16,
    /// Buffers read since the last top-up, most recently freed last, so the hottest go
    /// back to the kernel first.
    stack: Vec<u16>,
    /// Buffers handed to the kernel since starved receives were last armed again.
    handed: usize,
    /// Buffers in the kernel's ring: handed over and not yet seen in a completion (so
    /// never fewer than the kernel really has).
    in_ring: usize,
    /// How many buffers to keep in the kernel's ring (see [`adapt`](Self::adapt)).
    window: usize,
    /// Buffers the kernel filled since the last [`adapt`](Self::adapt).
    taken: usize,
}

// SAFETY: the raw pointer is owned memory, only touched under the ring's mutex.
unsafe impl Send for BufRing {}

impl BufRing {
    fn new(uring: &IoUring) -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(
            usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: a non-zero size; checked for null below.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut ring = Self {
            entries,
            layout,
            homes: std::iter::repeat_with(BytesMut::new)
                .take(usize::from(BUFFERS))
                .collect(),
            lent: Vec::new(),
            resident: 0,
            taken_total: 0,
            tail: 0,
            stack: (0..BUFFERS).rev().collect(),
            handed: 0,
            in_ring: 0,
            window: MIN_WINDOW,
            taken: 0,
        };
        // SAFETY: the entries stay allocated until the ring (dropped first) is gone.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(entries as u64, BUFFERS, GROUP, 0)?;
        }
        ring.top_up();
        Ok(ring)
    }

    /// The first `end` bytes of buffer `bid`, which a completion said the kernel wrote
    /// (and it writes a buffer only while the buffer is in its ring, which one named by a
    /// completion is not until it is recycled).
    fn get(&self, bid: u16, end: usize) -> &[u8] {
        let home = &self.homes[usize::from(bid % BUFFERS)];
        let end = end.min(home.capacity());
        // SAFETY: inside the allocation (at most its capacity), and written by the kernel.
        unsafe { std::slice::from_raw_parts(home.as_ptr(), end) }
    }

    /// Moves bytes `start..end` of buffer `bid` (received, see [`get`](Self::get)) out
    /// as a buffer of their own, without copying: a view into the buffer's allocation. The
    /// buffer comes back once every view into it is gone ([`reclaim`](Self::reclaim)).
    fn lend(&mut self, bid: u16, start: usize, end: usize) -> BytesMut {
        let home = &mut self.homes[usize::from(bid % BUFFERS)];
        let end = end.min(home.capacity());
        // SAFETY: the kernel wrote these bytes (the completion said so) and is done with
        // the buffer; the length stays within the capacity.
        unsafe { home.set_len(end) };
        let mut bytes = home.split_to(end);
        bytes.advance(start.min(end));
        self.lent.push(bid);
        bytes
    }

    /// Lent buffers whose views are all gone go back on the stack, rewound to their whole
    /// allocation. One still held after [`LENT_MAX`] others were lent is replaced by a
    /// new allocation (its memory stays with whoever holds the view).
    fn reclaim(&mut self) {
        let mut k = 0;
        while k < self.lent.len() {
            let bid = self.lent[k];
            let home = &mut self.homes[usize::from(bid)];
            if home.try_reclaim(BUFFER_SIZE) {
                self.lent.swap_remove(k);
                self.recycle(bid);
            } else if self.lent.len() > LENT_MAX {
                *home = BytesMut::new();
                self.lent.swap_remove(k);
                self.stack.push(bid);
            } else {
                k += 1;
            }
        }
    }

    /// Buffer `bid` was read: it goes back on the stack.
    fn recycle(&mut self, bid: u16) {
        self.stack.push(bid);
        self.resident += 1;
    }

    /// Gives back the pages of the coldest free buffers (the bottom of the stack) while
    /// more than `keep` free buffers are resident, so a burst of connections or traffic
    /// does not stay in the memory of a server that went quiet.
    fn release_cold(&mut self, keep: usize) {
        for k in 0..self.stack.len() {
            if self.resident <= keep {
                return;
            }
            let bid = usize::from(self.stack[k]);
            if self.homes[bid].capacity() > 0 {
                // A free buffer (on the stack: neither the kernel's nor a reader's).
                self.homes[bid] = BytesMut::new();
                self.resident -= 1;
            }
        }
    }

    /// The kernel filled a buffer (a receive completed with data).
    fn taken(&mut self) {
        self.in_ring = self.in_ring.saturating_sub(1);
        self.taken += 1;
        self.taken_total += 1;
    }

    /// A receive found the kernel's ring empty: hand over every free buffer until the
    /// rounds show fewer are needed.
    fn starved(&mut self) {
        self.window = usize::from(BUFFERS);
    }

    /// Once per scheduler round: sizes the window to what the last round took (twice that,
    /// at least [`MIN_WINDOW`]), growing at once and shrinking by an eighth of the excess;
    /// not shrinking while receives wait for buffers.
    fn adapt(&mut self, starving: bool) {
        let want = (2 * self.taken).clamp(MIN_WINDOW, usize::from(BUFFERS));
        self.taken = 0;
        if starving {
            // Receives still wait for buffers: keep handing over all there are.
        } else if want >= self.window {
            self.window = want;
        } else {
            self.window -= (self.window - want).div_ceil(8);
        }
    }

    /// Hands free buffers to the kernel, the most recently freed (hottest) first, until the
    /// kernel's ring holds `window` of them. The kernel takes buffers in the order they
    /// were handed over, so a short ring keeps receives in memory that is still cached;
    /// handing over every free buffer would cycle them through all `BUFFERS`.
    fn top_up(&mut self) {
        if self.in_ring >= self.window {
            return;
        }
        let before = self.in_ring;
        while self.in_ring < self.window {
            let Some(bid) = self.stack.pop() else {
                break;
            };
            self.in_ring += 1;
            self.handed += 1;
            let home = &mut self.homes[usize::from(bid)];
            if home.capacity() >= BUFFER_SIZE {
                self.resident -= 1;
            } else {
                *home = BytesMut::with_capacity(BUFFER_SIZE);
            }
            let idx = usize::from(self.tail & (BUFFERS - 1));
            // The kernel writes from the start of the (empty) buffer's capacity.
            let addr = home.as_mut_ptr() as u64;
            // SAFETY: `idx < BUFFERS`, inside the allocation.
            let entry = unsafe { &mut *self.entries.add(idx) };
            entry.set_addr(addr);
            entry.set_len(BUFFER_SIZE as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
        }
        if self.in_ring == before {
            return;
        }
        // SAFETY: the tail field lives in the first entry; the kernel reads it with acquire.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring was dropped before us, so
        // the kernel no longer uses it (nor the buffers, freed after this).
        unsafe {
            std::alloc::dealloc(self.entries.cast(), self.layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (IoUring, BufRing) {
        let uring = IoUring::builder().build(8).unwrap();
        let bufs = BufRing::new(&uring).unwrap();
        (uring, bufs)
    }

    /// The kernel's ring is kept at the window, not every free buffer: hot buffers are
    /// reused, and a round that took many grows it (and starving fills it).
    #[test]
    fn the_kernel_ring_holds_the_window_and_grows_with_demand() {
        let (_uring, mut b) = ring();
        assert_eq!(b.in_ring, MIN_WINDOW);
        // The kernel fills 100 buffers in one round.
        for _ in 0..100 {
            b.taken();
        }
        b.adapt(false);
        assert_eq!(b.window, 200);
        b.top_up();
        assert_eq!(b.in_ring, 200);
        // Quiet rounds shrink it gradually, never below the minimum.
        for _ in 0..200 {
            b.adapt(false);
        }
        assert_eq!(b.window, MIN_WINDOW);
        b.starved();
        b.top_up();
        assert!(b.stack.is_empty(), "starving hands over every free buffer");
    }

    /// Releasing frees the coldest free buffers and keeps the most recently used; a
    /// round of traffic keeps them all.
    #[test]
    fn cold_buffers_are_released_when_the_thread_goes_idle() {
        let (_uring, mut b) = ring();
        // Take 100 buffers out as the kernel would fill them, then read them back
        // (recycle), coldest first.
        let bids: Vec<u16> = (0..100).map(|_| b.stack.pop().unwrap()).collect();
        for &bid in &bids {
            b.homes[usize::from(bid)] = BytesMut::with_capacity(BUFFER_SIZE);
        }
        for &bid in &bids {
            b.recycle(bid);
        }
        assert_eq!(b.resident, 100);
        b.adapt(false);
        assert_eq!(b.resident, 100, "a round releases nothing");
        b.release_cold(IDLE_RESIDENT);
        assert_eq!(b.resident, IDLE_RESIDENT);
        let held = |b: &BufRing, bid: u16| b.homes[usize::from(bid)].capacity();
        for &bid in &bids[..100 - IDLE_RESIDENT] {
            assert_eq!(held(&b, bid), 0, "buffer {bid} was released");
        }
        for &bid in &bids[100 - IDLE_RESIDENT..] {
            assert!(
                held(&b, bid) >= BUFFER_SIZE,
                "buffer {bid} is among the hottest, kept"
            );
        }
    }

    /// A lent buffer comes back, whole, once its views are gone, and not before; one held
    /// too long is replaced by new memory while its view stays intact.
    #[test]
    fn lent_buffers_come_back_when_their_views_are_dropped() {
        let (_uring, mut b) = ring();
        let bid = b.stack.pop().unwrap();
        let home = &mut b.homes[usize::from(bid)];
        *home = BytesMut::with_capacity(BUFFER_SIZE);
        let base = home.as_ptr();
        // SAFETY (test): as the kernel would, write into the empty buffer's capacity.
        unsafe { std::ptr::copy_nonoverlapping(b"xxhello".as_ptr(), home.as_mut_ptr(), 7) };
        let mut view = b.lend(bid, 2, 7);
        assert_eq!(&view[..], b"hello");
        let payload = view.split_to(5).freeze();
        drop(view);
        b.reclaim();
        assert!(!b.stack.contains(&bid), "still viewed by the payload");
        drop(payload);
        b.reclaim();
        assert_eq!(b.stack.last(), Some(&bid));
        assert!(b.lent.is_empty());
        let home = &b.homes[usize::from(bid)];
        assert_eq!(
            (home.as_ptr(), home.len()),
            (base, 0),
            "rewound to its start"
        );
        assert!(home.capacity() >= BUFFER_SIZE);

        // Held views: past LENT_MAX the buffers are replaced, the views keep their bytes.
        let mut views = Vec::new();
        for _ in 0..=LENT_MAX {
            let bid = b.stack.pop().unwrap();
            b.homes[usize::from(bid)] = BytesMut::with_capacity(BUFFER_SIZE);
            // SAFETY (test): as above.
            unsafe { *b.homes[usize::from(bid)].as_mut_ptr() = 7 };
            views.push(b.lend(bid, 0, 1));
        }
        b.reclaim();
        assert!(b.lent.len() <= LENT_MAX);
        assert!(views.iter().all(|v| v[..] == [7]));
    }

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
