//! Output commands: encoding messages and control frames, shared frames, and the closing
//! handshake.

use bytes::{Buf, BytesMut};
use rand::Rng;

use crate::close::{CloseCode, CloseFrame};
use crate::config::Role;
use crate::error::SendError;
use crate::frame::{FrameHeader, OpCode, SharedFrame, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::message::Message;

use super::{slot_mut, Connection, Side, State, ZERO_COPY_MIN};

impl Connection {
    fn next_key(&mut self) -> [u8; 4] {
        match self
            .extras
            .as_deref_mut()
            .and_then(|x| x.seeded.as_deref_mut())
        {
            Some(rng) => rng.random(),
            None => rand::rng().random(),
        }
    }

    // ----- commands ----------------------------------------------------------------------

    /// Queues a message.
    pub fn send(&mut self, msg: &Message) -> Result<(), SendError> {
        let (opcode, payload) = match msg {
            Message::Text(t) => (OpCode::Text, &t.as_bytes()[..]),
            Message::Binary(b) => (OpCode::Binary, &b[..]),
        };
        if self.deflate().is_some_and(|d| d.wants(payload.len())) {
            self.check_send(opcode, payload.len())?;
            let mut codec = self.extras.as_deref_mut().and_then(|x| x.deflate.take());
            let sent = codec.as_mut().and_then(|c| {
                c.compress(payload, |z| self.encode_frame_rsv(opcode, true, true, z))
            });
            self.extras_mut().deflate = codec;
            if sent.is_some() {
                return Ok(());
            }
            // Not compressed (incompressible without context takeover, or zlib out of
            // memory): sent as it is.
        }
        if self.role == Role::Server && payload.len() >= ZERO_COPY_MIN {
            // Only the header is written here; the payload goes out by reference.
            self.check_send(opcode, payload.len())?;
            let bytes = match msg {
                Message::Text(t) => t.as_bytes().clone(),
                Message::Binary(b) => b.clone(),
            };
            let header = FrameHeader::new(opcode, payload.len() as u64);
            if self.tracing() {
                self.record(true, header, payload);
            }
            let mut head = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut head);
            match self.room_before(&bytes, n) {
                Some(mut room) => {
                    // The header goes where the received one was, right before the
                    // payload: a transport can write both as one run.
                    room.copy_from_slice(&head[..n]);
                    self.push_chunk(room.freeze());
                }
                None => slot_mut(&mut self.out).extend_from_slice(&head[..n]),
            }
            self.push_chunk(bytes);
            return Ok(());
        }
        self.send_frame(opcode, true, payload)
    }

    /// Queues a complete frame encoded elsewhere, without copying it: the way to send one
    /// broadcast to many connections, encoded once with
    /// [`frame::encode_shared`](crate::frame::encode_shared).
    ///
    /// Server role only (a client must mask every frame with its own key). The frame is one
    /// whole, unmasked Text or Binary message (checked once, when the [`SharedFrame`] was
    /// made, not here); RSV1 (compressed) only when permessage-deflate was negotiated
    /// without server context takeover, so the message decodes the same whatever this
    /// connection sent before.
    ///
    /// ```
    /// use switchboard_proto::{frame::encode_shared, Config, Connection, Message, Role};
    /// let frame = encode_shared(&Message::text("to everyone"));
    /// let mut a = Connection::new(Role::Server, Config::default());
    /// let mut b = Connection::new(Role::Server, Config::default());
    /// a.send_shared(frame.clone()).unwrap();
    /// b.send_shared(frame.clone()).unwrap();
    /// assert_eq!(a.pending_transmit(), &frame[..]);
    /// assert!(Connection::new(Role::Client, Config::default()).send_shared(frame).is_err());
    /// ```
    pub fn send_shared(&mut self, frame: SharedFrame) -> Result<(), SendError> {
        if self.role != Role::Server {
            return Err(SendError::InvalidSharedFrame(
                "only a server may send shared frames",
            ));
        }
        if frame.is_compressed()
            && !self
                .deflate_params()
                .is_some_and(|p| p.server_no_context_takeover)
        {
            return Err(SendError::InvalidSharedFrame(
                "compressed, but this connection did not agree to server_no_context_takeover",
            ));
        }
        self.check_send(frame.opcode(), frame.len())?;
        if self.tracing() {
            self.record(true, frame.header(), &frame[frame.header_len()..]);
        }
        self.push_chunk(frame.into_bytes());
        Ok(())
    }

    /// The last `n` bytes of the room a received header left (see `Extras::room`), when
    /// that room ends where `payload` starts.
    fn room_before(&mut self, payload: &[u8], n: usize) -> Option<BytesMut> {
        let x = self.extras.as_deref_mut()?;
        let room = x.room.as_ref()?;
        if room.len() < n || room.as_ptr_range().end != payload.as_ptr() {
            return None;
        }
        let mut room = x.room.take()?;
        room.advance(room.len() - n);
        Some(room)
    }

    /// Queues one data frame. For fragmented sending: the first frame has opcode Text or
    /// Binary, the rest [`OpCode::Continuation`], the last `fin = true`; control frames may go
    /// between fragments. The caller keeps to that order.
    pub fn send_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.check_send(opcode, payload.len())?;
        self.encode_frame(opcode, fin, payload);
        Ok(())
    }

    fn check_send(&self, opcode: OpCode, len: usize) -> Result<(), SendError> {
        if self.sent_close().is_some() {
            return Err(SendError::Closed);
        }
        if opcode.is_control() && len > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooLong);
        }
        let queued = self.queued_transmit();
        if queued + len > self.config.max_write_buffer {
            return Err(SendError::WriteBufferFull {
                buffered: queued,
                max: self.config.max_write_buffer,
            });
        }
        Ok(())
    }

    /// Queues a ping.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_frame(OpCode::Ping, true, payload)
    }

    /// Queues a pong (for example an unsolicited one as a heartbeat).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_frame(OpCode::Pong, true, payload)
    }

    /// Starts the closing handshake: queues a close frame (`None`: no status code) and moves
    /// to [`State::Closing`]. Nothing but control replies is sent after it.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if self.sent_close().is_some() {
            return Err(SendError::Closed);
        }
        if let Some(f) = &frame {
            if !f.code.is_valid_on_wire() {
                return Err(SendError::InvalidCloseCode(f.code.0));
            }
            if f.reason.len() > MAX_CONTROL_PAYLOAD - 2 {
                return Err(SendError::ControlFrameTooLong);
            }
        }
        self.initiator.get_or_insert(Side::Local);
        self.queue_close(frame);
        if self.state == State::Open {
            self.state = State::Closing;
        }
        Ok(())
    }

    /// Shorthand for [`close`](Self::close) with a code and reason.
    pub fn close_with(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.close(Some(CloseFrame::new(code, reason)))
    }

    pub(super) fn queue_close(&mut self, frame: Option<CloseFrame>) {
        let mut buf = [0u8; MAX_CONTROL_PAYLOAD];
        let n = match &frame {
            Some(f) => {
                buf[..2].copy_from_slice(&f.code.0.to_be_bytes());
                let r = f.reason.as_bytes();
                let r = &r[..r.len().min(MAX_CONTROL_PAYLOAD - 2)];
                buf[2..2 + r.len()].copy_from_slice(r);
                2 + r.len()
            }
            None => 0,
        };
        self.encode_frame(OpCode::Close, true, &buf[..n]);
        self.closing_mut().sent = Some(frame);
    }

    pub(super) fn encode_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        self.encode_frame_rsv(opcode, fin, false, payload);
    }

    fn encode_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) {
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.fin = fin;
        header.rsv1 = rsv1;
        if self.role == Role::Client {
            header.mask = Some(self.next_key());
        }
        if self.tracing() {
            self.record(true, header, payload);
        }
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let out = slot_mut(&mut self.out);
        out.reserve(n + payload.len());
        out.extend_from_slice(&head[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }
}
