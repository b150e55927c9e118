//! Presence: who is in a topic, kept in Redis so every node sees the same, and expiring
//! when the node that added an entry stops refreshing it.
//!
//! Per topic, a hash `client → entry` and a sorted set `client → expire-at` (unix seconds,
//! the Redis server's clock). Reading drops the expired entries first
//! (`lua/presence_get.lua`). This node remembers the entries it added and re-adds them every
//! [`presence_refresh`](crate::RedisConfig::presence_refresh) (`lua/presence_add.lua`).
//!
//! An entry is stored as `<user length>:<user><name>` (binary-safe, lengths in bytes).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use redis::Value;
use switchboard_hub::engine::{EngineError, PresenceEntry, PresenceStats};
use tokio::sync::watch;

use crate::config::expire_secs;
use crate::payload::parse_decimal;
use crate::Shared;

/// How many entries one refresh call carries.
const REFRESH_BATCH: usize = 500;

/// Entries by topic, then by client.
type Entries = HashMap<Arc<str>, HashMap<Arc<str>, PresenceEntry>>;

/// The entries this node added and has not removed.
#[derive(Debug, Default)]
pub(crate) struct PresenceKeeper {
    entries: Mutex<Entries>,
}

impl PresenceKeeper {
    fn with<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn insert(&self, topic: &Arc<str>, entry: PresenceEntry) {
        self.with(|m| {
            m.entry(topic.clone())
                .or_default()
                .insert(entry.client.clone(), entry);
        });
    }

    /// Forgets an entry.
    fn forget(&self, topic: &str, client: &str) {
        self.with(|m| {
            let Some(clients) = m.get_mut(topic) else {
                return;
            };
            clients.remove(client);
            if clients.is_empty() {
                m.remove(topic);
            }
        })
    }

    fn contains(&self, topic: &str, client: &str) -> bool {
        self.with(|m| m.get(topic).is_some_and(|c| c.contains_key(client)))
    }

    fn snapshot(&self) -> Vec<(Arc<str>, Vec<PresenceEntry>)> {
        self.with(|m| {
            m.iter()
                .map(|(topic, clients)| (topic.clone(), clients.values().cloned().collect()))
                .collect()
        })
    }
}

/// Adds (or refreshes) `entry` in `topic` and remembers it for the refresher.
///
/// The entry is remembered even when the write fails (Redis down): the refresher writes it
/// once Redis is back, as the trait says the engine keeps it until `presence_remove`.
pub(crate) async fn add(
    shared: Arc<Shared>,
    keeper: Arc<PresenceKeeper>,
    topic: Arc<str>,
    entry: PresenceEntry,
) -> Result<(), EngineError> {
    keeper.insert(&topic, entry.clone());
    write(&shared, &topic, std::slice::from_ref(&entry)).await
}

/// Removes `client` from `topic`.
pub(crate) async fn remove(
    shared: Arc<Shared>,
    keeper: Arc<PresenceKeeper>,
    topic: Arc<str>,
    client: Arc<str>,
) -> Result<(), EngineError> {
    keeper.forget(&topic, &client);
    delete(&shared, &topic, &[client]).await
}

/// Who is present in `topic` (expired entries dropped first).
pub(crate) async fn get(
    shared: Arc<Shared>,
    topic: String,
) -> Result<Vec<PresenceEntry>, EngineError> {
    let shared: &Shared = &shared;
    let data = shared.keys.presence_data(&topic);
    let expire = shared.keys.presence_expire(&topic);
    let (data, expire) = (&data, &expire);
    let reply: Value = shared
        .commands
        .run(|mut conn| async move {
            shared
                .scripts
                .presence_get
                .key(data)
                .key(expire)
                .invoke_async(&mut conn)
                .await
        })
        .await?;
    let Value::Array(items) = reply else {
        return Err(EngineError::Protocol(
            "presence reply is not an array".into(),
        ));
    };
    let mut entries = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(client), Some(encoded)) = (items.next(), items.next()) {
        match (client, encoded) {
            (Value::BulkString(client), Value::BulkString(encoded)) => {
                match (String::from_utf8(client), decode_entry(&encoded)) {
                    (Ok(client), Some((user, name, info))) => entries.push(PresenceEntry {
                        client: client.into(),
                        user: user.into(),
                        name: name.into(),
                        info: info.into(),
                    }),
                    _ => tracing::warn!(topic = %topic, "skipping a malformed presence entry"),
                }
            }
            _ => {
                return Err(EngineError::Protocol(
                    "presence entry is not a string".into(),
                ))
            }
        }
    }
    Ok(entries)
}

/// How many are present in `topic`: connections, and distinct users (anonymous connections,
/// with an empty user, count one each).
pub(crate) async fn stats(
    shared: Arc<Shared>,
    topic: String,
) -> Result<PresenceStats, EngineError> {
    let entries = get(shared, topic).await?;
    let mut users = HashSet::new();
    let mut anonymous = 0;
    for entry in &entries {
        if entry.user.is_empty() {
            anonymous += 1;
        } else {
            users.insert(entry.user.clone());
        }
    }
    Ok(PresenceStats {
        clients: entries.len(),
        users: users.len() + anonymous,
    })
}

