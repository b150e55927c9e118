//! permessage-deflate inside the connection state machine: RSV1 rules, fragmented compressed
//! messages, bounded inflation, and round trips under every parameter combination.

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use switchboard_proto::mask::apply_mask;
use switchboard_proto::{Config, Connection, Event, Message, ProtocolError, Role};

fn params(snct: bool, cnct: bool, sbits: u8, cbits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: sbits,
        client_max_window_bits: cbits,
    }
}

fn config() -> Config {
    Config::default().deflate(Some(DeflateConfig::default().threshold(0)))
}

fn pair(p: DeflateParams, cfg: Config) -> (Connection, Connection) {
    (
        Connection::new(Role::Client, cfg).with_deflate(p),
        Connection::new(Role::Server, cfg).with_deflate(p),
    )
}

fn pump(from: &mut Connection, to: &mut Connection) -> Result<Vec<Event>, ProtocolError> {
    let bytes = from.pending_transmit().to_vec();
    from.advance_transmit(bytes.len());
    to.handle_read(&bytes);
    let mut events = Vec::new();
    while let Some(e) = to.poll_event()? {
        events.push(e);
    }
    Ok(events)
}

/// A masked client frame with explicit RSV1.
fn client_frame(op: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut h = FrameHeader::new(op, payload.len() as u64);
    h.fin = fin;
    h.rsv1 = rsv1;
    h.mask = Some([9, 8, 7, 6]);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    let mut out = head[..n].to_vec();
    let mut p = payload.to_vec();
    apply_mask(&mut p, [9, 8, 7, 6], 0);
    out.extend(p);
    out
}

fn server_with_deflate(cfg: Config) -> Connection {
    Connection::new(Role::Server, cfg).with_deflate(params(false, false, 15, 15))
}

/// Raw deflate of `data` with a sync flush, trailer removed, as a peer would send it.
fn peer_compress(data: &[u8]) -> Vec<u8> {
    let (mut c, _) = pair(params(false, false, 15, 15), config());
    c.send(&Message::binary(data.to_vec())).unwrap();
    let wire = c.pending_transmit().to_vec();
    let (h, n) = FrameHeader::parse(&wire).unwrap().unwrap();
    let mut p = wire[n..].to_vec();
    apply_mask(&mut p, h.mask.unwrap(), 0);
    p
}

#[test]
fn compressed_round_trip_sets_rsv1_and_shrinks() {
    let (mut c, mut s) = pair(params(false, false, 15, 15), config());
    let text = r#"{"type":"message","text":"hello hello hello hello hello hello"}"#.repeat(20);
    c.send(&Message::text(text.clone())).unwrap();
    let wire = c.pending_transmit();
    assert_eq!(wire[0] & 0x40, 0x40, "RSV1 set");
    assert!(wire.len() < text.len() / 4);
    assert_eq!(
        pump(&mut c, &mut s).unwrap(),
        vec![Event::Message(Message::text(text))]
    );
}

#[test]
fn below_threshold_goes_uncompressed() {
    let cfg = Config::default().deflate(Some(DeflateConfig::default().threshold(100)));
    let (mut c, mut s) = pair(params(false, false, 15, 15), cfg);
    c.send(&Message::text("short")).unwrap();
    assert_eq!(c.pending_transmit()[0] & 0x40, 0, "RSV1 clear");
    assert_eq!(
        pump(&mut c, &mut s).unwrap(),
        vec![Event::Message(Message::text("short"))]
    );
}

#[test]
fn rsv1_rules() {
    let z = peer_compress(b"hello");
    let cases = [
        // RSV1 on a continuation frame.
        [
            client_frame(OpCode::Binary, false, true, &z[..2]),
            client_frame(OpCode::Continuation, true, true, &z[2..]),
        ]
        .concat(),
        // RSV1 on a control frame.
        client_frame(OpCode::Ping, true, true, b""),
    ];
    for bytes in cases {
        let mut s = server_with_deflate(config());
        s.handle_read(&bytes);
        let err = loop {
            match s.poll_event() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, ProtocolError::ReservedBits);
        assert_eq!(err.close_code().0, 1002);
    }
}

