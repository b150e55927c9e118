//! The heap one permessage-deflate connection holds, counted with the test kit's allocator
//! (the including file installs it). Shared by `tests/deflate_memory.rs` and
//! `examples/deflate_memory.rs` (`#[path]`: neither is a library).

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::{Config, Connection, Event, Message, Role};
use switchboard_testkit::alloc;

/// Heap held by one connection after a client and server pair exchanged `msg` compressed both
/// ways `rounds` times and released their idle buffers: the pair is measured together and,
/// being symmetric (each holds one compressor and one inflater), halved.
pub(crate) fn held_per_connection(
    params: DeflateParams,
    deflate: DeflateConfig,
    msg: &Message,
    rounds: usize,
) -> isize {
    let cfg = Config::default().deflate(Some(deflate));
    let before = alloc::live_bytes();
    let mut client = Connection::new(Role::Client, cfg).with_deflate(params);
    let mut server = Connection::new(Role::Server, cfg).with_deflate(params);
    for _ in 0..rounds {
        client.send(msg).unwrap();
        server.handle_read(client.pending_transmit());
        let n = client.pending_transmit().len();
        client.advance_transmit(n);
        while let Ok(Some(Event::Message(_))) = server.poll_event() {}
        server.send(msg).unwrap();
        client.handle_read(server.pending_transmit());
        let n = server.pending_transmit().len();
        server.advance_transmit(n);
        while let Ok(Some(Event::Message(_))) = client.poll_event() {}
    }
    client.release_idle_buffers();
    server.release_idle_buffers();
    let after = alloc::live_bytes();
    std::hint::black_box((&client, &server));
    (after - before) / 2
}

/// The parameters of both directions: `bits` window bits, with or without context takeover.
pub(crate) fn params(bits: u8, no_context: bool) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: no_context,
        client_no_context_takeover: no_context,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
    }
}
