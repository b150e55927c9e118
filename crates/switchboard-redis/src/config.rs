//! How a [`RedisEngine`](crate::RedisEngine) connects and what it keeps.

use std::time::Duration;

/// The default key and channel prefix.
pub const DEFAULT_PREFIX: &str = "switchboard";

/// Settings of a [`RedisEngine`](crate::RedisEngine).
///
/// ```
/// use std::time::Duration;
/// use switchboard_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379/0");
/// assert_eq!(config.prefix, "switchboard");
/// assert_eq!(config.command_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[:password@]host:port[/db]` (what the `redis` crate accepts).
    pub url: String,
    /// Prefix of every key and channel this engine uses (several deployments can share one
    /// Redis with different prefixes). Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// How long a topic's position (epoch and top offset) outlives its last publication or
    /// history read (at least as long as the topic's history TTL). When it expires the topic
    /// starts a new epoch. Default 30 days. (Each topic's history bounds come with its
    /// publications: [`StreamOptions`](switchboard_hub::StreamOptions).)
    pub meta_ttl: Duration,
    /// A presence entry that is not refreshed for this long expires (its node died).
    /// Default 60 s.
    pub presence_ttl: Duration,
    /// How often this engine refreshes the presence entries it added. Must be well below
    /// [`presence_ttl`](Self::presence_ttl). Default 25 s.
    pub presence_refresh: Duration,
    /// Every Redis command (and the pub/sub probe) must answer within this. Default 5 s.
    pub command_timeout: Duration,
    /// When the pub/sub connection received nothing for this long, the engine publishes a
    /// probe to itself; no probe back within [`command_timeout`](Self::command_timeout) means
    /// the connection is wedged and it is replaced. Default 5 s.
    pub probe_interval: Duration,
}

impl RedisConfig {
    /// The defaults, with Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            meta_ttl: Duration::from_secs(30 * 24 * 3600),
            presence_ttl: Duration::from_secs(60),
            presence_refresh: Duration::from_secs(25),
            command_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(5),
        }
    }

    /// [`url`](Self::url) with any password replaced by `***`, for messages and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl Default for RedisConfig {
    /// The defaults, with Redis at `redis://127.0.0.1:6379`.
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

/// `url` without the credentials between `://` and `@` (`redis://***@host:6379/0`).
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Whole seconds for a Redis `EXPIRE`, at least 1.
pub(crate) fn expire_secs(duration: Duration) -> u64 {
    duration.as_secs().max(1)
}

/// Whole milliseconds for a Redis `PEXPIRE`, at least 1.
pub(crate) fn expire_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://:secret@example:6379/2"),
            "redis://***@example:6379/2"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@host/0"),
            "rediss://***@host/0"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("redis://host/a@b"), "redis://host/a@b");
    }

    #[test]
    fn expiries_are_at_least_one_unit() {
        assert_eq!(expire_secs(Duration::from_millis(200)), 1);
        assert_eq!(expire_secs(Duration::from_secs(60)), 60);
        assert_eq!(expire_millis(Duration::from_micros(10)), 1);
        assert_eq!(expire_millis(Duration::from_secs(2)), 2000);
    }
}
