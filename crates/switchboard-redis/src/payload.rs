//! The pub/sub wire format: how a publication travels from Redis to every node.
//!
//! A message on a topic's channel is one of (ASCII header, then the data, binary-safe):
//!
//! ```text
//! p2:<offset>:<epoch>:<kind>:<ms>:<data>  a numbered publication (written by the publish
//!                                         script; <ms>: Redis's clock when it ran, ms since
//!                                         the Unix epoch, for the pub/sub lag metric)
//! p1:<offset>:<epoch>:<kind>:<data>       the same without the time (still decoded)
//! b1:<kind>:<data>                        a broadcast: not numbered, not kept
//! ```
//!
//! `<offset>` is a decimal `u64` (at least 1), `<epoch>` a non-empty string without `:`,
//! `<kind>` a decimal `u8` ([`Body::kind`]); `<data>` is everything after the last header
//! colon, byte for byte. The `1` is the format's version: a node that meets another version
//! or anything malformed gets a [`PayloadError`], never a panic.

use bytes::Bytes;
use switchboard_hub::engine::Body;

/// A message decoded from a topic's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    /// `(offset, epoch)` of a numbered publication; `None` for a broadcast.
    pub(crate) position: Option<(u64, &'a str)>,
    /// The publication's content.
    pub(crate) body: Body,
    /// When Redis numbered it (ms since the Unix epoch, Redis's clock), if the message says.
    pub(crate) published_ms: Option<u64>,
}

/// Why a channel message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The message does not start with a known tag (`p2:`, `p1:` or `b1:`).
    #[error("unknown pub/sub message tag")]
    UnknownTag,
    /// A header field is missing its closing `:`.
    #[error("truncated pub/sub message header")]
    Truncated,
    /// A header field is not what it must be (named).
    #[error("invalid {0} in pub/sub message header")]
    Invalid(&'static str),
}

/// The tag of a numbered publication.
const NUMBERED: &[u8] = b"p2:";
/// The tag of a numbered publication without its time.
const NUMBERED_V1: &[u8] = b"p1:";
/// The tag of a broadcast.
const BROADCAST: &[u8] = b"b1:";

/// Encodes a broadcast (what [`Engine::broadcast`](switchboard_hub::engine::Engine::broadcast)
/// publishes).
pub(crate) fn encode_broadcast(body: &Body) -> Vec<u8> {
    let kind = body.kind.to_string();
    let mut out = Vec::with_capacity(BROADCAST.len() + kind.len() + 1 + body.data.len());
    out.extend_from_slice(BROADCAST);
    out.extend_from_slice(kind.as_bytes());
    out.push(b':');
    out.extend_from_slice(&body.data);
    out
}

/// Encodes a numbered publication as the publish script does (for tests; Redis builds the
/// real ones).
#[cfg(test)]
pub(crate) fn encode_numbered(offset: u64, epoch: &str, body: &Body) -> Vec<u8> {
    let mut out = format!("p2:{offset}:{epoch}:{}:1700000000000:", body.kind).into_bytes();
    out.extend_from_slice(&body.data);
    out
}

/// Decodes a channel message; the data is a slice of `message` (no copy).
pub(crate) fn decode(message: &Bytes) -> Result<Decoded<'_>, PayloadError> {
    let bytes = message.as_ref();
    let (timed, numbered) = match (
        bytes.strip_prefix(NUMBERED),
        bytes.strip_prefix(NUMBERED_V1),
    ) {
        (Some(rest), _) => (true, Some(rest)),
        (None, rest) => (false, rest),
    };
    if let Some(rest) = numbered {
        let (offset, rest) = field(rest)?;
        let (epoch, rest) = field(rest)?;
        let (kind, rest) = field(rest)?;
        let (published_ms, rest) = if timed {
            let (ms, rest) = field(rest)?;
            (
                Some(parse_decimal(ms).ok_or(PayloadError::Invalid("time"))?),
                rest,
            )
        } else {
            (None, rest)
        };
        let offset = parse_decimal(offset)
            .filter(|&o| o > 0)
            .ok_or(PayloadError::Invalid("offset"))?;
        let epoch = std::str::from_utf8(epoch)
            .ok()
            .filter(|e| !e.is_empty())
            .ok_or(PayloadError::Invalid("epoch"))?;
        let kind = parse_kind(kind)?;
        let data = message.slice(bytes.len() - rest.len()..);
        Ok(Decoded {
            position: Some((offset, epoch)),
            body: Body { kind, data },
            published_ms,
        })
    } else if let Some(rest) = bytes.strip_prefix(BROADCAST) {
        let (kind, rest) = field(rest)?;
        let kind = parse_kind(kind)?;
        let data = message.slice(bytes.len() - rest.len()..);
        Ok(Decoded {
            position: None,
            body: Body { kind, data },
            published_ms: None,
        })
    } else {
        Err(PayloadError::UnknownTag)
    }
}

