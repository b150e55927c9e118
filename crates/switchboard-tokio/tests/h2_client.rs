//! WebSocket over HTTP/2 (RFC 8441), the client against hyper's HTTP/2 server (with our
//! server-side `extended_upgrade`/`H2Io`), over h2c and TLS with ALPN.
#![cfg(feature = "http2-server")]

mod h2_support;

use std::time::Duration;

use bytes::Bytes;
use h2_support::{start, Options};
use switchboard_proto::extension::DeflateConfig;
use switchboard_tokio::client::WsUrl;
use switchboard_tokio::h2::{websocket_on, H2Client, Http2Error, Http2Settings};
use switchboard_tokio::proto::handshake::client::ClientRequest;
use switchboard_tokio::{
    tls, ClientBuilder, CloseCode, Config, Error, Http2, MaybeTlsStream, Message, WebSocket,
};

const LIMIT: Duration = Duration::from_secs(10);

fn tls_options(alpn: &[&'static [u8]], connect_protocol: bool) -> Options {
    Options {
        alpn: Some(alpn.to_vec()),
        connect_protocol,
        ..Options::default()
    }
}

fn builder(url: &str, mode: Http2) -> ClientBuilder {
    ClientBuilder::new(url)
        .http2(mode)
        .tls_config(tls::insecure_client_config().unwrap())
}

/// Text, binary, 64 KiB and the close handshake.
async fn exchange(ws: &mut WebSocket<MaybeTlsStream>) {
    ws.send(&Message::text("hello over h2")).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap(),
        Some(Message::text("hello over h2"))
    );
    ws.send(&Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.recv().await.unwrap(),
        Some(Message::binary(vec![0u8, 1, 2, 255]))
    );
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(&Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::binary(big)));
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    let theirs = ws.connection().received_close().cloned().flatten();
    assert_eq!(theirs.map(|f| f.code), Some(CloseCode::NORMAL));
}

#[tokio::test]
async fn h2c_force_echoes_and_closes() {
    let peer = start(Options::default()).await;
    let run = async {
        let (mut ws, resp) = builder(&peer.url("ws", "/echo"), Http2::Force)
            .protocol("chat")
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert_eq!(resp.status, 200);
        assert_eq!(resp.protocol.as_deref(), Some("chat"));
        // 1 MiB each way: many times the stream window (128 KiB) we give the server, so
        // the echo only completes if reading gives the window back.
        let huge: Vec<u8> = (0..1024 * 1024).map(|i| (i % 241) as u8).collect();
        ws.send(&Message::binary(huge.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::binary(huge)));
        exchange(&mut ws).await;
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    assert_eq!(peer.connections(), 1);
}

#[tokio::test]
async fn tls_prefer_uses_h2_when_offered() {
    let peer = start(tls_options(&[b"h2", b"http/1.1"], true)).await;
    let run = async {
        let (mut ws, _) = builder(&peer.url("wss", "/echo"), Http2::Prefer)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        exchange(&mut ws).await;
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    assert_eq!(*peer.alpn.lock().unwrap(), [Some(b"h2".to_vec())]);
}

/// The server speaks HTTP/2 but its SETTINGS do not enable the extended CONNECT: `Prefer`
/// opens a second connection with ALPN `http/1.1` only; `Force` fails saying why.
#[tokio::test]
async fn setting_absent_prefer_falls_back_and_force_errors() {
    let peer = start(tls_options(&[b"h2", b"http/1.1"], false)).await;
    let run = async {
        let (mut ws, resp) = builder(&peer.url("wss", "/echo"), Http2::Prefer)
            .connect()
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        assert_eq!(resp.status, 101);
        exchange(&mut ws).await;
        let err = builder(&peer.url("wss", "/echo"), Http2::Force)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Http2(e) if matches!(**e, Http2Error::ConnectProtocolDisabled)),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
            "{err}"
        );
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    let alpn = peer.alpn.lock().unwrap().clone();
    assert_eq!(
        alpn,
        [
            Some(b"h2".to_vec()),
            Some(b"http/1.1".to_vec()),
            Some(b"h2".to_vec())
        ]
    );

    // h2c: the same error.
    let h2c = start(Options {
        connect_protocol: false,
        ..Options::default()
    })
    .await;
    let err = builder(&h2c.url("ws", "/echo"), Http2::Force)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Http2(e) if matches!(**e, Http2Error::ConnectProtocolDisabled)),
        "{err:?}"
    );
}

#[tokio::test]
async fn force_errors_when_alpn_does_not_select_h2() {
    // A server with ALPN `http/1.1` only (it refuses h2), and one without ALPN at all.
    for (alpn, says) in [
        (vec![&b"http/1.1"[..]], "no_application_protocol"),
        (vec![], "without ALPN"),
    ] {
        let peer = start(tls_options(&alpn, true)).await;
        let err = builder(&peer.url("wss", "/echo"), Http2::Force)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Http2(e) if matches!(**e, Http2Error::NotNegotiated(_))),
            "{err:?}"
        );
        assert!(err.to_string().contains(says), "{err}");
        // Prefer on the same server: HTTP/1.1 on that connection.
        let (mut ws, _) = builder(&peer.url("wss", "/echo"), Http2::Prefer)
            .connect()
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        exchange(&mut ws).await;
    }
}

