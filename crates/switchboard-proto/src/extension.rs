//! Extension negotiation (RFC 6455 §9, RFC 7692 §5-§7): `Sec-WebSocket-Extensions` parsing and
//! the permessage-deflate parameters.
//!
//! One design for both roles and both negotiations: a server turns the client's offers into a
//! [`Negotiated`] result (with [`DeflateConfig::negotiate_server`]); a client checks the server's
//! answer against what it offered ([`DeflateConfig::check_response`]). The agreed
//! [`DeflateParams`] then configure the [`Connection`](crate::Connection).

use std::fmt::Write as _;

/// The extension name of RFC 7692.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// One extension in a `Sec-WebSocket-Extensions` value: a name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionItem<'a> {
    /// The extension token, for example `permessage-deflate`.
    pub name: &'a str,
    /// Parameters in order, each with its value if it has one (quotes removed).
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

/// Parses every extension in a list of header values (comma-separated items, `;`-separated
/// parameters). Malformed items are skipped: a server declines what it cannot read.
pub fn parse_extensions<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<ExtensionItem<'a>> {
    let mut out = Vec::new();
    for value in values {
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let Some(name) = parts.next().filter(|n| is_token(n)) else {
                continue;
            };
            let mut params = Vec::new();
            let mut ok = true;
            for p in parts {
                let (k, v) = match p.split_once('=') {
                    Some((k, v)) => {
                        let v = v.trim();
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or(v);
                        (k.trim(), Some(v))
                    }
                    None => (p, None),
                };
                if !is_token(k) || v.is_some_and(|v| !is_token(v)) {
                    ok = false;
                    break;
                }
                params.push((k, v));
            }
            if ok {
                out.push(ExtensionItem { name, params });
            }
        }
    }
    out
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a server is willing to agree to, or what a client offers. Off unless set in
/// [`Config::deflate`](crate::Config::deflate).
///
/// Memory per connection is dominated by zlib's state: a compressor needs about
/// `2^(window_bits+2) + 2^(mem_level+9)` bytes (with window 15 and mem level 8: 256 KiB), an
/// inflater `2^window_bits` bytes plus ~7 KiB. With `no_context_takeover` for a direction, that
/// direction's state is not kept per connection at all but borrowed per message from a
/// per-thread pool: a server with `server_no_context_takeover` and `client_no_context_takeover`
/// holds no zlib memory while idle. `docs/deflate.md` has the measured numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Server role: always ask the client not to keep context across messages (saves the
    /// per-connection inflater); client role: offer it. Default: false.
    pub client_no_context_takeover: bool,
    /// Server role: compress each message on its own (no per-connection compressor); client
    /// role: ask the server for it. Default: false.
    pub server_no_context_takeover: bool,
    /// The largest window the server compresses with, 8-15. Default: 15.
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with, 8-15. Default: 15.
    pub client_max_window_bits: u8,
    /// zlib compression level, 0-9. Default: 1 (chosen by benchmark: see `docs/deflate.md`).
    pub level: u8,
    /// zlib memory level, 1-9: lower uses less memory per compressor at some cost in ratio.
    /// Default: 8 (zlib's default).
    pub mem_level: u8,
    /// Messages shorter than this are sent uncompressed. Default: 64 bytes.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            mem_level: 8,
            threshold: 64,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl DeflateConfig {
            $(
                $(#[$doc])*
                pub fn $name(mut self, v: $ty) -> Self {
                    self.$name = v;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`DeflateConfig::client_no_context_takeover`].
    client_no_context_takeover: bool,
    /// Sets [`DeflateConfig::server_no_context_takeover`].
    server_no_context_takeover: bool,
    /// Sets [`DeflateConfig::server_max_window_bits`] (8-15).
    server_max_window_bits: u8,
    /// Sets [`DeflateConfig::client_max_window_bits`] (8-15).
    client_max_window_bits: u8,
    /// Sets [`DeflateConfig::level`] (0-9).
    level: u8,
    /// Sets [`DeflateConfig::mem_level`] (1-9).
    mem_level: u8,
    /// Sets [`DeflateConfig::threshold`].
    threshold: usize,
}

/// The parameters both sides agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server's compression window (its LZ77 distances stay within it).
    pub server_max_window_bits: u8,
    /// The client's compression window.
    pub client_max_window_bits: u8,
}

impl DeflateParams {
    /// The extension value a server sends back for these parameters (parameters at their
    /// default value are left out).
    pub fn to_response(&self) -> String {
        let mut s = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            let _ = write!(
                s,
                "; server_max_window_bits={}",
                self.server_max_window_bits
            );
        }
        if self.client_max_window_bits < 15 {
            let _ = write!(
                s,
                "; client_max_window_bits={}",
                self.client_max_window_bits
            );
        }
        s
    }
}

