//! The audit trail, a page at a time: a page of a filtered history
//! continues from the first event it did not return; an unfiltered one
//! is a range of positions.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenledger_authz::{HistoryQuery, Ledger, event_json};
use tokenledger_events::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::admin::investigate::blocking;
use crate::error::{ApiError, ErrorEnvelope, Query, parse};
use crate::routes::App;

/// A page of the audit trail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Events, oldest first: position, time, id, actor, company, type,
    /// fields, hash.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Pass it as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

/// Which events, and which page of them.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Events about this token.
    pub token: Option<String>,
    /// Events this actor caused (`tea_…` or `system`).
    pub actor: Option<String>,
    /// Events about this teammate.
    pub teammate: Option<String>,
    /// Events of this company.
    pub company: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub since: Option<String>,
    /// Recorded at or before (RFC 3339).
    pub until: Option<String>,
    /// Where to continue: the previous page's `next_cursor`.
    pub cursor: Option<u64>,
    /// At most this many events (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// The most events one page holds.
const MAX_PAGE: u64 = 1000;

/// The audit trail, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/history", tag = "investigations",
    security(("service_key" = [])),
    params(HistoryParams),
    responses((status = 200, body = HistoryPage), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn history(
    State(app): State<App>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    let query = HistoryQuery {
        token: opt("token", &params.token)?,
        actor: opt("actor", &params.actor)?,
        teammate: opt("teammate", &params.teammate)?,
        company: opt("company", &params.company)?,
        since: opt("since", &params.since)?,
        until: opt("until", &params.until)?,
        ..HistoryQuery::default()
    };
    let limit = u64::from(params.limit.unwrap_or(100));
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::field("limit", "between 1 and 1000"));
    }
    let cursor = params.cursor.unwrap_or(1).max(1);
    blocking(&app, move |ledger| page(ledger, query, cursor, limit))
        .await
        .map(Json)
}

/// An optional field, parsed.
fn opt<T>(field: &str, text: &Option<String>) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.as_deref().map(|t| parse(field, t)).transpose()
}

fn page(
    ledger: &Ledger,
    mut query: HistoryQuery,
    cursor: u64,
    limit: u64,
) -> Result<HistoryPage, ApiError> {
    let filtered = query.token.is_some()
        || query.actor.is_some()
        || query.teammate.is_some()
        || query.company.is_some();
    query.from_position = Some(cursor);
    if filtered {
        // A stream's events lie anywhere: read them from the cursor on,
        // and continue from the first one not returned.
        let mut events = ledger.history(&query)?;
        let next_cursor = events.get(limit as usize).map(|e| e.envelope.position);
        events.truncate(limit as usize);
        return Ok(HistoryPage {
            events: events.iter().map(event_json).collect(),
            next_cursor,
        });
    }
    // Every event in the range matches: the page is a range of positions.
    let mut end = ledger.head().position;
    if let Some(until) = query.until {
        end = end.min(ledger.position_at(until)?);
    }
    let start = match query.since.and_then(|s| s.as_micros().checked_sub(1)) {
        Some(before) => cursor.max(ledger.position_at(Timestamp::from_micros(before))? + 1),
        None => cursor,
    };
    let last = start.saturating_add(limit - 1).min(end);
    query.from_position = Some(start);
    query.to_position = Some(last);
    let events = if start <= end {
        ledger.history(&query)?
    } else {
        Vec::new()
    };
    Ok(HistoryPage {
        events: events.iter().map(event_json).collect(),
        next_cursor: (last < end).then_some(last + 1),
    })
}
