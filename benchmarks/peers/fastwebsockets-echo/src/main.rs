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
use tokio::net::TcpListener;

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

fn listen_arg() -> anyhow::Result<String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9002".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs ADDR"))?
            }
            "-h" | "--help" => {
                println!("fastwebsockets-echo [--listen ADDR]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: --listen ADDR)"),
        }
    }
    Ok(listen)
}

fn main() -> anyhow::Result<()> {
    let listen = listen_arg()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        eprintln!(
            "fastwebsockets-echo listening on {}",
            listener.local_addr()?
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn_fut = http1::Builder::new()
                    .serve_connection(io, service_fn(server_upgrade))
                    .with_upgrades();
                if let Err(e) = conn_fut.await {
                    if std::env::var_os("ECHO_DEBUG").is_some() {
                        eprintln!("http connection error: {e:?}");
                    }
                }
            });
        }
    })
}
