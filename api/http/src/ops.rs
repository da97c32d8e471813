//! The operational HTTP surface: `GET /healthz` and Prometheus `GET /metrics`, merged with
//! the service API and served within the limits of [`crate::server`] (`serve`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use prognos_ingest::Stats;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::HttpLimits;

/// Liveness of the parts `/healthz` reports on.
#[derive(Debug, Default)]
pub struct Health {
    pub router_lost: AtomicBool,
    pub ingest_failed: AtomicBool,
    /// The broker's self-probe: whether a new MQTT connection gets its CONNACK.
    pub mqtt: Arc<prognos_broker::BrokerHealth>,
}

impl Health {
    pub fn ok(&self) -> bool {
        !self.router_lost.load(Ordering::Relaxed)
            && !self.ingest_failed.load(Ordering::Relaxed)
            // A full broker is a capacity limit, not a fault (a restart would only drop the
            // connected devices); one that answers no CONNECT is failing.
            && self.mqtt.state() != prognos_broker::MqttState::NotAccepting
    }
}

#[derive(Clone)]
pub struct AppState {
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    pub metrics: PrometheusHandle,
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed once, shared by every server in the
/// process, e.g. in tests).
pub fn metrics_handle() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    if let Some(handle) = METRICS.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new().install_recorder()?;
    Ok(METRICS.get_or_init(|| handle).clone())
}

/// Serves `/healthz`, `/metrics` and `service_api` within `limits` (see [`crate::server`]).
pub async fn serve(
    listener: TcpListener,
    service_api: Router,
    state: AppState,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(service_api);
    crate::server::serve(listener, app, limits, shutdown).await;
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.stats.snapshot();
    // A full disk pauses the ingest (nothing acknowledged is lost; it resumes by itself),
    // but the node cannot take data now: load balancers and operators must see that.
    let ok = state.health.ok() && !s.disk_full;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "failing" },
        "disk_full": s.disk_full,
        "dead_letters_dropped": s.dead_letters_dropped,
        "dead_letter_write_failures": s.dead_letter_write_failures,
        "router": if state.health.router_lost.load(Ordering::Relaxed) { "lost" } else { "ok" },
        "mqtt": state.health.mqtt.state().as_str(),
        "mqtt_probe_error": state.health.mqtt.last_error(),
        "committed_lsn": s.committed_lsn,
        "flushed_lsn": s.flushed_lsn,
        "wal_lag_points": s.wal_lag_points,
        "messages": s.messages,
        "points": s.points,
        "dead_letters": s.dead_letters_total,
        "lost_by_broker": s.lost_by_broker,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.stats.snapshot();
    // Levels (not events) are sampled at scrape time.
    metrics::gauge!("prognos_ingest_wal_lag_points").set(s.wal_lag_points as f64);
    metrics::gauge!("prognos_ingest_queue_depth_batches").set(s.queue_depth as f64);
    metrics::gauge!("prognos_ingest_committed_lsn").set(s.committed_lsn as f64);
    metrics::gauge!("prognos_ingest_flushed_lsn").set(s.flushed_lsn as f64);
    metrics::counter!("prognos_broker_topic_denied_total")
        .absolute(prognos_broker::topic_violations());
    metrics::gauge!("prognos_up").set(if state.health.ok() { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
