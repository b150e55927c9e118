//! The engine's Lua scripts (in `src/lua/`), sent as `EVALSHA` and loaded on `NOSCRIPT`.

use redis::Script;

/// `lua/publish.lua`: number, keep and send one publication.
const PUBLISH: &str = include_str!("lua/publish.lua");
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
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            presence_add: Script::new(PRESENCE_ADD),
            presence_get: Script::new(PRESENCE_GET),
        }
    }
}
