//! Input: parsing frames, checking them against the connection's rules, reassembling
//! messages, answering control frames, and the events that come out.

use bytes::{Buf, Bytes, BytesMut};

use crate::close::CloseFrame;
use crate::config::Role;
use crate::deflate::InflateFailure;
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use crate::mask::apply_mask;
use crate::message::{Message, Text};

use super::{slot_bytes, slot_mut, Connection, Event, Partial, Side, State, ZERO_COPY_MIN};

/// The frame being read: its header is parsed, its payload may still be arriving. Packed
/// into 24 bytes (a [`FrameHeader`] alone takes as much): every open connection holds one.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFrame {
    /// The payload length; bounded by `max_frame_size` when the header was checked.
    len: usize,
    /// Payload bytes already unmasked (and UTF-8 checked).
    processed: usize,
    /// The masking key (when [`InFrame::MASKED`] is set).
    key: [u8; 4],
    opcode: OpCode,
    /// [`InFrame::FIN`], [`InFrame::RSV1`], [`InFrame::MASKED`], [`InFrame::TEXT`],
    /// [`InFrame::COMPRESSED`].
    flags: u8,
}

impl InFrame {
    const FIN: u8 = 1;
    const RSV1: u8 = 2;
    const MASKED: u8 = 4;
    /// The payload is text to validate as it arrives (uncompressed text only).
    const TEXT: u8 = 8;
    /// The frame belongs to a compressed message (RSV1 on its first frame).
    const COMPRESSED: u8 = 16;

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn key(&self) -> Option<[u8; 4]> {
        self.has(Self::MASKED).then_some(self.key)
    }

    /// The header as it was on the wire (RSV2/RSV3 are never set on an accepted frame).
    fn header(&self) -> FrameHeader {
        FrameHeader {
            fin: self.has(Self::FIN),
            rsv1: self.has(Self::RSV1),
            rsv2: false,
            rsv3: false,
            opcode: self.opcode,
            mask: self.key(),
            payload_len: self.len as u64,
        }
    }
}

impl Connection {
    // ----- input -------------------------------------------------------------------------

    /// Appends bytes received from the network.
    pub fn handle_read(&mut self, data: &[u8]) {
        if self.reading() && !data.is_empty() {
            slot_mut(&mut self.read_buf).extend_from_slice(data);
        }
    }

    /// Whether input is still processed (false after the peer's close or a failure).
    fn reading(&self) -> bool {
        self.extras()
            .and_then(|x| x.closing.as_ref())
            .is_none_or(|c| c.received.is_none() && c.failure.is_none())
    }

