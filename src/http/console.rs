//! The web console: a single page (console/ at the repository root) served at `/` by the
//! HTTP listener, from files compiled into the binary so that a node needs nothing on disk
//! and the browser nothing from the network. The page reads the admin API like any other
//! client; the files themselves need no key (the page asks for one when the API answers 401).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");

/// The console's paths. They are open to anyone who reaches the listener: they hold no data,
/// and a browser loading the page cannot send a key before the page has asked for it.
pub const PATHS: [&str; 3] = ["/", "/console/app.js", "/console/style.css"];

/// The routes serving the console's files.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    // no-cache: a browser revalidates, so a node upgraded in place serves its own console.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
