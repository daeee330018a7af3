//! The axum extractor for what the layer decided.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use tokenledger_authz::ErrorBody;

use crate::layer::Authorized;

/// The extractor's refusal: the handler was reached without the layer's
/// decision (the layer is missing from this route, or the route is marked
/// not guarded). A server error, never a silent allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAuthorized;

impl IntoResponse for NotAuthorized {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status: 500,
            title: "Internal Server Error",
            message: "Internal server error".to_owned(),
        };
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "application/json")],
            body.to_json(),
        )
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authorized {
    type Rejection = NotAuthorized;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotAuthorized> {
        parts
            .extensions
            .get::<Authorized>()
            .cloned()
            .ok_or(NotAuthorized)
    }
}