/// Splits `bytes` at its first `:`: the field before it and the rest after it.
fn field(bytes: &[u8]) -> Result<(&[u8], &[u8]), PayloadError> {
    let colon = bytes
        .iter()
        .position(|&b| b == b':')
        .ok_or(PayloadError::Truncated)?;
    Ok((&bytes[..colon], &bytes[colon + 1..]))
}

fn parse_kind(field: &[u8]) -> Result<u8, PayloadError> {
    parse_decimal(field)
        .and_then(|k| u8::try_from(k).ok())
        .ok_or(PayloadError::Invalid("kind"))
}

/// A decimal `u64` of 1 to 20 ASCII digits (no sign, no spaces), or `None`.
pub(crate) fn parse_decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    field.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: u8, data: &'static [u8]) -> Body {
        Body {
            kind,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn numbered_round_trip_is_binary_safe() {
        let b = body(7, b"a:b\0\xff:");
        let wire = Bytes::from(encode_numbered(42, "AbCdEfGh", &b));
        assert_eq!(&wire[..], b"p2:42:AbCdEfGh:7:1700000000000:a:b\0\xff:");
        let decoded = decode(&wire).unwrap();
        assert_eq!(decoded.position, Some((42, "AbCdEfGh")));
        assert_eq!(decoded.published_ms, Some(1_700_000_000_000));
        assert_eq!(decoded.body, b);
        // The format without the time still decodes.
        let v1_wire = Bytes::from_static(b"p1:42:AbCdEfGh:7:a:b");
        let v1 = decode(&v1_wire).unwrap();
        assert_eq!(
            (v1.position, v1.published_ms),
            (Some((42, "AbCdEfGh")), None)
        );
        assert_eq!(&v1.body.data[..], b"a:b");
    }

    #[test]
    fn broadcast_round_trip() {
        let b = body(255, b"");
        let wire = Bytes::from(encode_broadcast(&b));
        assert_eq!(&wire[..], b"b1:255:");
        let decoded = decode(&wire).unwrap();
        assert_eq!(decoded.position, None);
        assert_eq!(decoded.body, b);
    }

    #[test]
    fn garbage_is_an_error() {
        let cases: &[(&[u8], PayloadError)] = &[
            (b"", PayloadError::UnknownTag),
            (b"p3:1:e:0:x", PayloadError::UnknownTag),
            (b"p2:1:e:0:x", PayloadError::Truncated),
            (b"p2:1:e:0:soon:x", PayloadError::Invalid("time")),
            (b"hello", PayloadError::UnknownTag),
            (b"p1:", PayloadError::Truncated),
            (b"p1:1:epoch", PayloadError::Truncated),
            (b"p1:1:epoch:3", PayloadError::Truncated),
            (b"p1:0:e:0:x", PayloadError::Invalid("offset")),
            (b"p1:-1:e:0:x", PayloadError::Invalid("offset")),
            (
                b"p1:99999999999999999999:e:0:x",
                PayloadError::Invalid("offset"),
            ),
            (b"p1:1::0:x", PayloadError::Invalid("epoch")),
            (b"p1:1:\xff:0:x", PayloadError::Invalid("epoch")),
            (b"p1:1:e:256:x", PayloadError::Invalid("kind")),
            (b"p1:1:e::x", PayloadError::Invalid("kind")),
            (b"b1:x:", PayloadError::Invalid("kind")),
            (b"b1:1", PayloadError::Truncated),
        ];
        for (wire, err) in cases {
            assert_eq!(
                decode(&Bytes::from_static(wire)),
                Err(err.clone()),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn every_prefix_of_a_message_decodes_or_errs() {
        let wire = encode_numbered(123, "epoch", &body(1, b"data"));
        for end in 0..=wire.len() {
            let _ = decode(&Bytes::copy_from_slice(&wire[..end]));
        }
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"1e3"), None);
        assert_eq!(parse_decimal(b""), None);
    }
}
