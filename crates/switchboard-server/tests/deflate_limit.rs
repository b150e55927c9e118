//! permessage-deflate at the message size limit with a real client (issue 23 item 5):
//! Python `websockets` negotiates compression and sends an incompressible message one byte
//! under the limit; its compressed frame is a little longer than the limit, and the server
//! must take it (the limit is the inflated message's), on `/ws` (64 KiB) and `/echo`
//! (16 MiB, echoed back intact).

use std::process::Command;
use std::time::Duration;

use switchboard_server::ServerConfig;
use switchboard_testkit::server::start;

fn python() -> String {
    std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

const CLIENT: &str = r#"
import os, sys, hashlib
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed
base = sys.argv[1]
# /ws: 64 KiB - 1 of noise, compressed (the server's limit is 64 KiB); the server answers
# it (an error event: pub/sub wants JSON) and the connection stays open.
with connect(base + "/ws", max_size=None, compression="deflate") as ws:
    assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or ""), ws.response.headers
    ws.send(os.urandom(64 * 1024 - 1))
    try:
        reply = ws.recv(timeout=10)
    except ConnectionClosed as e:
        print("ws closed", e.rcvd.code if e.rcvd else None, flush=True)
        sys.exit(1)
    ws.send('{"type":"subscribe","topic":"t","id":7}')
    ack = ws.recv(timeout=10)
    assert '"ack"' in ack, ack
    print("ws ok", flush=True)
# /echo: 16 MiB - 1 of noise comes back intact.
with connect(base + "/echo", max_size=None, compression="deflate") as ws:
    data = os.urandom(16 * 1024 * 1024 - 1)
    ws.send(data)
    try:
        back = ws.recv(timeout=60)
    except ConnectionClosed as e:
        print("echo closed", e.rcvd.code if e.rcvd else None, flush=True)
        sys.exit(1)
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest(), len(back)
    print("echo ok", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_just_under_the_limit_get_through() {
    let ok = Command::new(python())
        .args(["-c", "import websockets.sync.client"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "Python `websockets` is missing: run `{} -m pip install 'websockets==15.0.1'` (scripts/test.sh does this)",
        python()
    );
    // The defaults (as `switchboard serve` runs them): compression without context
    // takeover.
    let config = ServerConfig::default();
    assert!(config
        .ws
        .deflate
        .is_some_and(|d| d.server_no_context_takeover));
    let srv = start(config).await;
    let addr = srv.addr;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args(["-c", CLIENT, &format!("ws://{addr}")])
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the Python client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ws ok") && stdout.contains("echo ok"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    srv.stop().await;
}
