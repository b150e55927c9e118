//! # switchboard-uring
//!
//! TCP streams whose reads and writes go through io_uring, batched per scheduler round.
//!
//! A [`UringStream`] is an [`AsyncRead`](tokio::io::AsyncRead) +
//! [`AsyncWrite`](tokio::io::AsyncWrite), so whatever runs on a tokio `TcpStream` runs on it
//! unchanged. What differs is how the bytes reach the kernel: instead of one `recv(2)` and one
//! `send(2)` per wake-up, a stream queues its operations on its thread's ring, and the thread
//! submits every queued operation of every stream in one `io_uring_enter(2)` just before the
//! runtime parks ([`before_park`]). On an echo benchmark that removes two system calls per
//! message. This crate knows nothing of the protocols above it; it is the only one of the
//! workspace with `unsafe` code for io_uring.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! // The runtime submits the ring's work before each park.
//! let rt = tokio::runtime::Builder::new_multi_thread()
//!     .enable_all()
//!     .on_thread_park(switchboard_uring::before_park)
//!     .build()?;
//! rt.block_on(async {
//!     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//!     let (tcp, _) = listener.accept()?;
//!     let stream = switchboard_uring::UringStream::new(tcp)?;
//!     // use `stream` like a tokio TcpStream
//!     # drop(stream);
//!     Ok::<_, std::io::Error>(())
//! })
//! # }
//! ```
//!
//! How it works (one module each):
//! - **One ring per runtime thread** (`ring`), created on first use. Streams lock it
//!   (uncontended: only the thread's own tasks and its completion task touch it).
//! - **Reads** (`recv`) are multishot receives into provided buffers (`bufring`: 32 KiB
//!   each, up to 512 per ring, allocated as the ring first needs them): armed once per
//!   stream, a receive holds no buffer until data arrives. `poll_read` copies the bytes into
//!   the reader's buffer and the provided buffer goes back, hottest first;
//!   [`UringStream::poll_read_take`] hands runs of a given size or more over where they are
//!   instead, and the buffer goes back once they are dropped. The kernel's ring holds only a
//!   window of them (twice what the last round took, at least 16): it hands out buffers
//!   first-in first-out, so keeping every free buffer in it would spread receives over
//!   16 MiB of cold memory. A stream that holds 8 unread buffers has its receive cancelled
//!   until its reader catches up, so a slow reader cannot take every buffer. When the thread
//!   goes idle, free buffers beyond the 16 hottest are given back to the system, and the
//!   hook set with [`on_idle`] runs (to let the allocator return the freed memory).
//! - **Writes** (`send`) are write-behind: `poll_write` copies into a buffer lent to the
//!   stream and queues a send; the buffer goes back when everything is sent, so an idle
//!   stream holds none. (A direct `sendmsg(2)` for large writes saved the copy but cost
//!   more: it runs at once, outside the round's batch.) `poll_flush` returns once
//!   everything is handed to the ring (submitted at the next park, or at once from a thread
//!   without [`before_park`]); errors surface on the next call. `poll_shutdown` waits until
//!   every byte is sent. At most 256 KiB wait per stream; beyond that `poll_write` is
//!   pending until sends complete.
//! - **Owned sends** (`owned`): [`UringStream::poll_send_owned`] sends runs of bytes
//!   (`Bytes`, say frames encoded once for many connections) without copying them: the
//!   ring holds them until the kernel is done, up to 64 runs in one `sendmsg(2)` (one
//!   `send(2)` when they are one run of memory, as a header written in front of its
//!   payload).
//! - **Costs**, measured in benchmarks/log/: less CPU per message than epoll (with the
//!   taking read and the owned send, a 16 KiB echo is not copied in user space at all;
//!   through plain `poll_read`/`poll_write` it is copied once more each way than over
//!   epoll); a little more memory per idle connection (its slot).
//! - **Completions** (`state`) are collected in [`before_park`], and by a task per ring that
//!   waits on an eventfd. The eventfd is armed whenever the thread parks (a task woken there
//!   may run on another worker while this one sleeps) and disarmed while the thread runs.
//! - **Tasks** ([`spawn`], `task`) are futures the ring polls itself when their wakers
//!   fire: a connection woken by a completion runs in the same [`before_park`] (or
//!   completion task) run that collected it, and what it writes is submitted in that run,
//!   with no tokio scheduling per message. `switchboard serve` runs its connections so.
//! - **Dropping** a stream cancels its receive and any send still running (bytes it has not
//!   sent yet are dropped, as a socket's owner drops what it never wrote: call `shutdown`
//!   first to wait for them), and closes the socket as soon as the kernel lets go of both.
//!   A cancel the kernel cannot match (a receive busy on a socket that never runs dry)
//!   resets the connection instead, so a dropped stream's socket never stays open.
//! - **A reader that stops reading** (typically a task waiting to write to a peer that does
//!   not read) holds at most 8 receive buffers: past that its receive is cancelled (at once
//!   when its writes back up), and what still arrives is copied out (at most 1 MiB; past it
//!   the connection is reset with an error), so it cannot starve the other streams of the
//!   ring. All streams together hold at most half the ring's buffers.
//! - **Accepting** ([`UringListener`], `listener`): connections come out as plain `std`
//!   streams, never registered with tokio's epoll driver they would not use.
//!
//! Needs Linux 6.0 or later (multishot receives, provided-buffer rings).
//! [`UringStream::new`] fails with an error saying so where io_uring is missing or disabled
//! (`/proc/sys/kernel/io_uring_disabled`). On other systems the crate is empty.

#![cfg(target_os = "linux")]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// The one crate of the workspace that hands memory to the kernel: every `unsafe` block says
// why it is sound.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod bufring;
mod listener;
mod owned;
mod recv;
mod ring;
mod send;
mod slots;
mod state;
mod stream;
mod sys;
mod task;

pub use listener::UringListener;
pub use ring::{available, before_park, on_idle};
pub use stream::{Received, UringStream};
pub use task::spawn;
