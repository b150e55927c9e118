//! The HTTP proxy handshake: `CONNECT host:port HTTP/1.1`, with basic authentication when the
//! proxy URL has a user name, and the proxy's answer read up to the end of its head and no
//! further (what follows belongs to the tunnel).

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::tunnel::{io_error, printable, TunnelInfo};
use super::url::Proxy;

/// The longest answer head accepted from a proxy.
pub(super) const MAX_ANSWER_HEAD: usize = 8 * 1024;
/// The most headers accepted in the answer.
const MAX_HEADERS: usize = 64;

/// Sends `CONNECT target` and reads the answer: a 2xx opens the tunnel.
pub(super) async fn handshake(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    target: &str,
    info: &mut TunnelInfo,
) -> Result<(), ProxyError> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    let mut shown = vec![format!("Host: {target}")];
    if let Some((user, password)) = proxy.credentials() {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        shown.push(format!("Proxy-Authorization: Basic *** (user {user})"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| io_error(proxy, e))?;
    info.sent(format!("CONNECT {target} HTTP/1.1"), shown);
    let head = read_head(tcp, proxy).await?;
    answer(&head, proxy, target, info)
}

/// Reads the answer's head, and nothing after it: bytes are peeked, and only those up to the
/// end of the head are consumed.
async fn read_head(tcp: &mut TcpStream, proxy: &Proxy) -> Result<Vec<u8>, ProxyError> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let room = (MAX_ANSWER_HEAD - head.len()).min(chunk.len());
        if room == 0 {
            return Err(ProxyError::BadAnswer {
                proxy: proxy.to_string(),
                reason: format!("its answer's head is longer than {MAX_ANSWER_HEAD} bytes"),
            });
        }
        let n = tcp
            .peek(&mut chunk[..room])
            .await
            .map_err(|e| io_error(proxy, e))?;
        if n == 0 {
            return Err(ProxyError::Closed {
                proxy: proxy.to_string(),
            });
        }
        let before = head.len();
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let status = httparse::Response::new(&mut headers).parse(&head);
        match status {
            Ok(httparse::Status::Complete(len)) => {
                // Only the rest of the head: what follows is the tunnel's.
                consume(tcp, &mut chunk, len.saturating_sub(before), proxy).await?;
                head.truncate(len);
                return Ok(head);
            }
            Ok(httparse::Status::Partial) => consume(tcp, &mut chunk, n, proxy).await?,
            Err(e) => return Err(not_http(proxy, &head, e)),
        }
    }
}

/// Reads (and drops) `n` bytes that were peeked.
async fn consume(
    tcp: &mut TcpStream,
    chunk: &mut [u8],
    n: usize,
    proxy: &Proxy,
) -> Result<(), ProxyError> {
    tcp.read_exact(&mut chunk[..n])
        .await
        .map(drop)
        .map_err(|e| io_error(proxy, e))
}

fn not_http(proxy: &Proxy, head: &[u8], e: httparse::Error) -> ProxyError {
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let reason = match (e, head.first()) {
        (httparse::Error::TooManyHeaders, _) => {
            format!("its answer has more than {MAX_HEADERS} headers")
        }
        (_, Some(5)) => "it answered in SOCKS5, not HTTP: use socks5:// for this proxy".into(),
        _ => format!(
            "its answer is not HTTP ({e}): {:?}; is it an HTTP proxy?",
            printable(first, 80)
        ),
    };
    ProxyError::BadAnswer {
        proxy: proxy.to_string(),
        reason,
    }
}

/// What the answer means: a 2xx opens the tunnel, 407 (or 401) wants credentials, anything
/// else is a refusal with its status line.
fn answer(
    head: &[u8],
    proxy: &Proxy,
    target: &str,
    info: &mut TunnelInfo,
) -> Result<(), ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    if let Err(e) = resp.parse(head) {
        return Err(not_http(proxy, head, e));
    }
    let status = resp.code.unwrap_or(0);
    let status_line = format!(
        "HTTP/1.{} {status} {}",
        resp.version.unwrap_or(1),
        printable(resp.reason.unwrap_or("").as_bytes(), 100)
    )
    .trim_end()
    .to_string();
    let shown: Vec<String> = resp
        .headers
        .iter()
        .map(|h| format!("{}: {}", h.name, printable(h.value, 200)))
        .collect();
    info.received(status_line.clone(), shown);
    match status {
        200..=299 => Ok(()),
        // The answer to CONNECT comes from the proxy itself, so a 401 is the proxy's too
        // (tinyproxy answers wrong credentials with 401).
        401 | 407 => {
            let challenge = resp
                .headers
                .iter()
                .filter(|h| {
                    h.name.eq_ignore_ascii_case("proxy-authenticate")
                        || (status == 401 && h.name.eq_ignore_ascii_case("www-authenticate"))
                })
                .map(|h| printable(h.value, 100))
                .collect::<Vec<_>>()
                .join(", ");
            Err(ProxyError::AuthRequired {
                proxy: proxy.to_string(),
                status_line,
                challenge,
                sent_credentials: proxy.has_credentials(),
            })
        }
        _ => Err(ProxyError::Refused {
            proxy: proxy.to_string(),
            target: target.to_string(),
            status_line,
            status,
        }),
    }
}
