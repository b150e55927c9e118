//! A request hyper parsed (HTTP/1.1 or HTTP/2), as the rest of the server (the route table, the authenticators,
//! the WebSocket handshake checks) sees a request: a [`Request`] head.

use switchboard_proto::handshake::server::Request;
use switchboard_tokio::upgrade::request_head;

/// The head of `req` ([`request_head`]), with `version` the minor version of HTTP/1.x
/// (HTTP/2 requests count as 1: the route table and the answers treat them alike).
pub(crate) fn head<B>(req: &http::Request<B>) -> Request {
    let mut head = request_head(req);
    head.version = u8::from(req.version() != http::Version::HTTP_10);
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
