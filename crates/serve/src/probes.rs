//! Liveness, readiness and metrics.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorEnvelope};
use crate::routes::App;

/// The process's Prometheus recorder, installed once as the `metrics`
/// facade's global recorder; `None` when another was installed first.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

/// The process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alive {
    /// Always `ok`.
    pub status: &'static str,
}

/// Whether the ledger answers from a state that has caught up with its log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Ready to answer.
    pub ready: bool,
    /// The log's durable head.
    pub head: u64,
    /// The position of the state decisions are made against.
    pub applied: u64,
    /// The newest checkpoint's position (0: none).
    pub last_checkpoint: u64,
    /// Why the ledger closed, if it has.
    pub closed: Option<String>,
}

/// Liveness: the process answers, whatever the ledger's state.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, body = Alive)))]
pub(crate) async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Readiness: 200 once the state has applied every event of the log, 503
/// before, and for good once the ledger has closed.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub(crate) async fn readyz(State(app): State<App>) -> Response {
    let body = match app.ledger.health().await {
        Ok(health) => Readiness {
            ready: health.ready,
            head: health.head,
            applied: health.applied,
            last_checkpoint: health.last_checkpoint,
            closed: health.closed,
        },
        // The runtime is stopping: not ready, answered in the document's
        // shape with what is known without reading the log (its head is
        // not, so the applied position stands for it).
        Err(_) => {
            let ledger = app.ledger.ledger();
            let applied = ledger.applied_position();
            Readiness {
                ready: false,
                head: applied,
                applied,
                last_checkpoint: ledger.last_checkpoint(),
                closed: ledger.why_closed().map(str::to_owned),
            }
        }
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The metrics in Prometheus's text format: decisions by verdict and
/// rule, their latency, commands, the head and applied positions,
/// checkpoint age, whether the ledger is closed.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    security(("service_key" = [])),
    responses(
        (status = 200, description = "Prometheus text", content_type = "text/plain", body = String),
        (status = 401, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn metrics() -> Response {
    let Some(handle) = prometheus() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder was installed in this process",
        )
        .into_response();
    };
    handle.run_upkeep();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
