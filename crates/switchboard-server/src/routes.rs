//! The route table: every path the server answers, the methods each takes, and the rule for
//! browser origins on WebSocket endpoints. The texts of 404, 405 and 426 and of a refused
//! origin are made here, from the table.

use switchboard_proto::handshake::server::Request;

use crate::config::OriginPolicy;
use crate::error::Rejection;
use crate::metrics::Reject;

/// The WebSocket endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/echo`: every message straight back.
    Echo,
    /// `/chat`: rooms with presence and history.
    Chat,
    /// `/ws`: publish/subscribe for applications.
    PubSub,
}

/// What a path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The chat page.
    Page,
    /// `/healthz`.
    Health,
    /// `/metrics` (Prometheus).
    Metrics,
    /// `POST /api/publish`.
    Publish,
    /// A WebSocket endpoint (plain HTTP gets 426).
    WebSocket(Endpoint),
}

/// One row of the table.
struct Entry {
    path: &'static str,
    route: Route,
    /// The methods plain HTTP may use, the one `Allow` names first (WebSocket endpoints:
    /// the handshake's `GET`).
    methods: &'static [&'static str],
}

/// Every path, WebSocket endpoints in the order the texts name them.
const ROUTES: &[Entry] = &[
    Entry {
        path: "/",
        route: Route::Page,
        methods: &["GET", "HEAD"],
    },
    Entry {
        path: "/index.html",
        route: Route::Page,
        methods: &["GET", "HEAD"],
    },
    Entry {
        path: "/healthz",
        route: Route::Health,
        methods: &["GET"],
    },
    Entry {
        path: "/metrics",
        route: Route::Metrics,
        methods: &["GET"],
    },
    Entry {
        path: "/api/publish",
        route: Route::Publish,
        methods: &["POST"],
    },
    Entry {
        path: "/chat",
        route: Route::WebSocket(Endpoint::Chat),
        methods: &["GET"],
    },
    Entry {
        path: "/ws",
        route: Route::WebSocket(Endpoint::PubSub),
        methods: &["GET"],
    },
    Entry {
        path: "/echo",
        route: Route::WebSocket(Endpoint::Echo),
        methods: &["GET"],
    },
];

/// Where a plain HTTP request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Http {
    /// The chat page.
    Page,
    /// `/healthz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// `POST /api/publish`.
    Publish,
    /// 405, with the `Allow` value and the body.
    MethodNotAllowed { allow: &'static str, body: String },
    /// 426 with this body: a WebSocket endpoint asked for without the upgrade.
    UpgradeRequired(String),
    /// 404 with this body.
    NotFound(String),
}

/// Looks up a plain HTTP request by its method and path (without the query).
pub(crate) fn http(method: &str, path: &str) -> Http {
    let Some(entry) = ROUTES.iter().find(|e| e.path == path) else {
        return Http::NotFound(not_found(path));
    };
    let allowed = entry.methods.contains(&method);
    match entry.route {
        Route::Page if allowed => Http::Page,
        Route::Health if allowed => Http::Health,
        Route::Metrics if allowed => Http::Metrics,
        Route::Publish if allowed => Http::Publish,
        Route::WebSocket(_) if allowed => Http::UpgradeRequired(format!(
            "{path} is a WebSocket endpoint: connect with a WebSocket client, for example `switchboard connect ws://HOST{path}`\n"
        )),
        // A WebSocket path asked for with another method is not something served here.
        Route::WebSocket(_) => Http::NotFound(not_found(path)),
        Route::Page | Route::Health | Route::Metrics | Route::Publish => {
            let allow = entry.methods.first().copied().unwrap_or("GET");
            Http::MethodNotAllowed {
                allow,
                body: format!("use {allow}\n"),
            }
        }
    }
}

fn not_found(path: &str) -> String {
    format!(
        "nothing at {path}; the chat is at /, WebSockets at {}\n",
        websocket_paths("and")
    )
}

/// The WebSocket endpoint at `path` (without the query), or the 404 that says where they are.
pub(crate) fn websocket(path: &str) -> Result<Endpoint, Rejection> {
    match ROUTES.iter().find(|e| e.path == path).map(|e| e.route) {
        Some(Route::WebSocket(endpoint)) => Ok(endpoint),
        _ => Err(Rejection::new(
            Reject::NotFound,
            format!(
                "no WebSocket endpoint at {path}; try {}",
                websocket_paths("or")
            ),
        )),
    }
}

/// The path of `endpoint`.
pub(crate) fn path(endpoint: Endpoint) -> &'static str {
    ROUTES
        .iter()
        .find(|e| e.route == Route::WebSocket(endpoint))
        .map_or("", |e| e.path)
}

/// The WebSocket paths as a list: `/chat, /ws and /echo`.
fn websocket_paths(last: &str) -> String {
    let paths: Vec<&str> = ROUTES
        .iter()
        .filter(|e| matches!(e.route, Route::WebSocket(_)))
        .map(|e| e.path)
        .collect();
    match paths.split_last() {
        Some((end, rest)) if !rest.is_empty() => format!("{} {last} {end}", rest.join(", ")),
        Some((end, _)) => (*end).to_string(),
        None => String::new(),
    }
}

/// The origin rule of every WebSocket endpoint: a browser may open one only from an origin
/// `policy` allows (cross-site WebSocket hijacking protection).
pub(crate) fn check_origin(policy: &OriginPolicy, req: &Request) -> Result<(), Rejection> {
    if policy.allows(req.origin(), req.host()) {
        return Ok(());
    }
    let origin = req.origin().unwrap_or_default();
    Err(Rejection::new(
        Reject::Origin,
        format!(
            "origin {origin} may not open WebSockets here (cross-site WebSocket hijacking protection); operators: allow it with --allow-origin {origin}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_routes_methods_and_texts() {
        assert_eq!(http("GET", "/"), Http::Page);
        assert_eq!(http("HEAD", "/index.html"), Http::Page);
        assert_eq!(http("GET", "/healthz"), Http::Health);
        assert_eq!(http("POST", "/api/publish"), Http::Publish);
        assert_eq!(
            http("GET", "/api/publish"),
            Http::MethodNotAllowed {
                allow: "POST",
                body: "use POST\n".into()
            }
        );
        assert_eq!(
            http("HEAD", "/metrics"),
            Http::MethodNotAllowed {
                allow: "GET",
                body: "use GET\n".into()
            }
        );
        assert_eq!(
            http("GET", "/ws"),
            Http::UpgradeRequired(
                "/ws is a WebSocket endpoint: connect with a WebSocket client, for example `switchboard connect ws://HOST/ws`\n".into()
            )
        );
        let nothing = "nothing at /nope; the chat is at /, WebSockets at /chat, /ws and /echo\n";
        assert_eq!(http("GET", "/nope"), Http::NotFound(nothing.into()));
        assert!(matches!(http("POST", "/echo"), Http::NotFound(_)));
    }

    #[test]
    fn websocket_endpoints_and_the_404_that_lists_them() {
        assert_eq!(websocket("/chat"), Ok(Endpoint::Chat));
        assert_eq!(websocket("/ws"), Ok(Endpoint::PubSub));
        assert_eq!(websocket("/echo"), Ok(Endpoint::Echo));
        for e in [Endpoint::Chat, Endpoint::PubSub, Endpoint::Echo] {
            assert_eq!(websocket(path(e)), Ok(e));
        }
        let refused = websocket("/healthz").unwrap_err();
        assert_eq!(refused.status(), 404);
        assert_eq!(
            refused.body,
            "no WebSocket endpoint at /healthz; try /chat, /ws or /echo"
        );
    }
}
