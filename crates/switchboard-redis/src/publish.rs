//! Publish (numbered, kept, sent: `lua/publish.lua`) and broadcast (sent only: a plain
//! `PUBLISH`).

use std::sync::Arc;
use std::time::Instant;

use switchboard_hub::engine::{Body, EngineError, Published};
use switchboard_hub::stream::{new_epoch, StreamPosition};

use crate::config::{expire_millis, expire_secs};
use crate::{payload, Shared};

/// Numbers `body` as `topic`'s next publication, keeps it and sends it to every node.
pub(crate) async fn publish(
    shared: Arc<Shared>,
    topic: String,
    body: Body,
) -> Result<Published, EngineError> {
    let started = Instant::now();
    let result = run_script(&shared, &topic, &body).await;
    match &result {
        Ok(_) => shared.stats.published(started.elapsed()),
        Err(err) => {
            shared.stats.publish_failed();
            tracing::debug!(topic = %topic, error = %err, "redis publish failed");
        }
    }
    result
}

async fn run_script(shared: &Shared, topic: &str, body: &Body) -> Result<Published, EngineError> {
    let config = &shared.config;
    let (size, ttl_ms) = if config.history.enabled() {
        (config.history.size, expire_millis(config.history.ttl))
    } else {
        (0, 0)
    };
    let meta = shared.keys.meta(topic);
    let stream = shared.keys.stream(topic);
    let channel = shared.keys.channel(topic);
    let epoch = new_epoch();
    let meta_ttl = expire_secs(config.meta_ttl);
    let (top, epoch): (u64, String) = shared
        .commands
        .run_once(|mut conn| async move {
            shared
                .scripts
                .publish
                .key(&meta)
                .key(&stream)
                .arg(&*epoch)
                .arg(meta_ttl)
                .arg(size)
                .arg(ttl_ms)
                .arg(&channel)
                .arg(u32::from(body.kind))
                .arg(&body.data[..])
                .invoke_async(&mut conn)
                .await
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
