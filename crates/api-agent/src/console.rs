//! The reference agent console: a static page at `/console` (with its
//! script and style sheet) that speaks the agent API from a browser.
//!
//! The page holds no data (the agent types their token into it), so it is
//! served without authentication, but with a strict Content Security
//! Policy: only its own script and style, connections only to this origin,
//! no framing, no form submissions. The script builds every element with
//! `textContent`, never HTML, so a customer's text cannot run in it.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

/// The policy without the websocket origins, which depend on the host the
/// page was asked for.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The console's routes, to be mounted at the root (`/console`,
/// `/console/console.js`, `/console/console.css`).
pub fn routes() -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
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

/// `connect-src 'self'` covers `ws:`/`wss:` to the same host in CSP Level 3
/// browsers, but not in every browser (older Safari): the websocket origins
/// of the host asked for are named too, when the `Host` header is a plain
/// host (and port).
pub(crate) fn policy(host: Option<&str>) -> String {
    match host.filter(|h| plain_host(h)) {
        Some(h) => POLICY.replacen(
            "connect-src 'self'",
            &format!("connect-src 'self' ws://{h} wss://{h}"),
            1,
        ),
        None => POLICY.to_owned(),
    }
}

/// A host name, IPv4 or bracketed IPv6 address, with an optional port:
/// nothing that could end the directive or widen it (`;`, spaces, `*`).
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// A weak validator: the assets are compiled in, so their hash only changes
/// with the binary.
fn etag(body: &str) -> String {
    // FNV-1a, 64 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

pub(crate) fn asset(
    headers: &HeaderMap,
    body: &'static str,
    content_type: &'static str,
) -> Response {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let csp = HeaderValue::from_str(&policy(host)).unwrap_or(HeaderValue::from_static(POLICY));
    let tag = etag(body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let common = [
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::ETAG,
            HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\"")),
        ),
        (header::VARY, HeaderValue::from_static("Host")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the route at `path` answers (the handlers, without a server).
    async fn get(path: &str, host: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, HeaderValue::from_str(h).expect("host"));
        }
        match path {
            "/console" => page(headers).await,
            "/console/console.js" => script(headers).await,
            "/console/console.css" => style(headers).await,
            other => panic!("no route {other}"),
        }
    }

    fn text(r: &Response, name: header::HeaderName) -> String {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn the_page_is_served_with_strict_headers() {
        for (path, kind) in [
            ("/console", "text/html"),
            ("/console/console.js", "text/javascript"),
            ("/console/console.css", "text/css"),
        ] {
            let r = get(path, Some("agents.example.com:8080")).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(text(&r, header::CONTENT_TYPE).starts_with(kind), "{path}");
            assert_eq!(
                text(&r, header::CONTENT_SECURITY_POLICY),
                "default-src 'none'; script-src 'self'; style-src 'self'; \
                 connect-src 'self' ws://agents.example.com:8080 wss://agents.example.com:8080; \
                 img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
                "{path}"
            );
            assert_eq!(text(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(text(&r, header::REFERRER_POLICY), "no-referrer");
            assert_eq!(text(&r, header::CACHE_CONTROL), "no-cache");
        }
        let r = get("/console", None).await;
        assert_eq!(text(&r, header::CONTENT_SECURITY_POLICY), POLICY);
    }

    #[test]
    fn a_strange_host_is_left_out_of_the_policy() {
        for host in ["evil.example; script-src *", "a b", "*", "x'y"] {
            assert_eq!(policy(Some(host)), POLICY, "{host}");
        }
        assert!(policy(Some("[::1]:3000")).contains("ws://[::1]:3000 wss://[::1]:3000"));
    }

    #[tokio::test]
    async fn a_known_version_is_not_sent_again() {
        let r = get("/console/console.js", None).await;
        let tag = text(&r, header::ETAG);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&tag).expect("tag"),
        );
        let again = script(headers).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(
            again
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }

    /// Cheap guards on the script: customer text is only ever set as text,
    /// and the token never goes into a URL but the websocket's.
    #[test]
    fn the_script_builds_no_html() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
        ] {
            assert!(!SCRIPT.contains(forbidden), "console.js uses {forbidden}");
        }
        assert_eq!(
            SCRIPT.matches("access_token=").count(),
            1,
            "the token goes into one URL only, the websocket's for a server without tickets"
        );
        assert!(
            SCRIPT.contains("\"/ws-ticket\""),
            "the websocket opens with a ticket"
        );
        assert!(SCRIPT.contains("sessionStorage"));
    }

    /// The page loads nothing from elsewhere and has no inline script or
    /// style (which the policy would block anyway).
    #[test]
    fn the_page_has_no_inline_code_or_external_resources() {
        for forbidden in [
            "http://", "https://", "<script>", "<style", " style=", " on",
        ] {
            let lower = HTML.to_ascii_lowercase();
            let hits = match forbidden {
                // Attributes named on…: onclick, onload…
                " on" => lower
                    .match_indices(" on")
                    .filter(|(i, _)| {
                        lower[i + 3..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphabetic())
                            .count()
                            > 0
                            && lower[i + 3..]
                                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                                .starts_with('=')
                    })
                    .count(),
                f => lower.matches(f).count(),
            };
            assert_eq!(hits, 0, "console.html contains {forbidden}");
        }
        assert!(HTML.contains(r#"<script src="/console/console.js" defer></script>"#));
    }

    /// Every `data-testid` the WebDriver tests rely on is in the page or
    /// the script.
    #[test]
    fn the_test_hooks_exist() {
        for id in [
            "token-input",
            "signin-button",
            "presence-select",
            "presence-reason",
            "presence-state",
            "status",
            "offer",
            "offer-accept",
            "offer-decline",
            "offer-countdown",
            "conversation",
            "conversation-open",
            "unread",
            "transcript",
            "entry",
            "delivery",
            "attachment-link",
            "reply-input",
            "send-button",
            "note-input",
            "note-button",
            "transfer-queue",
            "transfer-agent",
            "transfer-button",
            "disposition-select",
            "disposition-text",
            "close-button",
            "typing-indicator",
        ] {
            let quoted = format!("\"{id}\"");
            assert!(
                HTML.contains(&format!("data-testid={quoted}")) || SCRIPT.contains(&quoted),
                "data-testid {id} is missing"
            );
        }
        assert!(SCRIPT.contains("window.SwitchboardConsole"));
    }
}
