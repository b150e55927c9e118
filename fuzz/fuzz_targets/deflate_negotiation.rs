//! permessage-deflate negotiation (RFC 7692 §7) between two arbitrary configurations.
//!
//! Input: a client and a server `DeflateConfig` (flags and window bits, out-of-range values
//! included), then an arbitrary extra offer list. Invariants: the server accepts the client's
//! own offer, its response passes the client's checks, and both agree on the parameters (each
//! side compresses within a window the other inflates); a server never answers an arbitrary
//! offer list with a response our most permissive client rejects.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::extension::{parse_extensions, DeflateConfig, DeflateParams};

fn config(flags: u8, server_bits: u8, client_bits: u8) -> DeflateConfig {
    DeflateConfig::default()
        .client_no_context_takeover(flags & 1 != 0)
        .server_no_context_takeover(flags & 2 != 0)
        .server_max_window_bits(server_bits % 20)
        .client_max_window_bits(client_bits % 20)
}

/// Server and client views of the same negotiation must be compatible.
fn agree(server: &DeflateParams, client: &DeflateParams) {
    assert_eq!(
        server.server_no_context_takeover,
        client.server_no_context_takeover
    );
    assert_eq!(
        server.client_no_context_takeover,
        client.client_no_context_takeover
    );
    assert!(
        server.server_max_window_bits <= client.server_max_window_bits,
        "{server:?} {client:?}"
    );
    assert!(
        client.client_max_window_bits <= server.client_max_window_bits,
        "{server:?} {client:?}"
    );
    for b in [
        server.server_max_window_bits,
        server.client_max_window_bits,
        client.server_max_window_bits,
        client.client_max_window_bits,
    ] {
        assert!(
            (8..=15).contains(&b),
            "window bits {b}: {server:?} {client:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [cf, cs, cc, sf, ss, sc, rest @ ..] = data else {
        return;
    };
    let client = config(*cf, *cs, *cc);
    let server = config(*sf, *ss, *sc);

    let offer = client.to_offer();
    let items = parse_extensions([offer.as_str()]);
    assert_eq!(items.len(), 1, "our offer {offer:?}");
    let n = server.negotiate_server(&items);
    let (Some(sp), Some(response)) = (n.deflate, n.response) else {
        panic!("server {server:?} declined our offer {offer:?}");
    };
    let answer = parse_extensions([response.as_str()]);
    assert_eq!(answer.len(), 1, "response {response:?}");
    let cp = client
        .check_response(&answer[0])
        .unwrap_or_else(|e| panic!("client rejected {response:?} to {offer:?}: {e}"));
    agree(&sp, &cp);

    // Arbitrary offers from a client.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let offers = parse_extensions(text.split('\n'));
    let n = server.negotiate_server(&offers);
    assert_eq!(n.deflate.is_some(), n.response.is_some());
    if let (Some(sp), Some(response)) = (n.deflate, n.response) {
        let answer = parse_extensions([response.as_str()]);
        assert_eq!(answer.len(), 1, "response {response:?}");
        let cp = DeflateConfig::default()
            .check_response(&answer[0])
            .unwrap_or_else(|e| panic!("permissive client rejected {response:?}: {e}"));
        agree(&sp, &cp);
    }
});
