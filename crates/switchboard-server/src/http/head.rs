//! A request hyper parsed (HTTP/1.1 or HTTP/2), as the rest of the server (the route table, the authenticators,
//! the WebSocket handshake checks) sees a request: a [`Request`] head.

use switchboard_proto::handshake::server::Request;

/// The head of `req`: method, path with query, version (the minor version of HTTP/1.x) and
/// headers, names lowercase as hyper gives them; values that are not UTF-8 are read lossily.
pub(crate) fn head<B>(req: &http::Request<B>) -> Request {
    let mut head = Request {
        method: req.method().as_str().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        version: u8::from(req.version() != http::Version::HTTP_10),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    // HTTP/2 names the host in `:authority`, which hyper keeps in the URI.
    if head.header("host").is_none() {
        if let Some(authority) = req.uri().authority() {
            head.headers
                .push(("host".to_string(), authority.to_string()));
        }
    }
    head
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hyper_request_as_a_head() {
        let req = http::Request::post("http://x/api/publish?a=1")
            .header("Authorization", "Bearer k")
            .body(())
            .unwrap();
        let head = super::head(&req);
        assert_eq!(
            (head.method.as_str(), head.path_only(), head.query()),
            ("POST", "/api/publish", Some("a=1"))
        );
        assert_eq!(head.header("authorization"), Some("Bearer k"));
        assert_eq!(head.version, 1);
        assert_eq!(head.host(), "x");
    }
}
