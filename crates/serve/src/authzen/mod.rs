//! The OpenID AuthZEN Authorization API 1.0: the discovery document, one
//! evaluation, and a batch. The mapping onto tokenledger's question:
//!
//! - subject `{"type": "token", "id": "tok_…"}`, or
//!   `{"type": "token", "properties": {"secret": "…"}}` to authenticate by secret;
//! - action `{"name": "conversations:read"}` (a scope), or
//!   `{"name": "GET /conversations/cnv_1"}` (resolved through the catalog);
//! - resource `{"type": "conversation", "id": "cnv_1", "properties":
//!   {"namespace": "global", "company": "cmp_…"}}`, or `"shared"` with
//!   `"workspace": "tim_…"`, or `"private"` with `"owner": "tea_…"`;
//! - context `{"at_least_position": N}`, optional;
//! - the answer `{"decision": bool, "context": {...}}`: a refusal's context
//!   holds the status, Front's body, the rule, the needed scope, the
//!   explanation and the position; an allow's holds the position.

use axum::Json;
use axum::extract::State;
use http::HeaderMap;
use http::header::HOST;
use tokenledger_authz::Location;
use tokenledger_events::{Requirement, ResourceId};
use zeroize::Zeroizing;

mod types;

use types::{
    AzAction, AzContext, AzDecisionContext, AzResource, AzResourceProperties, AzSubject,
    Configuration, EvaluationItem, EvaluationRequest, EvaluationResponse, EvaluationsRequest,
    EvaluationsResponse, Semantic,
};

use crate::check::{CheckAnswer, Question, Subject, answer, endpoint};
use crate::error::{ApiError, Body, ErrorEnvelope, parse};
use crate::routes::App;

/// The most evaluations one batch may ask.
pub const MAX_EVALUATIONS: usize = 256;

fn question(
    at: &str,
    subject: &AzSubject,
    action: &AzAction,
    resource: &AzResource,
    context: Option<&AzContext>,
) -> Result<Question, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    if subject.kind != "token" {
        return Err(ApiError::field(&field("subject.type"), "must be `token`"));
    }
    let subject = match (&subject.id, &subject.properties) {
        (Some(id), None) => Subject::Token(parse(&field("subject.id"), id)?),
        (None, Some(properties)) => Subject::Secret(Zeroizing::new(properties.secret.clone())),
        _ => {
            return Err(ApiError::field(
                &field("subject"),
                "give exactly one of `id` and `properties.secret`",
            ));
        }
    };
    let requirement = if action.name.contains(' ') {
        endpoint(&field("action.name"), &action.name)?
    } else {
        Requirement::Scope(parse(&field("action.name"), &action.name)?)
    };
    let id: ResourceId = parse(&field("resource.id"), &resource.id)?;
    if id.resource_type().is_some_and(|kind| kind != resource.kind) {
        return Err(ApiError::field(
            &field("resource.type"),
            format!("`{}` does not name the kind of `{id}`", resource.kind),
        ));
    }
    Ok(Question {
        subject,
        requirement,
        resource: id,
        location: location(&field("resource.properties"), &resource.properties)?,
        at_least_position: context.and_then(|c| c.at_least_position),
    })
}

fn location(at: &str, p: &AzResourceProperties) -> Result<Location, ApiError> {
    let field = |name: &str| format!("{at}.{name}");
    let only = |namespace: &str, given: usize| {
        if given == 1 {
            Ok(())
        } else {
            Err(ApiError::field(
                &field("namespace"),
                format!(
                    "`{namespace}` takes exactly one of `company`, `workspace` and `owner`, the one it names"
                ),
            ))
        }
    };
    let given = [&p.company, &p.workspace, &p.owner]
        .iter()
        .filter(|v| v.is_some())
        .count();
    match (p.namespace.as_str(), &p.company, &p.workspace, &p.owner) {
        ("global", Some(company), _, _) => {
            only("global", given)?;
            Ok(Location::Global(parse(&field("company"), company)?))
        }
        ("shared", _, Some(workspace), _) => {
            only("shared", given)?;
            Ok(Location::Shared(parse(&field("workspace"), workspace)?))
        }
        ("private", _, _, Some(owner)) => {
            only("private", given)?;
            Ok(Location::Private(parse(&field("owner"), owner)?))
        }
        ("global" | "shared" | "private", ..) => Err(ApiError::field(
            &field("namespace"),
            "`global` needs `company`, `shared` needs `workspace`, `private` needs `owner`",
        )),
        (other, ..) => Err(ApiError::field(
            &field("namespace"),
            format!("`{other}` is not one of `global`, `shared` and `private`"),
        )),
    }
}

