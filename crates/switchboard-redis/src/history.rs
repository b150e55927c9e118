//! Reading a topic's position and history (`lua/history.lua`).

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;
use switchboard_hub::engine::{Body, EngineError, HistoryPage, HistoryQuery, Publication};
use switchboard_hub::stream::{new_epoch, StreamPosition};

use crate::config::expire_secs;
use crate::payload::parse_decimal;
use crate::Shared;

/// The most entries one read asks for (Redis' `COUNT` is a signed 64-bit number; a history
/// is far smaller anyway).
const MAX_LIMIT: usize = 1 << 30;

/// Reads what `topic`'s history holds for `query`.
pub(crate) async fn read(
    shared: Arc<Shared>,
    topic: Arc<str>,
    query: HistoryQuery,
) -> Result<HistoryPage, EngineError> {
    let shared: &Shared = &shared;
    let config = &shared.config;
    let mut limit = query.limit.min(MAX_LIMIT);
    let start = match query.since {
        Some(since) => match since.checked_add(1) {
            Some(first) => format!("{first}-0"),
            // A position no stream reaches (a client's made-up offset): nothing comes after
            // it, so only the position is read (the caller finds it beyond the top).
            None => {
                limit = 0;
                String::new()
            }
        },
        None => String::new(),
    };
    let meta = shared.keys.meta(&topic);
    let stream = shared.keys.stream(&topic);
    let epoch = new_epoch();
    let meta_ttl = expire_secs(config.meta_ttl);
    let (meta, stream, epoch, start) = (&meta, &stream, &*epoch, &start);
    let reply: Value = shared
        .commands
        .run(|mut conn| async move {
            shared
                .scripts
                .history
                .key(meta)
                .key(stream)
                .arg(epoch)
                .arg(meta_ttl)
                .arg(start)
                .arg(limit)
                .invoke_async(&mut conn)
                .await
        })
        .await?;
    let reply = Reply::parse(reply)?;
    // The TTL of the topic's latest publication (none: a position no publication came
    // with, or kept by an older version: the stream's own expiry bounds it).
    let oldest_kept = reply
        .ttl_ms
        .map_or(0, |ttl| reply.now_ms.saturating_sub(ttl));
    let epoch: Arc<str> = reply.epoch.into();
    let mut publications = Vec::with_capacity(reply.entries.len());
    for entry in reply.entries {
        let entry = parse_entry(entry)?;
        if entry.at_ms < oldest_kept {
            continue;
        }
        publications.push(Publication {
            topic: topic.clone(),
            position: Some(StreamPosition {
                offset: entry.offset,
                epoch: epoch.clone(),
            }),
            body: entry.body,
        });
    }
    if query.since.is_none() {
        publications.reverse();
    }
    Ok(HistoryPage {
        top: StreamPosition {
            offset: reply.top,
            epoch,
        },
        publications,
    })
}

/// The script's answer: `{top, epoch, now_ms, entries, ttl_ms}`.
#[derive(Debug)]
struct Reply {
    top: u64,
    epoch: String,
    now_ms: u64,
    entries: Vec<Value>,
    /// The history TTL of the topic's latest publication (`None`: not known).
    ttl_ms: Option<u64>,
}

impl Reply {
    fn parse(value: Value) -> Result<Self, EngineError> {
        let Value::Array(items) = value else {
            return Err(protocol("history reply is not an array"));
        };
        let [top, epoch, now, entries, ttl] =
            <[Value; 5]>::try_from(items).map_err(|_| protocol("history reply has not 5 items"))?;
        let epoch = match epoch {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        }
        .filter(|e| !e.is_empty())
        .ok_or_else(|| protocol("history reply has no epoch"))?;
        let Value::Array(entries) = entries else {
            return Err(protocol("history entries are not an array"));
        };
        Ok(Self {
            top: number(&top).ok_or_else(|| protocol("history top is not a number"))?,
            epoch,
            now_ms: number(&now).ok_or_else(|| protocol("history clock is not a number"))?,
            entries,
            ttl_ms: number(&ttl),
        })
    }
}