/// Writes entries of one topic (one script call).
async fn write(shared: &Shared, topic: &str, entries: &[PresenceEntry]) -> Result<(), EngineError> {
    let data = shared.keys.presence_data(topic);
    let expire = shared.keys.presence_expire(topic);
    let ttl = expire_secs(shared.config.presence_ttl);
    let (data, expire) = (&data, &expire);
    shared
        .commands
        .run(|mut conn| async move {
            let mut call = shared.scripts.presence_add.key(data);
            call.key(expire).arg(ttl);
            for entry in entries {
                call.arg(entry.client.as_bytes()).arg(encode_entry(
                    &entry.user,
                    &entry.name,
                    &entry.info,
                ));
            }
            call.invoke_async::<u64>(&mut conn).await
        })
        .await
        .map(|_| ())
}

/// Deletes entries of one topic (`HDEL` + `ZREM`, atomically).
async fn delete(shared: &Shared, topic: &str, clients: &[Arc<str>]) -> Result<(), EngineError> {
    let data = shared.keys.presence_data(topic);
    let expire = shared.keys.presence_expire(topic);
    let clients: Vec<&str> = clients.iter().map(|c| &**c).collect();
    let (data, expire, clients) = (&data, &expire, &clients);
    shared
        .commands
        .run(|mut conn| async move {
            redis::pipe()
                .atomic()
                .hdel(data, clients)
                .zrem(expire, clients)
                .exec_async(&mut conn)
                .await
        })
        .await
}

/// Starts the task that re-adds this node's entries every `presence_refresh`, until the
/// engine is dropped.
pub(crate) fn spawn_refresher(
    shared: Arc<Shared>,
    keeper: Arc<PresenceKeeper>,
    mut shutdown: watch::Receiver<()>,
) {
    let period = shared.config.presence_refresh;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => refresh(&shared, &keeper).await,
            }
        }
    });
}

/// One refresh round; stops at the first failure (Redis is down: the next round retries).
async fn refresh(shared: &Shared, keeper: &PresenceKeeper) {
    for (topic, entries) in keeper.snapshot() {
        for batch in entries.chunks(REFRESH_BATCH) {
            if let Err(err) = write(shared, &topic, batch).await {
                tracing::warn!(error = %err, "presence refresh failed");
                return;
            }
            // An entry removed while it was being refreshed was just written back: delete it
            // again.
            let gone: Vec<Arc<str>> = batch
                .iter()
                .filter(|e| !keeper.contains(&topic, &e.client))
                .map(|e| e.client.clone())
                .collect();
            if !gone.is_empty() {
                if let Err(err) = delete(shared, &topic, &gone).await {
                    tracing::warn!(error = %err, "presence refresh failed");
                    return;
                }
            }
        }
    }
}

/// `i<user length>:<user><name length>:<name><info>` (the `i` marks the layout with info;
/// entries written before it, `<user length>:<user><name>`, are still read).
fn encode_entry(user: &str, name: &str, info: &str) -> Vec<u8> {
    let mut out = format!("i{}:", user.len()).into_bytes();
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(format!("{}:", name.len()).as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(info.as_bytes());
    out
}

/// A length-prefixed field (`<length>:<bytes>`) at the start of `bytes`, and what follows.
fn field(bytes: &[u8]) -> Option<(String, &[u8])> {
    let colon = bytes.iter().position(|&b| b == b':')?;
    let len = usize::try_from(parse_decimal(&bytes[..colon])?).ok()?;
    let rest = &bytes[colon + 1..];
    let value = String::from_utf8(rest.get(..len)?.to_vec()).ok()?;
    Some((value, rest.get(len..)?))
}

/// `(user, name, info)` of an encoded entry, or `None` if it is malformed.
fn decode_entry(bytes: &[u8]) -> Option<(String, String, String)> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    match bytes.strip_prefix(b"i") {
        Some(bytes) => {
            let (user, rest) = field(bytes)?;
            let (name, info) = field(rest)?;
            Some((user, name, text(info)?))
        }
        None => {
            let (user, name) = field(bytes)?;
            Some((user, text(name)?, String::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for (user, name, info) in [
            ("", "", ""),
            ("u1", "Ann", r#"{"role":"admin"}"#),
            ("a:b", "c:d", ""),
            ("ü", "名前", "[1,2]"),
        ] {
            let encoded = encode_entry(user, name, info);
            assert_eq!(
                decode_entry(&encoded),
                Some((user.to_owned(), name.to_owned(), info.to_owned()))
            );
        }
        // Written before entries carried info.
        assert_eq!(
            decode_entry(b"2:u1Ann"),
            Some(("u1".to_owned(), "Ann".to_owned(), String::new()))
        );
    }

    #[test]
    fn malformed_entries_are_none() {
        for bad in [
            &b""[..],
            b"x",
            b"5:abc",
            b"-1:a",
            b":a",
            b"1:\xff",
            b"0:\xff",
            b"i2:u1",
            b"i2:u13:An",
            b"i0:0:\xff",
        ] {
            assert_eq!(decode_entry(bad), None, "{bad:?}");
        }
    }
}
