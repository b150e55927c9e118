//! Benchmark peer: a tokio-tungstenite echo server.
//!
//! `tokio_tungstenite::accept_async` on each accepted `TcpStream` (any path), then: read a
//! message, send it back (text as text, binary as binary), until Close or EOF. Pings are
//! answered by tungstenite itself. For a fair comparison with `switchboard serve --workers 1`:
//! a tokio multi-thread runtime with exactly ONE worker thread, and TCP_NODELAY on.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

async fn handle(stream: TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(msg) = ws.next().await {
        match msg? {
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

fn listen_arg() -> anyhow::Result<String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9003".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs ADDR"))?
            }
            "-h" | "--help" => {
                println!("tungstenite-echo [--listen ADDR]");
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
        eprintln!("tungstenite-echo listening on {}", listener.local_addr()?);
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
                if let Err(e) = handle(stream).await {
                    if std::env::var_os("ECHO_DEBUG").is_some() {
                        eprintln!("connection error: {e}");
                    }
                }
            });
        }
    })
}
