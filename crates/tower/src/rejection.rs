//! Every way the layer refuses a request, and the one mapping from each to
//! an HTTP status and Front's error body.

use std::error::Error;
use std::fmt;

use http::StatusCode;
use tokenledger_authz::{ErrorBody, Reason, Refusal, Request};
use tokenledger_events::EndpointError;

use crate::locate::LocateError;
use crate::record::SinkError;

/// Why the layer answered a request itself rather than pass it on.
///
/// | rejection | status |
/// |---|---|
/// | [`Rejection::MissingBearer`] | 401 |
/// | [`Rejection::Refused`], rules 1 and 2 | 401 |
/// | [`Rejection::Refused`], rules 3 to 7 | 403 |
/// | [`Rejection::Refused`], the ledger closed | 503 |
/// | [`Rejection::Endpoint`], a method or path not in the catalog | 404 |
/// | [`Rejection::Endpoint`], a malformed or ambiguous path | 400 |
/// | [`Rejection::Endpoint`], a damaged catalog | 500 |
/// | [`Rejection::NotFound`] | 404 |
/// | [`Rejection::Locator`] | 503 |
/// | [`Rejection::BadConsistencyToken`] | 400 |
/// | [`Rejection::NotYetApplied`] | 503 |
/// | [`Rejection::TooManyWaiting`] | 503 |
/// | [`Rejection::RecordUnavailable`] | 503 |
///
/// Every body has Front's shape, `{"_error":{"status":…,"title":…,"message":…}}`;
/// 401 and 403 are exactly Front's.
#[derive(Debug)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization` header, or not `Bearer <secret>`.
    MissingBearer,
    /// The decision refused. `request` is what was decided, once the
    /// secret named a token and the resource was located.
    Refused {
        /// The rule that failed, and why.
        refusal: Refusal,
        /// The request decided, for Front's 403 message.
        request: Option<Box<Request>>,
    },
    /// The method and path are not an operation of the catalog.
    Endpoint(EndpointError),
    /// The locator found no such resource.
    NotFound,
    /// The locator failed.
    Locator(LocateError),
    /// The consistency header is not a log position.
    BadConsistencyToken,
    /// The ledger did not apply the position the client asked for within
    /// the layer's timeout (or has closed: `applied` is `None`).
    NotYetApplied {
        /// The position asked for.
        wanted: u64,
        /// The position applied when the wait gave up.
        applied: Option<u64>,
    },
    /// The request carried a consistency token ahead of the state while
    /// the most requests the layer lets wait were waiting.
    TooManyWaiting,
    /// The decision could not be recorded, and the layer refuses what it
    /// cannot record ([`crate::Overflow::Refuse`]).
    RecordUnavailable(SinkError),
}

impl Rejection {
    /// The HTTP status: the table above.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingBearer => StatusCode::UNAUTHORIZED,
            Rejection::Refused { refusal, .. } => match refusal.status() {
                401 => StatusCode::UNAUTHORIZED,
                403 => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            Rejection::Endpoint(
                EndpointError::UnknownMethod { .. } | EndpointError::UnknownEndpoint { .. },
            )
            | Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::Endpoint(EndpointError::Catalog { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::Endpoint(_) | Rejection::BadConsistencyToken => StatusCode::BAD_REQUEST,
            Rejection::Locator(_)
            | Rejection::NotYetApplied { .. }
            | Rejection::TooManyWaiting
            | Rejection::RecordUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable name for the rejection, as decision records carry it.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingBearer => "missing_bearer",
            Rejection::Refused { refusal, .. } if refusal.reason == Reason::LedgerClosed => {
                "ledger_closed"
            }
            Rejection::Refused { refusal, .. } => refusal.rule.as_str(),
            Rejection::Endpoint(_) => "unknown_endpoint",
            Rejection::NotFound => "not_found",
            Rejection::Locator(_) => "locator_failed",
            Rejection::BadConsistencyToken => "bad_consistency_token",
            Rejection::NotYetApplied { .. } => "not_yet_applied",
            Rejection::TooManyWaiting => "too_many_waiting",
            Rejection::RecordUnavailable(_) => "record_unavailable",
        }
    }

    /// Front's error body for this rejection. It says no more than Front
    /// does: why a token was refused is in the decision record and in the
    /// ledger's explanation, not in the answer to the caller.
    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        match self {
            Rejection::Refused {
                refusal,
                request: Some(request),
            } => refusal.body(request),
            _ if status == StatusCode::UNAUTHORIZED => ErrorBody::unauthenticated(),
            _ => ErrorBody {
                status: status.as_u16(),
                title: title(status),
                message: self.message().to_owned(),
            },
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Rejection::Endpoint(EndpointError::Catalog { .. }) => "Internal server error",
            Rejection::Endpoint(EndpointError::MalformedPath { .. })
            | Rejection::Endpoint(EndpointError::AmbiguousSegment { .. }) => "Invalid path",
            Rejection::Endpoint(_) => "Unknown endpoint",
            Rejection::NotFound => "Resource not found",
            Rejection::BadConsistencyToken => "Invalid consistency token",
            _ => "The service is unavailable",
        }
    }
}

fn title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "Bad Request",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::INTERNAL_SERVER_ERROR => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::MissingBearer => f.write_str("no `Authorization: Bearer <secret>` header"),
            Rejection::Refused { refusal, .. } => write!(f, "refused: {refusal}"),
            Rejection::Endpoint(_) => f.write_str("the request is not an operation of the catalog"),
            Rejection::NotFound => f.write_str("the locator found no such resource"),
            Rejection::Locator(_) => f.write_str("the locator failed"),
            Rejection::BadConsistencyToken => {
                f.write_str("the consistency token is not a log position")
            }
            Rejection::NotYetApplied { wanted, applied } => match applied {
                Some(applied) => write!(
                    f,
                    "the ledger had applied position {applied}, not {wanted}, when the wait ended"
                ),
                None => write!(f, "the ledger closed before applying position {wanted}"),
            },
            Rejection::TooManyWaiting => {
                f.write_str("too many requests were waiting for their consistency tokens")
            }
            Rejection::RecordUnavailable(_) => f.write_str("the decision could not be recorded"),
        }
    }
}

impl Error for Rejection {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Rejection::Endpoint(error) => Some(error),
            Rejection::Locator(error) => Some(error),
            Rejection::RecordUnavailable(error) => Some(error),
            _ => None,
        }
    }
}
