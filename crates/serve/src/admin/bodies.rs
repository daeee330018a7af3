//! What the commands take and answer.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
