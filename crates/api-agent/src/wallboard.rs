//! The supervisors' live wallboard: a static page at `/wallboard` (with its
//! script and style sheet) that reads the supervisor API every few seconds:
//! queues with waiting contacts, longest wait and service level, agents
//! with presence and load, and a chart of waiting contacts over the last
//! hour. Like the console it holds no data (the supervisor types the token
//! into it), is served with the console's strict Content Security Policy,
//! and builds every element with `textContent`.

use crate::console::asset;
use axum::Router;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;

const HTML: &str = include_str!("../assets/wallboard.html");
const SCRIPT: &str = include_str!("../assets/wallboard.js");
const STYLE: &str = include_str!("../assets/wallboard.css");

/// `/wallboard`, `/wallboard/wallboard.js`, `/wallboard/wallboard.css`.
pub fn routes() -> Router {
    Router::new()
        .route("/wallboard", get(page))
        .route("/wallboard/", get(page))
        .route("/wallboard/wallboard.js", get(script))
        .route("/wallboard/wallboard.css", get(style))
}

async fn page(headers: HeaderMap) -> Response {
    asset(&headers, HTML, "text/html; charset=utf-8")
}

async fn script(headers: HeaderMap) -> Response {
    asset(&headers, SCRIPT, "text/javascript; charset=utf-8")
}

async fn style(headers: HeaderMap) -> Response {
    asset(&headers, STYLE, "text/css; charset=utf-8")
}
