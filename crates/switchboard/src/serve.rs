//! `switchboard serve`: the process around the server (memory settings, logging, the runtime,
//! signals). Its options, merged into a [`switchboard_server::ServerConfig`], are in
//! [`options`].

mod options;

use anyhow::Context;

pub(crate) use options::{hmac_secrets, ServeArgs};
use options::{jwt_fix, settings, EngineChoice, Settings};

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), before the
/// server allocates anything per connection. mimalloc asks for them on its arenas
/// (`MADV_HUGEPAGE`); memory then becomes resident 2 MiB at a time, and many idle
/// connections, each a few hundred bytes spread over several size classes, end up holding
/// almost twice their heap.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disable_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours; it only sets a flag on this process's address space.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_huge_pages() {}

/// Makes mimalloc give the pages it frees back to the system at once (its purge delay 0,
/// unless `MIMALLOC_PURGE_DELAY` says otherwise). With the default delay (1 s in v3; a
/// freed page is purged once it passed, when mimalloc next looks, which a server gone idle
/// may never do), what a reconnect storm left freed stayed resident in about one run in
/// three, even after the idle collect ([`give_back_freed_memory`]): 0.62–1.13 KB per idle
/// connection after 10,000 connections arrived at once over io_uring, and 0.57–0.69 KB
/// with it at 0 (benchmarks/README.md).
/// Steady traffic allocates nothing per message, so it rarely frees a whole page.
#[allow(unsafe_code)]
fn purge_freed_pages_at_once() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v3's `mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        // mimalloc's own API (linked in by the `mimalloc` crate, the global allocator).
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: takes plain integers and sets one of mimalloc's options, a plain value
        // (this runs before the runtime's threads exist).
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Asks mimalloc to give the memory freed on this thread back to the system now. By
/// itself it does so only as the thread goes on allocating, so a thread that went idle
/// after a burst (10,000 handshakes, and the receive buffers they went through, which the
/// ring frees once idle) kept about 200 B per idle connection resident. Only a forced
/// collect returns them; it took 0.24 ms with 10,000 connections open, and runs once each
/// time the ring goes idle with more than its few hottest buffers resident.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    extern "C" {
        // mimalloc's own API (linked in by the `mimalloc` crate, the global allocator).
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes a plain flag and only works on mimalloc's own structures
    // (mimalloc is the global allocator, so they exist and are consistent).
    unsafe { mi_collect(true) };
}

/// Whether the io_uring transport works here (the server checks; only the flag's name and
/// the log line are this file's).
fn check_io_uring() -> anyhow::Result<()> {
    switchboard_server::check_transport(&switchboard_server::ServerConfig::default().io_uring(true))
        .context("io_uring cannot be used here; --io-uring false runs on epoll")
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A mistake in the options (flags, environment, file): exit status 2, like clap's own.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let s = settings(args).map_err(|e| UsageError(format!("{e:#}")))?;
    if !s.huge_pages {
        disable_huge_pages();
    }
    purge_freed_pages_at_once();
    init_logging(s.log_json);
    let scheme = if s.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let api = !s.config.api_keys.is_empty();
    let transport = s.transport.clone();
    let workers = s.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let config_file = s.config_file.as_ref().map_or_else(
        || "none".to_string(),
        |p| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        },
    );
    // What the transport needs (over io_uring: each worker submits its ring's queued reads
    // and writes before it parks, and gives freed memory back once it goes idle).
    #[cfg(target_os = "linux")]
    let on_idle: Option<fn()> = Some(give_back_freed_memory);
    #[cfg(not(target_os = "linux"))]
    let on_idle: Option<fn()> = None;
    let rt = switchboard_server::runtime(&s.config, on_idle)
        .worker_threads(workers)
        .build()?;
    rt.block_on(async move {
        let (s, tokens) = with_jwt(s).await?;
        let listener = tokio::net::TcpListener::bind(s.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another server using that port? choose another with --listen)",
                s.listen
            )
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(
            "switchboard {}: {workers} worker{}, sockets: {transport}, config file: {config_file}",
            env!("CARGO_PKG_VERSION"),
            if workers == 1 { "" } else { "s" }
        );
        tracing::info!(
            "listening on {scheme}://{addr} (chat page at /, WebSockets at /chat, /ws and /echo, metrics at /metrics)"
        );
        if let Some(tokens) = tokens {
            tracing::info!("{tokens}");
        }
        if !api {
            tracing::info!("POST /api/publish is disabled until an API key is set (SWITCHBOARD_API_KEY)");
        }
        let server = match &s.engine {
            EngineChoice::Memory => switchboard_server::Server::new(s.config),
            EngineChoice::Redis(url) => {
                // Each topic's history bounds come with its publications (the namespaces').
                let rc = switchboard_redis::RedisConfig::new(url.clone());
                let engine = switchboard_redis::RedisEngine::connect(rc).await.map_err(|e| {
                    anyhow::anyhow!("{e} (start redis-server there, or point --redis-url at one; --engine memory runs without Redis)")
                })?;
                tracing::info!("engine: redis at {}, node {}", engine.config().redacted_url(), engine.node_id());
                switchboard_server::Server::with_engine(s.config, engine)
            }
        };
        server.run(listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `s` with the JWT check of `/ws` and `/chat` set up, if any key is configured (a JWKS
/// URL is fetched now; the start fails if it cannot be), and what to log about it.
async fn with_jwt(mut s: Settings) -> anyhow::Result<(Settings, Option<String>)> {
    let Some(jwt) = s.jwt.take() else {
        return Ok((s, None));
    };
    let auth = switchboard_server::JwtAuthenticator::new(jwt.config())
        .await
        .map_err(|e| anyhow::anyhow!("{e} ({})", jwt_fix(&e)))?;
    let without = if jwt.allow_anonymous {
        "an anonymous guest (--allow-anonymous)"
    } else {
        "refused (401)"
    };
    let log = format!(
        "WebSockets (/ws, /chat) need a token checked with {}; without one: {without}",
        jwt.summary()
    );
    s.config = s
        .config
        .websocket_authenticator(auth)
        .allow_anonymous(jwt.allow_anonymous);
    Ok((s, Some(log)))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve` turns mimalloc's purge delay (1 s by default in v3: which tells that the option
    /// number is right) to 0, so what a reconnect storm freed does not stay resident.
    #[test]
    #[allow(unsafe_code)]
    fn freed_pages_are_purged_at_once() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        extern "C" {
            fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        }
        // SAFETY: reads one of mimalloc's options (the test binary's global allocator).
        let get = || unsafe { mi_option_get(15) };
        assert_eq!(get(), 1000, "mimalloc v3's default purge delay (ms)");
        purge_freed_pages_at_once();
        assert_eq!(get(), 0);
    }
}
