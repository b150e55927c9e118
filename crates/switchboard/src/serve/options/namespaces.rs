//! `[topics]` and `[namespaces.NAME]` in the config file (file only: no flags): who may
//! subscribe and publish, presence, join/leave events and history per namespace, read into
//! the server's `Namespaces`. Every mistake is one line naming the fix.

use anyhow::{anyhow, bail};
use switchboard_server::{
    NamespaceRules, Namespaces, PublishRule, SubscribeRule, CHAT_NAMESPACE, USER_NAMESPACE,
};
use toml::{Table, Value};

/// The keys of a namespace's table, for error messages.
const KEYS: &str = "subscribe, publish, presence, join_leave, history_size, history_ttl";

/// Which table is read: they differ in what they may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// `[topics]`: its history is the top-level `history_size` and `history_ttl`.
    Topics,
    /// `[namespaces.chat]`: members and join/leave events are the chat's own.
    Chat,
    /// `[namespaces.user]`: the owner rule stands.
    User,
    /// Any other namespace.
    Named,
}

/// The namespaces the file sets (`Namespaces::default()` when it sets none).
pub(super) fn from_file(
    topics: Option<&Value>,
    namespaces: Option<&Value>,
) -> anyhow::Result<Namespaces> {
    let mut ns = Namespaces::default();
    if let Some(topics) = topics {
        let table = topics.as_table().ok_or_else(|| {
            anyhow!("`topics` must be a table: write [topics] with the rules under it ({KEYS})")
        })?;
        // [topics] and the built-in namespaces start from their defaults; only the
        // namespaces the file names start closed.
        ns = ns.topics(rules(
            "[topics]",
            Section::Topics,
            NamespaceRules::open(),
            table,
        )?);
    }
    let Some(namespaces) = namespaces else {
        return Ok(ns);
    };
    let table = namespaces.as_table().ok_or_else(|| {
        anyhow!(
            "`namespaces` must be tables: write [namespaces.NAME] with the rules under it ({KEYS})"
        )
    })?;
    for (name, value) in table {
        let what = header(name);
        check_name(&what, name)?;
        let Some(table) = value.as_table() else {
            bail!("`namespaces.{name}` must be a table: write {what} with the rules under it ({KEYS})");
        };
        let (kind, start) = match name.as_str() {
            CHAT_NAMESPACE => (Section::Chat, NamespaceRules::open()),
            USER_NAMESPACE => (Section::User, NamespaceRules::user()),
            _ => (Section::Named, NamespaceRules::closed()),
        };
        ns = ns.namespace(name.as_str(), rules(&what, kind, start, table)?);
    }
    Ok(ns)
}

/// `[namespaces.NAME]`, quoted as TOML needs it.
fn header(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if bare {
        format!("[namespaces.{name}]")
    } else {
        format!("[namespaces.{name:?}]")
    }
}

/// Namespace names: what topics start with before their first `:`.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if !ok {
        bail!("{what}: a namespace is what topics start with before ':', 1-64 characters from A-Z, a-z, 0-9, '_', '-', '.' and '/'");
    }
    Ok(())
}

/// The rules `table` sets over `rules`.
fn rules(
    what: &str,
    kind: Section,
    mut rules: NamespaceRules,
    table: &Table,
) -> anyhow::Result<NamespaceRules> {
    for (key, value) in table {
        rules = match (key.as_str(), kind) {
            ("subscribe", Section::User) => bail!(
                "{what} subscribe: only the user ID may subscribe to user:ID, whatever is set; leave subscribe out"
            ),
            ("subscribe", _) => rules.subscribe(subscribe_rule(what, value)?),
            ("publish", _) => rules.publish(publish_rule(what, value)?),
            ("presence" | "join_leave", Section::Chat) => bail!(
                "{what} {key}: chat rooms always have their members and join/leave events; leave {key} out"
            ),
            ("presence", _) => rules.presence(boolean(what, key, value)?),
            ("join_leave", _) => rules.join_leave(boolean(what, key, value)?),
            ("history_size" | "history_ttl", Section::Topics) => bail!(
                "[topics] {key}: set the top-level {key} instead (every namespace starts from it)"
            ),
            ("history_size", _) => rules.history_size(size(what, value)?),
            ("history_ttl", _) => rules.history_ttl(duration(what, value)?),
            (other, _) => bail!("{what}: unknown key `{other}`; the keys are {KEYS}"),
        };
    }
    if rules.join_leave && !rules.presence {
        bail!("{what}: join_leave = true needs presence (join and leave events tell who is present); remove presence = false or join_leave = true");
    }
    Ok(rules)
}

fn subscribe_rule(what: &str, value: &Value) -> anyhow::Result<SubscribeRule> {
    Ok(match value.as_str() {
        Some("anyone") => SubscribeRule::Anyone,
        Some("authenticated") => SubscribeRule::Authenticated,
        Some("token") => SubscribeRule::Token,
        _ => bail!(
            "{what} subscribe = {}: write \"anyone\", \"authenticated\" or \"token\" (a subscription token)",
            shown(value)
        ),
    })
}

fn publish_rule(what: &str, value: &Value) -> anyhow::Result<PublishRule> {
    Ok(match value.as_str() {
        Some("nobody") => PublishRule::Nobody,
        Some("subscribers") => PublishRule::Subscribers,
        Some("authenticated") => PublishRule::Authenticated,
        Some("anyone") => PublishRule::Anyone,
        _ => bail!(
            "{what} publish = {}: write \"nobody\" (only the backend), \"subscribers\", \"authenticated\" or \"anyone\"",
            shown(value)
        ),
    })
}

