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
