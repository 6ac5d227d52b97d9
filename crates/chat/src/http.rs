//! The channel's HTTP routes, under `/channels/{name}`: `GET ws`,
//! `POST upload`, `GET widget.js`.

use crate::Shared;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use metrics::counter;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::net::client_ip;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The widget served at `widget.js` (written in `assets/`).
const WIDGET_JS: &str = include_str!("../assets/widget.js");
/// An upload's body may pause this long at most (the whole body arrives
/// within `upload_timeout_secs`).
const UPLOAD_IDLE: Duration = Duration::from_secs(10);

pub fn routes(shared: Arc<Shared>) -> Router {
    // The body is read by the handler, within `max_upload_bytes` and the
    // time limits (no `DefaultBodyLimit`: its 413 would not be counted).
    let uploads = Router::new()
        .route("/upload", post(upload))
        .layer(upload_cors(&shared));
    Router::new()
        .route("/ws", get(ws))
        .route("/widget.js", get(widget_js))
        .merge(uploads)
        .with_state(shared)
}

/// Uploads come from the pages that embed the widget, another origin than
/// Switchboard's: the browser asks first (a preflight, for the
/// `Authorization` and `X-Filename` headers) and reads an answer, 413 and
/// 415 included, only with CORS headers naming its origin. Only the
/// widgets' configured origins are named; no credentials (cookies) are
/// involved, the session token is a header.
fn upload_cors(shared: &Shared) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = shared
        .config
        .widgets
        .iter()
        .flat_map(|w| w.origins.iter())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([axum::http::Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("x-filename"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    #[serde(default)]
    widget: Option<String>,
}

fn reject(reason: &'static str, status: StatusCode, message: &'static str) -> Response {
    counter!("switchboard_chat_rejected_total", "reason" => reason).increment(1);
    (status, message).into_response()
}

/// One open socket of a client address, counted until dropped.
struct OpenSocket {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.shared.open_per_ip.close(self.ip);
    }
}

/// An upload being read: one of the instance's `uploads_in_flight`, and
/// one of its address's share of them; given back when dropped.
struct UploadSlot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    per_ip: Option<(&'a crate::limits::OpenPerIp, IpAddr)>,
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        if let Some((open, ip)) = self.per_ip {
            open.close(ip);
        }
    }
}

/// A slot for an upload from `ip`, or `None` when its address has its
/// share reading already (so that one address trickling bodies cannot hold
/// every slot) or the instance is at `uploads_in_flight`.
fn upload_slot(shared: &Shared, ip: Option<IpAddr>) -> Option<UploadSlot<'_>> {
    if let Some(ip) = ip
        && !shared.uploads_per_ip.open(ip)
    {
        return None;
    }
    let per_ip = ip.map(|ip| (&shared.uploads_per_ip, ip));
    match shared.upload_slots.try_acquire() {
        Ok(permit) => Some(UploadSlot {
            _permit: permit,
            per_ip,
        }),
        Err(_) => {
            if let Some((open, ip)) = per_ip {
                open.close(ip);
            }
            None
        }
    }
}

