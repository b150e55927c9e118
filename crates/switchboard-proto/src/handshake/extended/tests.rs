use super::*;
use crate::extension::DeflateConfig;

fn v13() -> Vec<Header> {
    vec![("sec-websocket-version".into(), "13".into())]
}

fn connect(headers: Vec<Header>) -> Request {
    Request::from_extended(
        "CONNECT",
        Some("websocket"),
        "example.com",
        "/chat",
        headers,
    )
}

fn h(n: &str, v: &str) -> Header {
    (n.to_string(), v.to_string())
}

#[test]
fn authority_becomes_host_and_replaces_a_host_sent() {
    let r = Request::from_extended(
        "CONNECT",
        Some("websocket"),
        "a.example:8443",
        "/x?y=1",
        vec![
            h("host", "other"),
            h(":protocol", "dup"),
            h("origin", "https://o"),
        ],
    );
    assert_eq!(r.host(), "a.example:8443");
    assert_eq!(r.extended_protocol(), Some("websocket"));
    let hosts = r.headers.iter().filter(|(n, _)| n == "host").count();
    assert_eq!(hosts, 1);
    let protocols = r.headers.iter().filter(|(n, _)| n == ":protocol").count();
    assert_eq!(
        protocols, 1,
        "a :protocol in the header list is not a second one"
    );
    assert_eq!(r.origin(), Some("https://o"));
    assert_eq!((r.path_only(), r.query()), ("/x", Some("y=1")));
    assert!(r.is_extended_connect());
    assert!(!r.is_upgrade(), "not an HTTP/1.1 upgrade");
    // No authority: a host header sent is kept (and an empty path is "/").
    let r = Request::from_extended("CONNECT", Some("websocket"), "", "", vec![h("host", "b")]);
    assert_eq!((r.host(), r.path.as_str()), ("b", "/"));
}

#[test]
fn refusals_have_their_error_and_status() {
    let cases: [(Request, HandshakeError, u16); 6] = [
        (
            Request::from_extended("GET", Some("websocket"), "a", "/", v13()),
            HandshakeError::MethodNotAllowed("GET".into()),
            405,
        ),
        (
            Request::from_extended("CONNECT", None, "a", "/", v13()),
            HandshakeError::NotExtendedConnect(None),
            400,
        ),
        (
            Request::from_extended("CONNECT", Some("webtransport"), "a", "/", v13()),
            HandshakeError::NotExtendedConnect(Some("webtransport".into())),
            400,
        ),
        (
            Request::from_extended("CONNECT", Some("websocket"), "", "/", v13()),
            HandshakeError::MissingHost,
            400,
        ),
        (connect(vec![]), HandshakeError::UnsupportedVersion, 426),
        (
            connect(vec![h("sec-websocket-version", "8")]),
            HandshakeError::UnsupportedVersion,
            426,
        ),
    ];
    for (req, err, status) in cases {
        let got = req.validate_extended().unwrap_err();
        assert_eq!(got, err, "{req:?}");
        assert_eq!(got.status(), status, "{req:?}");
        assert_eq!(
            req.accept_extended(None, &Config::default(), &[])
                .unwrap_err(),
            err
        );
    }
    assert!(connect(v13()).validate_extended().is_ok());
}

#[test]
fn accept_negotiates_like_http1() {
    let mut hs = v13();
    hs.push(h("sec-websocket-protocol", "a, b"));
    hs.push(h(
        "sec-websocket-extensions",
        "x-unknown, permessage-deflate; client_max_window_bits",
    ));
    let r = connect(hs);
    let off = r
        .accept_extended(Some("b"), &Config::default(), &[])
        .unwrap();
    assert_eq!(off.status, 200);
    assert_eq!(off.headers, [h("sec-websocket-protocol", "b")]);
    assert_eq!(off.deflate, None);
    let cfg = Config::default().deflate(Some(DeflateConfig::default()));
    let on = r
        .accept_extended(None, &cfg, &[("X-Server", "sb")])
        .unwrap();
    assert_eq!(
        on.headers,
        [
            h("sec-websocket-extensions", "permessage-deflate"),
            h("x-server", "sb")
        ]
    );
    assert!(on.deflate.is_some());
    assert_eq!(
        r.accept_extended(Some("c"), &cfg, &[]).unwrap_err(),
        HandshakeError::ProtocolNotOffered("c".into())
    );
    assert!(r
        .accept_extended(None, &cfg, &[("x", "a\r\nb: c")])
        .is_err());
}

#[test]
fn client_headers_are_lower_case_and_h2_clean() {
    let req = ClientRequest::new("example.com:8443", "/chat?room=a")
        .origin("https://example.com")
        .protocol("chat")
        .protocol("superchat")
        .deflate(DeflateConfig::default())
        .header("X-Token", "t")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Key", "k")
        .header("TE", "trailers");
    let got = req.extended_headers().unwrap();
    assert_eq!(
        got,
        [
            h("sec-websocket-version", "13"),
            h("origin", "https://example.com"),
            h("sec-websocket-protocol", "chat, superchat"),
            h(
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits"
            ),
            h("x-token", "t"),
        ]
    );
    assert!(ClientRequest::new("a", "/")
        .header("x", "a\nb")
        .extended_headers()
        .is_err());
    assert!(ClientRequest::new("a", "/a b").extended_headers().is_err());
    assert!(ClientRequest::new("a", "*").extended_headers().is_err());
}

#[test]
fn client_checks_the_answer() {
    let req = ClientRequest::new("a", "/")
        .protocol("chat")
        .deflate(DeflateConfig::default());
    let ok = req
        .parse_extended_response(
            200,
            &[
                h("sec-websocket-protocol", "chat"),
                h(
                    "sec-websocket-extensions",
                    "permessage-deflate; server_no_context_takeover",
                ),
            ],
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.protocol.as_deref(), Some("chat"));
    assert!(ok.deflate.unwrap().server_no_context_takeover);
    assert_eq!(
        req.parse_extended_response(403, &[]).unwrap_err(),
        HandshakeError::UnexpectedStatus {
            status: 403,
            reason: "Forbidden".into()
        }
    );
    assert_eq!(
        req.parse_extended_response(200, &[h("sec-websocket-protocol", "other")])
            .unwrap_err(),
        HandshakeError::ProtocolNotOffered("other".into())
    );
    for bad in [
        "x-unknown",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate, permessage-deflate",
    ] {
        assert!(
            req.parse_extended_response(200, &[h("sec-websocket-extensions", bad)])
                .is_err(),
            "{bad}"
        );
    }
    // Deflate accepted but never offered.
    let plain = ClientRequest::new("a", "/");
    assert_eq!(
        plain
            .parse_extended_response(200, &[h("sec-websocket-extensions", "permessage-deflate")])
            .unwrap_err(),
        HandshakeError::ExtensionNotOffered("permessage-deflate".into())
    );
}

/// Client and server sides agree: what one builds the other accepts, deflate included.
#[test]
fn both_roles_round_trip() {
    let client = ClientRequest::new("h:1", "/echo").deflate(DeflateConfig::default());
    let req = Request::from_extended(
        "CONNECT",
        Some(WEBSOCKET_PROTOCOL),
        client.host(),
        client.path(),
        client.extended_headers().unwrap(),
    );
    let cfg = Config::default().deflate(Some(DeflateConfig::default()));
    let acc = req.accept_extended(None, &cfg, &[]).unwrap();
    let resp = client
        .parse_extended_response(acc.status, &acc.headers)
        .unwrap();
    assert_eq!(resp.deflate.is_some(), acc.deflate.is_some());
    assert!(resp.deflate.is_some());
}
