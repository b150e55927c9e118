//! The connection state machine: frames in, events out, frames to send.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use rand::{Rng, SeedableRng};

use crate::close::{CloseCode, CloseFrame};
use crate::config::{Config, Role};
use crate::deflate::{DeflateCodec, InflateFailure};
use crate::error::{ProtocolError, SendError};
use crate::extension::DeflateParams;
use crate::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::message::{Message, Text};
use crate::utf8::Utf8Validator;

/// Where the connection is in its lifecycle (RFC 6455 §4-§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Both close frames were exchanged, or the connection failed. Flush what
    /// [`Connection::pending_transmit`] holds, then close TCP (see [`Connection::should_close_tcp`]).
    Closed,
}

/// Which side sent the first close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// This endpoint.
    Local,
    /// The peer.
    Peer,
}

/// Something the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text or binary message.
    Message(Message),
    /// A ping. With [`Config::auto_pong`] the pong is already queued.
    Ping(Bytes),
    /// A pong (solicited or not).
    Pong(Bytes),
    /// The peer's close frame (`None` when it carried no status code). If we had not sent a
    /// close frame yet, the reply echoing its code is already queued.
    Close(Option<CloseFrame>),
}

/// The frame being read: its header is parsed, its payload may still be arriving. Packed
/// into 24 bytes (a [`FrameHeader`] alone takes as much): every open connection holds one.
#[derive(Debug, Clone, Copy)]
struct InFrame {
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

/// What happened in the closing handshake.
#[derive(Debug, Default)]
struct Closing {
    /// The peer's close frame (`Some(None)`: it had no code).
    received: Option<Option<CloseFrame>>,
    /// Ours.
    sent: Option<Option<CloseFrame>>,
    /// The protocol error that failed the connection.
    failure: Option<ProtocolError>,
}

impl InFrame {
    const FIN: u8 = 1;
    const RSV1: u8 = 2;
    const MASKED: u8 = 4;
    /// The payload is text to validate as it arrives (uncompressed text only).
    const TEXT: u8 = 8;
    /// The frame belongs to a compressed message (RSV1 on its first frame).
    const COMPRESSED: u8 = 16;

    fn len(&self) -> usize {
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

/// A fragmented message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    buf: BytesMut,
}

/// The parts of a connection most connections never use (or only at the end), boxed
/// together: an open connection carries one pointer for all of them.
#[derive(Debug, Default)]
struct Extras {
    /// The close details.
    closing: Option<Box<Closing>>,
    /// The fragmented message being assembled.
    partial: Option<Box<Partial>>,
    /// Frames queued as shared [`Bytes`] (a broadcast encoded once for many connections, or
    /// a large payload sent without copying), written before `out`.
    chunks: Option<Box<Chunks>>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<DeflateCodec>>,
    /// Frames seen, when tracing is on.
    #[allow(clippy::box_collection)]
    trace: Option<Box<VecDeque<FrameTrace>>>,
    /// A seeded generator for masking keys, for reproducible tests (client role). Without
    /// it keys come from the thread-local CSPRNG (RFC 6455 §10.3 asks for unpredictable
    /// keys).
    seeded: Option<Box<rand::rngs::StdRng>>,
    /// The header bytes of the last large message received, which sit in memory right
    /// before its payload and are no use once parsed (server role): a reply with that
    /// payload writes its own header there, so header and payload go out as one run of
    /// memory ([`Connection::send`]). Dropped at the next event.
    room: Option<BytesMut>,
}

/// A buffer that costs one pointer while it holds no memory (an idle connection has two);
/// `None` and an empty buffer mean the same.
type BufSlot = Option<Box<BytesMut>>;

/// The bytes a [`BufSlot`] holds.
fn slot_bytes(b: &BufSlot) -> &[u8] {
    b.as_deref().map_or(&[], |b| &b[..])
}

/// A [`BufSlot`]'s buffer, made (empty) if there is none.
fn slot_mut(b: &mut BufSlot) -> &mut BytesMut {
    b.get_or_insert_with(Box::default)
}

/// A WebSocket connection after the opening handshake, without any I/O.
///
/// The caller moves bytes between the connection and the network; the connection decides what
/// they mean and what to answer. Methods come in three kinds:
///
/// - **Input from the network**: [`handle_read`](Self::handle_read) (or fill
///   [`read_buf_mut`](Self::read_buf_mut) directly), then
///   [`poll_event`](Self::poll_event) until it returns `Ok(None)`.
/// - **Commands from the application**: [`send`](Self::send), [`ping`](Self::ping),
///   [`close`](Self::close).
/// - **Output to the network**: write [`pending_transmit`](Self::pending_transmit) and report
///   what was written with [`advance_transmit`](Self::advance_transmit); close TCP when
///   [`should_close_tcp`](Self::should_close_tcp) says so.
///
/// ```
/// use switchboard_proto::{Connection, Config, Event, Message, Role};
/// let mut client = Connection::new(Role::Client, Config::default());
/// let mut server = Connection::new(Role::Server, Config::default());
/// client.send(&Message::text("hello")).unwrap();
/// server.handle_read(client.pending_transmit());
/// let n = client.pending_transmit().len();
/// client.advance_transmit(n);
/// assert_eq!(server.poll_event().unwrap(), Some(Event::Message(Message::text("hello"))));
/// assert_eq!(server.poll_event().unwrap(), None);
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared: a server hands every connection the same `Arc`.
    config: Arc<Config>,
    state: State,
    initiator: Option<Side>,
    /// The receive buffer (none while idle: transports lend pooled ones).
    read_buf: BufSlot,
    cur: Option<InFrame>,
    utf8: Utf8Validator,
    /// The transmit buffer (none while idle).
    out: BufSlot,
    /// Everything rarely used, boxed on first use to keep an open connection small.
    extras: Option<Box<Extras>>,
}

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

/// Payloads at least this large are queued by reference (a vectored write sends them)
/// instead of being copied into the transmit buffer, when no masking or compression must
/// touch them (server role).
const ZERO_COPY_MIN: usize = 4096;

/// The shared part of the transmit queue: chunks in order, written before `out`.
#[derive(Debug, Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    /// Total bytes in `queue`.
    len: usize,
}