fn boolean(what: &str, key: &str, value: &Value) -> anyhow::Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| anyhow!("{what} {key} = {}: write true or false", shown(value)))
}

fn size(what: &str, value: &Value) -> anyhow::Result<usize> {
    value
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            anyhow!(
                "{what} history_size = {}: write a number of publications (0 keeps none)",
                shown(value)
            )
        })
}

fn duration(what: &str, value: &Value) -> anyhow::Result<std::time::Duration> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        _ => String::new(),
    };
    crate::duration::parse(&text)
        .map_err(|e| anyhow!("{what} history_ttl = {}: {e}; 0 keeps none", shown(value)))
}

/// A value as the file wrote it (near enough for a message).
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(_) => "[…]".to_owned(),
        Value::Table(_) => "{…}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> anyhow::Result<Namespaces> {
        let file: Table = toml::from_str(text).unwrap();
        from_file(file.get("topics"), file.get("namespaces"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(ns) => panic!("accepted: {ns:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn the_example_of_the_help_reads() {
        let ns = parse(
            r#"
            [topics]
            subscribe = "authenticated"
            publish = "subscribers"
            join_leave = true

            [namespaces.private]
            subscribe = "token"
            publish = "nobody"
            presence = false
            history_size = 0
            history_ttl = "1m"

            [namespaces.board]
            publish = "authenticated"

            [namespaces.user]
            publish = "subscribers"

            [namespaces.chat]
            subscribe = "authenticated"
            history_size = 500
            "#,
        )
        .unwrap();
        let want = Namespaces::default()
            .topics(
                NamespaceRules::open()
                    .subscribe(SubscribeRule::Authenticated)
                    .publish(PublishRule::Subscribers)
                    .join_leave(true),
            )
            .namespace(
                "private",
                NamespaceRules::closed()
                    .presence(false)
                    .history_size(0)
                    .history_ttl(Duration::from_secs(60)),
            )
            // Named, so closed but for what it says.
            .namespace(
                "board",
                NamespaceRules::closed().publish(PublishRule::Authenticated),
            )
            .namespace(
                "user",
                NamespaceRules::user().publish(PublishRule::Subscribers),
            )
            .namespace(
                "chat",
                NamespaceRules::open()
                    .subscribe(SubscribeRule::Authenticated)
                    .history_size(500),
            );
        assert_eq!(ns, want);
        assert!(
            ns.rules_for("other:x").is_none(),
            "unknown once one is named"
        );
        assert_eq!(parse("").unwrap(), Namespaces::default());
        // Built-in ones only: the others stay open.
        let ns = parse("[namespaces.chat]\nhistory_size = 5\n").unwrap();
        assert!(ns.rules_for("other:x").is_some());
        // A name with dots or slashes is quoted, as TOML needs.
        let ns = parse("[namespaces.\"a.b/c\"]\nsubscribe = \"anyone\"\n").unwrap();
        assert!(ns.rules_for("a.b/c:x").is_some());
        let ttl = parse("[namespaces.x]\nhistory_ttl = 30\n").unwrap();
        assert_eq!(
            ttl.rules_for("x:1").and_then(|r| r.history_ttl),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn mistakes_are_one_line_naming_the_fix() {
        let cases = [
            ("[namespaces.private]\nsubscrib = \"token\"\n", "[namespaces.private]: unknown key `subscrib`; the keys are subscribe, publish"),
            ("[namespaces.private]\nsubscribe = \"tokens\"\n", r#"[namespaces.private] subscribe = "tokens": write "anyone", "authenticated" or "token""#),
            ("[namespaces.private]\npublish = 1\n", "[namespaces.private] publish = 1: write \"nobody\""),
            ("[namespaces.p]\npresence = \"off\"\n", r#"[namespaces.p] presence = "off": write true or false"#),
            ("[namespaces.p]\nhistory_size = -1\n", "[namespaces.p] history_size = -1: write a number"),
            ("[namespaces.p]\nhistory_ttl = \"soon\"\n", "[namespaces.p] history_ttl = \"soon\": \"soon\" is not a duration: write it as 10s"),
            ("[namespaces.p]\npresence = false\njoin_leave = true\n", "[namespaces.p]: join_leave = true needs presence"),
            ("[namespaces.user]\nsubscribe = \"anyone\"\n", "[namespaces.user] subscribe: only the user ID may subscribe to user:ID"),
            ("[namespaces.chat]\npresence = false\n", "[namespaces.chat] presence: chat rooms always have their members"),
            ("[topics]\nhistory_size = 5\n", "[topics] history_size: set the top-level history_size instead"),
            ("[topics]\nsubscribe = \"nobody\"\n", r#"[topics] subscribe = "nobody": write"#),
            ("[namespaces.\"a:b\"]\n", r#"[namespaces."a:b"]: a namespace is what topics start with before ':'"#),
            ("namespaces = 3\n", "`namespaces` must be tables: write [namespaces.NAME]"),
            ("[namespaces]\nprivate = \"token\"\n", "`namespaces.private` must be a table: write [namespaces.private]"),
            ("topics = \"open\"\n", "`topics` must be a table: write [topics]"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.starts_with(want), "{text:?}:\n got {got}\nwant {want}");
            assert_eq!(got.lines().count(), 1, "{got}");
        }
    }
}