fn response(answer: CheckAnswer) -> EvaluationResponse {
    let refused = !answer.allowed;
    EvaluationResponse {
        decision: answer.allowed,
        context: AzDecisionContext {
            position: answer.position,
            token: answer.token,
            status: refused.then_some(answer.status),
            error: answer.error,
            rule: answer.rule,
            needed_scope: refused.then_some(answer.needed_scope),
            explanation: answer.explanation,
        },
    }
}

/// The discovery document, with absolute URLs on the host the caller used.
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "authzen",
    security(("service_key" = [])),
    responses((status = 200, body = Configuration), (status = 401, body = ErrorEnvelope)))]
pub(crate) async fn configuration(
    State(app): State<App>,
    headers: HeaderMap,
) -> Json<Configuration> {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let base = format!("{}://{host}", app.scheme);
    Json(Configuration {
        access_evaluation_endpoint: format!("{base}/access/v1/evaluation"),
        access_evaluations_endpoint: format!("{base}/access/v1/evaluations"),
        policy_decision_point: base,
    })
}

/// One access evaluation.
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "authzen",
    security(("service_key" = [])),
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = EvaluationResponse),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn evaluation(
    State(app): State<App>,
    Body(request): Body<EvaluationRequest>,
) -> Result<Json<EvaluationResponse>, ApiError> {
    let question = question(
        "",
        &request.subject,
        &request.action,
        &request.resource,
        request.context.as_ref(),
    )?;
    Ok(Json(response(answer(&app, question).await?)))
}

/// A batch of access evaluations. Every evaluation is parsed before any
/// is decided, so a malformed one is a 400 naming it.
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "authzen",
    security(("service_key" = [])),
    request_body = EvaluationsRequest,
    responses(
        (status = 200, body = EvaluationsResponse),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn evaluations(
    State(app): State<App>,
    Body(request): Body<EvaluationsRequest>,
) -> Result<Json<EvaluationsResponse>, ApiError> {
    let mut items = request.evaluations;
    if items.len() > MAX_EVALUATIONS {
        return Err(ApiError::field(
            "evaluations",
            format!("at most {MAX_EVALUATIONS} evaluations in one batch"),
        ));
    }
    if items.is_empty() {
        items.push(EvaluationItem::default());
    }
    let mut questions = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = format!("evaluations[{index}].");
        let missing = |name: &str| {
            ApiError::field(
                &format!("{at}{name}"),
                "missing, here and in the batch's defaults",
            )
        };
        let subject = item
            .subject
            .as_ref()
            .or(request.subject.as_ref())
            .ok_or_else(|| missing("subject"))?;
        let action = item
            .action
            .as_ref()
            .or(request.action.as_ref())
            .ok_or_else(|| missing("action"))?;
        let resource = item
            .resource
            .as_ref()
            .or(request.resource.as_ref())
            .ok_or_else(|| missing("resource"))?;
        let context = item.context.as_ref().or(request.context.as_ref());
        questions.push(question(&at, subject, action, resource, context)?);
    }
    let semantic = request.options.unwrap_or_default().evaluations_semantic;
    let mut evaluations = Vec::with_capacity(questions.len());
    for question in questions {
        let decided = response(answer(&app, question).await?);
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decided.decision,
            Semantic::PermitOnFirstPermit => decided.decision,
        };
        evaluations.push(decided);
        if stop {
            break;
        }
    }
    Ok(Json(EvaluationsResponse { evaluations }))
}
