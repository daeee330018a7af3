//! tokenledger's rules: who may change what ([`decide`]), how a change is
//! folded into the state ([`State::apply`]), and whether a token may do
//! something to a resource ([`decide_request`], [`authorize`]).
//!
//! [`Ledger`] is the facade a service embeds: commands are decided, made
//! durable in the log and applied to the projection before they return;
//! [`Authorizer`] answers requests on the hot path without a lock. Below
//! it, the rules are pure functions of the state, and [`fresh`] draws new
//! ids and secrets from the OS random source.
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

mod authorizer;
mod checkpoints;
mod command;
mod decision;
pub mod fresh;
mod history;
mod investigate;
mod json;
mod ledger;
mod readback;
mod rules_replay;
mod sealing;
mod transfer;

pub use authorizer::Authorizer;
pub use command::{Command, CommandError, Decided, decide};
pub use decision::{
    Decision, ErrorBody, Location, Reason, Refusal, Request, Rule, authenticate, authorize,
    decide_request,
};
pub use history::{HistoryQuery, describe_event};
pub use investigate::{
    Allowed, Change, Explanation, Interval, Reach, Timeline, WhoCan, location_label, who,
};
pub use json::{event_json, scope_json};
pub use ledger::{
    CreatedToken, DEFAULT_CHECKPOINT_EVERY, Ledger, LedgerError, LedgerOptions, NewToken, Receipt,
};
pub use sealing::{SealingError, SealingKey, SealingKeyId};
pub use tokenledger_projection::{
    CheckpointError, Company, Provenance, Setting, State, Teammate, Token, TokenHandle, Workspace,
    decode_checkpoint, encode_checkpoint,
};
pub use tokenledger_store::{
    CheckpointKey, Compacted, Damage, Head, OpenError, Options, ParseHeadError, StoredEvent,
    Verified, hex,
};
pub use transfer::TransferError;
