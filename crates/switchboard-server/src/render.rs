//! What subscribers receive for a publication: the server's [`Render`], which the hub calls
//! once per publication per node (docs/protocol.md has the formats).
//!
//! Publications cross the engine as data ([`Body`]): a kind byte from this file and the
//! payload. The frame carries the position, which only the engine knows, so it is made
//! here, on each node, from the data.

use std::sync::Arc;

use switchboard_hub::{Body, Engine, Hub, Publication, Render, TopicOptions};
use switchboard_proto::frame::{encode_shared_binary, encode_shared_text, SharedFrame};

/// A `/ws` or API publish of JSON: the body is the `data` value's JSON text.
pub(crate) const JSON: u8 = 1;
/// A `/ws` binary publish: the body is the payload.
pub(crate) const BINARY: u8 = 2;
/// A chat message: the body is a JSON object of its fields (`room`, `id`, `from`, `text`,
/// `time`); the frame adds `type`, `offset` and `epoch`.
pub(crate) const CHAT: u8 = 3;
/// A text message sent as it is (chat join, leave and typing events: broadcasts).
pub(crate) const TEXT: u8 = 4;

/// A body of `kind` holding `data`.
pub(crate) fn body(kind: u8, data: impl Into<bytes::Bytes>) -> Body {
    Body {
        kind,
        data: data.into(),
    }
}

/// A publication of JSON `data` for [`Hub::publish`], delivered as `/ws` delivers a
/// publish (`{"type":"message","topic":…,"offset":…,"epoch":…,"data":…}`); for programs that
/// embed the server and publish from their own code.
///
/// ```
/// let body = switchboard_server::publication_json(r#"{"price":3}"#).unwrap();
/// assert!(switchboard_server::publication_json("{nope").is_err());
/// # let _ = body;
/// ```
pub fn publication_json(data: &str) -> Result<Body, serde_json::Error> {
    let _: &serde_json::value::RawValue = serde_json::from_str(data)?;
    Ok(body(JSON, data.to_owned()))
}

/// A publication of bytes for [`Hub::publish`], delivered in the binary layout (topic,
/// offset, epoch, payload: docs/protocol.md).
pub fn publication_binary(payload: impl Into<bytes::Bytes>) -> Body {
    body(BINARY, payload)
}

/// The server's formats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Formats;

/// A hub on `engine` rendering the server's formats, each topic's stream kept by `options`.
pub(crate) fn hub_on(engine: Arc<dyn Engine>, options: impl TopicOptions) -> Hub {
    Hub::with_options(engine, Arc::new(Formats), options)
}

/// A hub for one node (the in-memory engine) rendering the server's formats, every topic's
/// history bounded by `config` (tests).
#[cfg(test)]
pub(crate) fn memory_hub(config: switchboard_hub::HubConfig) -> Hub {
    hub_on(
        Arc::new(switchboard_hub::MemoryEngine::new()),
        switchboard_hub::StreamOptions::new(config.limits()),
    )
}

/// An epoch as a JSON string's contents: engines make them from letters and digits; anything
/// else (a tampered backend) is left out rather than breaking the JSON.
fn epoch_text(epoch: &str) -> &str {
    if epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
        epoch
    } else {
        ""
    }
}

impl Render for Formats {
    fn render(&self, p: &Publication) -> SharedFrame {
        let (offset, epoch) = p
            .position
            .as_ref()
            .map_or((0, ""), |at| (at.offset, epoch_text(&at.epoch)));
        let mut digits = itoa::Buffer::new();
        let offset = digits.format(offset);
        let text = std::str::from_utf8(&p.body.data);
        match (p.body.kind, text) {
            // Topics are checked to need no JSON escaping (`pubsub::valid_topic`).
            (JSON, Ok(data)) => encode_shared_text(&[
                r#"{"type":"message","topic":""#,
                &p.topic,
                r#"","offset":"#,
                offset,
                r#","epoch":""#,
                epoch,
                r#"","data":"#,
                data,
                "}",
            ]),
            (CHAT, Ok(fields)) if fields.starts_with('{') => encode_shared_text(&[
                r#"{"type":"message","offset":"#,
                offset,
                r#","epoch":""#,
                epoch,
                r#"","#,
                &fields[1..],
            ]),
            (TEXT, Ok(text)) => encode_shared_text(&[text]),
            (BINARY, _) => {
                let offset = p.position.as_ref().map_or(0, |at| at.offset);
                let (n, m) = (p.topic.len().min(255), epoch.len().min(255));
                encode_shared_binary(&[
                    &[n as u8],
                    &p.topic.as_bytes()[..n],
                    &offset.to_be_bytes(),
                    &[m as u8],
                    &epoch.as_bytes()[..m],
                    &p.body.data,
                ])
            }
            // Not one of ours (another version's kind, or bytes that are not what the kind
            // says): passed on as binary, never as invalid text.
            _ => encode_shared_binary(&[&p.body.data]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_hub::StreamPosition;

    fn publication(kind: u8, data: &'static str) -> Publication {
        Publication {
            topic: "news".into(),
            position: Some(StreamPosition {
                offset: 258,
                epoch: "ab".into(),
            }),
            body: body(kind, data),
        }
    }

    #[test]
    fn each_kind_renders_its_format() {
        let f = Formats.render(&publication(JSON, r#"{"n":1}"#));
        assert_eq!(
            &f.payload()[..],
            br#"{"type":"message","topic":"news","offset":258,"epoch":"ab","data":{"n":1}}"#
        );
        let f = Formats.render(&publication(CHAT, r#"{"room":"r","text":"hi"}"#));
        assert_eq!(
            &f.payload()[..],
            br#"{"type":"message","offset":258,"epoch":"ab","room":"r","text":"hi"}"#
        );
        let f = Formats.render(&publication(BINARY, "\x01"));
        assert_eq!(
            &f.payload()[..],
            b"\x04news\x00\x00\x00\x00\x00\x00\x01\x02\x02ab\x01"
        );
        let f = Formats.render(&publication(TEXT, "as is"));
        assert_eq!(&f.payload()[..], b"as is");
    }
}