    /// Processes buffered input and returns the next event, `Ok(None)` when more bytes are
    /// needed (or nothing more will be read).
    ///
    /// On a protocol violation the close frame with the matching code is queued, the state
    /// becomes [`State::Closed`], the error is returned once, and later calls return `Ok(None)`.
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        if let Some(room) = self.extras.as_deref_mut().map(|x| &mut x.room) {
            // The last message's header room is for a reply sent before this call.
            *room = None;
        }
        if slot_bytes(&self.read_buf).is_empty() && self.cur.is_none() {
            // Nothing buffered, no frame open: the common "need more bytes" case, without
            // walking the parser (an empty frame still needs its header bytes).
            return Ok(None);
        }
        match self.next_event() {
            Err(e) => Err(self.fail(e)),
            ok => ok,
        }
    }

    fn next_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            if !self.reading() {
                return Ok(None);
            }
            let mut frame = match self.cur {
                Some(f) => f,
                None => match FrameHeader::parse(slot_bytes(&self.read_buf))? {
                    None => return Ok(None),
                    Some((header, n)) => {
                        let f = self.check_header(header)?;
                        let buf = slot_mut(&mut self.read_buf);
                        if self.role == Role::Server
                            && f.len() >= ZERO_COPY_MIN
                            && f.flags & (InFrame::FIN | InFrame::COMPRESSED) == InFrame::FIN
                            && buf.len() - n >= f.len()
                            && matches!(header.opcode, OpCode::Text | OpCode::Binary)
                        {
                            // A whole large message: its header stays, as room for the
                            // reply's (see `Extras::room`).
                            let room = buf.split_to(n);
                            self.extras_mut().room = Some(room);
                        } else {
                            buf.advance(n);
                        }
                        f
                    }
                },
            };
            let avail = slot_bytes(&self.read_buf).len().min(frame.len());
            if avail > frame.processed {
                let fresh = &mut slot_mut(&mut self.read_buf)[frame.processed..avail];
                if let Some(key) = frame.key() {
                    apply_mask(fresh, key, frame.processed);
                }
                if frame.has(InFrame::TEXT) {
                    self.utf8
                        .feed(fresh)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                frame.processed = avail;
            }
            if avail < frame.len() {
                self.cur = Some(frame);
                return Ok(None);
            }
            self.cur = None;
            let payload = slot_mut(&mut self.read_buf).split_to(frame.len());
            if self.tracing() {
                self.record(false, frame.header(), &payload);
            }
            let compressed = frame.has(InFrame::COMPRESSED);
            if let Some(ev) = self.complete_frame(frame.header(), compressed, payload)? {
                return Ok(Some(ev));
            }
        }
    }

    /// Checks a header against the rules that depend on the connection.
    fn check_header(&self, h: FrameHeader) -> Result<InFrame, ProtocolError> {
        if h.rsv2 || h.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        // RSV1 marks a compressed message: only with permessage-deflate, only on the first
        // frame of a data message (RFC 7692 §6).
        if h.rsv1
            && (self.deflate().is_none() || !matches!(h.opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        } else {
            match (h.opcode, self.partial()) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
        }
        let (text, compressed) = match (h.opcode, self.partial()) {
            (OpCode::Text, _) => (true, h.rsv1),
            (OpCode::Binary, _) => (false, h.rsv1),
            (OpCode::Continuation, Some(p)) => (p.text, p.compressed),
            _ => (false, false),
        };
        // The limits are the message's: a compressed one is checked again once inflated,
        // and on the wire it may be a little longer than the message it holds.
        let on_wire = |max: usize| {
            if compressed {
                compressed_limit(max)
            } else {
                max as u64
            }
        };
        if h.payload_len > on_wire(self.config.max_frame_size) {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max: self.config.max_frame_size,
            });
        }
        let so_far = self.partial().map_or(0, |p| p.buf.len()) as u64;
        if !h.opcode.is_control() && so_far + h.payload_len > on_wire(self.config.max_message_size)
        {
            return Err(ProtocolError::MessageTooLarge {
                len: so_far + h.payload_len,
                max: self.config.max_message_size,
            });
        }
        let flag = |on: bool, f: u8| if on { f } else { 0 };
        Ok(InFrame {
            len: h.payload_len as usize,
            processed: 0,
            key: h.mask.unwrap_or_default(),
            opcode: h.opcode,
            flags: flag(h.fin, InFrame::FIN)
                | flag(h.rsv1, InFrame::RSV1)
                | flag(h.mask.is_some(), InFrame::MASKED)
                // Compressed text is validated after inflating.
                | flag(text && !compressed, InFrame::TEXT)
                | flag(compressed, InFrame::COMPRESSED),
        })
    }

    /// Acts on a complete frame; returns the event it produces, if any.
    fn complete_frame(
        &mut self,
        h: FrameHeader,
        compressed: bool,
        payload: BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        match h.opcode {
            OpCode::Text | OpCode::Binary => {
                let text = h.opcode == OpCode::Text;
                if h.fin {
                    return self.finish_message(text, compressed, payload).map(Some);
                }
                self.extras_mut().partial = Some(Box::new(Partial {
                    text,
                    compressed,
                    buf: payload,
                }));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(mut p) = self.extras.as_deref_mut().and_then(|x| x.partial.take()) else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                p.buf.extend_from_slice(&payload);
                if h.fin {
                    return self.finish_message(p.text, p.compressed, p.buf).map(Some);
                }
                self.extras_mut().partial = Some(p);
                Ok(None)
            }
            OpCode::Ping => {
                let payload = payload.freeze();
                if self.config.auto_pong
                    && self.sent_close().is_none()
                    && self.queued_transmit() <= self.config.max_write_buffer
                {
                    self.encode_frame(OpCode::Pong, true, &payload);
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload.freeze()))),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload.freeze())?;
                if self.sent_close().is_none() {
                    self.initiator = Some(Side::Peer);
                    let reply = frame.as_ref().map(|f| CloseFrame {
                        code: f.code,
                        reason: Text::default(),
                    });
                    self.queue_close(reply);
                }
                self.closing_mut().received = Some(frame.clone());
                self.state = State::Closed;
                self.read_buf = None;
                self.extras_mut().partial = None;
                Ok(Some(Event::Close(frame)))
            }
        }
    }

    fn finish_message(
        &mut self,
        text: bool,
        compressed: bool,
        payload: BytesMut,
    ) -> Result<Event, ProtocolError> {
        if compressed {
            let max = self.config.max_message_size;
            let codec = self
                .extras
                .as_deref_mut()
                .and_then(|x| x.deflate.as_deref_mut())
                .ok_or(ProtocolError::ReservedBits)?;
            let mut out = Vec::new();
            codec
                .decompress(&payload, &mut out, max)
                .map_err(|e| match e {
                    InflateFailure::TooLarge => ProtocolError::MessageTooLarge {
                        len: out.len() as u64,
                        max,
                    },
                    InflateFailure::Invalid => ProtocolError::InvalidCompressedData,
                })?;
            let bytes = Bytes::from(out);
            let msg = if text {
                Message::Text(Text::try_from(bytes).map_err(|_| ProtocolError::InvalidUtf8)?)
            } else {
                Message::Binary(bytes)
            };
            return Ok(Event::Message(msg));
        }
        let payload = payload.freeze();
        let msg = if text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            Message::Text(Text::from_validated(payload))
        } else {
            Message::Binary(payload)
        };
        Ok(Event::Message(msg))
    }

    /// Fails the connection: queues the close frame for `e` and stops reading.
    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        if self.sent_close().is_none() {
            self.initiator = Some(Side::Local);
            let code = e.close_code();
            self.queue_close(Some(CloseFrame::new(code, "")));
        }
        self.closing_mut().failure = Some(e.clone());
        self.state = State::Closed;
        self.read_buf = None;
        self.extras_mut().partial = None;
        self.cur = None;
        e
    }
}

/// The longest a compressed message of at most `max` bytes may be on the wire. zlib falls
/// back to stored blocks for incompressible data (about 0.03 % more), but a compressor that
/// codes every literal with deflate's fixed Huffman codes (zlib-ng's and zlib-rs's fastest
/// level does) spends up to 9 bits per byte: 12.5 % more, plus a few bytes. That much is
/// buffered before inflating; the inflated message is held to `max`.
pub(crate) fn compressed_limit(max: usize) -> u64 {
    let max = max as u64;
    max.saturating_add(max / 8 + 64)
}
