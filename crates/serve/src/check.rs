//! `POST /v1/check`: may this token do this to that resource? The same
//! question AuthZEN asks (`authzen.rs`), in tokenledger's own words.

use std::time::{Instant, SystemTime};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokenledger_authz::{Decision, Location, Request, observe};
use tokenledger_events::{Requirement, ResourceId, Timestamp, TokenId, resolve_endpoint_line};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::{ApiError, Body, ErrorEnvelope, ErrorFields, parse};
use crate::routes::App;

/// Who asks: the secret the caller presented, or a token already known.
pub(crate) enum Subject {
    Secret(Zeroizing<String>),
    Token(TokenId),
}

/// One question, parsed.
pub(crate) struct Question {
    pub subject: Subject,
    pub requirement: Requirement,
    pub resource: ResourceId,
    pub location: Location,
    pub at_least_position: Option<u64>,
}

/// Where the resource lives: exactly one of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Place {
    /// Company-level, in this company (`cmp_…`).
    Global(String),
    /// In this shared workspace (`tim_…`).
    Shared(String),
    /// In this teammate's private resources (`tea_…`).
    Private(String),
}

/// A check: a secret or a token id; a scope or an endpoint; a resource and
/// where it lives.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The secret the caller presented (never in a URL). Give it or `token`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A token id (`tok_…`), for a caller authenticated already.
    #[serde(default)]
    pub token: Option<String>,
    /// The scope needed, such as `conversations:read`. Give it or `endpoint`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The request, as `METHOD /path`, resolved through Front's catalog.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The resource's id, such as `cnv_123`.
    pub resource: String,
    /// Where it lives.
    pub location: Place,
    /// Decide only once the state has applied this log position (a
    /// change's position, handed back as a consistency token).
    #[serde(default)]
    pub at_least_position: Option<u64>,
}

/// The decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckAnswer {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The status Front would answer: 200, 401, 403 (or 503 once closed).
    pub status: u16,
    /// The token, once the secret named one.
    pub token: Option<String>,
    /// The first rule that failed.
    pub rule: Option<String>,
    /// Its number, 1 to 8.
    pub rule_number: Option<u8>,
    /// The scope (or feature) the request needed.
    pub needed_scope: String,
    /// Front's body for the refusal.
    pub error: Option<ErrorEnvelope>,
    /// Why, with the event behind it (who, when, log position).
    pub explanation: Option<String>,
    /// The log position of the state decided against.
    pub position: u64,
}

impl CheckRequest {
    fn question(self) -> Result<Question, ApiError> {
        let subject = match (self.secret, self.token) {
            (Some(secret), None) => Subject::Secret(Zeroizing::new(secret)),
            (None, Some(token)) => Subject::Token(parse("token", &token)?),
            _ => {
                return Err(ApiError::field(
                    "secret",
                    "give exactly one of `secret` and `token`",
                ));
            }
        };
        let requirement = match (self.scope, self.endpoint) {
            (Some(scope), None) => Requirement::Scope(parse("scope", &scope)?),
            (None, Some(line)) => endpoint("endpoint", &line)?,
            _ => {
                return Err(ApiError::field(
                    "scope",
                    "give exactly one of `scope` and `endpoint`",
                ));
            }
        };
        Ok(Question {
            subject,
            requirement,
            resource: parse("resource", &self.resource)?,
            location: place(self.location)?,
            at_least_position: self.at_least_position,
        })
    }
}

/// A method and path resolved through the endpoint catalog.
pub(crate) fn endpoint(field: &str, line: &str) -> Result<Requirement, ApiError> {
    resolve_endpoint_line(line)
        .map(|endpoint| endpoint.requirement)
        .map_err(|e| ApiError::field(field, e))
}

fn place(place: Place) -> Result<Location, ApiError> {
    Ok(match place {
        Place::Global(company) => Location::Global(parse("location.global", &company)?),
        Place::Shared(workspace) => Location::Shared(parse("location.shared", &workspace)?),
        Place::Private(teammate) => Location::Private(parse("location.private", &teammate)?),
    })
}

/// Decides `question`, explaining a refusal.
pub(crate) async fn answer(app: &App, question: Question) -> Result<CheckAnswer, ApiError> {
    if let Some(position) = question.at_least_position {
        app.ledger
            .wait_for_position(position, app.limits.consistency_timeout)
            .await?;
    }
    let request = Request {
        requirement: question.requirement,
        resource: question.resource,
        location: question.location,
        at: Timestamp::from_system_time(SystemTime::now()),
    };
    let authorizer = app.ledger.authorizer();
    let start = Instant::now();
    let decision = match &question.subject {
        Subject::Secret(secret) => authorizer.check(secret, &request),
        Subject::Token(token) => authorizer.authorize(*token, &request),
    };
    observe::record_decision(&decision, start.elapsed());
    let explanation = explain(app, &decision).await?;
    Ok(check_answer(&request, &decision, explanation))
}

/// The explanation of a refusal, read from the log on the blocking pool.
async fn explain(app: &App, decision: &Decision) -> Result<Option<String>, ApiError> {
    let Some(refusal) = decision.refusal else {
        return Ok(None);
    };
    let ledger = std::sync::Arc::clone(app.ledger.ledger());
    let explained = tokio::task::spawn_blocking(move || {
        ledger.with_state(|state| ledger.explain(state, &refusal))
    })
    .await
    .map_err(|e| ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))??;
    Ok(Some(explained.text))
}

fn check_answer(
    request: &Request,
    decision: &Decision,
    explanation: Option<String>,
) -> CheckAnswer {
    let refusal = decision.refusal;
    CheckAnswer {
        allowed: decision.is_allowed(),
        status: decision.status(),
        token: decision.token.map(|t| t.to_string()),
        rule: refusal.map(|r| r.rule.as_str().to_owned()),
        rule_number: refusal.map(|r| r.rule.number()),
        needed_scope: refusal
            .and_then(|r| r.needed)
            .unwrap_or(request.requirement)
            .to_string(),
        error: refusal.map(|r| {
            let body = r.body(request);
            ErrorEnvelope {
                error: ErrorFields {
                    status: body.status,
                    title: body.title.to_owned(),
                    message: body.message,
                },
            }
        }),
        explanation,
        position: decision.position,
    }
}

/// Decides a request: always 200 with the decision, whatever it is; a
/// malformed question is a 400 naming the field.
#[utoipa::path(post, path = "/v1/check", tag = "decisions",
    security(("service_key" = [])),
    request_body = CheckRequest,
    responses(
        (status = 200, body = CheckAnswer),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn check(
    State(app): State<App>,
    Body(request): Body<CheckRequest>,
) -> Result<Json<CheckAnswer>, ApiError> {
    let question = request.question()?;
    Ok(Json(answer(&app, question).await?))
}
