//! The connection state machine: frames in, events out, frames to send.
//!
//! [`Connection`] and its state are defined here; its methods are spread by concern:
//!
//! - `receive`: parsing frames, reassembling messages, answering control frames, events.
//! - `send`: encoding messages and control frames, shared frames, the closing handshake.
//! - `transmit`: the buffers a transport fills and drains (the receive buffer, the
//!   transmit queue).
//! - `trace`: recording frames for tools ([`FrameTrace`]).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;

use crate::close::CloseFrame;
use crate::config::{Config, Role};
use crate::deflate::DeflateCodec;
use crate::error::ProtocolError;
use crate::extension::DeflateParams;
use crate::message::Message;
use crate::utf8::Utf8Validator;

mod receive;
mod send;
mod trace;
mod transmit;

use receive::InFrame;
pub use trace::{FrameTrace, TRACE_PREVIEW};
use transmit::Chunks;

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

/// Payloads at least this large are queued by reference (a vectored write sends them)
/// instead of being copied into the transmit buffer, when no masking or compression must
/// touch them (server role).
const ZERO_COPY_MIN: usize = 4096;

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
}
