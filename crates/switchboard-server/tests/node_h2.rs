//! Node's built-in `http2` module as an RFC 8441 WebSocket client against the server (h2c with
//! prior knowledge, no packages): tests/node/h2_ws_client.mjs runs its cases over one HTTP/2
//! connection (/echo text, binary, 64 KiB, ping, subprotocol, close; /ws subscribe and a
//! publish from a sibling stream; a 404 stream beside a working one; /metrics over h2) and the
//! server's own counters confirm every WebSocket came over HTTP/2. On epoll and io_uring.
//! Skipped (with a note) where `node` is not installed.

use std::process::Stdio;
use std::time::Duration;

use switchboard_server::ServerConfig;
use switchboard_testkit::server::{metrics, start};
use tokio::process::Command;

/// Runs the Node client against a fresh server made from `config`.
async fn node_client(config: ServerConfig) {
    let server = start(config).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/h2_ws_client.mjs");
    let child = match Command::new("node")
        .arg(script)
        .arg(server.addr.port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: node not found ({e})");
            server.stop().await;
            return;
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the node client finishes in time")
        .expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "node client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("node-h2: 10 passed, 0 failed"),
        "{stdout}\n{stderr}"
    );

    let m = metrics(server.addr).await;
    for line in [
        "switchboard_handshakes_total{outcome=\"accepted\",http=\"2\"} 4",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"not_found\",http=\"2\"} 1",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    let over_h1 = m.lines().find_map(|l| {
        l.strip_prefix("switchboard_handshakes_total{outcome=\"accepted\",http=\"1.1\"} ")
    });
    assert!(
        matches!(over_h1, None | Some("0")),
        "no WebSocket came over HTTP/1.1:\n{m}"
    );
    server.stop().await;
}

#[tokio::test]
async fn node_http2_client_over_h2c() {
    node_client(ServerConfig::default()).await;
}

/// The same on io_uring.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn node_http2_client_over_h2c_on_io_uring() {
    switchboard_testkit::server::on_uring(node_client(ServerConfig::default().io_uring(true)));
}
