//! Every error as Front sends one, `{"_error": {status, title, message}}`,
//! and the one mapping from the ledger's errors to statuses: bad input
//! 400 (malformed) or 422 (well formed, but naming what does not exist),
//! refused 401/403, conflict 409, unavailable 503 (an append that wrote
//! nothing and may succeed when sent again among them).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokenledger_authz::{AppendError, CommandError, LedgerError, TransferError};
use utoipa::ToSchema;

/// Front's error envelope.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    #[serde(rename = "_error")]
    pub error: ErrorFields,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorFields {
    /// The HTTP status.
    pub status: u16,
    /// The status's title (`Unauthenticated`, `Forbidden`, …).
    pub title: String,
    /// What was wrong, naming the field or the id.
    pub message: String,
}

/// An error answered as Front's envelope.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A malformed field: 400, naming it.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, format!("`{field}`: {problem}"))
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The envelope this error is answered with.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorFields {
                status: self.status.as_u16(),
                title: title(self.status).to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

/// Front's titles for the statuses it uses, the standard reason elsewhere.
pub(crate) fn title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "Unauthenticated",
        status => status.canonical_reason().unwrap_or("Error"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.envelope())).into_response()
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> ApiError {
        ApiError::new(ledger_status(&error), error.to_string())
    }
}

impl From<TransferError> for ApiError {
    fn from(error: TransferError) -> ApiError {
        match error {
            TransferError::Ledger(error) => error.into(),
            error => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        }
    }
}

