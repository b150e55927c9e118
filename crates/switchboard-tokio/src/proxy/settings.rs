//! [`ProxySettings`]: which proxy, if any, a URL goes through: set by the program, or read
//! from the usual environment variables.

use super::error::InvalidProxyUrl;
use super::no_proxy::NoProxy;
use super::url::Proxy;
use crate::client::WsUrl;

/// Which proxy each URL goes through: one for `ws://`, one for `wss://`, and the hosts
/// reached directly ([`NoProxy`]). The default goes direct everywhere.
///
/// ```
/// use switchboard_tokio::client::WsUrl;
/// use switchboard_tokio::proxy::ProxySettings;
/// let env = [("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", "localhost")];
/// let s = ProxySettings::from_vars(|name| {
///     env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
/// })
/// .unwrap();
/// let via = |url: &str| s.proxy_for(&WsUrl::parse(url).unwrap()).map(|p| p.to_string());
/// assert_eq!(via("wss://example.com/"), Some("http://proxy:3128".to_string()));
/// assert_eq!(via("ws://example.com/"), None); // no HTTP_PROXY nor ALL_PROXY
/// assert_eq!(via("wss://localhost:8443/"), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    ws: Option<Chosen>,
    wss: Option<Chosen>,
    no_proxy: NoProxy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chosen {
    proxy: Proxy,
    /// The environment variable it came from.
    var: Option<&'static str>,
}

impl ProxySettings {
    /// Every URL through `proxy` (`ws://` and `wss://`), with no exemption.
    pub fn all(proxy: Proxy) -> Self {
        let chosen = Chosen { proxy, var: None };
        Self {
            ws: Some(chosen.clone()),
            wss: Some(chosen),
            no_proxy: NoProxy::default(),
        }
    }

    /// `ws://` URLs through `proxy` (`None`: direct).
    pub fn ws(mut self, proxy: Option<Proxy>) -> Self {
        self.ws = proxy.map(|proxy| Chosen { proxy, var: None });
        self
    }

    /// `wss://` URLs through `proxy` (`None`: direct).
    pub fn wss(mut self, proxy: Option<Proxy>) -> Self {
        self.wss = proxy.map(|proxy| Chosen { proxy, var: None });
        self
    }

    /// The hosts to reach directly.
    pub fn no_proxy(mut self, no_proxy: NoProxy) -> Self {
        self.no_proxy = no_proxy;
        self
    }

