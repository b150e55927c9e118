//! permessage-deflate at the message size limit (issue 23 items 4 and 5): inflating a
//! message allocates about the limit at most, and the limit is the inflated message's (a
//! compressed frame of an incompressible message is a little longer than the message).
//!
//! Counted with a global allocator that models a copying `realloc` (the old and the new
//! block are both live while it copies, as with mimalloc, the server's allocator).

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::{Config, Connection, Event, Message, ProtocolError, Role};
use switchboard_testkit::alloc::{self, CountingAllocator};

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

const NO_CONTEXT: DeflateParams = DeflateParams {
    server_no_context_takeover: true,
    client_no_context_takeover: true,
    server_max_window_bits: 15,
    client_max_window_bits: 15,
};

/// With context takeover, so the client compresses even what does not get shorter.
const CONTEXT: DeflateParams = DeflateParams {
    server_no_context_takeover: false,
    client_no_context_takeover: false,
    server_max_window_bits: 15,
    client_max_window_bits: 15,
};

fn pair(max: usize, params: DeflateParams) -> (Connection, Connection) {
    let deflate = Some(DeflateConfig::default().threshold(0));
    let client =
        Connection::new(Role::Client, Config::default().deflate(deflate)).with_deflate(params);
    let server = Connection::new(
        Role::Server,
        Config::default()
            .deflate(deflate)
            .max_message_size(max)
            .max_frame_size(max),
    )
    .with_deflate(params);
    (client, server)
}

/// Sends `msg` from the client, feeds the server the frame, returns what the server made
/// of it.
fn deliver(msg: &Message, max: usize) -> Result<Option<Event>, ProtocolError> {
    let (mut client, mut server) = pair(max, CONTEXT);
    let wire = transmit(&mut client, msg);
    assert_eq!(wire[0] & 0x40, 0x40, "sent compressed");
    assert!(
        wire.len() > msg.payload().len(),
        "longer than the message on the wire"
    );
    server.handle_read(&wire);
    server.poll_event()
}

fn transmit(client: &mut Connection, msg: &Message) -> Vec<u8> {
    client.send(msg).unwrap();
    let mut wire = Vec::new();
    while !client.pending_transmit().is_empty() {
        let n = client.pending_transmit().len();
        wire.extend_from_slice(client.pending_transmit());
        client.advance_transmit(n);
    }
    wire
}

fn noise(len: usize) -> Vec<u8> {
    // A xorshift stream: incompressible, and the same every run.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// One test function: the counters are process-wide, so the measurements must not overlap.
#[test]
fn deflate_at_the_limit() {
    // Item 5: an incompressible message one byte under the limit goes through, although its
    // compressed frame is longer than the limit (64 KiB, /ws; 16 MiB, /echo).
    for max in [64 << 10, 16 << 20] {
        let data = noise(max - 1);
        match deliver(&Message::binary(data.clone()), max) {
            Ok(Some(Event::Message(m))) => assert_eq!(m.payload().len(), max - 1),
            other => panic!("limit {max}: {other:?}"),
        }
        // One byte over: refused as too large (after inflating).
        let over = deliver(&Message::binary(noise(max + 1)), max);
        assert!(
            matches!(over, Err(ProtocolError::MessageTooLarge { .. })),
            "limit {max}: {over:?}"
        );
    }

    // Without context takeover an incompressible message goes out uncompressed (shorter).
    let (mut client, _) = pair(64 << 10, NO_CONTEXT);
    let plain = Message::binary(noise(1000));
    let wire = transmit(&mut client, &plain);
    assert_eq!(wire[0] & 0x40, 0, "incompressible data was sent compressed");

    // Item 4: a small frame that inflates past 16 MiB is refused having allocated about
    // the limit (the limit and a step of 1 MiB), not twice or four times it.
    let max = 16 << 20;
    let bomb = Message::binary(vec![0u8; 32 << 20]);
    let (mut client, mut server) = pair(max, NO_CONTEXT);
    let wire = transmit(&mut client, &bomb);
    drop(client);
    drop(bomb);
    assert!(wire.len() < 1 << 20, "the bomb is {} bytes", wire.len());
    server.handle_read(&wire);
    let base = alloc::reset_peak();
    let r = server.poll_event();
    assert!(
        matches!(r, Err(ProtocolError::MessageTooLarge { .. })),
        "{r:?}"
    );
    let peak = alloc::peak_bytes() - base;
    assert!(
        peak <= max as isize + max as isize / 8,
        "inflating peaked at {peak} bytes for a limit of {max}"
    );
}
