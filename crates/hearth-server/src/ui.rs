//! The web UI: a small module app with no build step (HTML, one stylesheet, ES modules),
//! compiled into the binary and served from the root. Every page's path answers the one HTML
//! shell, so deep links work; the pages call only the public API. A content security policy
//! keeps the browser on this server: no script, style, font or request goes anywhere else.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

macro_rules! asset {
    ($file:literal) => {
        ($file, include_str!(concat!("../ui/", $file)))
    };
}

const INDEX: &str = include_str!("../ui/index.html");

const ASSETS: &[(&str, &str)] = &[
    asset!("app.js"),
    asset!("markdown.js"),
    asset!("style.css"),
    asset!("pages/chat.js"),
    asset!("pages/knowledge.js"),
    asset!("pages/model.js"),
    asset!("pages/models.js"),
    asset!("pages/registry.js"),
    asset!("pages/status.js"),
    asset!("pages/training.js"),
];

/// The pages' paths (the router in `ui/app.js` maps the same ones).
const PAGES: &[&str] = &["/", "/inference", "/registry", "/models", "/models/{*id}", "/knowledge", "/training", "/status"];

const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/ui/{*file}", get(asset));
    for page in PAGES {
        router = router.route(page, get(shell));
    }
    router
}

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files, served from memory: always revalidated, so an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

async fn shell() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some((name, body)) = ASSETS.iter().find(|(name, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let content_type = if name.ends_with(".css") { "text/css; charset=utf-8" } else { "text/javascript; charset=utf-8" };
    respond(content_type, body)
}
