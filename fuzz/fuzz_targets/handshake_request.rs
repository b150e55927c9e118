//! `Request::parse` (server side of the opening handshake) on arbitrary bytes.
//!
//! Invariants: a parsed head used at most the input and the size limit, and at most the header
//! limit; every shorter prefix is incomplete or the same error class, never a different request;
//! when `validate()` accepts it, `accept()` builds a `101` that our own client accepts (with and
//! without the first offered subprotocol), agreeing on the permessage-deflate parameters the
//! server negotiated from the request's offers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::extension::DeflateConfig;
use switchboard_proto::handshake::{accept_key, client::ClientRequest, server::Request};
use switchboard_proto::Config;

const MAX_SIZE: usize = 1024;
const MAX_HEADERS: usize = 16;

fuzz_target!(|data: &[u8]| {
    // permessage-deflate enabled, so the request's extension offers are negotiated.
    let config = Config::default()
        .max_handshake_size(MAX_SIZE)
        .max_handshake_headers(MAX_HEADERS)
        .deflate(Some(DeflateConfig::default()));
    let Ok(Some((req, n))) = Request::parse(data, &config) else {
        return;
    };
    assert!(
        n <= data.len() && n <= MAX_SIZE,
        "used {n} of {}",
        data.len()
    );
    assert!(req.headers.len() <= MAX_HEADERS);
    // Bytes after the head (the first frames) do not change the request.
    assert_eq!(
        Request::parse(&data[..n], &config),
        Ok(Some((req.clone(), n)))
    );

    let Ok(key) = req.validate() else { return };
    // A server reading this request in pieces must never reject a prefix of a valid request.
    for cut in 0..n {
        assert_eq!(
            Request::parse(&data[..cut], &config),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }
    let accepted = req
        .accept(None, &config, &[])
        .expect("accept after validate");
    let resp = &accepted.response;
    assert!(resp.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(resp.ends_with(b"\r\n\r\n"));
    let line = format!("Sec-WebSocket-Accept: {}\r\n", accept_key(key.as_bytes()));
    assert!(resp.windows(line.len()).any(|w| w == line.as_bytes()));
    // Our client, having sent this key and the most permissive permessage-deflate offer,
    // accepts the response (all of it) and agrees on the parameters.
    let client = ClientRequest::new("h", "/")
        .with_key(key)
        .deflate(DeflateConfig::default());
    let (r, used) = client
        .parse_response(resp, &Config::default())
        .unwrap_or_else(|e| {
            panic!(
                "client rejected our 101: {e}\n{}",
                String::from_utf8_lossy(resp)
            )
        })
        .expect("client found our 101 incomplete");
    assert_eq!((r.status, used, r.protocol), (101, resp.len(), None));
    match (accepted.deflate, r.deflate) {
        (None, None) => {}
        (Some(s), Some(c)) => {
            assert_eq!(s.server_no_context_takeover, c.server_no_context_takeover);
            assert_eq!(s.client_no_context_takeover, c.client_no_context_takeover);
            assert_eq!(s.client_max_window_bits, c.client_max_window_bits);
            // The server compresses within a window the client can inflate.
            assert!(s.server_max_window_bits <= c.server_max_window_bits);
        }
        (s, c) => panic!("server agreed to {s:?}, client to {c:?}"),
    }

    let first = req.protocols().next();
    if let Some(p) = first {
        let resp = req
            .accept(Some(p), &Config::default(), &[])
            .expect("accept an offered protocol")
            .response;
        let client = ClientRequest::new("h", "/").with_key(key).protocol(p);
        let (r, _) = client
            .parse_response(&resp, &Config::default())
            .unwrap_or_else(|e| panic!("client rejected our 101 with protocol {p:?}: {e}"))
            .expect("complete");
        assert_eq!(r.protocol.as_deref(), Some(p));
    }
});
