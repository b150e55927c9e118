//! Query strings: `?room=lobby&name=Ada+L%C3%B6`.

/// A query value that is not percent-encoded UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} is not valid percent-encoded UTF-8")]
pub(crate) struct InvalidQuery {
    key: String,
}

/// Decodes `%XX` and `+` in a query value.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The first value of `key` in a query string, decoded.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<Result<String, InvalidQuery>> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_decode(v).ok_or_else(|| InvalidQuery {
                key: key.to_string(),
            })
        })
    })
}

/// Every value of `key` in a query string, decoded, in order.
pub(crate) fn query_params<'a>(
    query: Option<&'a str>,
    key: &'a str,
) -> impl Iterator<Item = Result<String, InvalidQuery>> + 'a {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(move |kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| {
                percent_decode(v).ok_or_else(|| InvalidQuery {
                    key: key.to_string(),
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param(Some("room=a&name=Ada+L%C3%B6"), "name"),
            Some(Ok("Ada Lö".into()))
        );
        assert_eq!(query_param(Some("room=a"), "name"), None);
        let bad = query_param(Some("name=%ZZ"), "name").unwrap().unwrap_err();
        assert_eq!(bad.to_string(), "name is not valid percent-encoded UTF-8");
        assert!(query_param(Some("name=%C3"), "name").unwrap().is_err());
        let all: Vec<_> = query_params(Some("recover=a&x=1&recover=b%3A1"), "recover").collect();
        assert_eq!(all, vec![Ok("a".to_string()), Ok("b:1".to_string())]);
    }
}
