//! `tokenledger serve`: the ledger as an HTTP service, for services that
//! cannot embed the library (written in another language), as they would
//! run OPA or cedar-agent beside them.
//!
//! - `POST /v1/check`: may this token (by secret or id) do this (a scope,
//!   or a method and path through Front's catalog) to that resource, where
//!   it lives? The decision, with Front's status and body, the rule, the
//!   needed scope, the explanation and the log position.
//! - The OpenID AuthZEN Authorization API 1.0 (`authzen`): discovery,
//!   `POST /access/v1/evaluation` and `POST /access/v1/evaluations`.
//! - With the admin key: every command of the CLI, with the actor the
//!   caller names and an `Idempotency-Key`, and the investigations
//!   (history paged, timeline, who-can, verify, export streamed).
//! - `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/openapi.json`.
//!
//! Every endpoint but `/healthz` and `/readyz` needs `Authorization:
//! Bearer` with one of two keys ([`ServiceKeys`]): the check key asks
//! questions, the admin key may do everything. Errors are Front's envelope
//! (`{"_error": {status, title, message}}`), and bad input writes nothing.
//!
//! ```no_run
//! # async fn run(ledger: std::sync::Arc<tokenledger_authz::Ledger>) -> std::io::Result<()> {
//! use tokenledger_serve::{Limits, Server, ServiceKeys, shutdown_signal};
//! let keys = ServiceKeys::new(b"check-key-0123456789", b"admin-key-0123456789").unwrap();
//! let server = Server::bind("127.0.0.1:8080".parse().unwrap(), ledger, keys, Limits::default(), None).await?;
//! server.run(shutdown_signal()).await;
//! # Ok(()) }
//! ```

mod admin;
mod authzen;
mod check;
mod error;
mod export;
mod html;
mod idempotency;
mod keys;
mod openapi;
mod probes;
mod routes;
mod server;
mod tls;

pub use error::{ErrorEnvelope, ErrorFields};
pub use html::{change_text, period, timeline_page};
pub use idempotency::{IDEMPOTENCY_KEY, REPLAYED};
pub use keys::{KeyFileError, Role, ServiceKeys};
pub use openapi::openapi;
pub use routes::{Limits, router};
pub use server::{Server, shutdown_signal};
pub use tls::{TlsAcceptor, TlsError, acceptor};