/// The parameters of one permessage-deflate offer or response, each at most once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RawParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in offers only).
    client_max_window_bits: Option<Option<u8>>,
}

/// Reads the parameters of one item; `None` if any is unknown, repeated or has a bad value
/// (RFC 7692 §7: such an offer is declined, such a response fails the connection).
fn raw_params(item: &ExtensionItem<'_>) -> Option<RawParams> {
    let bits = |v: Option<&str>| -> Option<u8> {
        let v = v?;
        if v.len() > 2 || v.starts_with('0') {
            return None;
        }
        v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
    };
    let mut p = RawParams::default();
    let mut seen = [false; 4];
    for (k, v) in &item.params {
        let slot = match *k {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        match slot {
            0 | 1 if v.is_some() => return None,
            0 => p.server_no_context_takeover = true,
            1 => p.client_no_context_takeover = true,
            2 => p.server_max_window_bits = Some(bits(*v)?),
            _ => {
                p.client_max_window_bits = Some(match v {
                    None => None,
                    Some(_) => Some(bits(*v)?),
                })
            }
        }
    }
    Some(p)
}

/// Why a server's extension response is unacceptable to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid permessage-deflate response {0:?}")]
pub struct InvalidExtensionResponse(pub String);

/// A server's answer to the client's extension offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// permessage-deflate, if accepted.
    pub deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` response value, if anything was accepted.
    pub response: Option<String>,
}

impl DeflateConfig {
    /// Server role: accepts the first acceptable permessage-deflate offer among `offers`
    /// (RFC 7692 §7.1), or declines them all.
    ///
    /// ```
    /// use switchboard_proto::extension::{parse_extensions, DeflateConfig};
    /// let offers = parse_extensions(["permessage-deflate; client_max_window_bits; server_max_window_bits=10"]);
    /// let n = DeflateConfig::default().negotiate_server(&offers);
    /// let p = n.deflate.unwrap();
    /// assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (10, 15));
    /// assert_eq!(n.response.as_deref(), Some("permessage-deflate; server_max_window_bits=10"));
    /// ```
    pub fn negotiate_server(&self, offers: &[ExtensionItem<'_>]) -> Negotiated {
        for offer in offers.iter().filter(|o| o.name == PERMESSAGE_DEFLATE) {
            let Some(raw) = raw_params(offer) else {
                continue;
            };
            let server_bits = raw
                .server_max_window_bits
                .unwrap_or(15)
                .min(self.server_max_window_bits.clamp(8, 15));
            let client_bits = match raw.client_max_window_bits {
                None => 15,
                Some(None) => self.client_max_window_bits.clamp(8, 15),
                Some(Some(b)) => b.min(self.client_max_window_bits.clamp(8, 15)),
            };
            let params = DeflateParams {
                server_no_context_takeover: raw.server_no_context_takeover
                    || self.server_no_context_takeover,
                client_no_context_takeover: raw.client_no_context_takeover
                    || self.client_no_context_takeover,
                server_max_window_bits: if raw.server_max_window_bits.is_some() {
                    server_bits
                } else {
                    15
                },
                client_max_window_bits: client_bits,
            };
            let response = params.to_response();
            // When the client set no limit on our window we still may compress with a smaller
            // one without telling it (any window up to 15 inflates fine).
            let mut agreed = params;
            if raw.server_max_window_bits.is_none() {
                agreed.server_max_window_bits = self.server_max_window_bits.clamp(8, 15);
            }
            return Negotiated {
                deflate: Some(agreed),
                response: Some(response),
            };
        }
        Negotiated::default()
    }

    /// Client role: the offer to send.
    pub fn to_offer(&self) -> String {
        let mut s = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            let _ = write!(
                s,
                "; server_max_window_bits={}",
                self.server_max_window_bits.max(8)
            );
        }
        // Always say we accept a limit on our window (saves the server memory).
        if self.client_max_window_bits < 15 {
            let _ = write!(
                s,
                "; client_max_window_bits={}",
                self.client_max_window_bits.max(8)
            );
        } else {
            s.push_str("; client_max_window_bits");
        }
        s
    }

    /// Client role: checks the server's permessage-deflate response against the offer made
    /// with [`to_offer`](Self::to_offer) (RFC 7692 §7.1: fail on unknown, repeated or out of
    /// range parameters, and on a limit we did not allow).
    pub fn check_response(
        &self,
        item: &ExtensionItem<'_>,
    ) -> Result<DeflateParams, InvalidExtensionResponse> {
        let bad = || InvalidExtensionResponse(format_item(item));
        let raw = raw_params(item).ok_or_else(bad)?;
        let client_bits = match raw.client_max_window_bits {
            None => self.client_max_window_bits.clamp(8, 15),
            Some(None) => return Err(bad()),
            Some(Some(b)) if b <= self.client_max_window_bits.max(8) => b,
            Some(Some(_)) => return Err(bad()),
        };
        let server_bits = match raw.server_max_window_bits {
            None if self.server_max_window_bits < 15 => return Err(bad()),
            None => 15,
            Some(b) if b <= self.server_max_window_bits.max(8) => b,
            Some(_) => return Err(bad()),
        };
        if self.server_no_context_takeover && !raw.server_no_context_takeover {
            return Err(bad());
        }
        Ok(DeflateParams {
            server_no_context_takeover: raw.server_no_context_takeover,
            client_no_context_takeover: raw.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        })
    }
}

