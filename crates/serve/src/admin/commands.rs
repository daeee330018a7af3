//! The commands, each with the actor the caller names. Every field is
//! parsed before anything is asked of the ledger, so bad input writes
//! nothing; each runs once per `Idempotency-Key` (`idempotency.rs`).

use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tokenledger_authz::{Command, NewToken, fresh};
use tokenledger_events::{Actor, Name, Role, TokenKind};
use utoipa::{IntoParams, ToSchema};

use crate::admin::scope::ScopeBody;
use crate::error::{ApiError, Body, ErrorEnvelope, Query, parse};
use crate::idempotency::json_reply;
use crate::routes::App;

/// What a command recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Recorded {
    /// The new company, teammate, workspace or token, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The log position of the last event recorded: a consistency token
    /// for the checks that must see it (`at_least_position`).
    pub position: u64,
}

/// A new token, and its secret: shown now (and again only by a reveal,
/// with the sealing key).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretReply {
    /// The token.
    pub token: String,
    /// Its secret.
    pub secret: String,
    /// The log position of the creation, or 0 for a reveal.
    pub position: u64,
}

/// A new company.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCompany {
    /// Its name.
    pub name: String,
}

/// A new teammate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeammate {
    /// The company (`cmp_…`).
    pub company: String,
    /// Their name.
    pub name: String,
    /// An admin (else a member).
    #[serde(default)]
    pub admin: bool,
    /// Who does it: `tea_…` or `system`.
    pub actor: String,
}

/// A role to give.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// `admin` or `member`.
    pub role: String,
    /// Who does it.
    pub actor: String,
}

/// Who does it.
#[derive(Debug, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ByActor {
    /// `tea_…` or `system`.
    pub actor: String,
}

/// A private-access setting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateAccess {
    /// Whether API tokens may reach the teammate's own resources.
    pub allowed: bool,
    /// Who does it.
    pub actor: String,
}

/// A new shared workspace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// The company.
    pub company: String,
    /// Its name.
    pub name: String,
    /// Who does it.
    pub actor: String,
}

/// A new token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// The company.
    pub company: String,
    /// A descriptive name.
    pub name: String,
    /// Who does it (an admin).
    pub actor: String,
    /// An OAuth grant rather than an API token.
    #[serde(default)]
    pub oauth: bool,
    /// Features: `resources`, `provisioning`, `app-triggers`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Company-level resources.
    #[serde(default)]
    pub global: bool,
    /// Shared workspaces: `["all"]`, or workspace ids.
    #[serde(default)]
    pub shared: Vec<String>,
    /// Teammates' private resources (each owner must allow it too).
    #[serde(default)]
    pub private: bool,
    /// Scopes such as `conversations:read`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn fingerprint(route: &str, path: &str, body: &impl Serialize) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in [route.as_bytes(), b"\0", path.as_bytes(), b"\0"] {
        hasher.update(part);
    }
    hasher.update(&serde_json::to_vec(body).unwrap_or_default());
    *hasher.finalize().as_bytes()
}

fn name(field: &str, text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::field(field, e))
}

