//! tokenledger's rules: who may change what ([`decide`]), how a change is
//! folded into the state ([`State::apply`]), and whether a token may do
//! something to a resource ([`decide_request`], [`authorize`]). The rules
//! themselves, in prose, are in the repository's `docs/RULES.md`: the
//! eight decision rules, the command rules, the private-access preference
//! and Front's error bodies.
//!
//! [`Ledger`] is the facade a service embeds: commands are decided, made
//! durable in the log and applied to the projection before they return;
//! [`Authorizer`] answers requests on the hot path without a lock. Below
//! it, the rules are pure functions of the state, and [`fresh`] draws new
//! ids and secrets from the OS random source.
//!
//! Commands from many threads are decided in order and share the log's
//! syncs; `AsyncLedger` (the `tokio` feature) runs them, and the
//! investigations, on a tokio runtime's blocking pool. [`Ledger::health`]
//! and [`Ledger::wait_for_position`] serve a service's readiness probe
//! and its clients' consistency tokens; [`observe`] names the metrics sent
//! through the `metrics` facade.
//!
//! The forum thread's case, end to end:
//!
//! ```
//! use tokenledger_authz::{decide, decide_request, fresh, Command, Location, Request, Rule, State};
//! use tokenledger_events::*;
//!
//! let mut state = State::new();
//! let mut position = 0;
//! let mut run = |state: &mut State, actor, command: Command| {
//!     let now = Timestamp::from_micros(1_000);
//!     let decided = decide(state, actor, now, &command).unwrap();
//!     for event in decided.events {
//!         position += 1;
//!         state.apply(&Envelope { position, event_id: fresh::event_id().unwrap(),
//!             recorded_at: now, actor, company: decided.company, event });
//!     }
//! };
//! let company = fresh::company_id().unwrap();
//! let admin = fresh::teammate_id().unwrap();
//! let token = fresh::token_id().unwrap();
//! let secret = fresh::secret().unwrap();
//! run(&mut state, Actor::System, Command::CreateCompany { company, name: Name::new("Acme").unwrap() });
//! run(&mut state, Actor::System, Command::AddTeammate { company, teammate: admin,
//!     name: Name::new("Ada").unwrap(), role: Role::Admin });
//! run(&mut state, Actor::Teammate(admin), Command::CreateToken { company, token,
//!     name: Name::new("Plugin").unwrap(), kind: TokenKind::ApiToken,
//!     scope: TokenScope {
//!         features: [Feature::Resources].into(),
//!         namespaces: Namespaces { private: true, ..Namespaces::none() },
//!         grants: ["conversations:read".parse().unwrap()].into_iter().collect(),
//!     },
//!     secret_digest: secret.digest(), sealed_secret: None, expires_at: None });
//!
//! let request = Request {
//!     requirement: Requirement::Scope("conversations:read".parse().unwrap()),
//!     resource: "cnv_X".parse().unwrap(),
//!     location: Location::Private(admin),
//!     at: Timestamp::from_micros(2_000),
//! };
//! let decision = decide_request(&state, secret.expose(), &request);
//! let refusal = decision.refusal.unwrap();
//! assert_eq!(refusal.rule, Rule::OwnerAllowsPrivateAccess);
//! assert_eq!(refusal.body(&request).message,
//!     r#"This agent is not allowed to read the "conversation" with ID: "cnv_X""#);
//! ```

#[cfg(feature = "tokio")]
mod async_ledger;
mod authorizer;
mod checkpoints;
mod command;
mod decision;
pub mod fresh;
mod gate;
mod history;
mod idempotency;
mod investigate;
mod json;
mod ledger;
pub mod observe;
mod readback;
mod rules_replay;
mod sealing;
mod transfer;

#[cfg(feature = "tokio")]
pub use async_ledger::AsyncLedger;
pub use authorizer::Authorizer;
pub use checkpoints::CheckpointWriteError;
pub use command::{Command, CommandError, Decided, TakenId, decide};
pub use decision::{
    Decision, ErrorBody, Location, Reason, Refusal, Request, Rule, authenticate, authenticate_live,
    authorize, decide_request,
};
pub use history::{HistoryQuery, describe_event};
pub use idempotency::IdempotencyKey;
pub use investigate::{
    Allowed, Change, Explanation, Interval, Reach, Timeline, WhoCan, location_label, who,
};
pub use json::{event_json, scope_json};
pub use ledger::{
    CreatedToken, DEFAULT_CHECKPOINT_EVERY, DEFAULT_REPLICA_LEASE, Health, Ledger, LedgerError,
    LedgerOptions, Missing, NewToken, Receipt,
};
pub use sealing::{SealingError, SealingKey, SealingKeyId};
pub use tokenledger_projection::{
    CheckpointError, Company, Provenance, Setting, State, Teammate, Token, TokenHandle, Workspace,
    decode_checkpoint, encode_checkpoint,
};
pub use tokenledger_store::{
    AppendError, CheckpointKey, Compacted, Damage, Expectation, Head, OpenError, Options,
    ParseHeadError, StoredEvent, Verified, hex,
};
pub use transfer::TransferError;