fn format_item(item: &ExtensionItem<'_>) -> String {
    let mut s = item.name.to_string();
    for (k, v) in &item.params {
        let _ = match v {
            Some(v) => write!(s, "; {k}={v}"),
            None => write!(s, "; {k}"),
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(cfg: DeflateConfig, header: &str) -> Negotiated {
        cfg.negotiate_server(&parse_extensions([header]))
    }

    #[test]
    fn parses_lists_and_quotes() {
        let items = parse_extensions([
            "foo, permessage-deflate; client_max_window_bits=\"10\"; server_no_context_takeover",
            "x; a=b",
        ]);
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[1].params,
            vec![
                ("client_max_window_bits", Some("10")),
                ("server_no_context_takeover", None)
            ]
        );
    }

    #[test]
    fn default_offer_accepted_plainly() {
        let n = server(DeflateConfig::default(), "permessage-deflate");
        assert_eq!(n.response.as_deref(), Some("permessage-deflate"));
        let p = n.deflate.unwrap();
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (15, 15)
        );
    }

    #[test]
    fn invalid_offers_are_declined_and_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
        ] {
            assert_eq!(server(DeflateConfig::default(), bad).deflate, None, "{bad}");
            let n = server(
                DeflateConfig::default(),
                &format!("{bad}, permessage-deflate; client_no_context_takeover"),
            );
            assert_eq!(
                n.response.as_deref(),
                Some("permessage-deflate; client_no_context_takeover"),
                "{bad}"
            );
        }
    }

    #[test]
    fn server_policy_applies() {
        let cfg = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        let n = server(cfg, "permessage-deflate; client_max_window_bits");
        assert_eq!(
            n.response.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10")
        );
        // Without client_max_window_bits in the offer the server must not limit the client.
        let n = server(cfg, "permessage-deflate");
        assert_eq!(n.deflate.unwrap().client_max_window_bits, 15);
        assert!(!n.response.unwrap().contains("client_max_window_bits"));
    }

    #[test]
    fn window_8_is_agreed() {
        let n = server(
            DeflateConfig::default(),
            "permessage-deflate; server_max_window_bits=8",
        );
        assert_eq!(n.deflate.unwrap().server_max_window_bits, 8);
        assert_eq!(
            n.response.as_deref(),
            Some("permessage-deflate; server_max_window_bits=8")
        );
    }

    #[test]
    fn client_checks_response() {
        let cfg = DeflateConfig::default();
        let check = |r: &str| cfg.check_response(&parse_extensions([r])[0]);
        assert!(check("permessage-deflate").is_ok());
        assert_eq!(
            check("permessage-deflate; client_max_window_bits=9")
                .unwrap()
                .client_max_window_bits,
            9
        );
        assert!(check("permessage-deflate; client_max_window_bits").is_err());
        assert!(check("permessage-deflate; server_max_window_bits=16").is_err());
        assert!(check("permessage-deflate; foo").is_err());
        assert!(check(
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        )
        .is_err());
        let strict = DeflateConfig {
            server_max_window_bits: 10,
            server_no_context_takeover: true,
            ..cfg
        };
        let check = |r: &str| strict.check_response(&parse_extensions([r])[0]);
        assert!(
            check("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
                .is_ok()
        );
        assert!(
            check("permessage-deflate; server_no_context_takeover; server_max_window_bits=11")
                .is_err()
        );
        assert!(check("permessage-deflate; server_max_window_bits=10").is_err());
    }
}
