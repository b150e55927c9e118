//! `Request::parse` (server side of the opening handshake) on arbitrary bytes.
//!
//! Invariants: a parsed head used at most the input and the size limit, and at most the header
//! limit; every shorter prefix is incomplete or the same error class, never a different request;
//! when `validate()` accepts it, `accept()` builds a `101` that our own client accepts (with and
//! without the first offered subprotocol).
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::handshake::{accept_key, client::ClientRequest, server::Request};
use switchboard_proto::Config;

const MAX_SIZE: usize = 1024;
const MAX_HEADERS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let config = Config::default()
        .max_handshake_size(MAX_SIZE)
        .max_handshake_headers(MAX_HEADERS);
    let Ok(Some((req, n))) = Request::parse(data, &config) else {
        return;
    };
    assert!(n <= data.len() && n <= MAX_SIZE, "used {n} of {}", data.len());
    assert!(req.headers.len() <= MAX_HEADERS);
    // Bytes after the head (the first frames) do not change the request.
    assert_eq!(Request::parse(&data[..n], &config), Ok(Some((req.clone(), n))));

    let Ok(key) = req.validate() else { return };
    // A server reading this request in pieces must never reject a prefix of a valid request.
    for cut in 0..n {
        assert_eq!(Request::parse(&data[..cut], &config), Ok(None), "prefix of {cut} bytes");
    }
    let resp = req.accept(None, &[]).expect("accept after validate");
    assert!(resp.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(resp.ends_with(b"\r\n\r\n"));
    let line = format!("Sec-WebSocket-Accept: {}\r\n", accept_key(key.as_bytes()));
    assert!(resp.windows(line.len()).any(|w| w == line.as_bytes()));
    // Our client, having sent this key, accepts the response, all of it.
    let client = ClientRequest::new("h", "/").with_key(key);
    let (r, used) = client
        .parse_response(&resp, &Config::default())
        .expect("client rejected our 101")
        .expect("client found our 101 incomplete");
    assert_eq!((r.status, used, r.protocol), (101, resp.len(), None));

    let first = req.protocols().next();
    if let Some(p) = first {
        let resp = req.accept(Some(p), &[]).expect("accept an offered protocol");
        let client = ClientRequest::new("h", "/").with_key(key).protocol(p);
        let (r, _) = client
            .parse_response(&resp, &Config::default())
            .unwrap_or_else(|e| panic!("client rejected our 101 with protocol {p:?}: {e}"))
            .expect("complete");
        assert_eq!(r.protocol.as_deref(), Some(p));
    }
});
