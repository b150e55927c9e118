//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use switchboard_tokio::{accept_with, Config, Decision, WebSocket};
use tokio::net::{TcpListener, TcpStream};

/// Starts an echo server that accepts `/echo` and rejects other paths with 404; returns its
/// address. Each connection echoes until closed.
pub async fn echo_server(config: Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let accepted = accept_with(tcp, config, |req| {
                    if req.path_only() == "/echo" {
                        let protocol = req
                            .choose_protocol(&["echo.v2", "echo.v1"])
                            .map(String::from);
                        Decision::Accept {
                            protocol,
                            headers: vec![("X-Server".into(), "switchboard-test".into())],
                        }
                    } else {
                        Decision::reject(404, format!("nothing at {}", req.path_only()))
                    }
                })
                .await;
                if let Ok((ws, _)) = accepted {
                    let _ = echo(ws).await;
                }
            });
        }
    });
    addr
}

pub async fn echo(mut ws: WebSocket<TcpStream>) -> Result<(), switchboard_tokio::Error> {
    while let Some(m) = ws.recv().await? {
        ws.feed(&m)?;
    }
    Ok(())
}