async fn ws(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<WsQuery>, QueryRejection>,
    headers: HeaderMap,
    ext: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Not a websocket handshake (a plain GET, a missing key, another
    // version): axum's answer (400, 405 or 426), counted.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            counter!("switchboard_chat_rejected_total", "reason" => "not_websocket").increment(1);
            return rejection.into_response();
        }
    };
    // Answered and counted here, not by axum in plain text uncounted.
    let Ok(Query(query)) = query else {
        return reject(
            "bad_query",
            StatusCode::BAD_REQUEST,
            "the query string does not parse (at most one widget=)\n",
        );
    };
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
    else {
        return reject("origin", StatusCode::FORBIDDEN, "no Origin\n");
    };
    let allowed = match &query.widget {
        Some(w) => shared
            .config
            .widget(w)
            .is_some_and(|w| w.origins.contains(&origin)),
        None => shared
            .config
            .widgets
            .iter()
            .any(|w| w.origins.contains(&origin)),
    };
    if !allowed {
        // Any page can try: one line a minute at warn.
        static FOREIGN_ORIGINS: switchboard_channel::logs::LogThrottle =
            switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));
        switchboard_channel::warn_throttled!(FOREIGN_ORIGINS, origin = %origin, "Chat websocket refused: origin not allowed.");
        return reject(
            "origin",
            StatusCode::FORBIDDEN,
            "this origin may not use this chat\n",
        );
    }
    let ip = client_ip(&headers, &ext);
    let open = match ip {
        Some(ip) if shared.open_per_ip.open(ip) => Some(OpenSocket {
            shared: shared.clone(),
            ip,
        }),
        Some(ip) => {
            info!(client = %ip, "Chat websocket refused: the address has sockets_per_ip chats open.");
            return reject(
                "sockets_per_ip",
                StatusCode::TOO_MANY_REQUESTS,
                "too many chats open from your address\n",
            );
        }
        None => None,
    };
    let max = shared.config.max_frame_bytes;
    upgrade
        .max_frame_size(max)
        .max_message_size(max)
        // Small buffers: most sockets are idle (issue 4: ≤ 16 KiB each;
        // tests/benches/chat.rs). The read buffer is all touched at the
        // first read, so it is resident for every idle socket; a larger
        // frame still fits (tungstenite reserves its full length).
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(write_limit(&shared.config))
        .on_upgrade(move |socket| async move {
            let _open = open;
            crate::session::serve(shared, socket, ip, origin).await;
        })
}

/// The most a socket's write buffer holds (a client that stops reading is
/// dropped by the slow-reader timeout long before): also the largest
/// frame the server can send, so at least 1 MiB, room for an agent's
/// long reply whose JSON escaping made it six times its size.
pub(crate) fn write_limit(config: &crate::config::ChatConfig) -> usize {
    config.max_frame_bytes.saturating_mul(4).max(1024 * 1024)
}

async fn widget_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        WIDGET_JS,
    )
        .into_response()
}

/// Percent-decodes a file name and keeps it harmless: no path, no control
/// or bidirectional control characters, at most 200 characters.
pub(crate) fn file_name(raw: &str) -> String {
    let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let name = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = name
        .chars()
        .filter(|c| !switchboard_channel::files::hidden_in_a_name(*c))
        .take(200)
        .collect();
    if clean.trim().is_empty() || clean == "." || clean == ".." {
        "file".into()
    } else {
        clean
    }
}

/// Why an upload's body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BodyError {
    #[error("larger than max_upload_bytes")]
    TooLarge,
    #[error("too slow")]
    Timeout,
    #[error("broken off")]
    Broken,
}

/// Reads a body of at most `limit` bytes, each chunk within `idle` of the
/// last and the whole within `within`.
async fn read_body(
    body: Body,
    limit: usize,
    idle: Duration,
    within: Duration,
) -> Result<Vec<u8>, BodyError> {
    let deadline = Instant::now() + within;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    loop {
        let wait = (Instant::now() + idle).min(deadline);
        match tokio::time::timeout_at(wait, stream.next()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(bytes),
            // The daemon's deadline for every body (http.body_timeout_secs).
            Ok(Some(Err(error))) if switchboard_channel::body::is_too_slow(&error) => {
                return Err(BodyError::Timeout);
            }
            Ok(Some(Err(error))) => {
                debug!(%error, "An upload's body broke off.");
                return Err(BodyError::Broken);
            }
            Ok(Some(Ok(chunk))) => {
                if bytes.len().saturating_add(chunk.len()) > limit {
                    return Err(BodyError::TooLarge);
                }
                bytes.extend_from_slice(&chunk);
            }
        }
    }
}

