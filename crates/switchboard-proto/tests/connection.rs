//! Deterministic tests of the connection state machine: two connections wired back to back,
//! plus hand-made frames for everything a well-behaved peer would never send.

use switchboard_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use switchboard_proto::mask::apply_mask;
use switchboard_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, ProtocolError, Role, SendError,
    Side, State,
};

/// A client and a server connected by a perfect pipe.
struct Pair {
    client: Connection,
    server: Connection,
}

impl Pair {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        Self {
            client: Connection::new(Role::Client, config).with_mask_seed(7),
            server: Connection::new(Role::Server, config),
        }
    }

    /// Moves every pending byte across, in both directions, until nothing moves; returns
    /// the events each side saw.
    fn drive(&mut self) -> (Vec<Event>, Vec<Event>) {
        let (mut ce, mut se) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let c2s = self.client.pending_transmit().to_vec();
            self.client.advance_transmit(c2s.len());
            self.server.handle_read(&c2s);
            let s2c = self.server.pending_transmit().to_vec();
            self.server.advance_transmit(s2c.len());
            self.client.handle_read(&s2c);
            while let Ok(Some(e)) = self.server.poll_event() {
                se.push(e);
            }
            while let Ok(Some(e)) = self.client.poll_event() {
                ce.push(e);
            }
            if self.client.pending_transmit().is_empty()
                && self.server.pending_transmit().is_empty()
            {
                break;
            }
        }
        (ce, se)
    }
}

/// Encodes one frame as a client would (masked) or a server would (unmasked).
fn frame(op: u8, fin: bool, rsv: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut h = FrameHeader::new(OpCode::Binary, payload.len() as u64);
    h.fin = fin;
    h.mask = mask;
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    head[0] = (u8::from(fin) << 7) | (rsv << 4) | op;
    let mut out = head[..n].to_vec();
    let mut p = payload.to_vec();
    if let Some(k) = mask {
        apply_mask(&mut p, k, 0);
    }
    out.extend_from_slice(&p);
    out
}

fn client_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(op, fin, 0, payload, Some([0xa1, 0xb2, 0xc3, 0xd4]))
}

/// Feeds bytes to a server connection and returns the first error, with the close code the
/// server queued.
fn server_error(bytes: &[u8]) -> (ProtocolError, u16) {
    server_error_with(Config::default(), bytes)
}

fn server_error_with(config: Config, bytes: &[u8]) -> (ProtocolError, u16) {
    let mut s = Connection::new(Role::Server, config);
    s.handle_read(bytes);
    let err = loop {
        match s.poll_event() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error"),
            Err(e) => break e,
        }
    };
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.close_initiator(), Some(Side::Local));
    let out = s.pending_transmit();
    assert_eq!(out[0], 0x88, "a close frame is queued");
    let code = u16::from_be_bytes([out[2], out[3]]);
    assert_eq!(code, err.close_code().0);
    // Nothing more is read after a failure.
    s.handle_read(&client_frame(1, true, b"more"));
    assert_eq!(s.poll_event(), Ok(None));
    (err, code)
}

