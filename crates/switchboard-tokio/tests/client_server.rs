//! The tokio layer end to end over real TCP sockets on 127.0.0.1.

mod common;

use std::time::Duration;

use switchboard_tokio::proto::handshake::HandshakeError;
use switchboard_tokio::{
    accept, connect, ClientBuilder, CloseCode, CloseFrame, Config, Error, Event, Message, Side,
    State, WebSocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn echo_text_binary_large_and_close() {
    let addr = common::echo_server(Config::default()).await;
    let (mut ws, resp) = connect(&format!("ws://{addr}/echo")).await.unwrap();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("x-server"), Some("switchboard-test"));
    for msg in [
        Message::text("héllo"),
        Message::binary(vec![0u8, 255, 1]),
        Message::binary(vec![7u8; 3 << 20]),
        Message::text(""),
    ] {
        ws.send(&msg).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(msg));
    }
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert_eq!(ws.connection().state(), State::Closed);
    assert_eq!(ws.close_initiator(), Some(Side::Local));
    assert_eq!(
        ws.connection().received_close(),
        Some(&Some(CloseFrame::new(CloseCode::NORMAL, "")))
    );
    // The server closed TCP after the handshake; nothing more is read.
    assert_eq!(ws.recv().await.unwrap(), None);
}

#[tokio::test]
async fn many_messages_batched_in_one_burst() {
    let addr = common::echo_server(Config::default()).await;
    let (mut ws, _) = connect(&format!("ws://{addr}/echo")).await.unwrap();
    for i in 0..1000 {
        ws.feed(&Message::text(format!("m{i}"))).unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..1000 {
        assert_eq!(
            ws.recv().await.unwrap(),
            Some(Message::text(format!("m{i}")))
        );
    }
}

#[tokio::test]
async fn subprotocol_is_negotiated() {
    let addr = common::echo_server(Config::default()).await;
    let (_, resp) = ClientBuilder::new(format!("ws://{addr}/echo"))
        .protocol("echo.v1")
        .protocol("echo.v2")
        .connect()
        .await
        .unwrap();
    // The server's preference wins among what the client offered.
    assert_eq!(resp.protocol.as_deref(), Some("echo.v2"));
    let (_, resp) = ClientBuilder::new(format!("ws://{addr}/echo"))
        .protocol("other")
        .connect()
        .await
        .unwrap();
    assert_eq!(resp.protocol, None);
}

#[tokio::test]
async fn unknown_path_is_404_with_reason() {
    let addr = common::echo_server(Config::default()).await;
    match connect(&format!("ws://{addr}/nope")).await {
        Err(Error::Rejected { status, body, .. }) => {
            assert_eq!(status, 404);
            assert_eq!(body, "nothing at /nope");
        }
        other => panic!("expected a 404 rejection, got {other:?}"),
    }
}

/// Sends a raw request and returns the raw response.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_handshakes_get_http_errors() {
    let addr = common::echo_server(Config::default()).await;
    let base = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let resp = raw_exchange(
        addr,
        format!("{base}Sec-WebSocket-Version: 8\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 426 "), "{resp}");
    assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"), "{resp}");

    let resp = raw_exchange(addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert!(
        resp.contains("Upgrade: websocket"),
        "the body names the fix: {resp}"
    );

    let resp = raw_exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");

    let huge = format!("GET /echo HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(40_000));
    let resp = raw_exchange(addr, huge.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
}

#[tokio::test]
async fn slow_handshake_times_out() {
    let config = Config::default().handshake_timeout(Duration::from_millis(200));
    let addr = common::echo_server(config).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
        .await
        .expect("the server must hang up by itself")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 "));
}

#[tokio::test]
async fn client_handshake_times_out_on_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let err = ClientBuilder::new(format!("ws://{addr}/"))
        .config(Config::default().handshake_timeout(Duration::from_millis(200)))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout(_)), "{err:?}");
}