fn too_large() -> Response {
    reject(
        "upload_too_large",
        StatusCode::PAYLOAD_TOO_LARGE,
        "the file is too large\n",
    )
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ext: Extensions,
    body: Body,
) -> Response {
    let ip = client_ip(&headers, &ext);
    if let Some(ip) = ip
        && !shared.per_ip.take(&ip)
    {
        return reject(
            "upload_rate_limited",
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from your address; slow down\n",
        );
    }
    let now = switchboard_core::Timestamp::now().as_millis();
    let token = switchboard_channel::bearer(&headers);
    let session = match token.map(|t| shared.tokens.verify(t, now)) {
        Some(Ok(s)) if shared.config.widget(&s.widget).is_some() => s,
        _ => return reject("bad_session", StatusCode::UNAUTHORIZED, "bad session\n"),
    };
    // As the websocket: only from a page of the session's widget (CORS
    // only decides what a browser may read of the answer).
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| {
            shared
                .config
                .widget(&session.widget)
                .is_some_and(|w| w.origins.iter().any(|allowed| allowed == o))
        });
    if !origin_ok {
        info!(visitor = %session.visitor, "Upload refused: origin not allowed.");
        return reject(
            "origin",
            StatusCode::FORBIDDEN,
            "uploads are taken from the widget's own pages only\n",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !shared
        .config
        .upload_types
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&content_type))
    {
        return reject(
            "upload_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this type of file is not accepted\n",
        );
    }
    let limit = shared.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    // Each body is held in memory while it is read: a slot first, so that
    // a visitor refused for want of one is not charged for it.
    let Some(_slot) = upload_slot(&shared, ip) else {
        return reject(
            "upload_busy",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many uploads at once; try again shortly\n",
        );
    };
    // Charged before the body is read; a body without a length as the
    // largest there may be. Refused by the address's allowance, the
    // session's charge is given back.
    let charge = declared.unwrap_or(limit as u64);
    if !shared.upload_quota.take(&session.visitor, charge) {
        info!(visitor = %session.visitor, "Upload refused: the session's upload allowance is spent.");
        return reject(
            "upload_quota",
            StatusCode::TOO_MANY_REQUESTS,
            "too many uploads; slow down\n",
        );
    }
    if let Some(ip) = ip
        && !shared.upload_quota_per_ip.take(&ip.to_string(), charge)
    {
        shared.upload_quota.give_back(&session.visitor, charge);
        info!(visitor = %session.visitor, client = %ip, "Upload refused: the address's upload allowance is spent.");
        return reject(
            "upload_quota_ip",
            StatusCode::TOO_MANY_REQUESTS,
            "too many uploads from your address; slow down\n",
        );
    }

    let body = match read_body(
        body,
        limit,
        UPLOAD_IDLE,
        Duration::from_secs(shared.config.upload_timeout_secs),
    )
    .await
    {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Timeout) => {
            info!(visitor = %session.visitor, "Upload refused: the body came too slowly.");
            return reject(
                "upload_timeout",
                StatusCode::REQUEST_TIMEOUT,
                "the file did not arrive in time\n",
            );
        }
        Err(BodyError::Broken) => {
            return reject(
                "upload_broken",
                StatusCode::BAD_REQUEST,
                "the upload broke off\n",
            );
        }
    };
    if body.is_empty() {
        return reject("upload_empty", StatusCode::BAD_REQUEST, "empty file\n");
    }
    let name = file_name(
        headers
            .get("x-filename")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("file"),
    );
    match shared
        .uploads
        .store(&session.visitor, &name, &content_type, body)
        .await
    {
        Ok(attachment) => {
            counter!("switchboard_chat_uploads_total").increment(1);
            info!(visitor = %session.visitor, media_id = %attachment.id, size = attachment.size, "Chat upload stored.");
            (StatusCode::CREATED, axum::Json(attachment)).into_response()
        }
        Err(error @ crate::uploads::StoreError::Full { .. }) => {
            warn!(%error, visitor = %session.visitor, "Chat upload refused: the disk is nearly full.");
            reject(
                "upload_disk_full",
                StatusCode::INSUFFICIENT_STORAGE,
                "no room for files now\n",
            )
        }
        Err(error) => {
            warn!(%error, visitor = %session.visitor, "Cannot store a chat upload.");
            reject(
                "upload_io",
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the file now\n",
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    /// Every error code docs/widget-protocol.md lists has its own message
    /// in every locale of the reference widget (two fell back to "Something
    /// went wrong. Please try again.", which a retry could not mend).
    #[test]
    fn every_documented_error_code_has_a_widget_message_in_every_locale() {
        let docs = include_str!("../../../docs/widget-protocol.md");
        let section = docs
            .split("### Error codes")
            .nth(1)
            .and_then(|rest| rest.trim_start().split("\n\n").next())
            .expect("an error code section");
        let codes: Vec<&str> = section
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .filter(|c| *c != "score" && *c != "hello" && *c != "client_id")
            .collect();
        assert!(codes.len() >= 12, "{codes:?}");
        let locales: Vec<&str> = WIDGET_JS
            .split("\n    },\n")
            .filter(|block| block.contains("e_bad_frame:"))
            .collect();
        assert_eq!(locales.len(), 5, "en, uk, ru, pl, zh");
        for code in codes {
            for block in &locales {
                assert!(
                    block.contains(&format!("e_{code}: ")),
                    "no e_{code} in the locale starting {:?}",
                    &block[block.len().saturating_sub(60)..]
                );
            }
        }
    }

    #[test]
    fn file_names_are_decoded_and_made_harmless() {
        assert_eq!(file_name("a%20b.png"), "a b.png");
        assert_eq!(file_name("..%2F..%2Fetc%2Fpasswd"), "passwd");
        assert_eq!(file_name(".."), "file");
        assert_eq!(file_name("%E2%9C%93.txt"), "✓.txt");
        assert_eq!(file_name("bad%zz"), "bad%zz");
        // U+202E (right-to-left override) showed `invoice<U+202E>fdp.exe`
        // as `invoiceexe.pdf`; U+2066 and U+200F are bidirectional too.
        assert_eq!(file_name("invoice%E2%80%AEfdp.exe"), "invoicefdp.exe");
        assert_eq!(file_name("a\u{2066}b\u{200F}.png"), "ab.png");
    }

    fn chunks(n: usize) -> Body {
        let chunk = Bytes::from(vec![b'x'; 10]);
        Body::from_stream(futures::stream::iter(
            std::iter::repeat_n(chunk, n).map(Ok::<_, std::io::Error>),
        ))
    }

    #[tokio::test]
    async fn bodies_are_read_within_their_limits() {
        let long = Duration::from_secs(5);
        assert_eq!(
            read_body(chunks(3), 30, long, long).await,
            Ok(vec![b'x'; 30])
        );
        // Too large without a Content-Length (chunked).
        assert_eq!(
            read_body(chunks(4), 30, long, long).await,
            Err(BodyError::TooLarge)
        );
        // A body that stops coming.
        let stalled = Body::from_stream(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))])
                .chain(futures::stream::pending()),
        );
        let short = Duration::from_millis(50);
        assert_eq!(
            read_body(stalled, 30, short, long).await,
            Err(BodyError::Timeout)
        );
        // One that trickles in, never pausing long, but too slowly.
        let trickle = Body::from_stream(futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
        }));
        assert_eq!(
            read_body(trickle, 1000, short, Duration::from_millis(200)).await,
            Err(BodyError::Timeout)
        );
        // The daemon's deadline for every body passed: a timeout too, not
        // a body that broke off.
        let cut = |e: axum::Error| Body::from_stream(futures::stream::iter([Err::<Bytes, _>(e)]));
        assert_eq!(
            read_body(
                cut(axum::Error::new(switchboard_channel::body::BodyTooSlow)),
                30,
                long,
                long
            )
            .await,
            Err(BodyError::Timeout)
        );
        assert_eq!(
            read_body(
                cut(axum::Error::new(std::io::Error::other("reset"))),
                30,
                long,
                long
            )
            .await,
            Err(BodyError::Broken)
        );
    }
}
