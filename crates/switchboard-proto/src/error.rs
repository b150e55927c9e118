//! Protocol errors, each mapped to the close code it is answered with.

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer, or a limit of ours it exceeded.
///
/// The connection answers each with a close frame carrying [`ProtocolError::close_code`] and
/// stops reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame used a reserved opcode (0x3-0x7, 0xB-0xF).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A 64-bit payload length had its most significant bit set.
    #[error("invalid 64-bit payload length (most significant bit set)")]
    InvalidLength,
    /// An RSV bit was set that no negotiated extension defines.
    #[error("reserved bit set without a negotiated extension")]
    ReservedBits,
    /// A client sent an unmasked frame (server role).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (client role).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame carried more than 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A control frame had FIN clear.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame arrived with no fragmented message open.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was still open.
    #[error("new data frame inside an unfinished fragmented message")]
    ExpectedContinuation,
    /// A close frame had a one-byte payload.
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A close frame carried a code that may not be sent.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or close reason was not valid UTF-8.
    #[error("invalid UTF-8 in text payload")]
    InvalidUtf8,
    /// A compressed message was not a valid deflate stream (RFC 7692 §6.2).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A frame was larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured limit ([`Config::max_frame_size`](crate::Config::max_frame_size)).
        max: usize,
    },
    /// A message was larger than the configured maximum.
    #[error("message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The size the message would reach.
        len: u64,
        /// The configured limit ([`Config::max_message_size`](crate::Config::max_message_size)).
        max: usize,
    },
}

impl ProtocolError {
    /// The close code the connection answers this error with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a message could not be queued for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent (or the connection failed): nothing more may be sent.
    #[error("the connection is closing or closed")]
    Closed,
    /// The outgoing buffer would grow past [`Config::max_write_buffer`](crate::Config::max_write_buffer).
    #[error("write buffer full ({buffered} bytes buffered, limit {max})")]
    WriteBufferFull {
        /// Bytes already waiting to be written.
        buffered: usize,
        /// The limit.
        max: usize,
    },
    /// A ping, pong or close payload longer than 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A close code that may not be sent (see [`CloseCode::is_valid_on_wire`]).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A frame given to [`Connection::send_shared`](crate::Connection::send_shared) that this
    /// connection may not send as it is.
    #[error("shared frame refused: {0}")]
    InvalidSharedFrame(&'static str),
}
