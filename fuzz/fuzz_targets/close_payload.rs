//! `CloseFrame::parse` on arbitrary payloads, and the same payload in a close frame received
//! by a server `Connection`.
//!
//! Invariants: an empty payload is `None`, one byte is an error; a parsed frame carries a code
//! valid on the wire and exactly the input's code and reason (<= len - 2 bytes, UTF-8); the
//! connection reports the same result and answers with the right close frame (the echoed
//! code, or the error's code).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_proto::frame::MAX_CONTROL_PAYLOAD;
use switchboard_proto::{CloseCode, CloseFrame, Config, Connection, Event, Role, State};

fuzz_target!(|data: &[u8]| {
    let parsed = CloseFrame::parse(Bytes::copy_from_slice(data));
    match &parsed {
        Ok(None) => assert!(data.is_empty()),
        Ok(Some(f)) => {
            assert!(f.code.is_valid_on_wire(), "code {}", f.code);
            assert!(f.reason.len() <= data.len() - 2);
            assert_eq!(f.code, CloseCode(u16::from_be_bytes([data[0], data[1]])));
            assert_eq!(f.reason.as_bytes().as_ref(), &data[2..]);
            assert!(std::str::from_utf8(f.reason.as_bytes()).is_ok());
        }
        Err(_) => assert!(!data.is_empty()),
    }
    if data.len() == 1 {
        assert!(parsed.is_err());
    }

    // The same payload as a masked close frame from a client.
    if data.len() > MAX_CONTROL_PAYLOAD {
        return;
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x88, 0x80 | data.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    let mut conn = Connection::new(Role::Server, Config::default());
    conn.handle_read(&frame);
    let got = conn.poll_event();
    assert_eq!(conn.state(), State::Closed);
    let expected_reply = match (&parsed, &got) {
        (Ok(f), Ok(Some(Event::Close(g)))) => {
            assert_eq!(f, g);
            f.as_ref().map(|f| f.code)
        }
        (Err(e), Err(g)) => {
            assert_eq!(e, g);
            Some(e.close_code())
        }
        _ => panic!("parse gave {parsed:?}, the connection {got:?}"),
    };
    let mut reply = vec![0x88];
    match expected_reply {
        Some(c) => reply.extend([2, (c.0 >> 8) as u8, c.0 as u8]),
        None => reply.push(0),
    }
    assert_eq!(conn.pending_transmit(), &reply[..]);
    assert_eq!(conn.poll_event(), Ok(None));
});
