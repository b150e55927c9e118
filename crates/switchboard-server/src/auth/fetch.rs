//! One HTTPS GET with hyper's client over tokio-rustls, bounded in time and size: how a
//! JWKS is fetched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// How long a fetch may take, connecting included.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest body accepted.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The body of `GET url` (`https://` only), answered 200 within [`TIMEOUT`] and at most
/// [`MAX_BODY`] long.
pub(crate) async fn get(url: &str, tls: Arc<ClientConfig>) -> Result<Vec<u8>, String> {
    tokio::time::timeout(TIMEOUT, get_unbounded(url, tls))
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
}

async fn get_unbounded(url: &str, tls: Arc<ClientConfig>) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("only https:// URLs are fetched".into());
    }
    let authority = uri.authority().ok_or("the URL has no host")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a host name: {e}"))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP with {authority}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "switchboard")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot make the request: {e}"))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP with {authority}: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("the server answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(
                |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                    Some(_) => format!("the document is larger than {} MiB", MAX_BODY >> 20),
                    None => format!("reading the answer: {e}"),
                },
            )?;
        Ok(body.to_bytes().to_vec())
    };
    // The connection runs beside the exchange; once it ends, what it received is read.
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        got = &mut exchange => got,
        ended = conn => match ended {
            Ok(()) => exchange.await,
            Err(e) => Err(format!("HTTP with {authority}: {e}")),
        },
    }
}
