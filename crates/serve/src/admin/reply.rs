//! What the investigations answer, as typed documents (so the OpenAPI
//! document describes them) giving the JSON the CLI prints with `--json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenledger_authz::{Location, Provenance, State, Timeline, scope_json};
use tokenledger_events::{CompanyId, TokenId};
use utoipa::ToSchema;

use crate::error::ApiError;

/// A token in a company's list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenRow {
    /// Its id.
    pub token: String,
    /// Its name.
    pub name: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was deleted, if it was.
    pub deleted_at: Option<String>,
}

impl TokenRow {
    pub(crate) fn list(state: &State, company: CompanyId) -> Result<Vec<TokenRow>, ApiError> {
        if state.company(company).is_none() {
            return Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                format!("company `{company}` does not exist"),
            ));
        }
        let mut tokens: Vec<_> = state.tokens_of(company).collect();
        tokens.sort_by_key(|(_, t)| t.created().position);
        Ok(tokens
            .into_iter()
            .map(|(id, t)| TokenRow {
                token: id.to_string(),
                name: t.name().as_str().to_owned(),
                created_by: t.created().actor.to_string(),
                created_at: t.created().at.to_string(),
                deleted_at: t.deleted().map(|d| d.at.to_string()),
            })
            .collect())
    }
}

/// Who did something, when, at which position.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Done {
    /// The actor.
    pub by: String,
    /// When.
    pub at: String,
    /// The log position.
    pub position: u64,
}

impl From<&Provenance> for Done {
    fn from(p: &Provenance) -> Done {
        Done {
            by: p.actor.to_string(),
            at: p.at.to_string(),
            position: p.position,
        }
    }
}

/// One token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenShown {
    /// Its id.
    pub token: String,
    /// Its company.
    pub company: String,
    /// Its name.
    pub name: String,
    /// `api_token` or `oauth_grant`.
    pub kind: String,
    /// What it may do: features, namespaces, scopes.
    #[schema(value_type = Object)]
    pub scope: Value,
    /// When it stops working.
    pub expires_at: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// Every reveal of its secret.
    pub reveals: Vec<Done>,
    /// Who deleted it.
    pub deleted_by: Option<String>,
    /// When.
    pub deleted_at: Option<String>,
}

impl TokenShown {
    pub(crate) fn of(
        state: &State,
        token: TokenId,
        reveals: &[Provenance],
    ) -> Result<TokenShown, ApiError> {
        let found = state.token(token).ok_or_else(|| {
            ApiError::new(
                http::StatusCode::NOT_FOUND,
                format!("token `{token}` does not exist"),
            )
        })?;
        Ok(TokenShown {
            token: token.to_string(),
            company: found.company().to_string(),
            name: found.name().as_str().to_owned(),
            kind: found.kind().as_str().to_owned(),
            scope: scope_json(&found.scope()),
            expires_at: found.expires_at().map(|t| t.to_string()),
            created_by: found.created().actor.to_string(),
            created_at: found.created().at.to_string(),
            reveals: reveals.iter().map(Done::from).collect(),
            deleted_by: found.deleted().map(|d| d.actor.to_string()),
            deleted_at: found.deleted().map(|d| d.at.to_string()),
        })
    }
}

/// What a token could reach over a period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimelineReply {
    /// The token.
    pub token: String,
    /// The period's start.
    pub since: String,
    /// The period's end.
    pub until: String,
    /// One row per namespace and permission.
    pub rows: Vec<ReachRow>,
    /// The events that changed it.
    pub changes: Vec<ChangeRow>,
}

/// A namespace, one key naming its kind.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    /// A company's global namespace.
    Global(String),
    /// A shared workspace.
    Shared(String),
    /// A teammate's private resources.
    Private(String),
}

impl From<Location> for Namespace {
    fn from(location: Location) -> Namespace {
        match location {
            Location::Global(c) => Namespace::Global(c.to_string()),
            Location::Shared(w) => Namespace::Shared(w.to_string()),
            Location::Private(t) => Namespace::Private(t.to_string()),
        }
    }
}

/// When a token could use a permission on a namespace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReachRow {
    /// The namespace.
    pub namespace: Namespace,
    /// It, for people.
    pub label: String,
    /// `read`, `write`, `delete` or `send`.
    pub permission: String,
    /// The intervals it could.
    pub intervals: Vec<IntervalRow>,
}

/// An interval.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IntervalRow {
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// Still open at the period's end.
    pub open: bool,
}

/// A change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeRow {
    /// When.
    pub at: String,
    /// Its log position, for an event.
    pub position: Option<u64>,
    /// Who.
    pub actor: Option<String>,
    /// What.
    pub what: String,
}

impl From<&Timeline> for TimelineReply {
    fn from(timeline: &Timeline) -> TimelineReply {
        TimelineReply {
            token: timeline.token.to_string(),
            since: timeline.since.to_string(),
            until: timeline.until.to_string(),
            rows: timeline
                .rows
                .iter()
                .map(|row| ReachRow {
                    namespace: row.location.into(),
                    label: row.label.clone(),
                    permission: row.permission.as_str().to_owned(),
                    intervals: row
                        .intervals
                        .iter()
                        .map(|i| IntervalRow {
                            from: i.from.to_string(),
                            to: i.to.to_string(),
                            open: i.open,
                        })
                        .collect(),
                })
                .collect(),
            changes: timeline
                .changes
                .iter()
                .map(|c| ChangeRow {
                    at: c.at.to_string(),
                    position: c.position,
                    actor: c.actor.map(|a| a.to_string()),
                    what: c.what.clone(),
                })
                .collect(),
        }
    }
}
