//! [`Server::run`]: the accept loop, and the shutdown that closes every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::listener::Listener;
use crate::Server;

/// How often topics' histories are aged and idle streams dropped.
const TRIM_EVERY: Duration = Duration::from_secs(5);

impl Server {
    /// Accepts connections on `listener` until `shutdown` completes; then stops accepting,
    /// flushes what every connection has queued, closes each with 1001 Going Away and waits
    /// (up to [`ServerConfig::shutdown_timeout`](crate::ServerConfig::shutdown_timeout))
    /// for the close handshakes.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        // A TaskTracker rather than a JoinSet: no JoinHandle entry is kept per connection.
        let tasks = shared.tasks.clone();
        let ticker = shared.registry.tick_interval().map(|every| {
            let registry = Arc::clone(&shared.registry);
            tokio::spawn(async move {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    t.tick().await;
                    registry.tick();
                }
            })
        });
        // Ages topics' histories and drops the streams of topics nobody uses any more.
        let trimmer = {
            let hub = shared.hub.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(TRIM_EVERY);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    t.tick().await;
                    hub.trim(std::time::Instant::now());
                }
            })
        };
        tokio::pin!(shutdown);
        let listener = Listener::new(listener, &shared.config)?;
        let mut backoff = Duration::from_millis(5);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((conn, peer)) => {
                        backoff = Duration::from_millis(5);
                        shared.metrics.tcp_accepted.add(1);
                        conn.spawn(peer, &shared, &tasks);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
            }
        }
        drop(listener);
        info!(
            open = shared.registry.open(),
            "shutting down: closing connections with 1001"
        );
        shared.registry.trigger();
        tasks.close();
        if tokio::time::timeout(shared.config.shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                open = tasks.len(),
                "shutdown deadline passed; dropping remaining connections"
            );
        }
        if let Some(t) = ticker {
            t.abort();
        }
        trimmer.abort();
        Ok(())
    }
}
