//! Frames encoded once and sent on many connections: [`SharedFrame`].

use std::ops::Deref;

use bytes::{Bytes, BytesMut};

use super::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::error::SendError;
use crate::message::Message;

/// One whole, unmasked Text or Binary frame, encoded once and checked once, for
/// [`Connection::send_shared`](crate::Connection::send_shared) on any number of server
/// connections.
///
/// It holds the encoded bytes (a [`Bytes`], shared by reference) and what sending needs to
/// know about them (opcode, RSV1, header length), so nothing is parsed again per
/// connection. Cloning it is cloning the [`Bytes`]: no copy of the frame, no allocation. It
/// dereferences to the encoded bytes, header included.
///
/// Make one with [`encode_shared`], or from a frame encoded elsewhere with
/// [`SharedFrame::from_bytes`], which checks it.
///
/// ```
/// use switchboard_proto::frame::{encode_shared, SharedFrame};
/// use switchboard_proto::{Message, OpCode};
/// let frame = encode_shared(&Message::text("Hi"));
/// assert_eq!((frame.opcode(), frame.header_len(), frame.payload_len()), (OpCode::Text, 2, 2));
/// assert_eq!(&frame[..], b"\x81\x02Hi");
/// assert_eq!(&frame.payload()[..], b"Hi");
/// // The same frame, checked from its bytes.
/// assert_eq!(SharedFrame::from_bytes(frame.clone().into_bytes()), Ok(frame));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedFrame {
    /// The whole frame, header first.
    bytes: Bytes,
    /// Where the payload starts (at most 10: the frame is unmasked).
    header_len: u8,
    /// Text or Binary.
    opcode: OpCode,
    /// RSV1: a compressed (permessage-deflate) message.
    compressed: bool,
}

impl SharedFrame {
    /// Checks that `frame` is one whole frame [`Connection::send_shared`] may send, and keeps
    /// what sending it needs to know.
    ///
    /// Fails with [`SendError::InvalidSharedFrame`] unless `frame` is exactly one frame,
    /// final, unmasked, without RSV2/RSV3, and Text or Binary. RSV1 (compressed) is
    /// accepted here; [`Connection::send_shared`] sends such a frame only where
    /// permessage-deflate was agreed without server context takeover.
    ///
    /// [`Connection::send_shared`]: crate::Connection::send_shared
    ///
    /// ```
    /// use bytes::Bytes;
    /// use switchboard_proto::{frame::SharedFrame, SendError};
    /// assert!(SharedFrame::from_bytes(Bytes::from_static(b"\x82\x01x")).is_ok());
    /// assert_eq!(
    ///     SharedFrame::from_bytes(Bytes::from_static(b"\x89\x01x")), // a ping
    ///     Err(SendError::InvalidSharedFrame("must be a Text or Binary frame"))
    /// );
    /// ```
    pub fn from_bytes(frame: Bytes) -> Result<Self, SendError> {
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
        Ok(Self {
            bytes: frame,
            // An unmasked header is at most 10 bytes.
            header_len: n as u8,
            opcode: h.opcode,
            compressed: h.rsv1,
        })
    }

    /// Text or Binary.
    pub fn opcode(&self) -> OpCode {
        self.opcode
    }

    /// Whether RSV1 is set: the payload is a compressed (permessage-deflate) message.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// The encoded header's length: where the payload starts.
    pub fn header_len(&self) -> usize {
        usize::from(self.header_len)
    }

    /// The payload's length (as on the wire: compressed when RSV1 is set).
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - self.header_len()
    }

    /// The header, as on the wire.
    pub fn header(&self) -> FrameHeader {
        let mut h = FrameHeader::new(self.opcode, self.payload_len() as u64);
        h.rsv1 = self.compressed;
        h
    }

    /// The payload, sharing the frame's memory (as on the wire: compressed when RSV1 is
    /// set).
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(self.header_len()..)
    }

    /// The whole encoded frame.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole encoded frame, as [`Bytes`].
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl Deref for SharedFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl TryFrom<Bytes> for SharedFrame {
    type Error = SendError;

    /// See [`SharedFrame::from_bytes`].
    fn try_from(frame: Bytes) -> Result<Self, SendError> {
        Self::from_bytes(frame)
    }
}

impl From<SharedFrame> for Bytes {
    fn from(frame: SharedFrame) -> Bytes {
        frame.bytes
    }
}

/// Encodes a whole message as one unmasked server frame, once, for
/// [`Connection::send_shared`](crate::Connection::send_shared) on any number of server
/// connections: the returned [`SharedFrame`] is shared by reference, never copied per
/// connection.
///
/// ```
/// use switchboard_proto::{frame::encode_shared, Message};
/// assert_eq!(&encode_shared(&Message::text("Hi"))[..], &[0x81, 0x02, b'H', b'i']);
/// ```
pub fn encode_shared(msg: &Message) -> SharedFrame {
    match msg {
        Message::Text(t) => encode_parts(OpCode::Text, &[&t.as_bytes()[..]]),
        Message::Binary(b) => encode_parts(OpCode::Binary, &[&b[..]]),
    }
}

