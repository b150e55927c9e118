//! A hyper 1.x server that serves a page at `/` and upgrades `/ws` to a WebSocket echo.
//!
//! ```sh
//! cargo run --example hyper_upgrade --features hyper -- 127.0.0.1:9002
//! ```

use std::convert::Infallible;

use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use switchboard_tokio::{upgrade, Config};

type Body = BoxBody<Bytes, Infallible>;

async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/ws" {
        return Ok(Response::new(
            Full::new(Bytes::from("hello from hyper; WebSocket echo at /ws\n")).boxed(),
        ));
    }
    match upgrade::upgrade(&mut req, Config::default(), None) {
        Ok((response, fut)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = fut.await else { return };
                while let Ok(Some(msg)) = ws.recv().await {
                    if ws.feed(&msg).is_err() {
                        break;
                    }
                }
            });
            Ok(response.map(|b: Empty<Bytes>| b.boxed()))
        }
        Err(switchboard_tokio::Error::Handshake(e)) => {
            Ok(upgrade::rejection(&e).map(|b| b.boxed()))
        }
        Err(e) => Ok(Response::builder()
            .status(500)
            .body(Full::new(Bytes::from(e.to_string())).boxed())
            .unwrap_or_default()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(handle))
                .with_upgrades()
                .await;
        });
    }
}
