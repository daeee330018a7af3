//! The routes, grouped by the key each needs, and what every handler
//! shares.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use http::StatusCode;
use tokenledger_authz::{AsyncLedger, Ledger};

use crate::admin::{commands, history, investigate};
use crate::error::ApiError;
use crate::idempotency::Idempotency;
use crate::keys::{Role, ServiceKeys, require};
use crate::{authzen, check, openapi, probes};

/// Bounds on what a request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request body taken (413 past it).
    pub body_bytes: usize,
    /// How long a request may take before it is answered 503 (a command
    /// already handed to the ledger still completes, and a retry with its
    /// idempotency key gets its answer).
    pub request_timeout: Duration,
    /// How long a connection may wait for a request's headers, the first
    /// or the next one on a kept-alive connection, before it is closed.
    pub idle_timeout: Duration,
    /// How long a check waits for `at_least_position`: then a 503, or a 422
    /// if the log has not reached it either.
    pub consistency_timeout: Duration,
    /// How long graceful shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            consistency_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What every handler shares; cheap to clone: one reference count, since
/// each request clones it once per middleware and handler, on whichever
/// worker runs it (one count bumped from both cores rather than four).
#[derive(Clone)]
pub(crate) struct App(Arc<Shared>);

/// What [`App`] holds.
pub(crate) struct Shared {
    pub ledger: AsyncLedger,
    pub keys: ServiceKeys,
    pub limits: Limits,
    pub idempotency: Arc<Idempotency>,
    /// `http` or `https`, for the URLs of the AuthZEN discovery document.
    pub scheme: &'static str,
}

impl std::ops::Deref for App {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The service's routes over `ledger`, for [`crate::Server`] or to be
/// called in process (tests, benches).
pub fn router(ledger: Arc<Ledger>, keys: ServiceKeys, limits: Limits) -> Router {
    build(ledger, keys, limits, "http")
}

/// The routes, for a server reached over `scheme`.
pub(crate) fn build(
    ledger: Arc<Ledger>,
    keys: ServiceKeys,
    limits: Limits,
    scheme: &'static str,
) -> Router {
    // Installed before the first request, so every metric is recorded.
    crate::probes::prometheus();
    let app = App(Arc::new(Shared {
        ledger: AsyncLedger::new(ledger),
        keys,
        limits,
        idempotency: Arc::new(Idempotency::default()),
        scheme,
    }));
    let questions = Router::new()
        .route("/v1/check", post(check::check))
        .route(
            "/.well-known/authzen-configuration",
            get(authzen::configuration),
        )
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/metrics", get(probes::metrics))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            |state, request, next| require(Role::Check, state, request, next),
        ));
    let admin = Router::new()
        .route("/v1/companies", post(commands::create_company))
        .route("/v1/teammates", post(commands::add_teammate))
        .route("/v1/teammates/{teammate}/role", put(commands::change_role))
        .route(
            "/v1/teammates/{teammate}/deactivate",
            post(commands::deactivate_teammate),
        )
        .route(
            "/v1/teammates/{teammate}/private-api-access",
            put(commands::set_private_access),
        )
        .route(
            "/v1/companies/{company}/private-api-access",
            put(commands::set_private_access_for_all),
        )
        .route("/v1/workspaces", post(commands::create_workspace))
        .route("/v1/tokens", post(commands::create_token))
        .route(
            "/v1/companies/{company}/tokens",
            get(investigate::token_list),
        )
        .route("/v1/tokens/{token}", get(investigate::token_show))
        .route("/v1/tokens/{token}", delete(commands::delete_token))
        .route("/v1/tokens/{token}/reveal", post(commands::reveal_token))
        .route("/v1/tokens/{token}/timeline", get(investigate::timeline))
        .route(
            "/v1/tokens/{token}/timeline.html",
            get(investigate::timeline_html),
        )
        .route("/v1/history", get(history::history))
        .route("/v1/who-can", get(investigate::who_can))
        .route("/v1/verify", get(investigate::verify))
        .route("/v1/export", get(investigate::export))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            |state, request, next| require(Role::Admin, state, request, next),
        ));
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .merge(questions)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), timeout))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take this method",
    )
}

/// Answers 503 once a request has taken longer than the limit.
async fn timeout(
    axum::extract::State(app): axum::extract::State<App>,
    request: Request,
    next: Next,
) -> Response {
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} ms; retry it (with the same Idempotency-Key for a command)",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}
