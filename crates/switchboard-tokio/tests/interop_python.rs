//! Interop with a real third-party peer: Python's `websockets` library, as client against our
//! server and as server for our client. The test command installs it (`pip install
//! websockets`); without it these tests fail with that instruction.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use switchboard_testkit::python::{self, require_websockets};
use switchboard_tokio::proto::extension::DeflateConfig;
use switchboard_tokio::{ClientBuilder, CloseCode, Config, Message, Side};

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_against_our_server() {
    require_websockets();
    run_python_client(Config::default(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_compression_against_our_server() {
    require_websockets();
    for deflate in [
        DeflateConfig::default(),
        DeflateConfig::default()
            .server_no_context_takeover(true)
            .client_no_context_takeover(true),
        DeflateConfig::default()
            .client_max_window_bits(10)
            .server_max_window_bits(9),
    ] {
        run_python_client(Config::default().deflate(Some(deflate.threshold(0))), true).await;
    }
}

async fn run_python_client(config: Config, expect_deflate: bool) {
    let addr = common::echo_server(config).await;
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = python::command();
        cmd.arg(script("client.py"))
            .arg(format!("ws://{addr}/echo"));
        if expect_deflate {
            cmd.arg("--expect-deflate");
        }
        cmd.output().expect("run python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn our_client_against_python_server() {
    require_websockets();
    run_against_python_server(Config::default()).await;
}

#[tokio::test]
async fn our_compressing_client_against_python_server() {
    require_websockets();
    for deflate in [
        DeflateConfig::default(),
        DeflateConfig::default().client_no_context_takeover(true),
        DeflateConfig::default()
            .server_no_context_takeover(true)
            .server_max_window_bits(10),
    ] {
        run_against_python_server(Config::default().deflate(Some(deflate.threshold(0)))).await;
    }
}

async fn run_against_python_server(config: Config) {
    let mut child = python::command()
        .arg(script("server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .expect("PORT line")
        .parse()
        .unwrap();

    let (mut ws, resp) = ClientBuilder::new(format!("ws://127.0.0.1:{port}/"))
        .config(config)
        .connect()
        .await
        .unwrap();
    // Python's server accepts permessage-deflate whenever it is offered.
    assert_eq!(resp.deflate.is_some(), config.deflate.is_some(), "{resp:?}");
    assert_eq!(
        ws.connection().deflate_params().is_some(),
        config.deflate.is_some()
    );
    for msg in [
        Message::text(format!("{{\"text\":\"{}\"}}", "compress me ".repeat(300))),
        Message::text("from rust ✓"),
        Message::binary(vec![1u8, 2, 3]),
        Message::binary(vec![9u8; 2 << 20]),
    ] {
        ws.send(&msg).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(msg));
    }
    ws.ping(b"hi").await.unwrap();
    ws.close(CloseCode(4002), "rust done").await.unwrap();
    assert_eq!(ws.close_initiator(), Some(Side::Local));
    let echoed = ws
        .connection()
        .received_close()
        .cloned()
        .flatten()
        .map(|f| f.code);
    assert_eq!(echoed, Some(CloseCode(4002)));

    drop(child.stdin.take());
    let _ = child.wait();
}