#[test]
fn text_and_binary_round_trip() {
    let mut p = Pair::new();
    p.client.send(&Message::text("héllo")).unwrap();
    p.client
        .send(&Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();
    let (_, se) = p.drive();
    assert_eq!(
        se,
        vec![
            Event::Message(Message::text("héllo")),
            Event::Message(Message::binary(vec![0u8, 1, 2, 255]))
        ]
    );
    p.server.send(&Message::text("back")).unwrap();
    let (ce, _) = p.drive();
    assert_eq!(ce, vec![Event::Message(Message::text("back"))]);
}

#[test]
fn client_masks_with_a_fresh_key_per_frame() {
    let mut c = Connection::new(Role::Client, Config::default());
    c.send(&Message::text("aaaa")).unwrap();
    c.send(&Message::text("aaaa")).unwrap();
    let out = c.pending_transmit();
    assert_eq!(out.len(), 2 * (2 + 4 + 4));
    assert_eq!(out[1] & 0x80, 0x80);
    let (k1, k2) = (&out[2..6], &out[12..16]);
    assert_ne!(k1, k2, "two frames, two keys");
}

#[test]
fn server_does_not_mask() {
    let mut s = Connection::new(Role::Server, Config::default());
    s.send(&Message::text("a")).unwrap();
    assert_eq!(s.pending_transmit(), &[0x81, 0x01, b'a']);
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let mut s = Connection::new(Role::Server, Config::default());
    let mut input = client_frame(1, false, "frag".as_bytes());
    input.extend(client_frame(9, true, b"p"));
    input.extend(client_frame(0, false, "men".as_bytes()));
    input.extend(client_frame(0, true, "té".as_bytes()));
    // Deliver one byte at a time: the parser must cope with any split.
    let mut events = Vec::new();
    for b in input {
        s.handle_read(&[b]);
        while let Some(e) = s.poll_event().unwrap() {
            events.push(e);
        }
    }
    assert_eq!(
        events,
        vec![
            Event::Ping(bytes::Bytes::from_static(b"p")),
            Event::Message(Message::text("fragmenté"))
        ]
    );
    assert_eq!(
        s.pending_transmit(),
        &[0x8a, 0x01, b'p'],
        "pong echoes ping payload"
    );
}

#[test]
fn unsolicited_pong_is_accepted() {
    let mut s = Connection::new(Role::Server, Config::default());
    s.handle_read(&client_frame(0xA, true, b"hb"));
    assert_eq!(
        s.poll_event().unwrap(),
        Some(Event::Pong(bytes::Bytes::from_static(b"hb")))
    );
    assert!(s.pending_transmit().is_empty());
}

#[test]
fn framing_violations_close_with_1002() {
    let masked = Some([1, 2, 3, 4]);
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (
            frame(3, true, 0, b"", masked),
            ProtocolError::ReservedOpcode(3),
        ),
        (
            frame(0xB, true, 0, b"", masked),
            ProtocolError::ReservedOpcode(0xB),
        ),
        (frame(1, true, 4, b"x", masked), ProtocolError::ReservedBits),
        (frame(1, true, 1, b"x", masked), ProtocolError::ReservedBits),
        (frame(1, true, 0, b"x", None), ProtocolError::UnmaskedFrame),
        (
            frame(9, true, 0, &[0; 126], masked),
            ProtocolError::ControlFrameTooLong,
        ),
        (
            frame(9, false, 0, b"", masked),
            ProtocolError::FragmentedControlFrame,
        ),
        (
            frame(0, true, 0, b"x", masked),
            ProtocolError::UnexpectedContinuation,
        ),
        (
            [
                frame(1, false, 0, b"a", masked),
                frame(2, true, 0, b"b", masked),
            ]
            .concat(),
            ProtocolError::ExpectedContinuation,
        ),
        (
            frame(8, true, 0, &[3], masked),
            ProtocolError::InvalidClosePayload,
        ),
    ];
    for (bytes, want) in cases {
        let (got, code) = server_error(&bytes);
        assert_eq!(got, want);
        assert_eq!(code, 1002, "{want:?}");
    }
}

