//! `switchboard connect --http2` and `switchboard bench --http2` against a real RFC 8441
//! server: Node's built-in `http2` module (switchboard-tokio/tests/node/h2_echo_server.mjs,
//! h2c). Skipped with a note where `node` is not installed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

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

fn node(args: &[&str]) -> Option<Node> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../switchboard-tokio/tests/node/h2_echo_server.mjs"
    );
    let Ok(mut child) = Command::new("node")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipped: node not found");
        return None;
    };
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    Some(Node { child, port })
}

/// Times, the port, and the date Node puts in its answer.
fn normalize(trace: &str, port: u16) -> String {
    trace
        .lines()
        .map(|l| {
            let l = match l.find(" ms] ") {
                Some(i) if l.starts_with('[') => format!("[t]{}", &l[i + 4..]),
                _ => l.to_string(),
            };
            let l = l.replace(&port.to_string(), "PORT");
            match l.find("date: ") {
                Some(i) => format!("{}date: …", &l[..i]),
                None => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn connect_http2_trace_matches_the_golden_file() {
    let Some(server) = node(&[]) else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    let mut child = Command::new(BIN)
        .args([
            "connect",
            "--http2",
            "--trace",
            "--compress",
            "off",
            "-p",
            "chat",
            &url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdin.write_all(b"hello over h2\n").unwrap();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "hello over h2\n");
    stdin.write_all(b"/ping are you there\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"/close 1000 bye\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let got = normalize(&String::from_utf8_lossy(&out.stderr), server.port);
    assert_eq!(out.status.code(), Some(0), "{got}");
    let golden_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/connect-trace-http2.txt"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(golden_path).unwrap();
    assert_eq!(
        got, want,
        "trace differs from {golden_path} (UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn connect_http2_without_the_setting_exits_5_saying_why() {
    let Some(server) = node(&["--no-connect-protocol"]) else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    let out = Command::new(BIN)
        .args(["connect", "--http2", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL") && err.contains("without --http2"),
        "{err}"
    );
}

#[test]
fn bench_echo_over_http2() {
    let Some(server) = node(&[]) else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    let out = Command::new(BIN)
        .args([
            "bench",
            "echo",
            &url,
            "--http2",
            "-c",
            "3",
            "--duration",
            "1",
            "--quiet",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(j["errors"], 0, "{j}");
    assert!(j["sent"].as_u64().unwrap() > 100, "{j}");
    assert_eq!(j["sent"], j["received"]);
}

/// wss:// with ALPN h2 (Node over TLS, self-signed: --insecure), traced as JSON: the HTTP/2
/// event, the CONNECT with its pseudo-headers, the 200, the stream's end.
#[test]
fn connect_http2_over_tls_trace_json() {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    let (c, k) = (c.display().to_string(), k.display().to_string());
    let Some(server) = node(&["--tls", &c, &k]) else {
        return;
    };
    let url = format!("wss://localhost:{}/echo", server.port);
    let mut child = Command::new(BIN)
        .args(["connect", "--http2", "--insecure", "--trace-json", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[..5],
        ["connect", "http2", "request", "response", "open"],
        "{kinds:?}"
    );
    assert_eq!(events[1]["tls"], true);
    assert_eq!(events[2]["line"], "CONNECT /echo HTTP/2");
    let headers = events[2]["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!([":protocol", "websocket"])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&serde_json::json!([":scheme", "https"])),
        "{headers:?}"
    );
    assert_eq!(events[3]["status"], 200);
    assert_eq!(kinds.last(), Some(&"closed"));
    assert!(kinds.contains(&"stream_closed"), "{kinds:?}");
}
