//! The web chat page at `/` (`web/`: plain HTML, CSS and JavaScript, built into the binary):
//! sign in with a dev token, friends, groups and conversations with unread badges, history
//! paging, sending, live updates over `/v1/ws`, mark read, search. It talks to the same API
//! as any client.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Scripts and styles only from this origin, no inline script, nothing framed: the page
/// shows other people's text, and shows it as text.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The page's routes, to merge into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { file("text/html; charset=utf-8", include_str!("../web/index.html")) }))
        .route("/app.js", get(|| async { file("text/javascript; charset=utf-8", include_str!("../web/app.js")) }))
        .route("/app.css", get(|| async { file("text/css; charset=utf-8", include_str!("../web/app.css")) }))
}
