//! Names of this engine's Redis keys and pub/sub channels.
//!
//! With prefix `p` (default `switchboard`) and topic `t`:
//!
//! | What | Type | Name |
//! |---|---|---|
//! | position: epoch `e`, top offset `s` | HASH | `p.meta.t` |
//! | history: entry ID `<offset>-0`, fields `k` kind, `t` ms, `d` data | STREAM | `p.stream.t` |
//! | delivery to every node | channel | `p.pub.t` |
//! | presence: client → user and name | HASH | `p.presence.data.t` |
//! | presence expiry: client → unix seconds | ZSET | `p.presence.expire.t` |
//! | a node's pub/sub probe | channel | `p.probe.<node>` |
//!
//! Topic names go into key names as they are (Redis keys are binary safe). Redis Cluster is
//! not supported: a topic's meta and stream keys have no common hash tag.

/// Builds the names for one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    meta: String,
    stream: String,
    channel: String,
    presence_data: String,
    presence_expire: String,
    probe: String,
}

impl Keys {
    /// The names under `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            meta: format!("{prefix}.meta."),
            stream: format!("{prefix}.stream."),
            channel: format!("{prefix}.pub."),
            presence_data: format!("{prefix}.presence.data."),
            presence_expire: format!("{prefix}.presence.expire."),
            probe: format!("{prefix}.probe."),
        }
    }

    /// The topic's position hash.
    pub(crate) fn meta(&self, topic: &str) -> String {
        join(&self.meta, topic)
    }

    /// The topic's history stream.
    pub(crate) fn stream(&self, topic: &str) -> String {
        join(&self.stream, topic)
    }

    /// The channel that carries the topic's publications to every node.
    pub(crate) fn channel(&self, topic: &str) -> String {
        join(&self.channel, topic)
    }

    /// The topic of a publication channel, or `None` for another channel.
    pub(crate) fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.channel.as_str())
    }

    /// The topic's presence hash.
    pub(crate) fn presence_data(&self, topic: &str) -> String {
        join(&self.presence_data, topic)
    }

    /// The topic's presence expiry set.
    pub(crate) fn presence_expire(&self, topic: &str) -> String {
        join(&self.presence_expire, topic)
    }

    /// The probe channel of the node `node`.
    pub(crate) fn probe(&self, node: &str) -> String {
        join(&self.probe, node)
    }
}

fn join(prefix: &str, name: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + name.len());
    key.push_str(prefix);
    key.push_str(name);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_topics() {
        let keys = Keys::new("sb");
        assert_eq!(keys.meta("chat:lobby"), "sb.meta.chat:lobby");
        assert_eq!(keys.stream("chat:lobby"), "sb.stream.chat:lobby");
        assert_eq!(keys.channel("a.b"), "sb.pub.a.b");
        assert_eq!(keys.topic_of("sb.pub.a.b"), Some("a.b"));
        assert_eq!(keys.topic_of("sb.probe.n1"), None);
        assert_eq!(keys.presence_data("t"), "sb.presence.data.t");
        assert_eq!(keys.presence_expire("t"), "sb.presence.expire.t");
        assert_eq!(keys.probe("n1"), "sb.probe.n1");
    }
}
