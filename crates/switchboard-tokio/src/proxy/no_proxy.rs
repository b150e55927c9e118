//! [`NoProxy`]: the hosts reached without a proxy (`NO_PROXY`).

use std::net::IpAddr;

/// The hosts to reach directly, without a proxy: a `NO_PROXY` list.
///
/// Entries are separated by commas (spaces around them are ignored), compared without regard
/// to case:
///
/// - `*` alone: every host (no proxy at all);
/// - `example.com`, `.example.com` or `*.example.com`: that host and every name under it
///   (`api.example.com`), not `notexample.com`;
/// - an IP address (`127.0.0.1`, `::1`, `[::1]`) or a network (`10.0.0.0/8`, `fd00::/8`):
///   a URL whose host is that address, or in that network;
/// - any of these with `:PORT` (`localhost:8080`, `[::1]:8443`, `10.1.2.3:443`): only that
///   port.
///
/// Hosts are matched as written in the URL, without DNS: `localhost` does not match
/// `127.0.0.1`. Entries that are none of these are ignored.
///
/// ```
/// use switchboard_tokio::proxy::NoProxy;
/// let np = NoProxy::parse("localhost, .internal.example, 10.0.0.0/8, [::1]:8080");
/// assert!(np.matches("localhost", 80));
/// assert!(np.matches("api.internal.example", 443));
/// assert!(np.matches("10.1.2.3", 80));
/// assert!(np.matches("::1", 8080) && !np.matches("::1", 8081));
/// assert!(!np.matches("example.com", 443));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Lower case, without a leading dot.
    Domain(String),
    Ip(IpAddr),
    Network(IpAddr, u8),
}

impl NoProxy {
    /// Parses a `NO_PROXY` list (see the type's documentation for the rules).
    pub fn parse(list: &str) -> Self {
        let mut np = Self::default();
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if raw == "*" {
                np.all = true;
            } else if let Some(entry) = parse_entry(&raw.to_ascii_lowercase()) {
                np.entries.push(entry);
            }
        }
        np
    }

    /// Whether nothing is exempt.
    pub fn is_empty(&self) -> bool {
        !self.all && self.entries.is_empty()
    }

    /// Whether `host` (as written in the URL, IPv6 with or without brackets) on `port` is to
    /// be reached directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| {
            e.port.is_none_or(|p| p == port)
                && match (&e.pattern, ip) {
                    (Pattern::Domain(d), None) => {
                        host == *d
                            || host
                                .strip_suffix(d.as_str())
                                .is_some_and(|head| head.ends_with('.'))
                    }
                    (Pattern::Ip(want), Some(ip)) => *want == ip,
                    (Pattern::Network(net, len), Some(ip)) => in_network(ip, *net, *len),
                    _ => false,
                }
        })
    }
}

/// One lower-case entry other than `*`.
fn parse_entry(e: &str) -> Option<Entry> {
    // [v6] or [v6]:port
    if let Some(rest) = e.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some(Entry {
            pattern: ip_pattern(addr)?,
            port,
        });
    }
    // A bare IPv6 address or network has colons but no port.
    if let Some(pattern) = ip_pattern(e) {
        return Some(Entry {
            pattern,
            port: None,
        });
    }
    let (name, port) = match e.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => (name, Some(p.parse().ok()?)),
        Some(_) => return None,
        None => (e, None),
    };
    if let Some(pattern) = ip_pattern(name) {
        return Some(Entry { pattern, port });
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_prefix('.').unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let plausible = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    plausible.then(|| Entry {
        pattern: Pattern::Domain(name.to_string()),
        port,
    })
}

/// `addr` or `addr/len`.
fn ip_pattern(s: &str) -> Option<Pattern> {
    match s.split_once('/') {
        None => s.parse().ok().map(Pattern::Ip),
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some(Pattern::Network(addr, len))
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_themselves_and_names_under_them() {
        let np = NoProxy::parse("example.com, .dot.test,*.star.test, Upper.Test.");
        for host in [
            "example.com",
            "EXAMPLE.com",
            "a.b.example.com",
            "example.com.",
            "dot.test",
            "x.dot.test",
            "star.test",
            "y.star.test",
            "upper.test",
        ] {
            assert!(np.matches(host, 443), "{host}");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "com",
            "test",
            "10.0.0.1",
        ] {
            assert!(!np.matches(host, 443), "{host}");
        }
    }

    #[test]
    fn ips_networks_and_ports() {
        let np = NoProxy::parse("127.0.0.1, ::1, 10.0.0.0/8, fd00::/8, 192.168.1.1:8080, [fe80::1]:443, host:9000, 0.0.0.0/0:7");
        assert!(np.matches("127.0.0.1", 1));
        assert!(np.matches("[::1]", 1) && np.matches("::1", 2));
        assert!(np.matches("10.255.0.1", 80) && !np.matches("11.0.0.1", 80));
        assert!(np.matches("fd12::5", 80) && !np.matches("fe12::5", 80));
        assert!(np.matches("192.168.1.1", 8080) && !np.matches("192.168.1.1", 80));
        assert!(np.matches("fe80::1", 443) && !np.matches("fe80::1", 80));
        assert!(np.matches("host", 9000) && !np.matches("host", 9001));
        assert!(np.matches("8.8.8.8", 7) && !np.matches("8.8.8.8", 8));
        // Hosts are compared as written: no DNS.
        assert!(!np.matches("localhost", 1));
    }

    #[test]
    fn star_empty_and_junk() {
        assert!(NoProxy::parse(" * ").matches("anything", 1));
        assert!(NoProxy::parse("").is_empty());
        let junk = NoProxy::parse(",, a b, 1.2.3.4/33, host:port, [::1, ::1:x, :80, %%");
        assert!(junk.is_empty(), "{junk:?}");
    }
}