    /// Reads the process environment: see [`from_vars`](Self::from_vars).
    pub fn from_env() -> Result<Self, InvalidProxyUrl> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings that the usual environment variables describe, read through `var`
    /// (a name to its value: `std::env::var`, or a map in a test):
    ///
    /// - `wss://` goes through `https_proxy` or `HTTPS_PROXY`, else `all_proxy` or
    ///   `ALL_PROXY`;
    /// - `ws://` through `http_proxy` or `HTTP_PROXY`, else `all_proxy` or `ALL_PROXY`;
    /// - hosts in `no_proxy` or `NO_PROXY` ([`NoProxy`]) go direct.
    ///
    /// When both spellings are set, the lower-case one wins (as with curl); an empty value is
    /// unset. Under CGI (`REQUEST_METHOD` set) `HTTP_PROXY` is ignored, since a request's
    /// `Proxy:` header reaches programs under that name ("httpoxy"); `http_proxy` still counts.
    /// A value that is not a usable proxy URL is an error naming the variable (not silently a
    /// direct connection).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, InvalidProxyUrl> {
        let get = |name: &'static str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        };
        let cgi = get("REQUEST_METHOD").is_some();
        let parse =
            |found: Option<(&'static str, String)>| -> Result<Option<Chosen>, InvalidProxyUrl> {
                found
                    .map(|(name, value)| {
                        Proxy::parse(&value)
                            .map(|proxy| Chosen {
                                proxy,
                                var: Some(name),
                            })
                            .map_err(|e| InvalidProxyUrl {
                                var: Some(name.to_string()),
                                ..e
                            })
                    })
                    .transpose()
            };
        let all = parse(get("all_proxy").or_else(|| get("ALL_PROXY")))?;
        let http = parse(get("http_proxy").or_else(|| get("HTTP_PROXY").filter(|_| !cgi)))?;
        let https = parse(get("https_proxy").or_else(|| get("HTTPS_PROXY")))?;
        let no_proxy = get("no_proxy")
            .or_else(|| get("NO_PROXY"))
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        Ok(Self {
            ws: http.or_else(|| all.clone()),
            wss: https.or(all),
            no_proxy,
        })
    }

    fn chosen(&self, url: &WsUrl) -> Option<&Chosen> {
        let chosen = if url.tls { &self.wss } else { &self.ws };
        chosen
            .as_ref()
            .filter(|_| !self.no_proxy.matches(&url.host, url.port))
    }

    /// The proxy `url` goes through, or `None` to connect directly.
    pub fn proxy_for(&self, url: &WsUrl) -> Option<&Proxy> {
        self.chosen(url).map(|c| &c.proxy)
    }

    /// The environment variable the proxy for `url` came from, if it came from one.
    pub fn source_for(&self, url: &WsUrl) -> Option<&'static str> {
        self.chosen(url).and_then(|c| c.var)
    }

    /// Whether every URL goes direct.
    pub fn is_direct(&self) -> bool {
        self.ws.is_none() && self.wss.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Result<ProxySettings, InvalidProxyUrl> {
        ProxySettings::from_vars(|name| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn via(s: &ProxySettings, url: &str) -> Option<String> {
        let url = WsUrl::parse(url).unwrap();
        s.proxy_for(&url)
            .map(|p| format!("{p} {}", s.source_for(&url).unwrap_or("-")))
    }

    #[test]
    fn scheme_picks_the_variable_and_all_proxy_is_the_fallback() {
        let s = settings(&[
            ("HTTP_PROXY", "h:1"),
            ("HTTPS_PROXY", "socks5://s:2"),
            ("ALL_PROXY", "a:3"),
        ])
        .unwrap();
        assert_eq!(via(&s, "ws://x/").as_deref(), Some("http://h:1 HTTP_PROXY"));
        assert_eq!(
            via(&s, "wss://x/").as_deref(),
            Some("socks5://s:2 HTTPS_PROXY")
        );
        let s = settings(&[("all_proxy", "a:3"), ("HTTPS_PROXY", "")]).unwrap();
        assert_eq!(via(&s, "ws://x/").as_deref(), Some("http://a:3 all_proxy"));
        assert_eq!(via(&s, "wss://x/").as_deref(), Some("http://a:3 all_proxy"));
        assert!(settings(&[]).unwrap().is_direct());
    }

    #[test]
    fn lower_case_wins_and_cgi_ignores_upper_case_http_proxy() {
        let s = settings(&[("https_proxy", "low:1"), ("HTTPS_PROXY", "up:2")]).unwrap();
        assert_eq!(
            via(&s, "wss://x/").as_deref(),
            Some("http://low:1 https_proxy")
        );
        let s = settings(&[("HTTP_PROXY", "evil:1"), ("REQUEST_METHOD", "GET")]).unwrap();
        assert_eq!(via(&s, "ws://x/"), None);
        let s = settings(&[("http_proxy", "ok:1"), ("REQUEST_METHOD", "GET")]).unwrap();
        assert_eq!(
            via(&s, "ws://x/").as_deref(),
            Some("http://ok:1 http_proxy")
        );
    }

    #[test]
    fn no_proxy_exempts_hosts() {
        let s = settings(&[("ALL_PROXY", "p:1"), ("no_proxy", "localhost,.corp:443")]).unwrap();
        assert_eq!(via(&s, "ws://localhost:8080/"), None);
        assert_eq!(via(&s, "wss://a.corp/"), None);
        assert!(via(&s, "ws://a.corp/").is_some());
        assert!(via(&s, "ws://127.0.0.1/").is_some());
        let s = settings(&[("ALL_PROXY", "p:1"), ("NO_PROXY", "*")]).unwrap();
        assert_eq!(via(&s, "wss://anything/"), None);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = settings(&[("HTTPS_PROXY", "socks4://u:pw@h:1")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("HTTPS_PROXY") && msg.contains("SOCKS4"),
            "{msg}"
        );
        assert!(!msg.contains("pw"), "{msg}");
    }
}
