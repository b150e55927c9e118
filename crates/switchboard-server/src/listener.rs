//! The transport: how connections are accepted and where their tasks run, over tokio's
//! epoll driver or over io_uring ([`ServerConfig::io_uring`]), and the runtime each needs.
//! The only file of the server that names io_uring.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
#[cfg(all(feature = "io-uring", target_os = "linux"))]
use tracing::debug;

use crate::connection::ConnTask;
use crate::{ServerConfig, Shared};
#[cfg(all(feature = "io-uring", target_os = "linux"))]
use switchboard_tokio::uring::{self, UringListener, UringStream};

/// A tokio runtime builder for a server with `config`: the multi-thread runtime with every
/// driver on, and what the transport needs. Over io_uring each worker submits its ring's
/// queued reads and writes before it parks, and `on_idle` runs when a worker's ring goes
/// idle (nothing received for 500 ms; once per process it can be set), the moment to ask
/// the allocator to give freed memory back. Set the worker count, build, and run the server
/// on it.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use switchboard_server::{runtime, ServerConfig};
/// let config = ServerConfig::default();
/// let rt = runtime(&config, None).worker_threads(2).build()?;
/// rt.block_on(async {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
///     switchboard_server::run(listener, config, async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await
/// })
/// # }
/// ```
pub fn runtime(config: &ServerConfig, on_idle: Option<fn()>) -> tokio::runtime::Builder {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    if config.io_uring {
        rt.on_thread_park(uring::before_park);
        if let Some(hook) = on_idle {
            uring::on_idle(hook);
        }
    }
    let _ = (config, on_idle);
    rt
}

/// Checks that the transport `config` asks for works here. Epoll always does; io_uring
/// needs Linux 6.0+ with io_uring enabled (`/proc/sys/kernel/io_uring_disabled`), and this
/// crate's `io-uring` feature.
///
/// # Errors
/// Says what is missing.
pub fn check_transport(config: &ServerConfig) -> io::Result<()> {
    if !config.io_uring {
        return Ok(());
    }
    io_uring_available()
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
fn io_uring_available() -> io::Result<()> {
    uring::available()
}

#[cfg(not(all(feature = "io-uring", target_os = "linux")))]
fn io_uring_available() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "io_uring needs Linux and the io-uring feature of switchboard-server",
    ))
}

/// The listening socket: tokio's, or (io_uring) one whose connections are never registered
/// with the epoll driver they will not use.
pub(crate) enum Listener {
    Tokio(TcpListener),
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    Raw(UringListener),
}

/// An accepted connection, from either kind of [`Listener`].
pub(crate) enum Accepted {
    Tokio(TcpStream),
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    Std(std::net::TcpStream),
}

impl Listener {
    #[cfg_attr(
        not(all(feature = "io-uring", target_os = "linux")),
        allow(clippy::unnecessary_wraps)
    )]
    pub(crate) fn new(listener: TcpListener, config: &ServerConfig) -> io::Result<Self> {
        #[cfg(all(feature = "io-uring", target_os = "linux"))]
        if config.io_uring {
            let raw = UringListener::from_tokio(listener)?;
            return Ok(Self::Raw(raw));
        }
        let _ = config;
        Ok(Self::Tokio(listener))
    }

    pub(crate) async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
            Self::Tokio(l) => l.accept().await.map(|(s, p)| (Accepted::Tokio(s), p)),
            #[cfg(all(feature = "io-uring", target_os = "linux"))]
            Self::Raw(l) => l.accept().await.map(|(s, p)| (Accepted::Std(s), p)),
        }
    }
}

impl Accepted {
    /// Starts the connection's task: a tokio task over epoll; over io_uring, a task the
    /// ring of the worker that picks it up polls itself (see [`uring::spawn`]), whose stream
    /// is made there, on that ring.
    ///
    /// [`uring::spawn`]: switchboard_tokio::uring::spawn
    pub(crate) fn spawn(self, peer: SocketAddr, shared: &Arc<Shared>, tasks: &TaskTracker) {
        match self {
            Self::Tokio(tcp) => {
                let _ = tcp.set_nodelay(true);
                tasks.spawn(ConnTask::new(tcp, peer, shared));
            }
            #[cfg(all(feature = "io-uring", target_os = "linux"))]
            Self::Std(tcp) => {
                let _ = tcp.set_nodelay(true);
                let make = move || UringStream::new(tcp);
                let task = tasks.track_future(ConnTask::made_by(make, peer, shared));
                // A tokio task first, so connections spread over the workers as tokio
                // spreads tasks; it hands the connection to its worker's ring.
                tokio::spawn(async move {
                    if let Err(e) = uring::spawn(task) {
                        debug!(error = %e, "io_uring task failed");
                    }
                });
            }
        }
    }
}