/// [`encode_shared`] for a text message given in pieces (a rendered publication: a prefix,
/// the payload, a suffix), written into the frame without joining them first.
///
/// ```
/// use switchboard_proto::frame::encode_shared_text;
/// assert_eq!(&encode_shared_text(&["H", "i"])[..], &[0x81, 0x02, b'H', b'i']);
/// ```
pub fn encode_shared_text(parts: &[&str]) -> SharedFrame {
    let mut bytes: [&[u8]; 8] = [&[]; 8];
    if parts.len() <= bytes.len() {
        for (b, p) in bytes.iter_mut().zip(parts) {
            *b = p.as_bytes();
        }
        encode_parts(OpCode::Text, &bytes[..parts.len()])
    } else {
        encode_parts(OpCode::Text, &[parts.concat().as_bytes()])
    }
}

/// [`encode_shared`] for a binary message given in pieces.
///
/// ```
/// use switchboard_proto::frame::encode_shared_binary;
/// assert_eq!(&encode_shared_binary(&[&[1], &[2, 3]])[..], &[0x82, 0x03, 1, 2, 3]);
/// ```
pub fn encode_shared_binary(parts: &[&[u8]]) -> SharedFrame {
    encode_parts(OpCode::Binary, parts)
}

fn encode_parts(opcode: OpCode, parts: &[&[u8]]) -> SharedFrame {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader::new(opcode, len as u64).encode(&mut head);
    let mut out = BytesMut::with_capacity(n + len);
    out.extend_from_slice(&head[..n]);
    for p in parts {
        out.extend_from_slice(p);
    }
    SharedFrame {
        bytes: out.freeze(),
        // An unmasked header is at most 10 bytes.
        header_len: n as u8,
        opcode,
        compressed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(b: &'static [u8]) -> Option<&'static str> {
        match SharedFrame::from_bytes(Bytes::from_static(b)) {
            Err(SendError::InvalidSharedFrame(why)) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn the_checked_constructor_refuses_what_may_not_be_shared() {
        const ONE: &str = "not exactly one whole frame";
        const BITS: &str = "must be final, unmasked, without RSV2/RSV3";
        const DATA: &str = "must be a Text or Binary frame";
        for (frame, why) in [
            (&b""[..], "not a frame"),
            (b"\x81", "not a frame"),              // incomplete header
            (b"\x81\x7e\x01", "not a frame"),      // incomplete 16-bit length
            (b"\x83\x00", "not a frame"),          // reserved opcode
            (b"\x81\x05Hi", ONE),                  // shorter than its length
            (b"\x81\x01Hi", ONE),                  // longer: more than one frame
            (b"\x81\x02Hi\x81\x00", ONE),          // two whole frames
            (b"\x01\x02Hi", BITS),                 // not final
            (b"\x81\x82\x00\x00\x00\x00Hi", BITS), // masked
            (b"\xa1\x02Hi", BITS),                 // RSV2
            (b"\x91\x02Hi", BITS),                 // RSV3
            (b"\x80\x02Hi", DATA),                 // continuation
            (b"\x89\x02Hi", DATA),                 // ping
            (b"\x8a\x02Hi", DATA),                 // pong
            (b"\x88\x02\x03\xe8", DATA),           // close
        ] {
            assert_eq!(refused(frame), Some(why), "{frame:?}");
        }
    }

    #[test]
    fn the_checked_constructor_keeps_what_sending_needs() {
        let f = SharedFrame::from_bytes(Bytes::from_static(b"\xc2\x03abc")).unwrap();
        assert_eq!(f.opcode(), OpCode::Binary);
        assert!(f.is_compressed());
        assert_eq!((f.header_len(), f.payload_len(), f.len()), (2, 3, 5));
        assert_eq!(&f.payload()[..], b"abc");
        let mut h = FrameHeader::new(OpCode::Binary, 3);
        h.rsv1 = true;
        assert_eq!(f.header(), h);
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend_from_slice(&[b'a'; 256]);
        let f = SharedFrame::from_bytes(Bytes::from(long)).unwrap();
        assert_eq!((f.header_len(), f.payload_len()), (4, 256));
        assert!(!f.is_compressed());
    }

    #[test]
    fn a_shared_frame_stays_small() {
        // Cloned once per subscriber of a broadcast: a `Bytes` and three bytes.
        assert!(std::mem::size_of::<SharedFrame>() <= 40);
        assert_eq!(
            std::mem::size_of::<Option<SharedFrame>>(),
            std::mem::size_of::<SharedFrame>()
        );
    }

    proptest! {
        #[test]
        fn encoded_frames_pass_the_check_unchanged(text: bool, len in prop_oneof![0usize..200, 0usize..70_000]) {
            let msg = if text {
                Message::text("é".repeat(len / 2))
            } else {
                Message::binary(vec![7u8; len])
            };
            let f = encode_shared(&msg);
            let (h, n) = FrameHeader::parse(&f).unwrap().unwrap();
            prop_assert_eq!(f.header(), h);
            prop_assert_eq!(f.header_len(), n);
            prop_assert_eq!(f.payload_len() as u64, h.payload_len);
            let checked = SharedFrame::from_bytes(f.as_bytes().clone()).unwrap();
            prop_assert_eq!(checked, f);
        }
    }
}
