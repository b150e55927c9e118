//! Benchmark peer: a tokio-tungstenite echo server.
//!
//! `tokio_tungstenite::accept_async` on each accepted `TcpStream` (any path), then: read a
//! message, send it back (text as text, binary as binary), until Close or EOF. Pings are
//! answered by tungstenite itself. For a fair comparison with `switchboard serve --workers 1`:
//! a tokio multi-thread runtime with exactly ONE worker thread, and TCP_NODELAY on.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[path = "../../one_worker.rs"]
mod one_worker;

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

fn main() -> anyhow::Result<()> {
    one_worker::run("tungstenite-echo", "127.0.0.1:9003", |stream| async move {
        if let Err(e) = handle(stream).await {
            if std::env::var_os("ECHO_DEBUG").is_some() {
                eprintln!("connection error: {e}");
            }
        }
    })
}
