//! `ClientRequest::parse_response` (client side of the opening handshake) on arbitrary bytes.
//!
//! Invariants: a parsed head used at most the input and the size limit; an accepted response
//! is a 101 with the right `Sec-WebSocket-Accept`, and only selects the subprotocol and the
//! extension that were offered; bytes after the head do not change the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
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
        .extension("permessage-deflate; client_max_window_bits");
    let Ok(Some((resp, n))) = client.parse_response(data, &config) else {
        return;
    };
    assert!(n <= data.len() && n <= MAX_SIZE, "used {n} of {}", data.len());
    assert_eq!(resp.status, 101);
    assert!(resp.headers.len() <= MAX_HEADERS);
    assert_eq!(
        resp.header("sec-websocket-accept").map(str::trim),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(matches!(resp.protocol.as_deref(), None | Some("chat")));
    for e in &resp.extensions {
        assert_eq!(e.split(';').next().map(str::trim), Some("permessage-deflate"), "{e:?}");
    }
    assert_eq!(client.parse_response(&data[..n], &config), Ok(Some((resp, n))));
});
