//! Clients behind a proxy: HTTP `CONNECT` tunnels (with basic authentication) and SOCKS5
//! (RFC 1928, with user name and password, RFC 1929), for `ws://` and `wss://` alike. For
//! `wss://` TLS runs inside the tunnel, end to end with the server, with the server's name
//! (SNI) as usual: the proxy sees only the host and port.
//!
//! - [`Proxy`]: one proxy, from a URL: `http://user:password@proxy:3128`,
//!   `socks5://proxy:1080`. `socks5://` and `socks5h://` both send the host name to the proxy
//!   for it to resolve (remote DNS): a client behind a SOCKS proxy often cannot resolve
//!   outside names itself.
//! - [`ProxySettings`]: which proxy each URL takes: one for all, or from the usual environment
//!   variables (`HTTPS_PROXY` for `wss://`, `HTTP_PROXY` for `ws://`, `ALL_PROXY` otherwise,
//!   `NO_PROXY` for exemptions, lower case too) with [`ProxySettings::from_env`].
//! - [`NoProxy`]: the `NO_PROXY` rules.
//!
//! The library never reads the environment by itself:
//! [`ClientBuilder::proxy`](crate::ClientBuilder::proxy) sets a proxy,
//! [`ClientBuilder::proxy_from_env`](crate::ClientBuilder::proxy_from_env) asks for the
//! environment's. `switchboard connect` and `switchboard bench` read it by default
//! (`--no-proxy` not to).
//!
//! Every step is bounded: the connect timeout covers the TCP connection to the proxy, its
//! handshake and TLS; the proxy's answer is read up to 8 KiB of head, and never past its end.
//! Failures are [`ProxyError`]s that say what the proxy answered (the status line of a
//! refusal, the meaning of a SOCKS5 reply code) and, when it wants credentials, where to put
//! them.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard_tokio::Error> {
//! use switchboard_tokio::proxy::Proxy;
//! use switchboard_tokio::ClientBuilder;
//! let proxy = Proxy::parse("http://alice:secret@proxy.example:3128")?;
//! let (ws, _) = ClientBuilder::new("wss://echo.example/").proxy(proxy).connect().await?;
//! // Or as curl does: HTTPS_PROXY, ALL_PROXY, NO_PROXY.
//! let (ws, _) = ClientBuilder::new("wss://echo.example/").proxy_from_env().connect().await?;
//! # Ok(()) }
//! ```

mod error;
mod http_connect;
mod no_proxy;
mod settings;
mod socks5;
mod tunnel;
mod url;

pub use error::{socks_reply_meaning, InvalidProxyUrl, ProxyError, ProxyStep};
pub use no_proxy::NoProxy;
pub use settings::ProxySettings;
pub use tunnel::{TunnelInfo, TunnelLine};
pub use url::{Proxy, ProxyKind};
