//! The investigations: tokens, history (paged), a token's timeline (JSON
//! and the page), who-can, verify and export (streamed). Each runs on the
//! blocking pool, since each may walk the log.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use tokenledger_authz::{Ledger, Location, Timeline};
use tokenledger_events::{Scope, Timestamp, TokenId};
use utoipa::{IntoParams, ToSchema};

use crate::admin::reply::{TimelineReply, TokenRow, TokenShown};
use crate::error::{ApiError, ErrorEnvelope, Query, parse};
use crate::export::ExportBody;
use crate::routes::App;

/// Runs `work` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    app: &App,
    work: impl FnOnce(&Ledger) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = Arc::clone(app.ledger.ledger());
    tokio::task::spawn_blocking(move || work(&ledger))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// A company's tokens, oldest first.
#[utoipa::path(get, path = "/v1/companies/{company}/tokens", tag = "investigations",
    security(("service_key" = [])),
    params(("company" = String, Path, description = "cmp_…")),
    responses((status = 200, body = Vec<TokenRow>), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn token_list(
    State(app): State<App>,
    Path(company): Path<String>,
) -> Result<Json<Vec<TokenRow>>, ApiError> {
    let company = parse("company", &company)?;
    blocking(&app, move |ledger| {
        ledger.with_state(|state| TokenRow::list(state, company))
    })
    .await
    .map(Json)
}

/// One token: its scope, who created and revealed it, its deletion.
#[utoipa::path(get, path = "/v1/tokens/{token}", tag = "investigations",
    security(("service_key" = [])),
    params(("token" = String, Path, description = "tok_…")),
    responses((status = 200, body = TokenShown), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn token_show(
    State(app): State<App>,
    Path(token): Path<String>,
) -> Result<Json<TokenShown>, ApiError> {
    let token: TokenId = parse("token", &token)?;
    blocking(&app, move |ledger| {
        let reveals = ledger.reveals(token)?;
        ledger.with_state(|state| TokenShown::of(state, token, &reveals))
    })
    .await
    .map(Json)
}

/// A timeline's period.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Period {
    /// The start (RFC 3339) [default: the token's creation].
    pub since: Option<String>,
    /// The end (RFC 3339) [default: now, or a little after its deletion].
    pub until: Option<String>,
}

async fn timeline_of(
    app: &App,
    token: &str,
    period: Period,
) -> Result<(Timeline, String), ApiError> {
    let token: TokenId = parse("token", token)?;
    let since = period
        .since
        .as_deref()
        .map(|t| parse("since", t))
        .transpose()?;
    let until = period
        .until
        .as_deref()
        .map(|t| parse("until", t))
        .transpose()?;
    blocking(app, move |ledger| {
        let (since, until) = ledger
            .with_state(|state| crate::html::period(state, token, since, until, now()))
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
        let timeline = ledger.timeline(token, since, until)?;
        let page = ledger.with_state(|state| crate::html::timeline_page(state, &timeline));
        Ok((timeline, page))
    })
    .await
}

/// What a token could reach over a period, and the changes.
#[utoipa::path(get, path = "/v1/tokens/{token}/timeline", tag = "investigations",
    security(("service_key" = [])),
    params(("token" = String, Path, description = "tok_…"), Period),
    responses((status = 200, body = TimelineReply), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn timeline(
    State(app): State<App>,
    Path(token): Path<String>,
    Query(period): Query<Period>,
) -> Result<Json<TimelineReply>, ApiError> {
    let (timeline, _) = timeline_of(&app, &token, period).await?;
    Ok(Json(TimelineReply::from(&timeline)))
}

/// The timeline as a self-contained HTML page (inline SVG, no script).
#[utoipa::path(get, path = "/v1/tokens/{token}/timeline.html", tag = "investigations",
    security(("service_key" = [])),
    params(("token" = String, Path, description = "tok_…"), Period),
    responses((status = 200, content_type = "text/html", body = String),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn timeline_html(
    State(app): State<App>,
    Path(token): Path<String>,
    Query(period): Query<Period>,
) -> Result<Response, ApiError> {
    let (_, page) = timeline_of(&app, &token, period).await?;
    let mut response = Html(page).into_response();
    // The page draws only what it holds: nothing runs, nothing is fetched.
    response.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// A who-can question.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WhoCanParams {
    /// The scope, such as `conversations:read`.
    pub scope: String,
    /// A company's global namespace (`cmp_…`); or `shared`, or `private`.
    pub global: Option<String>,
    /// A shared workspace (`tim_…`).
    pub shared: Option<String>,
    /// A teammate's private resources (`tea_…`).
    pub private: Option<String>,
    /// The time asked about (RFC 3339) [default: now].
    pub at: Option<String>,
}

/// The tokens that could use a scope on a namespace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoCanReply {
    /// The scope.
    pub scope: String,
    /// The namespace, for people.
    pub location: String,
    /// The time asked about.
    pub at: String,
    /// The log position of the state asked.
    pub position: u64,
    /// The tokens.
    pub tokens: Vec<WhoCanToken>,
}

/// A token that could.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoCanToken {
    /// Its id.
    pub token: String,
    /// Its name.
    pub name: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

/// Which tokens could use a scope on a namespace at a time.
#[utoipa::path(get, path = "/v1/who-can", tag = "investigations",
    security(("service_key" = [])),
    params(WhoCanParams),
    responses((status = 200, body = WhoCanReply), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn who_can(
    State(app): State<App>,
    Query(params): Query<WhoCanParams>,
) -> Result<Json<WhoCanReply>, ApiError> {
    let scope: Scope = parse("scope", &params.scope)?;
    let location = match (&params.global, &params.shared, &params.private) {
        (Some(c), None, None) => Location::Global(parse("global", c)?),
        (None, Some(w), None) => Location::Shared(parse("shared", w)?),
        (None, None, Some(t)) => Location::Private(parse("private", t)?),
        _ => {
            return Err(ApiError::field(
                "global",
                "give exactly one of `global`, `shared` and `private`",
            ));
        }
    };
    let at = params
        .at
        .as_deref()
        .map(|t| parse("at", t))
        .transpose()?
        .unwrap_or_else(now);
    let answer = app.ledger.who_can(scope, location, at).await?;
    Ok(Json(WhoCanReply {
        scope: scope.to_string(),
        location: answer.location,
        at: at.to_string(),
        position: answer.position,
        tokens: answer
            .tokens
            .iter()
            .map(|a| WhoCanToken {
                token: a.token.to_string(),
                name: a.name.as_str().to_owned(),
                created_by: a.created.actor.to_string(),
                created_at: a.created.at.to_string(),
            })
            .collect(),
    }))
}

/// What `verify` found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Whether the whole chain holds.
    pub intact: bool,
    /// How many records were checked (when intact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// The head as `--known-head` takes it, `POSITION:HASH` (when intact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_head: Option<String>,
    /// The first damaged position (when not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// What is wrong there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Walks the log and checks its hash chain: 200 either way, saying
/// whether it holds.
#[utoipa::path(get, path = "/v1/verify", tag = "investigations",
    security(("service_key" = [])),
    responses((status = 200, body = Verification), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn verify(State(app): State<App>) -> Result<Json<Verification>, ApiError> {
    let verified = blocking(&app, |ledger| Ok(ledger.verify())).await?;
    Ok(Json(match verified {
        Ok(verified) => Verification {
            intact: true,
            records: Some(verified.records),
            known_head: Some(verified.head.to_string()),
            position: None,
            problem: None,
        },
        Err(damage) => Verification {
            intact: false,
            records: None,
            known_head: None,
            position: Some(damage.position),
            problem: Some(damage.problem.to_string()),
        },
    }))
}

/// Every event as JSON lines, with positions and hashes, streamed as it
/// is read; an export that fails midway ends the response without its
/// final chunk, so it cannot be taken for a whole one.
#[utoipa::path(get, path = "/v1/export", tag = "investigations",
    security(("service_key" = [])),
    responses((status = 200, content_type = "application/x-ndjson", body = String),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn export(State(app): State<App>) -> Result<Response, ApiError> {
    if let Some(why) = app.ledger.ledger().why_closed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the ledger is closed: {why}"),
        ));
    }
    let body = ExportBody::start(Arc::clone(app.ledger.ledger()));
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::new(body),
    )
        .into_response())
}
