//! The engine's Lua scripts (in `src/lua/`), sent as `EVALSHA` and loaded on `NOSCRIPT`.

use redis::Script;

/// `lua/publish.lua`: number, keep and send one publication.
pub(crate) const PUBLISH: &str = include_str!("lua/publish.lua");
/// `lua/history.lua`: a topic's position and part of its history.
const HISTORY: &str = include_str!("lua/history.lua");
/// `lua/presence_add.lua`: add or refresh presence entries.
const PRESENCE_ADD: &str = include_str!("lua/presence_add.lua");
/// `lua/presence_get.lua`: drop expired presence entries, return the others.
const PRESENCE_GET: &str = include_str!("lua/presence_get.lua");

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) history: Script,
    pub(crate) presence_add: Script,
    pub(crate) presence_get: Script,
}

impl Scripts {
    /// Loads every script into Redis's script cache (`SCRIPT LOAD`), so the first `EVALSHA`s
    /// find them: at connect, and after the node reconnected to a Redis that may have
    /// restarted (which empties the cache). A publish that still finds its script missing
    /// runs it with `EVAL`; in that moment a client's pipelined publishes may be numbered
    /// out of the order it sent them.
    pub(crate) async fn load(
        commands: &crate::command::Commands,
    ) -> Result<(), switchboard_hub::engine::EngineError> {
        for body in [PUBLISH, HISTORY, PRESENCE_ADD, PRESENCE_GET] {
            commands
                .run(|mut c| async move {
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(body)
                        .query_async::<String>(&mut c)
                        .await
                })
                .await?;
        }
        Ok(())
    }

    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            presence_add: Script::new(PRESENCE_ADD),
            presence_get: Script::new(PRESENCE_GET),
        }
    }
}
