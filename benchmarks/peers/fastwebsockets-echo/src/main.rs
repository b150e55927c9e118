//! Benchmark peer: a fastwebsockets echo server.
//!
//! This follows fastwebsockets' own `examples/echo_server.rs` (hyper 1.x HTTP/1 connection
//! with upgrades, `fastwebsockets::upgrade::upgrade`, a `FragmentCollector` per socket,
//! `tokio::task::unconstrained` around the handler) with only what a fair comparison needs:
//!
//! * `--listen ADDR` (default 127.0.0.1:9002); any request path is upgraded;
//! * a tokio multi-thread runtime with exactly ONE worker thread, like
//!   `switchboard serve --workers 1`;
//! * TCP_NODELAY on every accepted socket, like Switchboard;
//! * errors go to stderr only (no per-connection logging on the hot path).

use fastwebsockets::upgrade;
use fastwebsockets::{OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

#[path = "../../one_worker.rs"]
mod one_worker;

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fastwebsockets::FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        if let Err(e) = tokio::task::unconstrained(handle_client(fut)).await {
            if std::env::var_os("ECHO_DEBUG").is_some() {
                eprintln!("websocket connection error: {e}");
            }
        }
    });
    Ok(response)
}

fn main() -> anyhow::Result<()> {
    one_worker::run(
        "fastwebsockets-echo",
        "127.0.0.1:9002",
        |stream| async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn_fut = http1::Builder::new()
                .serve_connection(io, service_fn(server_upgrade))
                .with_upgrades();
            if let Err(e) = conn_fut.await {
                if std::env::var_os("ECHO_DEBUG").is_some() {
                    eprintln!("http connection error: {e:?}");
                }
            }
        },
    )
}