fn random<T>(drawn: Result<T, tokenledger_authz::fresh::RandomError>) -> Result<T, ApiError> {
    drawn.map_err(|e| ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// Runs `command` as `actor` once per idempotency key, answering the
/// position it reached and `id`.
async fn execute(
    app: App,
    headers: &HeaderMap,
    fingerprint: [u8; 32],
    actor: Actor,
    command: Command,
    id: Option<String>,
) -> Response {
    let ledger = app.ledger.clone();
    app.idempotency
        .run(headers, fingerprint, async move {
            json_reply(
                ledger
                    .execute(actor, command)
                    .await
                    .map(|receipt| Recorded {
                        id,
                        position: receipt.position(),
                    })
                    .map_err(ApiError::from),
            )
        })
        .await
}

/// Creates a company.
#[utoipa::path(post, path = "/v1/companies", tag = "commands",
    security(("service_key" = [])),
    request_body = NewCompany,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn create_company(
    State(app): State<App>,
    headers: HeaderMap,
    Body(body): Body<NewCompany>,
) -> Result<Response, ApiError> {
    let name = name("name", &body.name)?;
    let company = random(fresh::company_id())?;
    let print = fingerprint("create_company", "", &body);
    let command = Command::CreateCompany { company, name };
    Ok(execute(
        app,
        &headers,
        print,
        Actor::System,
        command,
        Some(company.to_string()),
    )
    .await)
}

/// Adds a teammate to a company.
#[utoipa::path(post, path = "/v1/teammates", tag = "commands",
    security(("service_key" = [])),
    request_body = NewTeammate,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn add_teammate(
    State(app): State<App>,
    headers: HeaderMap,
    Body(body): Body<NewTeammate>,
) -> Result<Response, ApiError> {
    let company = parse("company", &body.company)?;
    let name = name("name", &body.name)?;
    let actor = parse("actor", &body.actor)?;
    let teammate = random(fresh::teammate_id())?;
    let role = if body.admin {
        Role::Admin
    } else {
        Role::Member
    };
    let print = fingerprint("add_teammate", "", &body);
    let command = Command::AddTeammate {
        company,
        teammate,
        name,
        role,
    };
    Ok(execute(
        app,
        &headers,
        print,
        actor,
        command,
        Some(teammate.to_string()),
    )
    .await)
}

/// Changes a teammate's role.
#[utoipa::path(put, path = "/v1/teammates/{{teammate}}/role", tag = "commands",
    security(("service_key" = [])),
    request_body = NewRole,
    params(("teammate" = String, Path, description = "tea_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn change_role(
    State(app): State<App>,
    Path(teammate): Path<String>,
    headers: HeaderMap,
    Body(body): Body<NewRole>,
) -> Result<Response, ApiError> {
    let id = parse("teammate", &teammate)?;
    let role = match body.role.as_str() {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => return Err(ApiError::field("role", "must be `admin` or `member`")),
    };
    let actor = parse("actor", &body.actor)?;
    let print = fingerprint("change_role", &teammate, &body);
    let command = Command::ChangeRole { teammate: id, role };
    Ok(execute(app, &headers, print, actor, command, None).await)
}

/// Deactivates a teammate, for good.
#[utoipa::path(post, path = "/v1/teammates/{{teammate}}/deactivate", tag = "commands",
    security(("service_key" = [])),
    request_body = ByActor,
    params(("teammate" = String, Path, description = "tea_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn deactivate_teammate(
    State(app): State<App>,
    Path(teammate): Path<String>,
    headers: HeaderMap,
    Body(body): Body<ByActor>,
) -> Result<Response, ApiError> {
    let id = parse("teammate", &teammate)?;
    let actor = parse("actor", &body.actor)?;
    let print = fingerprint("deactivate_teammate", &teammate, &body);
    let command = Command::DeactivateTeammate { teammate: id };
    Ok(execute(app, &headers, print, actor, command, None).await)
}

/// Sets a teammate's "Allow access to my individual resources via the API".
#[utoipa::path(put, path = "/v1/teammates/{{teammate}}/private-api-access", tag = "commands",
    security(("service_key" = [])),
    request_body = PrivateAccess,
    params(("teammate" = String, Path, description = "tea_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn set_private_access(
    State(app): State<App>,
    Path(teammate): Path<String>,
    headers: HeaderMap,
    Body(body): Body<PrivateAccess>,
) -> Result<Response, ApiError> {
    let id = parse("teammate", &teammate)?;
    let actor = parse("actor", &body.actor)?;
    let print = fingerprint("set_private_access", &teammate, &body);
    let command = Command::SetPrivateApiAccess {
        teammate: id,
        allowed: body.allowed,
    };
    Ok(execute(app, &headers, print, actor, command, None).await)
}

/// Sets every teammate's private API access in a company.
#[utoipa::path(put, path = "/v1/companies/{{company}}/private-api-access", tag = "commands",
    security(("service_key" = [])),
    request_body = PrivateAccess,
    params(("company" = String, Path, description = "cmp_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn set_private_access_for_all(
    State(app): State<App>,
    Path(company): Path<String>,
    headers: HeaderMap,
    Body(body): Body<PrivateAccess>,
) -> Result<Response, ApiError> {
    let id = parse("company", &company)?;
    let actor = parse("actor", &body.actor)?;
    let print = fingerprint("set_private_access_for_all", &company, &body);
    let command = Command::SetPrivateApiAccessForAll {
        company: id,
        allowed: body.allowed,
    };
    Ok(execute(app, &headers, print, actor, command, None).await)
}

/// Creates a shared workspace.
#[utoipa::path(post, path = "/v1/workspaces", tag = "commands",
    security(("service_key" = [])),
    request_body = NewWorkspace,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn create_workspace(
    State(app): State<App>,
    headers: HeaderMap,
    Body(body): Body<NewWorkspace>,
) -> Result<Response, ApiError> {
    let company = parse("company", &body.company)?;
    let name = name("name", &body.name)?;
    let actor = parse("actor", &body.actor)?;
    let workspace = random(fresh::workspace_id())?;
    let print = fingerprint("create_workspace", "", &body);
    let command = Command::CreateWorkspace {
        company,
        workspace,
        name,
    };
    Ok(execute(
        app,
        &headers,
        print,
        actor,
        command,
        Some(workspace.to_string()),
    )
    .await)
}

/// Creates a token; its secret is in the reply, which a retry with the
/// same `Idempotency-Key` repeats rather than making a second token.
#[utoipa::path(post, path = "/v1/tokens", tag = "commands",
    security(("service_key" = [])),
    request_body = NewTokenBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = SecretReply),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn create_token(
    State(app): State<App>,
    headers: HeaderMap,
    Body(body): Body<NewTokenBody>,
) -> Result<Response, ApiError> {
    let new = NewToken {
        company: parse("company", &body.company)?,
        name: name("name", &body.name)?,
        kind: if body.oauth {
            TokenKind::OAuthGrant
        } else {
            TokenKind::ApiToken
        },
        scope: ScopeBody {
            features: &body.features,
            global: body.global,
            shared: &body.shared,
            private: body.private,
            scopes: &body.scopes,
        }
        .parse()?,
        expires_at: body
            .expires_at
            .as_deref()
            .map(|t| parse("expires_at", t))
            .transpose()?,
    };
    let actor = parse("actor", &body.actor)?;
    let print = fingerprint("create_token", "", &body);
    let ledger = app.ledger.clone();
    Ok(app
        .idempotency
        .run(&headers, print, async move {
            json_reply(
                ledger
                    .create_token(actor, new)
                    .await
                    .map(|created| SecretReply {
                        token: created.token.to_string(),
                        secret: created.secret.expose().to_owned(),
                        position: created.receipt.position(),
                    })
                    .map_err(ApiError::from),
            )
        })
        .await)
}

/// Reveals a token's secret again (recorded first; needs the server's
/// sealing key).
#[utoipa::path(post, path = "/v1/tokens/{{token}}/reveal", tag = "commands",
    security(("service_key" = [])),
    request_body = ByActor,
    params(("token" = String, Path, description = "tok_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = SecretReply),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn reveal_token(
    State(app): State<App>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Body(body): Body<ByActor>,
) -> Result<Response, ApiError> {
    let id = parse("token", &token)?;
    let actor = parse("actor", &body.actor)?;
    let print = fingerprint("reveal_token", &token, &body);
    let ledger = app.ledger.clone();
    Ok(app
        .idempotency
        .run(&headers, print, async move {
            json_reply(
                ledger
                    .reveal(actor, id)
                    .await
                    .map(|secret| SecretReply {
                        token: id.to_string(),
                        secret: secret.expose().to_owned(),
                        position: 0,
                    })
                    .map_err(ApiError::from),
            )
        })
        .await)
}

/// Deletes a token: at once, for good.
#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "commands",
    security(("service_key" = [])),
    params(("token" = String, Path, description = "tok_…"), ByActor,
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and runs nothing again")),
    responses(
        (status = 200, body = Recorded),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn delete_token(
    State(app): State<App>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ByActor>,
) -> Result<Response, ApiError> {
    let id = parse("token", &token)?;
    let actor = parse("actor", &query.actor)?;
    let print = fingerprint("delete_token", &token, &query);
    let command = Command::DeleteToken { token: id };
    Ok(execute(app, &headers, print, actor, command, None).await)
}
