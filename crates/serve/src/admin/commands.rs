//! The commands, each with the actor the caller names. Every field is
//! parsed before anything is asked of the ledger, so bad input writes
//! nothing; each runs once per `Idempotency-Key` (`idempotency.rs`), in
//! this process and, through the ledger, across restarts and replicas:
//! an id in a reply is read from the events recorded, never from what the
//! handler drew, which a replayed command did not use.

use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde::Serialize;
use tokenledger_authz::{Command, LedgerError, NewToken, Receipt, fresh};
use tokenledger_events::{Actor, Event, Name, Role, TokenKind};

use crate::admin::bodies::{
    ByActor, NewCompany, NewRole, NewTeammate, NewTokenBody, NewWorkspace, PrivateAccess, Recorded,
    SecretReply,
};
use crate::admin::scope::ScopeBody;
use crate::error::{ApiError, Body, ErrorEnvelope, Query, parse};
use crate::idempotency::json_reply;
use crate::routes::App;

/// The request as its idempotency key's events are derived from it. A
/// body that does not serialize is refused: hashed as nothing, every such
/// request of a route would share one fingerprint, and one another's ids.
fn fingerprint(route: &str, path: &str, body: &impl Serialize) -> Result<[u8; 32], ApiError> {
    let body = serde_json::to_vec(body)
        .map_err(|e| ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut hasher = blake3::Hasher::new();
    for part in [route.as_bytes(), b"\0", path.as_bytes(), b"\0", &body] {
        hasher.update(part);
    }
    Ok(*hasher.finalize().as_bytes())
}

fn name(field: &str, text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::field(field, e))
}

fn random<T>(drawn: Result<T, tokenledger_authz::fresh::RandomError>) -> Result<T, ApiError> {
    drawn.map_err(|e| ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// Runs `command` as `actor` once per idempotency key, answering the
/// position it reached and, for a command that `creates` something, the
/// id of what its recorded events made.
async fn execute(
    app: App,
    headers: &HeaderMap,
    fingerprint: [u8; 32],
    actor: Actor,
    command: Command,
    creates: bool,
) -> Response {
    let ledger = app.ledger.clone();
    app.idempotency
        .run(headers, fingerprint, |key| async move {
            let outcome = match key {
                Some(key) => ledger.execute_once(actor, command, key).await,
                None => ledger.execute(actor, command).await,
            };
            let replayed = outcome.as_ref().is_ok_and(|receipt| receipt.replayed);
            let recorded = outcome.map_err(ApiError::from).and_then(|receipt| {
                // A creation whose receipt names nothing made is no success
                // to answer without the id.
                let id = match creates {
                    true => Some(made(&receipt).ok_or_else(|| {
                        ApiError::new(
                            http::StatusCode::INTERNAL_SERVER_ERROR,
                            "the command was recorded, but its events name nothing made",
                        )
                    })?),
                    false => None,
                };
                Ok(Recorded {
                    id,
                    position: receipt.position(),
                })
            });
            json_reply(recorded, replayed)
        })
        .await
}

/// The id of the company, teammate or workspace a command's first event
/// made, if it made one.
fn made(receipt: &Receipt) -> Option<String> {
    match &receipt.events.first()?.event {
        Event::CompanyCreated { company, .. } => Some(company.to_string()),
        Event::TeammateAdded { teammate, .. } => Some(teammate.to_string()),
        Event::WorkspaceCreated { workspace, .. } => Some(workspace.to_string()),
        _ => None,
    }
}

/// Creates a company.
#[utoipa::path(post, path = "/v1/companies", tag = "commands",
    security(("service_key" = [])),
    request_body = NewCompany,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("create_company", "", &body)?;
    let command = Command::CreateCompany { company, name };
    Ok(execute(app, &headers, print, Actor::System, command, true).await)
}

/// Adds a teammate to a company.
#[utoipa::path(post, path = "/v1/teammates", tag = "commands",
    security(("service_key" = [])),
    request_body = NewTeammate,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("add_teammate", "", &body)?;
    let command = Command::AddTeammate {
        company,
        teammate,
        name,
        role,
    };
    Ok(execute(app, &headers, print, actor, command, true).await)
}

