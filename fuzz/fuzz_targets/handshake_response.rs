//! `ClientRequest::parse_response` (client side of the opening handshake) on arbitrary bytes.
//!
//! Invariants: a parsed head used at most the input and the size limit; an accepted response
//! is a 101 with the right `Sec-WebSocket-Accept`, and only selects the subprotocol and the
//! extension (permessage-deflate, window limits within the offer) that were offered; bytes
//! after the head do not change the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::extension::DeflateConfig;
use switchboard_proto::handshake::client::ClientRequest;
use switchboard_proto::Config;

const MAX_SIZE: usize = 1024;
const MAX_HEADERS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let config = Config::default()
        .max_handshake_size(MAX_SIZE)
        .max_handshake_headers(MAX_HEADERS);
    let client = ClientRequest::new("h", "/")
        .with_key("dGhlIHNhbXBsZSBub25jZQ==")
        .protocol("chat")
        .deflate(DeflateConfig::default().server_max_window_bits(12));
    let Ok(Some((resp, n))) = client.parse_response(data, &config) else {
        return;
    };
    assert!(
        n <= data.len() && n <= MAX_SIZE,
        "used {n} of {}",
        data.len()
    );
    assert_eq!(resp.status, 101);
    assert!(resp.headers.len() <= MAX_HEADERS);
    assert_eq!(
        resp.header("sec-websocket-accept").map(str::trim),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(matches!(resp.protocol.as_deref(), None | Some("chat")));
    // At most one extension, permessage-deflate, within what we offered.
    match &resp.deflate {
        None => assert!(resp.extensions.is_empty(), "{:?}", resp.extensions),
        Some(p) => {
            assert_eq!(resp.extensions.len(), 1, "{:?}", resp.extensions);
            assert!(resp.extensions[0]
                .trim_start()
                .starts_with("permessage-deflate"));
            assert!((8..=12).contains(&p.server_max_window_bits), "{p:?}");
            assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
        }
    }
    assert_eq!(
        client.parse_response(&data[..n], &config),
        Ok(Some((resp, n)))
    );
});