#[test]
fn invalid_64_bit_length_is_1002() {
    let mut b = vec![0x82, 0xff];
    b.extend_from_slice(&(1u64 << 63).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(server_error(&b), (ProtocolError::InvalidLength, 1002));
}

#[test]
fn client_rejects_masked_server_frame() {
    let mut c = Connection::new(Role::Client, Config::default());
    c.handle_read(&client_frame(1, true, b"x"));
    assert_eq!(c.poll_event(), Err(ProtocolError::MaskedFrame));
}

#[test]
fn invalid_utf8_fails_fast_mid_frame() {
    // The frame announces 100 bytes but only the invalid prefix has arrived: the error comes
    // now, not when the rest arrives.
    let mut payload = b"hello".to_vec();
    payload.extend_from_slice(&[
        0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
    ]);
    payload.resize(100, b'a');
    let bytes = client_frame(1, true, &payload);
    let (err, code) = server_error(&bytes[..6 + 19]);
    assert_eq!((err, code), (ProtocolError::InvalidUtf8, 1007));
}

#[test]
fn invalid_utf8_across_fragments() {
    let mut b = client_frame(1, false, &[0xce]);
    b.extend(client_frame(0, false, &[0xba, 0xff]));
    assert_eq!(server_error(&b), (ProtocolError::InvalidUtf8, 1007));
    // A message ending in the middle of a code point.
    let mut b = client_frame(1, false, b"a");
    b.extend(client_frame(0, true, &[0xe2, 0x82]));
    assert_eq!(server_error(&b), (ProtocolError::InvalidUtf8, 1007));
}

#[test]
fn oversized_frame_is_refused_from_its_header() {
    let config = Config::default().max_frame_size(1000);
    // Only the header of a 2^62-byte frame: refused before any payload is buffered.
    let mut b = vec![0x82, 0xff];
    b.extend_from_slice(&(1u64 << 62).to_be_bytes());
    b.extend_from_slice(&[9, 9, 9, 9]);
    let (err, code) = server_error_with(config, &b);
    assert_eq!(code, 1009);
    assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
}

#[test]
fn oversized_message_across_fragments_is_1009() {
    let config = Config::default().max_message_size(10);
    let mut b = client_frame(2, false, &[0; 6]);
    b.extend(client_frame(0, true, &[0; 6]));
    let (err, code) = server_error_with(config, &b);
    assert_eq!(code, 1009);
    assert_eq!(err, ProtocolError::MessageTooLarge { len: 12, max: 10 });
}

#[test]
fn invalid_close_codes_are_1002_and_bad_reason_1007() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(b"r");
        let (err, c) = server_error(&client_frame(8, true, &p));
        assert_eq!((err, c), (ProtocolError::InvalidCloseCode(code), 1002));
    }
    let (err, c) = server_error(&client_frame(8, true, &[0x03, 0xe8, 0xc0]));
    assert_eq!((err, c), (ProtocolError::InvalidUtf8, 1007));
}

#[test]
fn client_initiated_close_handshake() {
    let mut p = Pair::new();
    p.client.close_with(CloseCode(4000), "done").unwrap();
    assert_eq!(p.client.state(), State::Closing);
    assert_eq!(
        p.client.send(&Message::text("late")),
        Err(SendError::Closed)
    );
    let (ce, se) = p.drive();
    assert_eq!(
        se,
        vec![Event::Close(Some(CloseFrame::new(CloseCode(4000), "done")))]
    );
    // The server echoed the code.
    assert_eq!(
        ce,
        vec![Event::Close(Some(CloseFrame::new(CloseCode(4000), "")))]
    );
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(p.server.state(), State::Closed);
    assert_eq!(p.client.close_initiator(), Some(Side::Local));
    assert_eq!(p.server.close_initiator(), Some(Side::Peer));
    assert!(p.server.should_close_tcp());
    assert_eq!(p.server.send(&Message::text("x")), Err(SendError::Closed));
}

#[test]
fn close_without_code_gets_empty_close() {
    let mut s = Connection::new(Role::Server, Config::default());
    s.handle_read(&client_frame(8, true, b""));
    assert_eq!(s.poll_event().unwrap(), Some(Event::Close(None)));
    assert_eq!(s.pending_transmit(), &[0x88, 0x00]);
}

#[test]
fn data_after_close_is_ignored() {
    let mut s = Connection::new(Role::Server, Config::default());
    let mut b = client_frame(8, true, &[0x03, 0xe8]);
    b.extend(client_frame(1, true, b"after"));
    s.handle_read(&b);
    assert!(matches!(s.poll_event().unwrap(), Some(Event::Close(_))));
    assert_eq!(s.poll_event().unwrap(), None);
}

