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
}

/// The daemon's own routes.
pub fn routes(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let redis = state.store.ping().await;
    metrics::gauge!("switchboard_redis_up").set(if redis.is_ok() { 1.0 } else { 0.0 });
    let router = state.router.is_running();
    let draining = state.draining.load(Ordering::SeqCst);
    let ready = redis.is_ok() && router && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "redis": match &redis {
            Ok(rtt) => format!("ok ({} us)", rtt.as_micros()),
            Err(e) => e.to_string(),
        },
        "router": if router { "running" } else { "not running" },
        "draining": draining,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn render_metrics(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
