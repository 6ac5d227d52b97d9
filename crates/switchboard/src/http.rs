//! The shared HTTP server: health, readiness, metrics, and the channels'
//! routes under `/channels/{name}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchboard_router::RouterHealth;
use switchboard_store::Store;

/// What the health endpoints look at.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub store: Store,
    pub router: RouterHealth,
    pub metrics: PrometheusHandle,
    /// Set on SIGTERM: a draining instance is alive but not ready.
    pub draining: Arc<AtomicBool>,
    /// Set once the store's layout matched the configuration (checked at
    /// the start, again while Redis is away): not ready before.
    pub layout_checked: Arc<AtomicBool>,
}

/// The daemon's own routes.
pub fn routes(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

/// `POST /debug/clock` (only with `[testing] manual_clock`): moves the
/// manual clock. Body `{"advance_ms": N}` or `{"set_ms": N}`; answers the
/// clock's new reading. Never backwards (timers and records assume time
/// goes forward).
pub fn clock_routes(supervisor: switchboard_channel::SecretValue) -> Router {
    Router::new()
        .route("/debug/clock", axum::routing::post(move_clock))
        .with_state(Arc::new(supervisor))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockMove {
    #[serde(default)]
    advance_ms: Option<u64>,
    #[serde(default)]
    set_ms: Option<u64>,
}

async fn move_clock(
    State(supervisor): State<Arc<switchboard_channel::SecretValue>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    use switchboard_core::Timestamp;
    let token = switchboard_channel::bearer(&headers).unwrap_or("");
    if !supervisor.matches(token.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "supervisor token required\n").into_response();
    }
    let Ok(m) = serde_json::from_slice::<ClockMove>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body: {\"advance_ms\": N} or {\"set_ms\": N}\n",
        )
            .into_response();
    };
    let now = Timestamp::now().as_millis();
    let next = match (m.advance_ms, m.set_ms) {
        (Some(a), None) => now.saturating_add(a),
        (None, Some(s)) if s >= now => s,
        (None, Some(_)) => {
            return (StatusCode::CONFLICT, "the clock never goes back\n").into_response();
        }
        _ => {
            return (StatusCode::BAD_REQUEST, "give advance_ms or set_ms\n").into_response();
        }
    };
    Timestamp::set_manual(Timestamp(next));
    tracing::info!(now_ms = next, "The manual clock moved.");
    axum::Json(serde_json::json!({ "now_ms": next })).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let redis = state.store.ping().await;
    metrics::gauge!("switchboard_redis_up").set(if redis.is_ok() { 1.0 } else { 0.0 });
    let router = state.router.is_running();
    let draining = state.draining.load(Ordering::SeqCst);
    let layout = state.layout_checked.load(Ordering::SeqCst);
    let ready = redis.is_ok() && router && !draining && layout;
    let body = serde_json::json!({
        "ready": ready,
        "redis": match &redis {
            Ok(rtt) => format!("ok ({} us)", rtt.as_micros()),
            Err(e) => e.to_string(),
        },
        "router": if router { "running" } else { "not running" },
        "draining": draining,
        "layout": if layout { "checked" } else { "not checked yet" },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn render_metrics(State(state): State<HealthState>) -> impl IntoResponse {
    crate::telemetry::count_dropped_log_lines();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
