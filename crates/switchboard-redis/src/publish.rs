//! Publish (numbered, kept, sent: `lua/publish.lua`) and broadcast (sent only: a plain
//! `PUBLISH`).

use std::sync::Arc;
use std::time::Instant;

use switchboard_hub::engine::{Body, EngineError, Published, StreamOptions};
use switchboard_hub::stream::{new_epoch, StreamPosition};

use crate::config::{expire_millis, expire_secs};
use crate::{payload, Shared};

/// Numbers `body` as `topic`'s next publication, keeps it (within `options`) and sends it to
/// every node.
pub(crate) async fn publish(
    shared: Arc<Shared>,
    topic: String,
    body: Body,
    options: StreamOptions,
) -> Result<Published, EngineError> {
    let started = Instant::now();
    let result = run_script(&shared, &topic, &body, options).await;
    match &result {
        Ok(_) => shared.stats.published(started.elapsed()),
        Err(err) => {
            shared.stats.publish_failed();
            tracing::debug!(topic = %topic, error = %err, "redis publish failed");
        }
    }
    result
}

async fn run_script(
    shared: &Shared,
    topic: &str,
    body: &Body,
    options: StreamOptions,
) -> Result<Published, EngineError> {
    let history = options.history;
    let (size, ttl_ms) = if history.enabled() {
        (history.size, expire_millis(history.ttl))
    } else {
        (0, 0)
    };
    let meta = shared.keys.meta(topic);
    let stream = shared.keys.stream(topic);
    let channel = shared.keys.channel(topic);
    let epoch = new_epoch();
    // The position must outlive the history, or a stream could outlive its offsets.
    let meta_ttl = expire_secs(shared.config.meta_ttl.max(history.ttl));
    // EVALSHA, and on NOSCRIPT (a Redis that restarted) EVAL with the script itself, in one
    // step: redis-rs's `invoke_async` loads the script and then runs it, and a publish sent
    // meanwhile (a client's next one, pipelined) would be numbered before it.
    let (top, epoch): (u64, String) = shared
        .commands
        .run_once(|mut conn| async move {
            let call = |cmd: &str, script: &str| {
                let mut c = redis::cmd(cmd);
                c.arg(script)
                    .arg(2)
                    .arg(&meta)
                    .arg(&stream)
                    .arg(&*epoch)
                    .arg(meta_ttl)
                    .arg(size)
                    .arg(ttl_ms)
                    .arg(&channel)
                    .arg(u32::from(body.kind))
                    .arg(&body.data[..]);
                c
            };
            let hash = shared.scripts.publish.get_hash();
            match call("EVALSHA", hash).query_async(&mut conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    call("EVAL", crate::scripts::PUBLISH)
                        .query_async(&mut conn)
                        .await
                }
                other => other,
            }
        })
        .await?;
    if top == 0 || epoch.is_empty() {
        return Err(EngineError::Protocol(format!(
            "publish script answered offset {top}, epoch {epoch:?}"
        )));
    }
    Ok(Published {
        position: StreamPosition {
            offset: top,
            epoch: epoch.into(),
        },
        delivered: None,
    })
}

/// Sends `body` to every node's subscribers of `topic`, not numbered, not kept.
pub(crate) async fn broadcast(
    shared: Arc<Shared>,
    topic: String,
    body: Body,
) -> Result<(), EngineError> {
    let channel = shared.keys.channel(&topic);
    let message = payload::encode_broadcast(&body);
    let result = shared
        .commands
        .run_once(|mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(message)
                .query_async::<u64>(&mut conn)
                .await
        })
        .await;
    match result {
        Ok(_) => {
            shared.stats.broadcasted();
            Ok(())
        }
        Err(err) => {
            shared.stats.publish_failed();
            Err(err)
        }
    }
}