#[test]
fn messages_still_arrive_while_closing() {
    let mut p = Pair::new();
    p.server.send(&Message::text("in flight")).unwrap();
    p.client.close_with(CloseCode::NORMAL, "").unwrap();
    let (ce, _) = p.drive();
    assert_eq!(ce[0], Event::Message(Message::text("in flight")));
}

#[test]
fn invalid_close_code_cannot_be_sent() {
    let mut c = Connection::new(Role::Client, Config::default());
    assert_eq!(
        c.close_with(CloseCode(1005), ""),
        Err(SendError::InvalidCloseCode(1005))
    );
    assert_eq!(c.ping(&[0; 126]), Err(SendError::ControlFrameTooLong));
}

#[test]
fn write_buffer_is_bounded() {
    let mut s = Connection::new(Role::Server, Config::default().max_write_buffer(100));
    s.send(&Message::binary(vec![0u8; 60])).unwrap();
    assert!(matches!(
        s.send(&Message::binary(vec![0u8; 60])),
        Err(SendError::WriteBufferFull { .. })
    ));
}

#[test]
fn idle_buffers_are_released() {
    let mut p = Pair::new();
    p.client.send(&Message::text("x")).unwrap();
    p.drive();
    p.server.release_idle_buffers();
    p.client.release_idle_buffers();
    assert_eq!(p.server.read_buf_mut().capacity(), 0);
    assert_eq!(p.client.transmit_buf_mut().capacity(), 0);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any message, fragmented any way, delivered in any chunking, arrives intact.
        #[test]
        fn fragmented_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..3000),
                                 text: bool,
                                 frag in 1usize..700,
                                 chunk in 1usize..900) {
            let (op, expected) = if text {
                let s = String::from_utf8_lossy(&payload).into_owned();
                (OpCode::Text, Message::text(s))
            } else {
                (OpCode::Binary, Message::binary(payload.clone()))
            };
            let data = expected.payload().to_vec();
            let mut c = Connection::new(Role::Client, Config::default()).with_mask_seed(1);
            let pieces: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(frag).collect() };
            for (i, piece) in pieces.iter().enumerate() {
                let first = i == 0;
                let last = i == pieces.len() - 1;
                let o = if first { op } else { OpCode::Continuation };
                c.send_frame(o, last, piece).unwrap();
            }
            let wire = c.pending_transmit().to_vec();
            let mut s = Connection::new(Role::Server, Config::default());
            let mut got = Vec::new();
            for ch in wire.chunks(chunk) {
                s.handle_read(ch);
                while let Some(e) = s.poll_event().unwrap() {
                    got.push(e);
                }
            }
            prop_assert_eq!(got, vec![Event::Message(expected)]);
        }

        /// Arbitrary bytes never panic the server and never grow it past its limits.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut s = Connection::new(Role::Server, Config::default().max_message_size(256).max_frame_size(256));
            s.handle_read(&bytes);
            for _ in 0..600 {
                match s.poll_event() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

mod shared_frames {
    use bytes::Bytes;
    use std::io::IoSlice;
    use switchboard_proto::extension::{DeflateConfig, DeflateParams};
    use switchboard_proto::frame::{encode_shared, SharedFrame};
    use switchboard_proto::{Config, Connection, Event, Message, Role, SendError};

    /// Everything queued, through the vectored interface.
    fn drain(c: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while !c.transmit_is_empty() {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = c.transmit_slices(&mut slices);
            assert!(n > 0);
            // A short write of about half of what is offered: it ends mid-run or across
            // runs, and `advance_transmit` must follow.
            let mut all: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let take = all.len().div_ceil(2);
            all.truncate(take);
            out.extend_from_slice(&all);
            c.advance_transmit(take);
        }
        out
    }

    #[test]
    fn shared_frames_keep_their_place_between_own_frames() {
        let mut s = Connection::new(Role::Server, Config::default());
        s.send(&Message::text("one")).unwrap();
        let shared = encode_shared(&Message::text("two"));
        s.send_shared(shared.clone()).unwrap();
        s.send(&Message::binary(vec![3u8; 5000])).unwrap(); // large: by reference
        s.send(&Message::text("four")).unwrap();
        assert_eq!(s.queued_transmit(), 5 + 5 + 5004 + 6);
        let wire = drain(&mut s);
        assert!(s.transmit_is_empty());
        let mut c = Connection::new(Role::Client, Config::default());
        c.handle_read(&wire);
        let mut got = Vec::new();
        while let Some(Event::Message(m)) = c.poll_event().unwrap() {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![
                Message::text("one"),
                Message::text("two"),
                Message::binary(vec![3u8; 5000]),
                Message::text("four")
            ]
        );
    }

    #[test]
    fn large_server_payloads_are_not_copied() {
        let payload = Bytes::from(vec![7u8; 64 * 1024]);
        let mut s = Connection::new(Role::Server, Config::default());
        s.send(&Message::Binary(payload.clone())).unwrap();
        let mut slices = [IoSlice::new(&[]); 4];
        let n = s.transmit_slices(&mut slices);
        assert_eq!(n, 2, "header run, then the payload itself");
        assert_eq!(slices[1].as_ptr(), payload.as_ptr());
    }

    /// A client frame of `payload`, masked, as the network would bring it.
    fn client_frame(text: bool, payload: &[u8]) -> Vec<u8> {
        let mut c = Connection::new(Role::Client, Config::default()).with_mask_seed(3);
        let msg = if text {
            Message::Text(String::from_utf8(payload.to_vec()).unwrap().into())
        } else {
            Message::binary(payload.to_vec())
        };
        c.send(&msg).unwrap();
        drain(&mut c)
    }

    /// The frame a server sends for `msg`, encoded independently of the connection.
    fn server_frame(msg: &Message) -> Vec<u8> {
        encode_shared(msg).to_vec()
    }

    #[test]
    fn a_large_reply_goes_out_in_the_room_the_received_header_left() {
        for (text, len) in [(false, 4096), (true, 5000), (false, 70_000)] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut s = Connection::new(Role::Server, Config::default());
            s.handle_read(&client_frame(text, &payload));
            let Some(Event::Message(msg)) = s.poll_event().unwrap() else {
                panic!("no message");
            };
            s.send(&msg).unwrap();
            let mut slices = [IoSlice::new(&[]); 4];
            let n = s.transmit_slices(&mut slices);
            assert_eq!(n, 2, "header run, then the payload");
            let head_end = slices[0].as_ptr_range().end;
            assert_eq!(head_end, slices[1].as_ptr(), "one run of memory ({len} B)");
            assert_eq!(drain(&mut s), server_frame(&msg));
        }
    }

    #[test]
    fn a_reply_without_its_room_is_still_the_right_frame() {
        let payload = vec![9u8; 6000];
        // Room gone: another poll came first, or the reply is another slice of the payload.
        for case in 0..3 {
            let mut s = Connection::new(Role::Server, Config::default());
            s.handle_read(&client_frame(false, &payload));
            let Some(Event::Message(Message::Binary(b))) = s.poll_event().unwrap() else {
                panic!("no message");
            };
            let reply = match case {
                0 => {
                    assert_eq!(s.poll_event().unwrap(), None);
                    Message::Binary(b)
                }
                1 => Message::Binary(b.slice(1..)),
                _ => Message::Binary(b.slice(..5000)),
            };
            s.send(&reply).unwrap();
            let mut slices = [IoSlice::new(&[]); 4];
            let n = s.transmit_slices(&mut slices);
            if case < 2 {
                assert_ne!(
                    slices[0].as_ptr_range().end,
                    slices[1].as_ptr(),
                    "case {case}"
                );
            }
            assert_eq!(n, 2);
            assert_eq!(drain(&mut s), server_frame(&reply), "case {case}");
        }
    }

    #[test]
    fn a_message_that_is_not_whole_in_one_read_leaves_no_room() {
        let payload = vec![5u8; 8000];
        let frame = client_frame(false, &payload);
        let mut s = Connection::new(Role::Server, Config::default());
        s.handle_read(&frame[..100]);
        assert_eq!(s.poll_event().unwrap(), None);
        s.handle_read(&frame[100..]);
        let Some(Event::Message(msg)) = s.poll_event().unwrap() else {
            panic!("no message");
        };
        s.send(&msg).unwrap();
        assert_eq!(drain(&mut s), server_frame(&msg));
    }

    #[test]
    fn shared_frames_that_would_be_wrong_are_refused() {
        let bad = |b: &'static [u8]| SharedFrame::from_bytes(Bytes::from_static(b));
        for frame in [
            &b"\x81"[..],                  // incomplete header
            b"\x81\x05Hi",                 // shorter than its length
            b"\x81\x01Hi",                 // longer: two frames' worth
            b"\x01\x02Hi",                 // not final
            b"\x89\x02Hi",                 // a ping
            b"\x81\x82\x00\x00\x00\x00Hi", // masked
            b"\xa1\x02Hi",                 // RSV2
            b"\x91\x02Hi",                 // RSV3
        ] {
            assert!(
                matches!(bad(frame), Err(SendError::InvalidSharedFrame(_))),
                "{frame:?}"
            );
        }
        // RSV1 makes a frame, but not one a connection without deflate may send.
        let compressed = bad(b"\xc1\x02Hi").unwrap();
        let mut s = Connection::new(Role::Server, Config::default());
        assert!(matches!(
            s.send_shared(compressed),
            Err(SendError::InvalidSharedFrame(_))
        ));
        // Nor may a client send any shared frame.
        let mut c = Connection::new(Role::Client, Config::default());
        assert!(matches!(
            c.send_shared(encode_shared(&Message::text("x"))),
            Err(SendError::InvalidSharedFrame(_))
        ));
        assert!(s.transmit_is_empty() && c.transmit_is_empty());
        let small = Config::default().max_write_buffer(10);
        let mut s = Connection::new(Role::Server, small);
        s.send_shared(encode_shared(&Message::text("12345678")))
            .unwrap();
        assert!(matches!(
            s.send_shared(encode_shared(&Message::text("x"))),
            Err(SendError::WriteBufferFull { .. })
        ));
        s.close(None).unwrap();
        assert_eq!(
            s.send_shared(encode_shared(&Message::text("x"))),
            Err(SendError::Closed)
        );
    }

    fn deflate(server_no_context_takeover: bool) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    #[test]
    fn a_compressed_shared_frame_needs_server_no_context_takeover() {
        let cfg = Config::default().deflate(Some(DeflateConfig::default().threshold(0)));
        let msg = Message::text("to everyone, compressed ".repeat(20));
        // Compressed once, by a connection that resets its compressor after each message.
        let mut encoder = Connection::new(Role::Server, cfg).with_deflate(deflate(true));
        encoder.send(&msg).unwrap();
        let frame =
            SharedFrame::from_bytes(Bytes::copy_from_slice(encoder.pending_transmit())).unwrap();
        assert!(frame.is_compressed() && frame.payload_len() < 100);

        // A connection that agreed to context takeover may not send it ...
        let mut s = Connection::new(Role::Server, cfg).with_deflate(deflate(false));
        assert!(matches!(
            s.send_shared(frame.clone()),
            Err(SendError::InvalidSharedFrame(_))
        ));
        assert!(s.transmit_is_empty());

        // ... one without does, and its client reads the message.
        let mut s = Connection::new(Role::Server, cfg).with_deflate(deflate(true));
        s.send_shared(frame.clone()).unwrap();
        assert_eq!(s.pending_transmit(), &frame[..]);
        let mut c = Connection::new(Role::Client, cfg).with_deflate(deflate(true));
        c.handle_read(&drain(&mut s));
        assert_eq!(c.poll_event().unwrap(), Some(Event::Message(msg)));
    }
}
