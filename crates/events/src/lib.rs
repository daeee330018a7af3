//! tokenledger's vocabulary: typed ids, the permission model, the Core API
//! endpoint catalog, token secrets, events and the codec that writes them.
//!
//! This crate does no I/O of any kind — no files, no clock, no OS random
//! source. Callers bring the time and the random bits; that keeps every
//! function here deterministic and testable.
//!
//! ```
//! use tokenledger_events::{resolve_endpoint, Method, Scope};
//!
//! let scope: Scope = "conversations:read".parse().unwrap();
//! assert_eq!(scope.to_string(), "conversations:read");
//! assert!("messages:delete".parse::<Scope>().is_err());
//!
//! let endpoint = resolve_endpoint(Method::Post, "/conversations/cnv_1/messages").unwrap();
//! assert_eq!(endpoint.requirement.to_string(), "messages:send");
//! ```

mod codec;
mod endpoint;
mod event;
mod id;
mod name;
mod scope;
mod secret;
mod token;

pub use codec::{CodecError, EncodedEvent, MAX_RECORD_BYTES, decode_envelope, encode_envelope};
pub use endpoint::{
    Endpoint, EndpointError, MAX_PATH_BYTES, Method, Requirement, endpoints, resolve_endpoint,
    resolve_endpoint_line,
};
pub use event::{
    Actor, Envelope, Event, Role, SealedSecret, SealedSecretError, Timestamp, TimestampError,
};
pub use id::{
    CompanyId, EventId, IdError, ResourceId, ResourceIdError, TeammateId, TokenId, WorkspaceId,
};
pub use name::{Name, NameError};
pub use scope::{Grants, Permission, PermissionSet, ResourceKind, Scope, ScopeError};
pub use secret::{SECRET_LEN, SECRET_PREFIX, Secret, SecretDigest, SecretError};
pub use token::{Feature, Namespaces, SharedNamespace, TokenKind, TokenScope, TokenScopeError};
