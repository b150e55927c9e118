//! The io_uring [`Transport`]: reads take the ring's receive buffers, and frames queued by
//! reference go to the ring as they are.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use switchboard_proto::Connection;
use switchboard_uring::{Received, UringStream};

use super::{poll_read_copied, poll_write_copied, ReadSize, Transport};
use crate::pool;

/// Received runs taken from the ring, not copied, from this size (smaller ones cost less to
/// copy than to lend and reclaim a buffer for).
const TAKE_MIN: usize = 2048;

impl Transport for UringStream {
    /// Reads into the connection's buffer: with nothing buffered, by taking the next
    /// received buffer ([`UringStream::poll_read_take`]), so a message that arrives in one
    /// receive is parsed where the kernel put it; in the middle of a frame, by copying (as
    /// every transport). Messages read so hold ring memory until they are dropped: drop them
    /// soon (an echo writes them back at once; a broadcast is encoded into a frame of its
    /// own).
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
        size: &mut ReadSize,
    ) -> Poll<io::Result<usize>> {
        if conn.read_buf_slot().as_ref().is_some_and(|b| !b.is_empty()) {
            return poll_read_copied(self, cx, conn, size);
        }
        let slot = conn.read_buf_slot();
        let r = {
            let copy_into = &mut *slot;
            self.poll_read_take(cx, TAKE_MIN, move || pool::fill(copy_into))
        };
        match r {
            Poll::Ready(Ok(Received::Lent(bytes))) => {
                let n = bytes.len();
                pool::put(slot, bytes);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Ok(Received::Copied(n))) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                match slot.take() {
                    // A taken buffer used up (or none yet): let go of the ring's memory and
                    // keep the box for the next take, not in this idle connection.
                    Some(mut b) if b.capacity() == 0 => {
                        *b = BytesMut::new();
                        pool::keep_box(b);
                    }
                    other => {
                        *slot = other;
                        pool::give_back(slot);
                    }
                }
                Poll::Pending
            }
        }
    }

    /// Writes what the connection queued: the runs it holds by reference (a large
    /// message's payload and its header, frames encoded once for many connections) go to
    /// the ring as they are ([`UringStream::poll_send_owned`]), without a copy; the
    /// transmit buffer after them (frames encoded here), and whatever the ring cannot hold
    /// (behind bytes it copied), are copied as by `poll_write`.
    fn poll_transmit(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
    ) -> Poll<io::Result<()>> {
        let encoded = conn.transmit_buf_slot().as_deref().map_or(0, BytesMut::len);
        // Bytes queued by reference, before the transmit buffer.
        let mut held = conn.queued_transmit() - encoded;
        while held > 0 {
            let mut runs = std::iter::from_fn(|| {
                if held == 0 {
                    return None;
                }
                let run = conn.take_transmit_chunk()?;
                held = held.saturating_sub(run.len());
                Some(run)
            });
            if ready!(self.poll_send_owned(cx, &mut runs))? == 0 {
                break;
            }
        }
        poll_write_copied(self, cx, conn)
    }
}