/// `ws://` with `Prefer` never guesses h2c: HTTP/1.1 to a server that only speaks it.
#[tokio::test]
async fn prefer_on_plain_ws_is_http1() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = switchboard_tokio::accept(tcp, Config::default())
            .await
            .unwrap();
        while let Ok(Some(m)) = ws.recv().await {
            ws.feed(&m).unwrap();
        }
    });
    let (mut ws, _) = builder(&format!("ws://{addr}/"), Http2::Prefer)
        .connect()
        .await
        .unwrap();
    assert!(!ws.get_ref().is_http2());
    exchange(&mut ws).await;
}

#[tokio::test]
async fn permessage_deflate_negotiated_and_used_over_h2() {
    let deflate = Config::default().deflate(Some(DeflateConfig::default()));
    let peer = start(Options {
        config: deflate,
        ..tls_options(&[b"h2"], true)
    })
    .await;
    let run = async {
        let (mut ws, resp) = builder(&peer.url("wss", "/echo"), Http2::Force)
            .config(deflate)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert!(resp.deflate.is_some(), "{resp:?}");
        ws.set_trace(true);
        let text = "compress me ".repeat(1000);
        ws.send(&Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::text(text.clone())));
        let frames: Vec<_> = std::iter::from_fn(|| ws.poll_trace()).collect();
        assert_eq!(frames.len(), 2, "{frames:?}");
        for f in &frames {
            assert!(f.header.rsv1, "compressed both ways: {f:?}");
            assert!(f.header.payload_len < 200, "{f:?}");
        }
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
}