impl Connection {
    /// A connection in the given role whose handshake has completed. Pass an `Arc<Config>`
    /// to share one configuration between many connections.
    pub fn new(role: Role, config: impl Into<Arc<Config>>) -> Self {
        Self {
            role,
            config: config.into(),
            state: State::Open,
            initiator: None,
            read_buf: None,
            cur: None,
            utf8: Utf8Validator::default(),
            out: None,
            extras: None,
        }
    }

    fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    fn deflate(&self) -> Option<&DeflateCodec> {
        self.extras()?.deflate.as_deref()
    }

    fn partial(&self) -> Option<&Partial> {
        self.extras()?.partial.as_deref()
    }

    fn chunks(&self) -> Option<&Chunks> {
        self.extras()?.chunks.as_deref()
    }

    fn chunks_mut(&mut self) -> Option<&mut Chunks> {
        self.extras.as_deref_mut()?.chunks.as_deref_mut()
    }

    fn tracing(&self) -> bool {
        self.extras().is_some_and(|x| x.trace.is_some())
    }

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

    fn record(&mut self, outgoing: bool, header: FrameHeader, payload: &[u8]) {
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

    /// Enables permessage-deflate with the parameters agreed in the handshake; level,
    /// threshold and memory settings come from [`Config::deflate`] (or its defaults).
    pub fn with_deflate(mut self, params: DeflateParams) -> Self {
        let cfg = self.config.deflate.unwrap_or_default();
        self.extras_mut().deflate = Some(Box::new(DeflateCodec::new(self.role, params, &cfg)));
        self
    }

    /// The permessage-deflate parameters in force, if it was negotiated.
    pub fn deflate_params(&self) -> Option<&DeflateParams> {
        self.deflate().map(DeflateCodec::params)
    }

    /// Uses a seeded generator for masking keys instead of the thread's CSPRNG. For tests that
    /// need byte-exact output; never use a fixed seed on a real connection.
    pub fn with_mask_seed(mut self, seed: u64) -> Self {
        self.extras_mut().seeded = Some(Box::new(rand::rngs::StdRng::seed_from_u64(seed)));
        self
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Who sent the first close frame, once one was sent or received.
    pub fn close_initiator(&self) -> Option<Side> {
        self.initiator
    }

    /// The peer's close frame, once received (`Some(None)`: it carried no code).
    pub fn received_close(&self) -> Option<&Option<CloseFrame>> {
        self.extras()?.closing.as_ref()?.received.as_ref()
    }

    /// The close frame we sent, once sent.
    pub fn sent_close(&self) -> Option<&Option<CloseFrame>> {
        self.extras()?.closing.as_ref()?.sent.as_ref()
    }

    fn closing_mut(&mut self) -> &mut Closing {
        self.extras_mut().closing.get_or_insert_with(Box::default)
    }

    /// The protocol error that failed the connection, if one did.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.extras()?.closing.as_ref()?.failure.as_ref()
    }

    // ----- input -------------------------------------------------------------------------

    /// Appends bytes received from the network.
    pub fn handle_read(&mut self, data: &[u8]) {
        if self.reading() && !data.is_empty() {
            slot_mut(&mut self.read_buf).extend_from_slice(data);
        }
    }

    /// The receive buffer, for reading from the network straight into it (no extra copy).
    /// Made, empty, if the connection holds none.
    pub fn read_buf_mut(&mut self) -> &mut BytesMut {
        slot_mut(&mut self.read_buf)
    }

    /// The receive buffer's slot, for transports that pool buffers: put a buffer in before
    /// reading, take it out once it is empty. `None` holds no memory. Only an empty buffer
    /// may be taken: what it holds is input not yet processed.
    ///
    /// ```
    /// use switchboard_proto::{Config, Connection, Role};
    /// let mut c = Connection::new(Role::Server, Config::default());
    /// *c.read_buf_slot() = Some(Box::new(bytes::BytesMut::with_capacity(4096)));
    /// assert_eq!(c.poll_event().unwrap(), None);
    /// let pooled = c.read_buf_slot().take().unwrap();
    /// assert!(pooled.is_empty() && pooled.capacity() >= 4096);
    /// ```
    pub fn read_buf_slot(&mut self) -> &mut Option<Box<BytesMut>> {
        &mut self.read_buf
    }

    /// How many payload bytes the frame being read still needs, if one is partly read; lets
    /// the transport size its next read.
    pub fn read_hint(&self) -> usize {
        match &self.cur {
            Some(f) => f.len().saturating_sub(slot_bytes(&self.read_buf).len()),
            None => 0,
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
    /// Server role only (a client must mask every frame with its own key). The frame must be
    /// one whole, unmasked Text or Binary message; RSV1 (compressed) only when
    /// permessage-deflate was negotiated without server context takeover, so the message
    /// decodes the same whatever this connection sent before.
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
    pub fn send_shared(&mut self, frame: Bytes) -> Result<(), SendError> {
        if self.role != Role::Server {
            return Err(SendError::InvalidSharedFrame(
                "only a server may send shared frames",
            ));
        }
        let Ok(Some((h, n))) = FrameHeader::parse(&frame) else {
            return Err(SendError::InvalidSharedFrame("not a frame"));
        };
        if n as u64 + h.payload_len != frame.len() as u64 {
            return Err(SendError::InvalidSharedFrame("not exactly one whole frame"));
        }
        if !h.fin || h.mask.is_some() || h.rsv2 || h.rsv3 {
            return Err(SendError::InvalidSharedFrame(
                "must be final, unmasked, without RSV2/RSV3",
            ));
        }
        if !matches!(h.opcode, OpCode::Text | OpCode::Binary) {
            return Err(SendError::InvalidSharedFrame(
                "must be a Text or Binary frame",
            ));
        }
        if h.rsv1
            && !self
                .deflate_params()
                .is_some_and(|p| p.server_no_context_takeover)
        {
            return Err(SendError::InvalidSharedFrame(
                "compressed, but this connection did not agree to server_no_context_takeover",
            ));
        }
        self.check_send(h.opcode, frame.len())?;
        if self.tracing() {
            self.record(true, h, &frame[n..]);
        }
        self.push_chunk(frame);
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

    /// Moves what `out` holds into the chunk queue, then appends `b` after it.
    fn push_chunk(&mut self, b: Bytes) {
        let head = match self.out.as_deref_mut() {
            Some(out) if !out.is_empty() => Some(out.split().freeze()),
            _ => None,
        };
        let chunks = self.extras_mut().chunks.get_or_insert_with(Box::default);
        if let Some(head) = head {
            chunks.len += head.len();
            chunks.queue.push_back(head);
        }
        if !b.is_empty() {
            chunks.len += b.len();
            chunks.queue.push_back(b);
        }
    }

    /// Bytes queued for the network, shared chunks and the transmit buffer together.
    pub fn queued_transmit(&self) -> usize {
        slot_bytes(&self.out).len() + self.chunks().map_or(0, |c| c.len)
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

    fn queue_close(&mut self, frame: Option<CloseFrame>) {
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

    fn encode_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
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

    // ----- output ------------------------------------------------------------------------

    /// The first contiguous run of bytes waiting to be written to the network (empty when
    /// nothing is queued). When shared frames are queued ([`send_shared`](Self::send_shared),
    /// large server payloads) there may be more after it: write it, call
    /// [`advance_transmit`](Self::advance_transmit), and ask again, or take every run at once
    /// with [`transmit_slices`](Self::transmit_slices) for a vectored write.
    pub fn pending_transmit(&self) -> &[u8] {
        match self.chunks().and_then(|c| c.queue.front()) {
            Some(front) => front,
            None => slot_bytes(&self.out),
        }
    }

    /// Fills `dst` with the queued runs of bytes, in order, for a vectored write; returns how
    /// many slices it filled.
    pub fn transmit_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let chunks = self
            .chunks()
            .into_iter()
            .flat_map(|c| c.queue.iter().map(|b| &b[..]));
        let out = slot_bytes(&self.out);
        let runs = chunks.chain((!out.is_empty()).then_some(out));
        for (slot, run) in dst.iter_mut().zip(runs) {
            *slot = IoSlice::new(run);
            n += 1;
        }
        n
    }

    /// Marks `n` queued bytes as written (across runs, in order).
    pub fn advance_transmit(&mut self, mut n: usize) {
        if let Some(c) = self.chunks_mut() {
            while n > 0 {
                let Some(front) = c.queue.front_mut() else {
                    break;
                };
                let step = n.min(front.len());
                front.advance(step);
                c.len -= step;
                n -= step;
                if front.is_empty() {
                    c.queue.pop_front();
                }
            }
        }
        if let Some(out) = self.out.as_deref_mut() {
            if n >= out.len() {
                // All written: rewind instead of advancing, so the buffer keeps its whole
                // capacity and goes back to a pool as it came.
                out.clear();
            } else {
                out.advance(n);
            }
        }
    }

    /// Whether nothing is queued for the network.
    pub fn transmit_is_empty(&self) -> bool {
        slot_bytes(&self.out).is_empty() && self.chunks().is_none_or(|c| c.queue.is_empty())
    }

    /// Takes the first queued run of bytes as an owned [`Bytes`], for transports that hand
    /// buffers to an owned write (the same order as [`pending_transmit`](Self::pending_transmit)).
    pub fn take_transmit_chunk(&mut self) -> Option<Bytes> {
        if let Some(c) = self.chunks_mut() {
            if let Some(b) = c.queue.pop_front() {
                c.len -= b.len();
                return Some(b);
            }
        }
        let out = self.out.as_deref_mut()?;
        (!out.is_empty()).then(|| out.split().freeze())
    }

    /// The transmit buffer that new frames are encoded into (after any shared chunks). Made,
    /// empty, if the connection holds none.
    pub fn transmit_buf_mut(&mut self) -> &mut BytesMut {
        slot_mut(&mut self.out)
    }

    /// The transmit buffer's slot, for transports that lend it pooled memory: put a buffer in
    /// before queueing frames, take it out once everything was written (see
    /// [`read_buf_slot`](Self::read_buf_slot)). Only an empty buffer may be taken.
    pub fn transmit_buf_slot(&mut self) -> &mut Option<Box<BytesMut>> {
        &mut self.out
    }

    /// Whether everything queued was written and the TCP connection should now be closed:
    /// the close handshake completed or the connection failed.
    ///
    /// RFC 6455 §7.1.1 wants the server to close TCP first; a client should give the server
    /// [`Config::close_timeout`] to do so before closing itself.
    pub fn should_close_tcp(&self) -> bool {
        self.state == State::Closed && self.transmit_is_empty()
    }

    /// Drops the read and write buffers' memory when both are empty, so an idle connection
    /// holds no buffer. Returns whether anything was released.
    pub fn release_idle_buffers(&mut self) -> bool {
        let mut released = false;
        if slot_bytes(&self.read_buf).is_empty() && self.cur.is_none() {
            released |= self.read_buf.take().is_some();
        }
        if slot_bytes(&self.out).is_empty() {
            released |= self.out.take().is_some();
        }
        if let Some(x) = self.extras.as_deref_mut() {
            released |= x.room.take().is_some();
        }
        released
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
