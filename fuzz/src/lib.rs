//! Shared harness code for the fuzz targets in `fuzz_targets/`.

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::frame::MAX_CONTROL_PAYLOAD;
use switchboard_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, ProtocolError, Role, State,
};

/// Small limits, so the fuzzer reaches "too large" quickly.
pub const MAX_FRAME: usize = 2048;
/// Small limits, so the fuzzer reaches "too large" quickly.
pub const MAX_MESSAGE: usize = 4096;

/// Chunk-size ceilings selected by the low 3 bits of the mode byte.
const CHUNK_CEIL: [usize; 8] = [usize::MAX, 1, 2, 3, 7, 16, 64, 1024];

/// What one run of a connection produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub error: Option<ProtocolError>,
    pub state: State,
    /// Everything the connection queued for the network, in order.
    pub transmitted: Vec<u8>,
}

/// Tiny deterministic generator for chunk sizes (xorshift32).
struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// Decodes a frame queued by `role` from `out`: returns (first byte, payload, frame length).
/// Unmasks client frames and checks that the mask bit matches the role.
pub fn decode_sent(role: Role, out: &[u8]) -> (u8, Vec<u8>, usize) {
    assert!(out.len() >= 2, "truncated frame queued: {out:02x?}");
    let masked = out[1] & 0x80 != 0;
    assert_eq!(
        masked,
        role == Role::Client,
        "{role:?} queued a frame with the wrong mask bit: {out:02x?}"
    );
    let len = usize::from(out[1] & 0x7f);
    assert!(
        len <= MAX_CONTROL_PAYLOAD,
        "control frame too long: {out:02x?}"
    );
    let head = if masked { 6 } else { 2 };
    assert!(
        out.len() >= head + len,
        "truncated frame queued: {out:02x?}"
    );
    let mut payload = out[head..head + len].to_vec();
    if masked {
        let key = &out[2..6];
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    (out[0], payload, head + len)
}

/// Checks that `out` begins with a close frame carrying `code` and nothing after it.
fn assert_close_frame(role: Role, out: &[u8], code: Option<CloseCode>) {
    let (b0, payload, used) = decode_sent(role, out);
    assert_eq!(b0, 0x88, "expected a close frame, got {out:02x?}");
    match code {
        Some(c) => assert_eq!(&payload[..], &c.0.to_be_bytes()[..], "close code"),
        None => assert!(payload.is_empty(), "close frame should be empty"),
    }
    assert_eq!(
        used,
        out.len(),
        "bytes queued after the close frame: {out:02x?}"
    );
}

/// Feeds `stream` to a fresh connection, `chunk_ceil` bytes (at most) per read, polling after
/// each read, and checks every invariant along the way.
fn run(role: Role, stream: &[u8], mode: u8, chunked: bool) -> Outcome {
    let auto_pong = mode & 0x08 == 0;
    let close_first = mode & 0x10 != 0;
    // Bit 0x20: permessage-deflate negotiated (0x40: no context takeover, 0x80: 9-bit
    // windows), so RSV1 frames are inflated and the inflated size is held to the limit.
    let deflate = mode & 0x20 != 0;
    let config = Config::default()
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_MESSAGE)
        .auto_pong(auto_pong)
        .deflate(deflate.then(DeflateConfig::default));
    let mut conn = Connection::new(role, config).with_mask_seed(7);
    if deflate {
        let bits = if mode & 0x80 != 0 { 9 } else { 15 };
        conn = conn.with_deflate(DeflateParams {
            server_no_context_takeover: mode & 0x40 != 0,
            client_no_context_takeover: mode & 0x40 != 0,
            server_max_window_bits: bits,
            client_max_window_bits: bits,
        });
    }
    let mut transmitted = Vec::new();
    let mut events = Vec::new();
    let mut error = None;

    if close_first {
        conn.close_with(CloseCode::NORMAL, "").unwrap();
        assert_eq!(conn.state(), State::Closing);
        assert_close_frame(role, conn.pending_transmit(), Some(CloseCode::NORMAL));
    }
    // The transport writes everything out before reading more.
    let drain = |conn: &mut Connection, transmitted: &mut Vec<u8>| {
        let out = conn.pending_transmit().to_vec();
        conn.advance_transmit(out.len());
        transmitted.extend_from_slice(&out);
    };
    drain(&mut conn, &mut transmitted);

    let ceil = if chunked {
        CHUNK_CEIL[usize::from(mode & 7)]
    } else {
        usize::MAX
    };
    let mut rng = Rng(0x9e37_79b9 ^ u32::from(mode));
    let mut rest = stream;
    'outer: while !rest.is_empty() {
        let n = if ceil == usize::MAX {
            rest.len()
        } else {
            (1 + rng.next() as usize % ceil).min(rest.len())
        };
        conn.handle_read(&rest[..n]);
        rest = &rest[n..];
        loop {
            match conn.poll_event() {
                Ok(None) => break,
                Ok(Some(ev)) => {
                    check_event(role, &conn, &ev, auto_pong, close_first);
                    drain(&mut conn, &mut transmitted);
                    let closed = matches!(ev, Event::Close(_));
                    events.push(ev);
                    if closed {
                        assert_eq!(conn.poll_event(), Ok(None), "event after Close");
                        break 'outer;
                    }
                }
                Err(e) => {
                    assert_eq!(conn.state(), State::Closed, "state after {e:?}");
                    assert_eq!(conn.failure(), Some(&e));
                    if close_first {
                        // Our close frame was already sent: no second one.
                        assert!(
                            conn.pending_transmit().is_empty(),
                            "second close frame queued"
                        );
                    } else {
                        assert_close_frame(role, conn.pending_transmit(), Some(e.close_code()));
                    }
                    assert!(conn.should_close_tcp() == conn.pending_transmit().is_empty());
                    drain(&mut conn, &mut transmitted);
                    assert_eq!(conn.poll_event(), Ok(None), "event after the error");
                    error = Some(e);
                    break 'outer;
                }
            }
        }
    }
    Outcome {
        events,
        error,
        state: conn.state(),
        transmitted,
    }
}