/// One stream entry: `[ "<offset>-0", [field, value, …] ]`.
#[derive(Debug)]
struct Entry {
    offset: u64,
    at_ms: u64,
    body: Body,
}

fn parse_entry(value: Value) -> Result<Entry, EngineError> {
    let Value::Array(parts) = value else {
        return Err(protocol("stream entry is not an array"));
    };
    let [id, fields] =
        <[Value; 2]>::try_from(parts).map_err(|_| protocol("stream entry has not 2 items"))?;
    let offset = match &id {
        Value::BulkString(id) => id
            .strip_suffix(b"-0")
            .and_then(parse_decimal)
            .filter(|&o| o > 0),
        _ => None,
    }
    .ok_or_else(|| protocol("stream entry ID is not <offset>-0"))?;
    let Value::Array(fields) = fields else {
        return Err(protocol("stream entry fields are not an array"));
    };
    let (mut kind, mut at_ms, mut data) = (None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let Value::BulkString(name) = name else {
            continue;
        };
        match name.as_slice() {
            b"k" => kind = number(&value).and_then(|k| u8::try_from(k).ok()),
            b"t" => at_ms = number(&value),
            b"d" => {
                if let Value::BulkString(bytes) = value {
                    data = Some(Bytes::from(bytes));
                }
            }
            _ => {}
        }
    }
    match (kind, at_ms, data) {
        (Some(kind), Some(at_ms), Some(data)) => Ok(Entry {
            offset,
            at_ms,
            body: Body { kind, data },
        }),
        _ => Err(protocol("stream entry lacks k, t or d")),
    }
}

/// A non-negative integer reply or decimal string.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => parse_decimal(bytes),
        Value::SimpleString(s) => parse_decimal(s.as_bytes()),
        _ => None,
    }
}

fn protocol(what: &str) -> EngineError {
    EngineError::Protocol(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn parses_an_entry() {
        let entry = Value::Array(vec![
            bulk(b"12-0"),
            Value::Array(vec![
                bulk(b"k"),
                bulk(b"3"),
                bulk(b"t"),
                bulk(b"1700000000000"),
                bulk(b"d"),
                bulk(b"\0hi"),
            ]),
        ]);
        let entry = parse_entry(entry).unwrap();
        assert_eq!(entry.offset, 12);
        assert_eq!(entry.at_ms, 1_700_000_000_000);
        assert_eq!(entry.body.kind, 3);
        assert_eq!(&entry.body.data[..], b"\0hi");
    }

    #[test]
    fn malformed_entries_are_errors() {
        let bad = [
            bulk(b"x"),
            Value::Array(vec![bulk(b"12-1"), Value::Array(vec![])]),
            Value::Array(vec![bulk(b"0-0"), Value::Array(vec![])]),
            Value::Array(vec![
                bulk(b"5-0"),
                Value::Array(vec![bulk(b"k"), bulk(b"1")]),
            ]),
            Value::Array(vec![
                bulk(b"5-0"),
                Value::Array(vec![
                    bulk(b"k"),
                    bulk(b"300"),
                    bulk(b"t"),
                    bulk(b"1"),
                    bulk(b"d"),
                    bulk(b""),
                ]),
            ]),
        ];
        for value in bad {
            assert!(parse_entry(value).is_err());
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(Reply::parse(Value::Nil).is_err());
        assert!(Reply::parse(Value::Array(vec![Value::Int(1)])).is_err());
        let no_epoch = Value::Array(vec![
            Value::Int(1),
            bulk(b""),
            bulk(b"1"),
            Value::Array(vec![]),
            bulk(b""),
        ]);
        assert!(Reply::parse(no_epoch).is_err());
        let ok = |ttl: &[u8]| {
            Value::Array(vec![
                bulk(b"7"),
                bulk(b"epoch"),
                bulk(b"1"),
                Value::Array(vec![]),
                bulk(ttl),
            ])
        };
        let reply = Reply::parse(ok(b"60000")).unwrap();
        assert_eq!((reply.top, reply.epoch.as_str()), (7, "epoch"));
        assert_eq!(reply.ttl_ms, Some(60_000));
        assert_eq!(Reply::parse(ok(b"")).unwrap().ttl_ms, None);
    }
}