/// The status for each ledger error; one the build does not know is a 503
/// (refuse, and let the caller try again), never a success.
fn ledger_status(error: &LedgerError) -> StatusCode {
    match error {
        LedgerError::Refused(refused) => command_status(refused),
        LedgerError::NotFound(_) => StatusCode::NOT_FOUND,
        LedgerError::BeyondHead { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        LedgerError::SecretNotKept(_) => StatusCode::CONFLICT,
        // A creation answered from the log: the token exists, its secret
        // was in the first reply.
        LedgerError::SecretShownOnce { .. } => StatusCode::CONFLICT,
        // As this process answers a key it remembers with another request.
        LedgerError::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        LedgerError::Append(append) => append_status(append),
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A batch the log cannot take as the request made it is a 409, as the
/// caller would get it again. Any other append wrote nothing, or its
/// outcome is unknown (the ledger closed), and may succeed when sent
/// again (another replica appended first, storage failed, the log
/// closed): a 503, which an `Idempotency-Key` does not keep, so a retry
/// with the same key runs the command (or finds it in the log).
fn append_status(error: &AppendError) -> StatusCode {
    match error {
        AppendError::Empty
        | AppendError::TooManyEvents { .. }
        | AppendError::DuplicateEventId(_)
        | AppendError::Encode(_)
        | AppendError::Rejected(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn command_status(error: &CommandError) -> StatusCode {
    match error {
        CommandError::UnknownActor { .. }
        | CommandError::UnknownCompany(_)
        | CommandError::UnknownTeammate(_)
        | CommandError::UnknownWorkspace(_)
        | CommandError::UnknownToken(_)
        | CommandError::InvalidScope(_)
        | CommandError::ExpiryNotInFuture { .. }
        | CommandError::ExpiryTooLate { .. }
        | CommandError::WorkspaceNotInCompany(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CommandError::NotPermitted { .. } | CommandError::ActorDeactivated { .. } => {
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::CONFLICT,
    }
}

/// A JSON body whose every malformed, missing or unknown field is a 400
/// naming it, and whose size past the limit is a 413, in Front's envelope.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // The usual label, exactly: parsed here without the path to each
        // field, which only an error needs (axum's `Json` keeps it for
        // every field of every body). Any other label, and every body that
        // does not parse, goes through `Json`, which says what was wrong
        // where. Measured together with one `Arc` for the handlers' state
        // (75951fa): `serve/check` +6% under wrk.
        if request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|label| label.as_bytes() == b"application/json")
        {
            let bytes = Bytes::from_request(request, state)
                .await
                .map_err(|rejection| json_rejection(rejection.into()))?;
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Ok(Body(value)),
                Err(_) => match Json::<T>::from_bytes(&bytes) {
                    Ok(Json(value)) => Ok(Body(value)),
                    Err(rejection) => Err(json_rejection(rejection)),
                },
            };
        }
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = match &rejection {
        // A body that is not JSON, or not labelled so, is bad input too.
        JsonRejection::JsonDataError(_)
        | JsonRejection::JsonSyntaxError(_)
        | JsonRejection::MissingJsonContentType(_) => StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    ApiError::new(status, rejection.body_text())
}

/// Query parameters, refused as a body's fields are.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// Parses `text` as the field `field`, a 400 naming it when it does not.
pub(crate) fn parse<T>(field: &str, text: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| ApiError::field(field, e))
}

#[cfg(test)]
mod tests {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u8,
    }

    /// What a route answers `body` labelled `label`, through `Body` and
    /// through axum's `Json` mapped the same way.
    async fn both(label: Option<&str>, body: &'static str) -> [(StatusCode, String); 2] {
        async fn answer(
            router: axum::Router,
            label: Option<&str>,
            body: &'static str,
        ) -> (StatusCode, String) {
            let mut request = http::Request::post("/");
            if let Some(label) = label {
                request = request.header(CONTENT_TYPE, label);
            }
            let request = request.body(axum::body::Body::from(body)).unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
        let limit = DefaultBodyLimit::max(64);
        let ours = axum::Router::new()
            .route(
                "/",
                post(|Body(s): Body<Sample>| async move { format!("{s:?}") }),
            )
            .layer(limit);
        let axums = axum::Router::new()
            .route(
                "/",
                post(|s: Result<Json<Sample>, JsonRejection>| async move {
                    match s {
                        Ok(Json(s)) => format!("{s:?}").into_response(),
                        Err(rejection) => json_rejection(rejection).into_response(),
                    }
                }),
            )
            .layer(limit);
        [
            answer(ours, label, body).await,
            answer(axums, label, body).await,
        ]
    }

    #[test]
    fn an_append_that_may_succeed_again_is_a_503_and_one_refused_for_its_batch_a_409() {
        let conflict = AppendError::Conflict {
            expected: tokenledger_authz::Expectation::Head(3),
            found: 4,
        };
        let again = [
            conflict,
            AppendError::Io("gone".to_owned()),
            AppendError::PartialRetry(tokenledger_events::EventId::from_u128(1)),
            AppendError::Poisoned("gone".to_owned()),
            AppendError::Closed,
        ];
        for error in again {
            let status = ledger_status(&LedgerError::Append(error.clone()));
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        }
        let refused = [
            AppendError::Empty,
            AppendError::TooManyEvents { events: 10_001 },
            AppendError::DuplicateEventId(tokenledger_events::EventId::from_u128(1)),
        ];
        for error in refused {
            let status = ledger_status(&LedgerError::Append(error.clone()));
            assert_eq!(status, StatusCode::CONFLICT, "{error}");
        }
    }

    #[tokio::test]
    async fn a_body_parsed_without_paths_is_answered_as_axum_answers_it() {
        let bodies = [
            r#"{"name": "a", "inner": {"count": 1}}"#,
            r#"{"name": "a", "inner": {"count": 300}}"#,
            r#"{"name": "a", "inner": {"count": 1, "more": 2}}"#,
            r#"{"name": "a"}"#,
            r#"{"name": 7, "inner": {"count": 1}}"#,
            r#"{"name": "a", "inner": {"count": 1}} trailing"#,
            r#"{"name": "#,
            "",
            r#"{"name": "a", "inner": {"count": 1}, "padding": "past the limit of sixty-four bytes"}"#,
        ];
        for label in [
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("text/plain"),
            None,
        ] {
            for body in bodies {
                let [ours, axums] = both(label, body).await;
                assert_eq!(ours, axums, "{label:?} {body}");
            }
        }
        // The fast path names the field, as axum's does.
        let [(status, message), _] = both(Some("application/json"), bodies[1]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("inner.count"), "{message}");
    }
}