/// Changes a teammate's role.
#[utoipa::path(put, path = "/v1/teammates/{{teammate}}/role", tag = "commands",
    security(("service_key" = [])),
    request_body = NewRole,
    params(("teammate" = String, Path, description = "tea_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("change_role", &teammate, &body)?;
    let command = Command::ChangeRole { teammate: id, role };
    Ok(execute(app, &headers, print, actor, command, false).await)
}

/// Deactivates a teammate, for good.
#[utoipa::path(post, path = "/v1/teammates/{{teammate}}/deactivate", tag = "commands",
    security(("service_key" = [])),
    request_body = ByActor,
    params(("teammate" = String, Path, description = "tea_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("deactivate_teammate", &teammate, &body)?;
    let command = Command::DeactivateTeammate { teammate: id };
    Ok(execute(app, &headers, print, actor, command, false).await)
}

/// Sets a teammate's "Allow access to my individual resources via the API".
#[utoipa::path(put, path = "/v1/teammates/{{teammate}}/private-api-access", tag = "commands",
    security(("service_key" = [])),
    request_body = PrivateAccess,
    params(("teammate" = String, Path, description = "tea_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("set_private_access", &teammate, &body)?;
    let command = Command::SetPrivateApiAccess {
        teammate: id,
        allowed: body.allowed,
    };
    Ok(execute(app, &headers, print, actor, command, false).await)
}

/// Sets every teammate's private API access in a company.
#[utoipa::path(put, path = "/v1/companies/{{company}}/private-api-access", tag = "commands",
    security(("service_key" = [])),
    request_body = PrivateAccess,
    params(("company" = String, Path, description = "cmp_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("set_private_access_for_all", &company, &body)?;
    let command = Command::SetPrivateApiAccessForAll {
        company: id,
        allowed: body.allowed,
    };
    Ok(execute(app, &headers, print, actor, command, false).await)
}

/// Creates a shared workspace.
#[utoipa::path(post, path = "/v1/workspaces", tag = "commands",
    security(("service_key" = [])),
    request_body = NewWorkspace,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("create_workspace", "", &body)?;
    let command = Command::CreateWorkspace {
        company,
        workspace,
        name,
    };
    Ok(execute(app, &headers, print, actor, command, true).await)
}

/// Creates a token; its secret is in the reply, which a retry with the
/// same `Idempotency-Key` repeats rather than making a second token. After
/// a restart, or on another replica, the retry is answered from the log:
/// with the server's sealing key, the first token and its secret (recorded
/// as a reveal); without one, or once the token is deleted or expired, a
/// 409 naming the token and its position: its secret was in the first
/// reply, and is not kept in plain text.
#[utoipa::path(post, path = "/v1/tokens", tag = "commands",
    security(("service_key" = [])),
    request_body = NewTokenBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
    responses(
        (status = 200, body = SecretReply),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "Refused as a conflict; or a creation retried with its key after a restart, or on another replica, without the sealing key, or after the token was deleted or expired: the token exists, and its secret was in the first reply and is not kept in plain text"),
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
    let print = fingerprint("create_token", "", &body)?;
    let ledger = app.ledger.clone();
    Ok(app
        .idempotency
        .run(&headers, print, |key| async move {
            let outcome = match key {
                Some(key) => ledger.create_token_once(actor, new, key).await,
                None => ledger.create_token(actor, new).await,
            };
            let replayed = match &outcome {
                Ok(created) => created.receipt.replayed,
                Err(error) => matches!(error, LedgerError::SecretShownOnce { .. }),
            };
            let reply = outcome.map(|created| SecretReply {
                token: created.token.to_string(),
                secret: created.secret.expose().to_owned(),
                position: created.receipt.position(),
            });
            json_reply(reply.map_err(ApiError::from), replayed)
        })
        .await)
}

/// Reveals a token's secret again (recorded first; needs the server's
/// sealing key).
#[utoipa::path(post, path = "/v1/tokens/{{token}}/reveal", tag = "commands",
    security(("service_key" = [])),
    request_body = ByActor,
    params(("token" = String, Path, description = "tok_…"), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply, and reveals nothing again; after a restart, or on another replica, it is a reveal of its own, recorded")),
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
    let print = fingerprint("reveal_token", &token, &body)?;
    let ledger = app.ledger.clone();
    // Not keyed in the ledger: each reveal that shows the secret is
    // recorded, a retry after a restart too, so the history says who saw
    // it how often.
    Ok(app
        .idempotency
        .run(&headers, print, |_| async move {
            let reply = ledger.reveal(actor, id).await.map(|secret| SecretReply {
                token: id.to_string(),
                secret: secret.expose().to_owned(),
                position: 0,
            });
            json_reply(reply.map_err(ApiError::from), false)
        })
        .await)
}

/// Deletes a token: at once, for good.
#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "commands",
    security(("service_key" = [])),
    params(("token" = String, Path, description = "tok_…"), ByActor,
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key repeats the reply (marked `idempotent-replayed: true`) and runs nothing again, also after a restart or on another replica sharing the log")),
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
    let print = fingerprint("delete_token", &token, &query)?;
    let command = Command::DeleteToken { token: id };
    Ok(execute(app, &headers, print, actor, command, false).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: [u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A request's fingerprint gives its events' ids in the log
    /// (`IdempotencyKey`): should it change, a retry that straddles an
    /// upgrade would not find what the first attempt recorded, and would
    /// run again (a second token). A change to these bodies' fields or to
    /// how they serialize must keep these, or say in the release notes
    /// that keys from before it are not honoured.
    #[test]
    fn the_fingerprints_of_parsed_bodies_are_pinned() {
        let token: NewTokenBody = serde_json::from_str(
            r#"{"company": "cmp_1", "name": "Plugin", "actor": "tea_1",
                "features": ["resources"], "private": true, "scopes": ["conversations:read"]}"#,
        )
        .unwrap();
        // Defaults are filled in before the fingerprint: a field left out
        // and the same field given its default are the same request.
        let spelled_out: NewTokenBody = serde_json::from_str(
            r#"{"company": "cmp_1", "name": "Plugin", "actor": "tea_1", "oauth": false,
                "features": ["resources"], "global": false, "shared": [], "private": true,
                "scopes": ["conversations:read"], "expires_at": null}"#,
        )
        .unwrap();
        let print = fingerprint("create_token", "", &token).unwrap();
        assert_eq!(
            print,
            fingerprint("create_token", "", &spelled_out).unwrap()
        );
        assert_eq!(
            hex(print),
            "cd49806726ee4fb99708fbc44ae86153c90306b8a38df59f2a7a34a8ff4fb320"
        );
        let company = NewCompany {
            name: "Acme".to_owned(),
        };
        assert_eq!(
            hex(fingerprint("create_company", "", &company).unwrap()),
            "fda22ffef8f2b53b2d3a12fcf38fbeee5649b13b116d63b6e920f80c4d721bf5"
        );
    }
}
