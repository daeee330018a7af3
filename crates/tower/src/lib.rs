//! A tower layer that puts tokenledger's decision in front of an HTTP
//! service, answering refusals as Front's API does.
//!
//! For each request, [`LedgerLayer`]:
//! 1. reads `Authorization: Bearer <secret>` (none, or not that shape: Front's 401);
//! 2. waits, if the client sent a consistency token ([`CONSISTENCY_HEADER`],
//!    a log position), until the ledger has applied it;
//! 3. authenticates the secret (unknown, deleted or expired: Front's 401);
//! 4. resolves the method and path with Front's 244-operation catalog
//!    ([`tokenledger_events::resolve_endpoint`]); anything else is refused
//!    (fail closed) unless the route was marked not guarded;
//! 5. asks the embedder's [`Locator`] where the resource lives (not found:
//!    404; the locator fails: 503, never an allow);
//! 6. decides with the [`tokenledger_authz::Authorizer`], which never blocks;
//! 7. records the decision in the [`DecisionSink`], if there is one;
//! 8. calls the inner service with [`Authorized`] in the request's
//!    extensions, or answers the refusal itself: Front's status and JSON
//!    body, with [`POSITION_HEADER`] (the log position decided at) and
//!    [`ACCEPTED_SCOPE_HEADER`] (the scope the endpoint needs). A refused
//!    request never reaches the inner service.
//!
//! [`Rejection`] lists every refusal with its status, in one table. The
//! rules the decision applies are in the repository's `docs/RULES.md`.
//!
//! With the `axum` feature (on by default), [`Authorized`] is an axum
//! extractor; a handler reached without the layer's decision answers 500.

mod future;
mod headers;
mod layer;
mod locate;
mod record;
mod rejection;
mod sinks;

#[cfg(feature = "axum")]
mod extract;

#[cfg(feature = "axum")]
pub use extract::NotAuthorized;
pub use future::ResponseFuture;
pub use layer::{
    ACCEPTED_SCOPE_HEADER, Authorized, CONSISTENCY_HEADER, DEFAULT_CONSISTENCY_TIMEOUT,
    LedgerLayer, LedgerLayerBuilder, LedgerService, POSITION_HEADER, REQUEST_ID_HEADER,
};
pub use locate::{LocateError, Located, Locator, Target};
pub use record::{DecisionRecord, DecisionSink, Overflow, SinkError, Verdict};
pub use rejection::Rejection;
pub use sinks::{JsonLinesSink, TracingSink};