/// Per-event invariants; `conn.pending_transmit()` holds what this event queued.
fn check_event(role: Role, conn: &Connection, ev: &Event, auto_pong: bool, close_first: bool) {
    let out = conn.pending_transmit();
    match ev {
        Event::Message(m) => {
            assert!(m.payload().len() <= MAX_MESSAGE, "message over the limit");
            if let Message::Text(t) = m {
                assert!(std::str::from_utf8(t.as_bytes()).is_ok(), "text not UTF-8");
                assert_eq!(t.as_str().len(), t.len());
            }
            assert!(out.is_empty(), "a message queued output");
        }
        Event::Ping(p) => {
            assert!(p.len() <= MAX_CONTROL_PAYLOAD);
            if auto_pong && !close_first {
                let (b0, payload, used) = decode_sent(role, out);
                assert_eq!(b0, 0x8a, "auto pong expected: {out:02x?}");
                assert_eq!(&payload[..], &p[..], "pong must echo the ping");
                assert_eq!(used, out.len());
            } else {
                assert!(out.is_empty(), "unexpected output after ping: {out:02x?}");
            }
        }
        Event::Pong(p) => {
            assert!(p.len() <= MAX_CONTROL_PAYLOAD);
            assert!(out.is_empty());
        }
        Event::Close(f) => {
            assert_eq!(conn.state(), State::Closed);
            assert_eq!(conn.received_close(), Some(f));
            if let Some(f) = f {
                assert!(f.code.is_valid_on_wire(), "invalid close code accepted");
                assert!(f.reason.len() <= MAX_CONTROL_PAYLOAD - 2);
                // The parse of the same payload must agree.
                let mut raw = f.code.0.to_be_bytes().to_vec();
                raw.extend_from_slice(f.reason.as_bytes());
                assert_eq!(
                    CloseFrame::parse(bytes::Bytes::from(raw)).as_ref(),
                    Ok(&Some(f.clone()))
                );
            }
            if close_first {
                assert!(out.is_empty(), "close echoed although ours was sent");
            } else {
                // The echo carries the peer's code, without a reason.
                assert_close_frame(role, out, f.as_ref().map(|f| f.code));
            }
        }
    }
}

/// The whole connection check for one input.
///
/// Byte 0 is the mode: bits 0-2 pick the largest read size (1 byte ... whole input), bits 3
/// disables auto-pong, bit 4 closes our side before reading, bits 5-7 vary the read sizes.
/// The rest is the byte stream from the peer.
pub fn fuzz_connection(role: Role, data: &[u8]) {
    let [mode, stream @ ..] = data else { return };
    let chunked = run(role, stream, *mode, true);
    // Differential: the same stream in one read must produce the same events, error and output.
    let whole = run(role, stream, *mode, false);
    assert_eq!(chunked, whole, "read boundaries changed the outcome");
}
