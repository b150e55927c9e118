//! `--proxy URL` and `--no-proxy`, shared by `connect` and `bench`: which proxy the client
//! goes through. Without either, the usual environment variables decide (`HTTPS_PROXY` for
//! wss://, `HTTP_PROXY` for ws://, `ALL_PROXY` otherwise, `NO_PROXY` exempts hosts; lower
//! case too), as curl does.

use switchboard_tokio::client::WsUrl;
use switchboard_tokio::proxy::{Proxy, ProxySettings};

/// The proxy options.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ProxyArgs {
    /// Connect through this proxy, whatever the environment says: http://[USER:PASSWORD@]HOST:PORT
    /// (HTTP CONNECT, basic auth) or socks5://[USER:PASSWORD@]HOST:PORT (SOCKS5; the proxy
    /// resolves the host name, as socks5h://). Default: HTTPS_PROXY for wss://, HTTP_PROXY for
    /// ws://, else ALL_PROXY, except hosts in NO_PROXY (lower case too).
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly: ignore the proxy environment variables.
    #[arg(long)]
    no_proxy: bool,
}

impl ProxyArgs {
    /// The settings the options (or, without them, the environment) describe, or why they
    /// cannot be used (one line, naming the option or variable).
    pub(crate) fn settings(&self) -> Result<ProxySettings, String> {
        if self.no_proxy {
            return Ok(ProxySettings::default());
        }
        match &self.proxy {
            Some(url) => Proxy::parse(url)
                .map(ProxySettings::all)
                .map_err(|e| format!("--proxy: {e}")),
            None => ProxySettings::from_env()
                .map_err(|e| format!("{e} (--no-proxy to ignore the proxy variables)")),
        }
    }
}

/// "through http://proxy:3128 (from HTTPS_PROXY)", or `None` for a direct connection.
pub(crate) fn describe(settings: &ProxySettings, url: &WsUrl) -> Option<String> {
    let proxy = settings.proxy_for(url)?;
    Some(match settings.source_for(url) {
        Some(var) => format!("through {proxy} (from {var}; --no-proxy to connect directly)"),
        None => format!("through {proxy}"),
    })
}