#[tokio::test]
async fn client_rejects_wrong_accept_key() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n").await.unwrap();
    });
    let err = connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert!(
        matches!(err, Error::Handshake(HandshakeError::InvalidAccept)),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_connection_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert!(
        matches!(err, Error::Io(ref e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
}

#[tokio::test]
async fn protocol_violation_is_answered_with_close_code() {
    let addr = common::echo_server(Config::default()).await;
    let (ws, _) = connect(&format!("ws://{addr}/echo")).await.unwrap();
    let mut ws: WebSocket<_> = ws;
    // Write an unmasked frame straight to the socket: servers must refuse it with 1002.
    ws.get_mut().write_all(&[0x81, 0x01, b'x']).await.unwrap();
    match ws.next_event().await.unwrap() {
        Some(Event::Close(Some(f))) => assert_eq!(f.code, CloseCode::PROTOCOL_ERROR),
        other => panic!("expected close 1002, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_message_gets_1009() {
    let addr = common::echo_server(Config::default().max_message_size(1000)).await;
    let (mut ws, _) = connect(&format!("ws://{addr}/echo")).await.unwrap();
    ws.send(&Message::binary(vec![0u8; 1001])).await.unwrap();
    match ws.next_event().await.unwrap() {
        Some(Event::Close(Some(f))) => assert_eq!(f.code, CloseCode::MESSAGE_TOO_BIG),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn server_initiated_close_and_client_sees_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = accept(tcp, Config::default()).await.unwrap();
        ws.close(CloseCode::GOING_AWAY, "restart").await.unwrap();
        ws.close_initiator()
    });
    let (mut ws, _) = connect(&format!("ws://{addr}/")).await.unwrap();
    assert_eq!(
        ws.next_event().await.unwrap(),
        Some(Event::Close(Some(CloseFrame::new(
            CloseCode::GOING_AWAY,
            "restart"
        ))))
    );
    assert_eq!(ws.close_initiator(), Some(Side::Peer));
    assert_eq!(ws.recv().await.unwrap(), None);
    assert_eq!(server.await.unwrap(), Some(Side::Local));
}

#[tokio::test]
async fn peer_vanishing_is_disconnected_not_clean() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = accept(tcp, Config::default()).await.unwrap();
        drop(ws);
    });
    let (mut ws, _) = connect(&format!("ws://{addr}/")).await.unwrap();
    assert!(matches!(ws.recv().await, Err(Error::Disconnected)));
}

#[tokio::test]
async fn close_times_out_when_peer_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        let req = switchboard_tokio::proto::handshake::server::Request::parse(
            &buf[..n],
            &Config::default(),
        )
        .unwrap()
        .unwrap()
        .0;
        tcp.write_all(&req.accept(None, &Config::default(), &[]).unwrap().response)
            .await
            .unwrap();
        // Read forever, answer nothing.
        while tcp.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
        .config(Config::default().close_timeout(Duration::from_millis(200)))
        .connect()
        .await
        .unwrap();
    let err = ws.close(CloseCode::NORMAL, "").await.unwrap_err();
    assert!(matches!(err, Error::CloseTimeout(_)), "{err:?}");
}

#[tokio::test]
async fn split_reader_answers_pings_while_writer_sends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = accept(tcp, Config::default()).await.unwrap();
        ws.ping(b"are you there").await.unwrap();
        let mut got = Vec::new();
        loop {
            match ws.next_event().await.unwrap() {
                Some(Event::Pong(p)) => got.push(format!("pong:{}", String::from_utf8_lossy(&p))),
                Some(Event::Message(m)) => {
                    got.push(format!("msg:{}", String::from_utf8_lossy(m.payload())))
                }
                Some(Event::Close(_)) | None => break,
                Some(Event::Ping(_)) => {}
            }
        }
        got
    });
    let (ws, _) = connect(&format!("ws://{addr}/")).await.unwrap();
    let (mut reader, writer) = ws.split();
    let w = writer.clone();
    let sender = tokio::spawn(async move {
        for i in 0..3 {
            w.send(&Message::text(format!("{i}"))).await.unwrap();
        }
    });
    let read_task = tokio::spawn(async move {
        // Only reads: the pong must still go out.
        while let Ok(Some(_)) = reader.next_event().await {}
    });
    sender.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.close(CloseCode::NORMAL, "").await.unwrap();
    read_task.await.unwrap();
    let got = server.await.unwrap();
    assert!(got.contains(&"pong:are you there".to_string()), "{got:?}");
    for i in 0..3 {
        assert!(got.contains(&format!("msg:{i}")), "{got:?}");
    }
}

#[tokio::test]
async fn works_over_an_in_memory_duplex() {
    let (a, b) = tokio::io::duplex(64);
    let mut server = WebSocket::from_raw(a, switchboard_tokio::Role::Server, Config::default());
    let mut client = WebSocket::from_raw(b, switchboard_tokio::Role::Client, Config::default());
    let s = tokio::spawn(async move {
        while let Some(m) = server.recv().await.unwrap() {
            server.feed(&m).unwrap();
        }
    });
    // Larger than the pipe: exercises partial reads and writes.
    let msg = Message::binary((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
    client.send(&msg).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), Some(msg));
    client.close(CloseCode::NORMAL, "").await.unwrap();
    s.await.unwrap();
}
