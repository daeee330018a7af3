//! Every error as Front sends one, `{"_error": {status, title, message}}`,
//! and the one mapping from the ledger's errors to statuses: bad input
//! 400 (malformed) or 422 (well formed, but naming what does not exist),
//! refused 401/403, conflict 409, unavailable 503.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokenledger_authz::{CommandError, LedgerError, TransferError};
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
        // was shown once.
        LedgerError::SecretShownOnce { .. } => StatusCode::CONFLICT,
        // As this process answers a key it remembers with another request.
        LedgerError::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        LedgerError::Append(_) => StatusCode::CONFLICT,
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
