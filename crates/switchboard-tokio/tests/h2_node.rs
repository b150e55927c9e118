//! WebSocket over HTTP/2 (RFC 8441) against Node's built-in `http2` module as the server
//! (tests/node/h2_echo_server.mjs, no packages): h2c with prior knowledge, and TLS with ALPN
//! (where `Prefer` falls back to HTTP/1.1 when the setting is off). Skipped (with a note)
//! where `node` is not installed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_tokio::h2::Http2Error;
use switchboard_tokio::{tls, ClientBuilder, CloseCode, Error, Http2, Message};

struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the Node server; `None` (the test is skipped) without `node`.
fn node(args: &[&str]) -> Option<Node> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/h2_echo_server.mjs");
    let mut child = match Command::new("node")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: node not found ({e})");
            return None;
        }
    };
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output from node: {line:?}"));
    Some(Node { child, port })
}

#[tokio::test]
async fn node_h2c_echo_text_binary_large_and_close() {
    let Some(server) = node(&[]) else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    let run = async {
        let (mut ws, resp) = ClientBuilder::new(&url)
            .http2(Http2::Force)
            .protocol("chat")
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert_eq!((resp.status, resp.protocol.as_deref()), (200, Some("chat")));
        ws.send(&Message::text("hello node")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::text("hello node")));
        ws.send(&Message::binary(vec![9u8, 8, 7])).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap(),
            Some(Message::binary(vec![9u8, 8, 7]))
        );
        let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 253) as u8).collect();
        ws.send(&Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::binary(big)));
        ws.ping(b"p").await.unwrap();
        ws.send(&Message::text("after ping")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::text("after ping")));
        ws.close(CloseCode::NORMAL, "bye").await.unwrap();
        let theirs = ws.connection().received_close().cloned().flatten();
        assert_eq!(theirs.map(|f| f.code), Some(CloseCode::NORMAL));
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap();
}

#[tokio::test]
async fn node_without_the_setting_force_errors_clearly() {
    let Some(server) = node(&["--no-connect-protocol"]) else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        ClientBuilder::new(&url).http2(Http2::Force).connect(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(&err, Error::Http2(e) if matches!(**e, Http2Error::ConnectProtocolDisabled)),
        "{err:?}"
    );
}

/// A self-signed certificate for localhost in a fresh directory: the PEM paths.
fn cert_files(name: &str) -> (String, String) {
    let dir =
        std::env::temp_dir().join(format!("switchboard-h2node-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string())
}

/// Over TLS: `Prefer` takes HTTP/2 from a server that enables the extended CONNECT, and
/// HTTP/1.1 (a second connection, ALPN http/1.1) from one that does not; `Force` then fails.
#[tokio::test]
async fn node_tls_prefer_uses_h2_or_falls_back() {
    for (setting, name) in [(true, "on"), (false, "off")] {
        let (cert, key) = cert_files(name);
        let mut args = vec!["--tls", cert.as_str(), key.as_str()];
        if !setting {
            args.push("--no-connect-protocol");
        }
        let Some(server) = node(&args) else {
            return;
        };
        let url = format!("wss://localhost:{}/echo", server.port);
        let b = |mode| {
            ClientBuilder::new(&url)
                .http2(mode)
                .tls_config(tls::insecure_client_config().unwrap())
        };
        let run = async {
            let (mut ws, resp) = b(Http2::Prefer).connect().await.unwrap();
            assert_eq!(ws.get_ref().is_http2(), setting, "setting {setting}");
            assert_eq!(resp.status, if setting { 200 } else { 101 });
            let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 249) as u8).collect();
            ws.send(&Message::binary(big.clone())).await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), Some(Message::binary(big)));
            ws.close(CloseCode::NORMAL, "").await.unwrap();
            let forced = b(Http2::Force).connect().await;
            match (setting, forced) {
                (true, Ok((ws, _))) => assert!(ws.get_ref().is_http2()),
                (false, Err(Error::Http2(e))) => {
                    assert!(matches!(*e, Http2Error::ConnectProtocolDisabled), "{e:?}");
                }
                (_, other) => panic!("setting {setting}: {other:?}"),
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap();
    }
}
