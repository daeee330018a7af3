//! Decision records: what the layer decided for each request, with enough
//! to replay the decision later against the state at its position (as OPA's
//! decision logs do). A record never holds the secret, only the token's id.

use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};
use tokenledger_authz::{Location, Rule};
use tokenledger_events::{Method, Requirement, ResourceId, Timestamp, TokenId};

/// Whether the request went on to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed: the inner service was called.
    Allowed,
    /// Refused: the layer answered, and the inner service was not called.
    Refused,
}

impl Verdict {
    /// `allowed` or `refused`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Refused => "refused",
        }
    }
}

/// One decision of the layer.
///
/// A request refused before the decision (no bearer, an endpoint not in the
/// catalog, a resource the locator did not find) has no `rule`, and its
/// `reason` says what happened. A record with a token, a requirement, a
/// resource and a location replays: the state at `position` and
/// [`tokenledger_authz::authorize`] with them at `at` give the same verdict
/// and rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// The request's id, made by the layer: unique to the request.
    pub request_id: String,
    /// The client's own `x-request-id`, when it sent one (1 to 128 visible
    /// ASCII characters), to join with the client's logs. The client picks
    /// it: two requests may carry the same.
    pub client_request_id: Option<String>,
    /// When the request was decided (the time the rules were checked at).
    pub at: Timestamp,
    /// The method, when it is one the Core API uses.
    pub method: Option<Method>,
    /// The catalog's operation id, once the endpoint was resolved.
    pub operation: Option<&'static str>,
    /// What the endpoint needs, once resolved.
    pub requirement: Option<Requirement>,
    /// The token, once the secret named one.
    pub token: Option<TokenId>,
    /// The resource, once located.
    pub resource: Option<ResourceId>,
    /// Where it lives, once located.
    pub location: Option<Location>,
    /// The log position of the state decided against, when the ledger was
    /// asked.
    pub position: Option<u64>,
    /// Allowed or refused.
    pub verdict: Verdict,
    /// The rule that refused, for a refusal by the decision.
    pub rule: Option<Rule>,
    /// The HTTP status answered (the inner service's is not known here:
    /// 200 stands for "passed on").
    pub status: u16,
    /// A stable name for why: `allow`, the rule's name, or the layer's
    /// reason (`missing_bearer`, `unknown_endpoint`, `not_found`, …).
    pub reason: &'static str,
}

impl DecisionRecord {
    /// A record of request `request_id` at `at` of which nothing is known
    /// yet: refused, status 0, reason `undecided`. The layer fills it in as
    /// the decision goes; a sink's tests can do the same.
    pub fn new(request_id: String, at: Timestamp) -> DecisionRecord {
        DecisionRecord {
            request_id,
            client_request_id: None,
            at,
            method: None,
            operation: None,
            requirement: None,
            token: None,
            resource: None,
            location: None,
            position: None,
            verdict: Verdict::Refused,
            rule: None,
            status: 0,
            reason: "undecided",
        }
    }

    /// The record as one JSON object, as the JSON-lines sink writes it.
    /// Locations are written as `{"global":"cmp_…"}`, `{"shared":"tim_…"}`
    /// or `{"private":"tea_…"}`; times in microseconds since the epoch.
    pub fn to_json(&self) -> Value {
        let text = |value: Option<String>| value.map_or(Value::Null, Value::String);
        json!({
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "at_micros": self.at.as_micros(),
            "method": self.method.map(Method::as_str),
            "operation": self.operation,
            "requirement": text(self.requirement.map(|r| r.to_string())),
            "token": text(self.token.map(|t| t.to_string())),
            "resource": text(self.resource.as_ref().map(ToString::to_string)),
            "location": self.location.map(location_json),
            "position": self.position,
            "verdict": self.verdict.as_str(),
            "rule": self.rule.map(Rule::as_str),
            "rule_number": self.rule.map(Rule::number),
            "status": self.status,
            "reason": self.reason,
        })
    }
}

fn location_json(location: Location) -> Value {
    match location {
        Location::Global(company) => json!({ "global": company.to_string() }),
        Location::Shared(workspace) => json!({ "shared": workspace.to_string() }),
        Location::Private(teammate) => json!({ "private": teammate.to_string() }),
    }
}

/// Why a sink did not take a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkError {
    /// Its queue is full: the writer has fallen behind.
    Full,
    /// It failed to write earlier and takes nothing more.
    Failed {
        /// What went wrong, first.
        cause: String,
    },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Full => f.write_str("the decision record sink is full"),
            SinkError::Failed { cause } => {
                write!(f, "the decision record sink failed: {cause}")
            }
        }
    }
}

impl std::error::Error for SinkError {}

/// Where decision records go. `record` is called on the request's task, so
/// it must not block: a sink that writes somewhere slow queues the record
/// (boundedly) and says so when it cannot.
pub trait DecisionSink: Send + Sync + 'static {
    /// Takes a record, or says why it cannot.
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError>;
}

impl<T: DecisionSink + ?Sized> DecisionSink for Arc<T> {
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError> {
        (**self).record(record)
    }
}

impl<T: DecisionSink + ?Sized> DecisionSink for Box<T> {
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError> {
        (**self).record(record)
    }
}

/// What the layer does when the sink cannot take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse the request with a 503, as Vault's audit devices do: nothing
    /// is allowed that is not recorded. The default.
    #[default]
    Refuse,
    /// Count the record as dropped and answer as decided.
    CountAndDrop,
}
