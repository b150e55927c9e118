//! Durations on the command line, in the environment and in the config file: `10s`, `500ms`,
//! `2m`, `1h`, `1.5s`; a bare number is seconds (`30`, as before units were accepted).

use std::time::Duration;

/// What every duration error ends with: how to write one.
const FORMS: &str = "write it as 10s, 500ms, 2m or 1h (a bare number is seconds)";

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us`, `1.5s` or a bare number of seconds.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: {FORMS}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} is not a duration: {FORMS}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range: {FORMS}"))
}

/// Shows a duration the way it can be written back: `1h`, `2m`, `10s`, `500ms`.
pub(crate) fn show(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs > 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if d.subsec_nanos() == 0 && secs > 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// A duration in the TOML file: `"10s"`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileDuration(pub(crate) Duration);

impl<'de> serde::Deserialize<'de> for FileDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Secs(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        parse(&text)
            .map(FileDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("10 parsecs").unwrap_err().contains("10s, 500ms"));
        assert!(parse("-1s").is_err());
        assert!(parse("").is_err());
        assert_eq!(show(Duration::from_secs(10)), "10s");
        assert_eq!(show(Duration::from_millis(500)), "500ms");
        assert_eq!(show(Duration::from_secs(3600)), "1h");
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::ZERO), "0s");
        for d in ["1h", "2m", "90s", "500ms", "1500ms"] {
            assert_eq!(show(parse(d).unwrap()), d);
        }
    }
}
