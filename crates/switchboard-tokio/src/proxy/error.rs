//! What can go wrong on the way through a proxy, each case with what to do about it.

use std::time::Duration;

/// A proxy URL (from [`Proxy::parse`](super::Proxy::parse) or an environment variable) that
/// cannot be used. Any password in it is shown as `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy URL {url:?}{}: {reason}", match .var { Some(v) => format!(" (in {v})"), None => String::new() })]
pub struct InvalidProxyUrl {
    /// The URL, its password replaced by `***`.
    pub url: String,
    /// The environment variable it came from, if any.
    pub var: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

/// The step of opening a connection through a proxy that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyStep {
    /// The TCP connection to the proxy.
    Connect,
    /// The proxy's handshake: HTTP `CONNECT` and its answer, or SOCKS5 greeting,
    /// authentication and request.
    Handshake,
}

impl std::fmt::Display for ProxyStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting to the proxy",
            Self::Handshake => "the proxy handshake",
        })
    }
}

/// Opening a tunnel through a proxy failed. `proxy` is the proxy as `scheme://host:port`
/// (never with its credentials), `target` the `host:port` the tunnel was for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL cannot be used (unsupported scheme, bad port, …).
    #[error(transparent)]
    InvalidUrl(#[from] InvalidProxyUrl),
    /// The TCP connection to the proxy failed.
    #[error("cannot connect to the proxy {proxy}: {source}")]
    Connect {
        /// The proxy.
        proxy: String,
        /// Why.
        source: std::io::Error,
    },
    /// A step took longer than the client's connect timeout.
    #[error("{step} ({proxy}) timed out after {after:?}")]
    Timeout {
        /// The proxy.
        proxy: String,
        /// The step that ran out of time.
        step: ProxyStep,
        /// The timeout.
        after: Duration,
    },
    /// The HTTP proxy answered `CONNECT` with a status other than 2xx (and other than 407
    /// and 401).
    #[error("proxy {proxy} answered {status_line:?} to CONNECT {target}")]
    Refused {
        /// The proxy.
        proxy: String,
        /// The tunnel's destination.
        target: String,
        /// The answer's status line, for example `HTTP/1.1 403 Forbidden`.
        status_line: String,
        /// The status code.
        status: u16,
    },
    /// The HTTP proxy answered `407 Proxy Authentication Required` (or 401, as tinyproxy
    /// does for wrong credentials).
    #[error("proxy {proxy} wants authentication ({status_line:?}{}): {}",
        if .challenge.is_empty() { String::new() } else { format!(", Proxy-Authenticate: {}", .challenge) },
        if *.sent_credentials { "it refused the user and password in the proxy URL" }
        else { "put user:password in the proxy URL, as in http://user:password@host:port" })]
    AuthRequired {
        /// The proxy.
        proxy: String,
        /// The answer's status line.
        status_line: String,
        /// The `Proxy-Authenticate` header (the schemes the proxy accepts), if any.
        challenge: String,
        /// Whether we sent credentials (so they were wrong).
        sent_credentials: bool,
    },
    /// The SOCKS5 proxy refused the connection with a reply code (RFC 1928, section 6).
    #[error("SOCKS5 proxy {proxy} refused CONNECT {target}: {} (reply code {code})", socks_reply_meaning(*.code))]
    SocksReply {
        /// The proxy.
        proxy: String,
        /// The tunnel's destination.
        target: String,
        /// The reply code (`REP`).
        code: u8,
    },
    /// The SOCKS5 proxy accepts none of the authentication methods we offered.
    #[error("SOCKS5 proxy {proxy} accepts none of our authentication methods ({offered}): {}",
        if *.sent_credentials { "it does not take a user name and password" }
        else { "it probably wants a user name and password: put user:password in the proxy URL, as in socks5://user:password@host:port" })]
    SocksNoAcceptableMethod {
        /// The proxy.
        proxy: String,
        /// The methods offered, in words.
        offered: &'static str,
        /// Whether user name and password were offered.
        sent_credentials: bool,
    },
    /// The SOCKS5 proxy refused the user name and password (RFC 1929 status other than 0).
    #[error("SOCKS5 proxy {proxy} refused the user name and password in the proxy URL (status {status})")]
    SocksAuthFailed {
        /// The proxy.
        proxy: String,
        /// The status byte.
        status: u8,
    },
    /// The proxy's answer is not what the protocol allows (or too long).
    #[error("proxy {proxy}: {reason}")]
    BadAnswer {
        /// The proxy.
        proxy: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The proxy closed the connection in the middle of its handshake.
    #[error("proxy {proxy} closed the connection during the handshake")]
    Closed {
        /// The proxy.
        proxy: String,
    },
    /// Something the proxy cannot carry: a user name, password or host name over 255 bytes
    /// for SOCKS5, say.
    #[error("cannot go through proxy {proxy}: {reason}")]
    Unsupported {
        /// The proxy.
        proxy: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing the proxy connection failed.
    #[error("proxy {proxy}: {source}")]
    Io {
        /// The proxy.
        proxy: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What a SOCKS5 reply code means (RFC 1928, section 6).
pub fn socks_reply_meaning(code: u8) -> &'static str {
    match code {
        0x00 => "succeeded",
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unassigned reply code",
    }
}
