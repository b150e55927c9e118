//! Recording the frames a connection sends and receives, for tools that show them.

use crate::frame::FrameHeader;

use super::Connection;

/// How many payload bytes a [`FrameTrace`] keeps.
pub const TRACE_PREVIEW: usize = 64;
/// Frames kept for [`Connection::poll_trace`] before the oldest are dropped.
const TRACE_MAX: usize = 4096;

/// One frame as it crossed the wire, for tools that show a connection's frames
/// ([`Connection::set_trace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameTrace {
    /// Sent by this end (`true`) or received.
    pub outgoing: bool,
    /// The header as on the wire (FIN, RSV bits, opcode, mask, length).
    pub header: FrameHeader,
    /// The first [`TRACE_PREVIEW`] payload bytes, unmasked (still compressed when RSV1 is
    /// set).
    pub preview: Vec<u8>,
}

impl Connection {
    pub(super) fn tracing(&self) -> bool {
        self.extras().is_some_and(|x| x.trace.is_some())
    }

    /// Records every frame sent and received (headers and a payload preview) until turned
    /// off; take them with [`poll_trace`](Self::poll_trace). Off by default: it costs an
    /// allocation per frame.
    ///
    /// ```
    /// use switchboard_proto::{Config, Connection, Message, OpCode, Role};
    /// let mut c = Connection::new(Role::Client, Config::default());
    /// c.set_trace(true);
    /// c.send(&Message::text("hi")).unwrap();
    /// let t = c.poll_trace().unwrap();
    /// assert!(t.outgoing && t.header.mask.is_some());
    /// assert_eq!((t.header.opcode, &t.preview[..]), (OpCode::Text, &b"hi"[..]));
    /// ```
    pub fn set_trace(&mut self, on: bool) {
        self.extras_mut().trace = on.then(Box::default);
    }

    /// The oldest recorded frame not yet taken.
    pub fn poll_trace(&mut self) -> Option<FrameTrace> {
        self.extras.as_deref_mut()?.trace.as_mut()?.pop_front()
    }

    pub(super) fn record(&mut self, outgoing: bool, header: FrameHeader, payload: &[u8]) {
        if let Some(t) = self.extras.as_deref_mut().and_then(|x| x.trace.as_mut()) {
            if t.len() >= TRACE_MAX {
                t.pop_front();
            }
            t.push_back(FrameTrace {
                outgoing,
                header,
                preview: payload[..payload.len().min(TRACE_PREVIEW)].to_vec(),
            });
        }
    }
}
