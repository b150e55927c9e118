//! [`Proxy::tunnel`]: a TCP connection to the proxy, then its handshake, each step within the
//! time left, and what was said on the way ([`TunnelInfo`]).

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::error::{ProxyError, ProxyStep};
use super::url::{host_port, valid_host, Proxy, ProxyKind};
use super::{http_connect, socks5};

/// One line of a proxy handshake, for tools that show each step (`switchboard connect
/// --trace`). Credentials are never in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelLine {
    /// Sent to the proxy (`true`) or received from it.
    pub to_proxy: bool,
    /// What was said: a request or status line, or a SOCKS5 message in words.
    pub text: String,
    /// Headers or details that follow it.
    pub details: Vec<String>,
    /// When it was sent or received.
    pub at: std::time::Instant,
}

/// What a proxy handshake exchanged, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The lines, in the order they crossed the wire.
    pub lines: Vec<TunnelLine>,
}

impl TunnelInfo {
    pub(super) fn sent(&mut self, text: impl Into<String>, details: Vec<String>) {
        self.lines.push(TunnelLine {
            to_proxy: true,
            text: text.into(),
            details,
            at: std::time::Instant::now(),
        });
    }

    pub(super) fn received(&mut self, text: impl Into<String>, details: Vec<String>) {
        self.lines.push(TunnelLine {
            to_proxy: false,
            text: text.into(),
            details,
            at: std::time::Instant::now(),
        });
    }
}

impl Proxy {
    /// Opens a tunnel to `host:port` through this proxy: connects to the proxy, then sends
    /// `CONNECT host:port` (HTTP) or a SOCKS5 connect request with the host name as it is
    /// (the proxy resolves it). The returned stream carries bytes to and from `host:port`;
    /// for `wss://` run TLS on it with the usual server name
    /// ([`ClientBuilder::open_over`](crate::ClientBuilder::open_over)).
    ///
    /// The whole takes at most `timeout`; [`ProxyError::Timeout`] says which step ran out.
    /// Nothing past the proxy's answer is read from the stream.
    pub async fn tunnel(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(TcpStream, TunnelInfo), ProxyError> {
        let mut info = TunnelInfo::default();
        let deadline = Instant::now() + timeout;
        let tcp = self
            .tunnel_until(host, port, deadline, timeout, &mut info)
            .await?;
        Ok((tcp, info))
    }

    /// [`tunnel`](Self::tunnel), noting what is exchanged in `info` as it happens: after a
    /// failure it holds what was said up to it (the refusal's status line, say).
    pub async fn tunnel_with(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
        info: &mut TunnelInfo,
    ) -> Result<TcpStream, ProxyError> {
        self.tunnel_until(host, port, Instant::now() + timeout, timeout, info)
            .await
    }

    /// [`tunnel_with`](Self::tunnel_with) by `deadline`; `timeout` is for the error message.
    pub(crate) async fn tunnel_until(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
        timeout: Duration,
        info: &mut TunnelInfo,
    ) -> Result<TcpStream, ProxyError> {
        let proxy = self.to_string();
        if !valid_host(host) {
            return Err(ProxyError::Unsupported {
                proxy,
                reason: format!("{host:?} is not a host name or address"),
            });
        }
        let timed_out = |step| ProxyError::Timeout {
            proxy: self.to_string(),
            step,
            after: timeout,
        };
        let connect = TcpStream::connect((self.host(), self.port()));
        let mut tcp = tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| timed_out(ProxyStep::Connect))?
            .map_err(|source| ProxyError::Connect {
                proxy: proxy.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let target = host_port(host, port);
        let handshake = async {
            match self.kind() {
                ProxyKind::HttpConnect => {
                    http_connect::handshake(&mut tcp, self, &target, info).await
                }
                ProxyKind::Socks5 => socks5::handshake(&mut tcp, self, host, port, info).await,
            }
        };
        tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| timed_out(ProxyStep::Handshake))??;
        Ok(tcp)
    }
}

/// An I/O error of the handshake, as a [`ProxyError`]: the end of the stream is
/// [`ProxyError::Closed`].
pub(super) fn io_error(proxy: &Proxy, e: std::io::Error) -> ProxyError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProxyError::Closed {
            proxy: proxy.to_string(),
        }
    } else {
        ProxyError::Io {
            proxy: proxy.to_string(),
            source: e,
        }
    }
}

/// Printable text from a peer: control characters dropped, at most `max` characters.
pub(super) fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}
