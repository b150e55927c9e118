//! `/echo`: every message straight back, batched per burst. Used by the Autobahn TestSuite
//! and the benchmarks, so it is the lean path: a hand-written state machine per
//! connection, no hub, no outbox.

use std::task::{Context, Poll};

use switchboard_proto::Event;
use switchboard_tokio::{Transport, WebSocket};

use crate::close::{check_registration, Stop};
use crate::registry::Registration;

/// Echoes every message back, batching the replies to a burst into one write, until the
/// connection ends or the server shuts down.
pub(crate) fn poll_echo<S>(
    ws: &mut WebSocket<S>,
    reg: &mut Registration,
    cx: &mut Context<'_>,
) -> Poll<Stop>
where
    S: Transport,
{
    if let Some(stop) = check_registration(ws, reg) {
        return Poll::Ready(stop);
    }
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let r = loop {
        match ws.poll_next_event(cx) {
            Poll::Ready(Ok(Some(Event::Message(m)))) => {
                msgs += 1;
                bytes += m.payload().len() as u64;
                // Queued only: written in one batch before the next read blocks. The queue
                // is flushed before every read, so it never nears its limit here.
                if let Err(e) = ws.feed(&m) {
                    break Poll::Ready(Stop::Failed(e));
                }
            }
            Poll::Ready(Ok(Some(Event::Close(_)))) => break Poll::Ready(Stop::PeerClosed),
            Poll::Ready(Ok(Some(_))) => reg.received(false),
            Poll::Ready(Ok(None)) => break Poll::Ready(Stop::Ended),
            Poll::Ready(Err(e)) => break Poll::Ready(Stop::Failed(e)),
            Poll::Pending => {
                break if reg.register(cx.waker()) {
                    Poll::Ready(Stop::Shutdown)
                } else {
                    Poll::Pending
                };
            }
        }
    };
    if msgs > 0 {
        reg.received(true);
        reg.sent();
        let metrics = reg.metrics();
        metrics.messages_in.add(msgs);
        metrics.messages_out.add(msgs);
        metrics.bytes_in.add(bytes);
        metrics.bytes_out.add(bytes);
    }
    r
}