#[test]
fn fragmented_compressed_message_and_uncompressed_mix() {
    let z = peer_compress("fragmentéd ".repeat(50).as_bytes());
    let third = z.len() / 3;
    let mut bytes = client_frame(OpCode::Text, false, true, &z[..third]);
    bytes.extend(client_frame(OpCode::Ping, true, false, b"mid"));
    bytes.extend(client_frame(
        OpCode::Continuation,
        false,
        false,
        &z[third..2 * third],
    ));
    bytes.extend(client_frame(
        OpCode::Continuation,
        true,
        false,
        &z[2 * third..],
    ));
    bytes.extend(client_frame(OpCode::Text, true, false, b"plain"));
    let mut s = server_with_deflate(config());
    let mut events = Vec::new();
    for chunk in bytes.chunks(7) {
        s.handle_read(chunk);
        while let Some(e) = s.poll_event().unwrap() {
            events.push(e);
        }
    }
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[1],
        Event::Message(Message::text("fragmentéd ".repeat(50)))
    );
    assert_eq!(events[2], Event::Message(Message::text("plain")));
}

#[test]
fn inflation_bomb_is_1009_within_the_limit() {
    let z = peer_compress(&vec![b'a'; 4 << 20]);
    assert!(z.len() < 64 * 1024, "{}", z.len());
    let mut s = server_with_deflate(config().max_message_size(1 << 20));
    s.handle_read(&client_frame(OpCode::Binary, true, true, &z));
    let err = s.poll_event().unwrap_err();
    assert!(
        matches!(err, ProtocolError::MessageTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(err.close_code().0, 1009);
}

#[test]
fn corrupt_compressed_data_is_1007() {
    let mut s = server_with_deflate(config());
    s.handle_read(&client_frame(
        OpCode::Binary,
        true,
        true,
        &[0xff, 0xfe, 0xfd, 0x00, 0x12],
    ));
    let err = s.poll_event().unwrap_err();
    assert_eq!(err, ProtocolError::InvalidCompressedData);
    assert_eq!(err.close_code().0, 1007);
}

#[test]
fn compressed_invalid_utf8_is_1007() {
    let z = peer_compress(&[b'a', 0xff, b'b']);
    let mut s = server_with_deflate(config());
    s.handle_read(&client_frame(OpCode::Text, true, true, &z));
    assert_eq!(s.poll_event().unwrap_err(), ProtocolError::InvalidUtf8);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Both directions, every parameter combination, any fragmentation on the sending side
        /// (compressed payload split across frames).
        #[test]
        fn round_trips(msgs in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..2000), 1..6),
                       snct: bool, cnct: bool, sbits in 8u8..=15, cbits in 8u8..=15, split in 1usize..5) {
            let (mut c, mut s) = pair(params(snct, cnct, sbits, cbits), config());
            for m in &msgs {
                let msg = Message::binary(m.clone());
                c.send(&msg).unwrap();
                prop_assert_eq!(pump(&mut c, &mut s).unwrap(), vec![Event::Message(msg.clone())]);
                s.send(&msg).unwrap();
                prop_assert_eq!(pump(&mut s, &mut c).unwrap(), vec![Event::Message(msg.clone())]);
            }
            // A compressed message sent in `split` fragments.
            let data: Vec<u8> = msgs.concat();
            let z = peer_compress(&data);
            let mut server = server_with_deflate(config());
            let pieces: Vec<&[u8]> = if z.is_empty() { vec![&z[..]] } else { z.chunks(z.len().div_ceil(split)).collect() };
            let mut bytes = Vec::new();
            for (i, p) in pieces.iter().enumerate() {
                let op = if i == 0 { OpCode::Binary } else { OpCode::Continuation };
                bytes.extend(client_frame(op, i == pieces.len() - 1, i == 0, p));
            }
            server.handle_read(&bytes);
            prop_assert_eq!(server.poll_event().unwrap(), Some(Event::Message(Message::binary(data))));
        }
    }
}