/// A connection the caller made with the `h2` crate: two WebSockets on one `SendRequest`,
/// one TCP connection.
#[tokio::test]
async fn two_websockets_on_one_given_connection() {
    let peer = start(Options::default()).await;
    let run = async {
        let tcp = tokio::net::TcpStream::connect(peer.addr).await.unwrap();
        let (mut send, mut conn) = h2::client::handshake(tcp).await.unwrap();
        let mut ping = conn.ping_pong().unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        ping.ping(h2::Ping::opaque()).await.unwrap();
        let host = format!("127.0.0.1:{}", peer.addr.port());
        let (mut a, _) = websocket_on(
            &mut send,
            false,
            &ClientRequest::new(&host, "/a"),
            Config::default(),
        )
        .await
        .unwrap();
        let (mut b, _) = websocket_on(
            &mut send,
            false,
            &ClientRequest::new(&host, "/b"),
            Config::default(),
        )
        .await
        .unwrap();
        assert_ne!(a.get_ref().stream_id(), b.get_ref().stream_id());
        for i in 0..20 {
            a.feed(&Message::text(format!("a{i}"))).unwrap();
            b.feed(&Message::text(format!("b{i}"))).unwrap();
        }
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        for i in 0..20 {
            assert_eq!(
                b.recv().await.unwrap(),
                Some(Message::text(format!("b{i}")))
            );
            assert_eq!(
                a.recv().await.unwrap(),
                Some(Message::text(format!("a{i}")))
            );
        }
        a.close(CloseCode::NORMAL, "").await.unwrap();
        // The other stream is untouched by the first one's end.
        b.send(&Message::binary(Bytes::from_static(b"still here")))
            .await
            .unwrap();
        assert_eq!(
            b.recv().await.unwrap(),
            Some(Message::binary(Bytes::from_static(b"still here")))
        );
        b.close(CloseCode::NORMAL, "").await.unwrap();
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    assert_eq!(peer.connections(), 1);
}

/// `H2Client`: its own connection, several WebSockets.
#[tokio::test]
async fn h2_client_opens_several_websockets() {
    let peer = start(tls_options(&[b"h2"], true)).await;
    let run = async {
        let b = builder(&peer.url("wss", "/echo"), Http2::Force);
        let url = WsUrl::parse(&peer.url("wss", "/echo")).unwrap();
        let tcp = b.open_tcp(&url).await.unwrap();
        let client = b.open_http2_over(tcp, &url).await.unwrap();
        assert!(client.is_extended_connect_enabled());
        let (mut one, _) = client.websocket(&url, &b).await.unwrap();
        let (mut two, _) = client.websocket(&url, &b).await.unwrap();
        one.send(&Message::text("1")).await.unwrap();
        two.send(&Message::text("2")).await.unwrap();
        assert_eq!(two.recv().await.unwrap(), Some(Message::text("2")));
        assert_eq!(one.recv().await.unwrap(), Some(Message::text("1")));
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    assert_eq!(peer.connections(), 1);
}

#[tokio::test]
async fn refusal_status_and_body_line() {
    let peer = start(Options::default()).await;
    let err = builder(&peer.url("ws", "/refuse"), Http2::Force)
        .connect()
        .await
        .unwrap_err();
    match err {
        Error::Rejected { status, body, .. } => {
            assert_eq!(status, 403);
            assert_eq!(body, "no entry here");
        }
        other => panic!("{other:?}"),
    }
}

/// A server that goes away (or never answers) during the handshake: an error, no hang.
#[tokio::test]
async fn server_gone_mid_handshake_is_an_error() {
    // Gone after the TCP accept, before any HTTP/2 frame.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let url = format!("ws://{addr}/echo");
    let r = tokio::time::timeout(LIMIT, builder(&url, Http2::Force).connect()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");

    // Silent: the SETTINGS never come; the settings timeout says so.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let settings = Http2Settings {
        settings_timeout: Duration::from_millis(300),
        ..Http2Settings::default()
    };
    let err = builder(&format!("ws://{addr}/echo"), Http2::Force)
        .http2_settings(settings)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Http2(e) if matches!(**e, Http2Error::Timeout(_))),
        "{err:?}"
    );

    // Gone after the SETTINGS, while the CONNECT waits for its answer.
    let peer = start(Options {
        die_after: Some(Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    let r = tokio::time::timeout(
        LIMIT,
        builder(&peer.url("ws", "/hang"), Http2::Force).connect(),
    )
    .await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");

    // An h2 connection without a server at all: H2Client::handshake fails too.
    let (a, b) = tokio::io::duplex(1024);
    drop(b);
    assert!(H2Client::handshake(a).await.is_err());
}

/// A forwarding HTTP `CONNECT` proxy on 127.0.0.1: answers 200 and copies both ways. Its
/// port, and the targets it was asked for.
async fn forwarding_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let targets = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let targets = std::sync::Arc::clone(&targets);
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let target = head.split(' ').nth(1).unwrap().to_string();
                targets.lock().unwrap().push(target.clone());
                let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, seen)
}

/// Proxies stay underneath: TCP to the proxy, its tunnel, TLS with ALPN inside it, then
/// HTTP/2 (and h2c through the tunnel for ws://).
#[tokio::test]
async fn http2_through_an_http_connect_proxy() {
    let (proxy_port, targets) = forwarding_proxy().await;
    let proxy =
        switchboard_tokio::proxy::Proxy::parse(&format!("http://127.0.0.1:{proxy_port}")).unwrap();
    let tls_peer = start(tls_options(&[b"h2", b"http/1.1"], true)).await;
    let h2c_peer = start(Options::default()).await;
    let run = async {
        for (url, mode) in [
            (tls_peer.url("wss", "/echo"), Http2::Prefer),
            (tls_peer.url("wss", "/echo"), Http2::Force),
            (h2c_peer.url("ws", "/echo"), Http2::Force),
        ] {
            let (mut ws, _) = builder(&url, mode)
                .proxy(proxy.clone())
                .connect()
                .await
                .unwrap();
            assert!(ws.get_ref().is_http2(), "{url} {mode:?}");
            exchange(&mut ws).await;
        }
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    let targets = targets.lock().unwrap().clone();
    assert_eq!(targets.len(), 3, "{targets:?}");
    assert_eq!(tls_peer.connections() + h2c_peer.connections(), 3);
}

/// One WebSocket of a connection that never reads what the server sends back does not stall
/// its sibling: flow control stops the stalled stream alone (its window, not the
/// connection's).
#[tokio::test]
async fn a_stalled_stream_does_not_stall_its_sibling() {
    let peer = start(Options::default()).await;
    let url = WsUrl::parse(&peer.url("ws", "/echo")).unwrap();
    let b = builder(&peer.url("ws", "/echo"), Http2::Force);
    let client = b
        .open_http2_over(b.open_tcp(&url).await.unwrap(), &url)
        .await
        .unwrap();
    let (mut stalled, _) = client.websocket(&url, &b).await.unwrap();
    let (mut live, _) = client.websocket(&url, &b).await.unwrap();
    // Sends 8 MiB and never reads the echo: it blocks once the windows are full.
    let sender = tokio::spawn(async move {
        let chunk = Message::binary(vec![7u8; 64 * 1024]);
        for _ in 0..128 {
            if stalled.send(&chunk).await.is_err() {
                break;
            }
        }
        stalled
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sender.is_finished(), "8 MiB cannot fit in the windows");
    for i in 0..50 {
        let m = Message::text(format!("live {i}"));
        let round = async {
            live.send(&m).await.unwrap();
            live.recv().await.unwrap()
        };
        let got = tokio::time::timeout(Duration::from_secs(1), round)
            .await
            .expect("the live stream answers within a second");
        assert_eq!(got, Some(m));
    }
    sender.abort();
}
