//! Telling HTTP/2 from HTTP/1.1 by a connection's first bytes: an HTTP/2 client with prior
//! knowledge (h2c) opens with the 24-byte connection preface (RFC 9113 §3.4). The preface is
//! checked before the head is parsed as HTTP/1.1: it holds `\r\n\r\n` at byte 18, so it would
//! parse as a (bad) HTTP/1.1 head.

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Every byte so far is a prefix of the HTTP/2 preface: read more.
    NeedMore,
    /// The whole HTTP/2 preface.
    Http2,
    /// Not the HTTP/2 preface (from the first byte that differs): HTTP/1.x.
    Http1,
}

/// Looks at the first bytes read on a connection.
///
/// ```
/// use switchboard_proto::handshake::sniff::{sniff, Sniff, H2_PREFACE};
/// assert_eq!(sniff(b"PRI * HT"), Sniff::NeedMore);
/// assert_eq!(sniff(H2_PREFACE), Sniff::Http2);
/// assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http1);
/// ```
pub fn sniff(buf: &[u8]) -> Sniff {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] != H2_PREFACE[..n] {
        Sniff::Http1
    } else if n == H2_PREFACE.len() {
        Sniff::Http2
    } else {
        Sniff::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_preface_and_what_follows_it() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"P"), Sniff::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\n"), Sniff::NeedMore);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert_eq!(sniff(&more), Sniff::Http2);
        assert_eq!(sniff(b"POST /api/publish HTTP/1.1\r\n"), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/1.1\r\n\r\n"), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nXX"), Sniff::Http1);
    }

    proptest! {
        /// A valid HTTP/1.1 request head never sniffs as HTTP/2, nor waits for more bytes
        /// once its request line is there.
        #[test]
        fn a_valid_http1_head_is_never_http2(
            method in "[A-Z]{1,10}",
            path in "/[a-zA-Z0-9/?=&._-]{0,40}",
            headers in proptest::collection::vec(("[a-zA-Z-]{1,20}", "[ -~]{0,40}"), 0..8),
        ) {
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
            for (n, v) in &headers {
                head.push_str(&format!("{n}: {}\r\n", v.trim()));
            }
            head.push_str("\r\n");
            let config = crate::Config::default();
            if let Ok(Some(_)) = crate::handshake::server::Request::parse(head.as_bytes(), &config) {
                prop_assert_eq!(sniff(head.as_bytes()), Sniff::Http1);
                let line = head.find("\r\n").unwrap_or(head.len());
                prop_assert_eq!(sniff(&head.as_bytes()[..line]), Sniff::Http1);
            }
        }
    }
}
