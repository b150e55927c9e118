//! [`Proxy`]: one proxy, parsed from a URL such as `http://user:password@proxy:3128` or
//! `socks5://proxy:1080`.

use std::fmt;

use super::error::InvalidProxyUrl;

/// The protocol spoken with a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyKind {
    /// An HTTP proxy: a `CONNECT host:port` request opens the tunnel (`http://`, or a URL
    /// without a scheme). Default port 80.
    HttpConnect,
    /// A SOCKS5 proxy (RFC 1928), with user name and password (RFC 1929) when the URL has
    /// them. `socks5://` and `socks5h://` are the same here: the host name is always sent to
    /// the proxy, which resolves it (remote DNS). Default port 1080.
    Socks5,
}

/// One proxy: its protocol, address and credentials.
///
/// `Debug` and `Display` never show the password.
///
/// ```
/// use switchboard_tokio::proxy::{Proxy, ProxyKind};
/// let p = Proxy::parse("http://alice:s%40cret@proxy.example:3128").unwrap();
/// assert_eq!((p.kind(), p.host(), p.port()), (ProxyKind::HttpConnect, "proxy.example", 3128));
/// assert_eq!(p.username(), Some("alice"));
/// assert_eq!(p.to_string(), "http://proxy.example:3128");
/// let p = Proxy::parse("socks5h://[::1]").unwrap();
/// assert_eq!((p.kind(), p.host(), p.port()), (ProxyKind::Socks5, "::1", 1080));
/// assert!(Proxy::parse("ftp://proxy:21").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: ProxyKind,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl Proxy {
    /// Parses a proxy URL: `http://[user:password@]host[:port]` (a URL without a scheme is
    /// taken as `http://`), `socks5://…` or `socks5h://…`. The user name and password are
    /// percent-decoded (`%40` for `@`). A path other than `/` is refused, and so are
    /// `https://` (TLS to the proxy itself) and SOCKS4.
    pub fn parse(url: &str) -> Result<Self, InvalidProxyUrl> {
        let bad = |reason: &str| InvalidProxyUrl {
            url: redact(url),
            var: None,
            reason: reason.to_string(),
        };
        let url_t = url.trim();
        let (scheme, rest) = match url_t.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_string(), url_t),
        };
        let kind = match scheme.as_str() {
            "http" => ProxyKind::HttpConnect,
            "socks5" | "socks5h" => ProxyKind::Socks5,
            "https" => {
                return Err(bad(
                    "TLS to the proxy (https://) is not supported: use http:// \
                     (wss:// still runs its own TLS inside the tunnel)",
                ))
            }
            "socks4" | "socks4a" => return Err(bad("SOCKS4 is not supported: use socks5://")),
            _ => {
                return Err(bad(&format!(
                    "unsupported proxy scheme {scheme:?}: use http://, socks5:// or socks5h://"
                )))
            }
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad("a proxy URL has no path"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let user = percent_decode(user).map_err(|r| bad(&r))?;
                let pass = pass.map(percent_decode).transpose().map_err(|r| bad(&r))?;
                (Some(user), pass)
            }
        };
        let default_port = match kind {
            ProxyKind::HttpConnect => 80,
            ProxyKind::Socks5 => 1080,
        };
        let (host, port) = split_host_port(hostport, default_port).map_err(bad)?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if !valid_host(&host) {
            return Err(bad("the host has characters a host name cannot have"));
        }
        Ok(Self {
            kind,
            host,
            port,
            username,
            password,
        })
    }

    /// The protocol.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name from the URL, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Whether the URL has a user name (and maybe a password) to send.
    pub fn has_credentials(&self) -> bool {
        self.username.is_some()
    }

    /// User name and password (an empty password when the URL has none).
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        self.username
            .as_deref()
            .map(|u| (u, self.password.as_deref().unwrap_or("")))
    }
}

impl fmt::Display for Proxy {
    /// `scheme://host:port`, without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::HttpConnect => "http",
            ProxyKind::Socks5 => "socks5",
        };
        write!(f, "{scheme}://{}", host_port(&self.host, self.port))
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Whether `host` can go into a request line or a SOCKS request as it is: visible ASCII
/// without the characters that end or split an authority.
pub(crate) fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'[' | b']'))
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), &'static str> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| "invalid port");
    if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in IPv6 host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => port(p)?,
            None if after.is_empty() => default_port,
            None => return Err("unexpected text after IPv6 host"),
        };
        return Ok((h.to_string(), port));
    }
    match s.split_once(':') {
        Some((h, p)) => Ok((h.to_string(), port(p)?)),
        None => Ok((s.to_string(), default_port)),
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a % in the user name or password is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user name or password is not UTF-8".to_string())
}

/// The URL with its password (if any) replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{prefix}{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_ports_and_credentials() {
        let p = Proxy::parse("proxy:3128").unwrap();
        assert_eq!(
            (p.kind(), p.port(), p.has_credentials()),
            (ProxyKind::HttpConnect, 3128, false)
        );
        let p = Proxy::parse("HTTP://u@proxy/").unwrap();
        assert_eq!((p.port(), p.credentials()), (80, Some(("u", ""))));
        let p = Proxy::parse("socks5://a%3Ab:p%25w@127.0.0.1").unwrap();
        assert_eq!((p.port(), p.credentials()), (1080, Some(("a:b", "p%w"))));
        let p = Proxy::parse("socks5h://u:p:q@h:9").unwrap();
        assert_eq!(p.credentials(), Some(("u", "p:q")));
        let p = Proxy::parse("http://u:p@ss@h:9").unwrap();
        assert_eq!((p.host(), p.credentials()), ("h", Some(("u", "p@ss"))));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for (url, want) in [
            ("https://h:1", "https://"),
            ("socks4://h:1", "SOCKS4"),
            ("gopher://h", "unsupported proxy scheme"),
            ("http://h:99999", "invalid port"),
            ("http://h:1/path", "no path"),
            ("http://:1", "missing host"),
            ("http://u:%zz@h", "hex"),
            ("http://[::1", "unclosed"),
            ("http://h h:1", "host"),
            ("", "missing host"),
        ] {
            let e = Proxy::parse(url).unwrap_err();
            assert!(e.to_string().contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn never_shows_the_password() {
        let p = Proxy::parse("http://alice:hunter2@h:1").unwrap();
        assert!(!format!("{p:?} {p}").contains("hunter2"));
        let e = Proxy::parse("gopher://alice:hunter2@h:1").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("alice:***@h:1"), "{e}");
        assert_eq!(redact("alice@h"), "alice@h");
        assert_eq!(redact("h:1"), "h:1");
    }
}
