//! The AuthZEN 1.0 requests and answers, as the specification names
//! their fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorEnvelope;

/// The subject: a token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzSubject {
    /// Always `token`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The token's id (`tok_…`); or give `properties.secret`.
    #[serde(default)]
    pub id: Option<String>,
    /// `{"secret": "…"}` to authenticate by the presented secret.
    #[serde(default)]
    pub properties: Option<AzSubjectProperties>,
}

/// What a subject may carry.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzSubjectProperties {
    /// The secret the caller presented.
    pub secret: String,
}

/// The action: a scope, or `METHOD /path`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzAction {
    /// `conversations:read`, or `GET /conversations/cnv_1`.
    pub name: String,
}

/// The resource and where it lives.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzResource {
    /// The resource's kind, as Front names it (`conversation`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id (`cnv_1`).
    pub id: String,
    /// Its namespace.
    pub properties: AzResourceProperties,
}

/// Where a resource lives.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzResourceProperties {
    /// `global`, `shared` or `private`.
    pub namespace: String,
    /// With `global`: the company (`cmp_…`).
    #[serde(default)]
    pub company: Option<String>,
    /// With `shared`: the workspace (`tim_…`).
    #[serde(default)]
    pub workspace: Option<String>,
    /// With `private`: the owner (`tea_…`).
    #[serde(default)]
    pub owner: Option<String>,
}

/// The request's context.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzContext {
    /// Decide only once the state has applied this log position.
    #[serde(default)]
    pub at_least_position: Option<u64>,
}

/// One access evaluation request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    /// Who.
    pub subject: AzSubject,
    /// Does what.
    pub action: AzAction,
    /// To what.
    pub resource: AzResource,
    /// With what consistency.
    #[serde(default)]
    pub context: Option<AzContext>,
}

/// The decision.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluationResponse {
    /// Allowed or not.
    pub decision: bool,
    /// Why: tokenledger's answer.
    pub context: AzDecisionContext,
}

/// What a decision's context holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AzDecisionContext {
    /// The log position decided at.
    pub position: u64,
    /// The token, once the subject named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A refusal's status (401, 403, or 503 once closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Front's body for the refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEnvelope>,
    /// The first rule that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The scope the request needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_scope: Option<String>,
    /// Why, with the event behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// One item of a batch: each field given replaces the batch's default.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationItem {
    /// Who, else the batch's subject.
    #[serde(default)]
    pub subject: Option<AzSubject>,
    /// Does what, else the batch's action.
    #[serde(default)]
    pub action: Option<AzAction>,
    /// To what, else the batch's resource.
    #[serde(default)]
    pub resource: Option<AzResource>,
    /// With what consistency, else the batch's context.
    #[serde(default)]
    pub context: Option<AzContext>,
}

/// How a batch is evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Semantic {
    /// Every evaluation, in order (the default).
    #[default]
    ExecuteAll,
    /// In order, stopping after the first denial.
    DenyOnFirstDeny,
    /// In order, stopping after the first permit.
    PermitOnFirstPermit,
}

/// A batch's options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`.
    #[serde(default)]
    pub evaluations_semantic: Semantic,
}

/// A batch: defaults, and the evaluations that complete them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationsRequest {
    /// The default subject.
    #[serde(default)]
    pub subject: Option<AzSubject>,
    /// The default action.
    #[serde(default)]
    pub action: Option<AzAction>,
    /// The default resource.
    #[serde(default)]
    pub resource: Option<AzResource>,
    /// The default context.
    #[serde(default)]
    pub context: Option<AzContext>,
    /// The evaluations; none asks the defaults once.
    #[serde(default)]
    pub evaluations: Vec<EvaluationItem>,
    /// How to evaluate them.
    #[serde(default)]
    pub options: Option<BatchOptions>,
}

/// The batch's decisions, in the order asked (up to the one that stopped
/// it, under an ordered semantic).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluationsResponse {
    /// One decision per evaluation.
    pub evaluations: Vec<EvaluationResponse>,
}

/// The discovery document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Configuration {
    /// This decision point's base URL.
    pub policy_decision_point: String,
    /// The single evaluation endpoint.
    pub access_evaluation_endpoint: String,
    /// The batch endpoint.
    pub access_evaluations_endpoint: String,
}
