//! The `Ledger`: commands decided against the current state, appended to
//! the durable log, and applied to the projection before they return.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokenledger_events::{
    Actor, CompanyId, Envelope, Name, Secret, Timestamp, TokenId, TokenKind, TokenScope,
};
use tokenledger_projection::{Projection, Readers, State};
use tokenledger_store::{
    AppendError, Damage, EventLog, Expectation, Head, NewEvent, OpenError, Options, SledLog,
    Verified,
};

use crate::authorizer::Authorizer;
use crate::command::{Command, CommandError, decide};
use crate::fresh::{self, RandomError};
use crate::sealing::{self, SealingError, SealingKey};

/// How to open a ledger.
#[derive(Clone, Default)]
pub struct LedgerOptions {
    /// Seals each new token's secret so an admin can reveal it again.
    /// Without it, a secret is shown once, at creation.
    pub sealing_key: Option<SealingKey>,
    /// The log's options: a known head kept outside the data directory,
    /// and, for tests, fault injection and a clock.
    pub log: Options,
    /// Told the position reached and the head while the log is replayed
    /// on open, for a progress bar.
    pub replay_progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
}

/// Why a ledger operation did nothing.
#[derive(Debug)]
pub enum LedgerError {
    /// The data directory could not be opened.
    Open(OpenError),
    /// The log is damaged.
    Damaged(Damage),
    /// The command was refused by the rules; nothing was recorded.
    Refused(CommandError),
    /// The log did not take the events; nothing was recorded.
    Append(AppendError),
    /// No random ids or secrets could be drawn.
    Random(RandomError),
    /// A secret could not be sealed or unsealed.
    Sealing(SealingError),
    /// This ledger keeps no sealing key, so secrets are shown only once,
    /// at creation, and cannot be revealed.
    SecretNotKept(TokenId),
    /// A position past the end of the log was asked for.
    BeyondHead {
        /// The position asked for.
        position: u64,
        /// The log's head.
        head: u64,
    },
    /// A token, workspace or teammate that a question names does not exist
    /// (at the time asked about).
    NotFound(String),
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Open(e) => fmt::Display::fmt(e, f),
            LedgerError::Damaged(e) => write!(f, "the log is damaged at {e}"),
            LedgerError::Refused(e) => fmt::Display::fmt(e, f),
            LedgerError::Append(e) => fmt::Display::fmt(e, f),
            LedgerError::Random(e) => fmt::Display::fmt(e, f),
            LedgerError::Sealing(e) => fmt::Display::fmt(e, f),
            LedgerError::BeyondHead { position, head } => write!(
                f,
                "log position {position} is past the end of the log, which is at {head}"
            ),
            LedgerError::NotFound(what) => write!(f, "{what} does not exist"),
            LedgerError::SecretNotKept(token) => write!(
                f,
                "the secret of `{token}` cannot be revealed: this ledger has no sealing key, so secrets are shown once, at creation"
            ),
        }
    }
}

impl std::error::Error for LedgerError {}

/// What a command recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The events as they stand in the log, with positions and times.
    pub events: Vec<Envelope>,
}

impl Receipt {
    /// The position of the last event recorded.
    pub fn position(&self) -> u64 {
        self.events.last().map_or(0, |e| e.position)
    }
}

/// A token to create; the ledger draws its id and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The company.
    pub company: CompanyId,
    /// A descriptive name.
    pub name: Name,
    /// API token or OAuth grant.
    pub kind: TokenKind,
    /// What it may do.
    pub scope: TokenScope,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
}

/// A created token and its secret, shown to the admin now.
#[derive(Debug)]
pub struct CreatedToken {
    /// Its id.
    pub token: TokenId,
    /// Its secret.
    pub secret: Secret,
    /// What was recorded.
    pub receipt: Receipt,
}

/// tokenledger embedded in a service: the durable log in a data directory,
/// the projection in memory, and the rules between them.
///
/// ```
/// use tokenledger_authz::{Command, Ledger};
/// use tokenledger_events::{Actor, CompanyId, Name};
///
/// let dir = tempfile::tempdir().unwrap();
/// let ledger = Ledger::open(dir.path()).unwrap();
/// let company = tokenledger_authz::fresh::company_id().unwrap();
/// let receipt = ledger
///     .execute(Actor::System, Command::CreateCompany { company, name: Name::new("Acme").unwrap() })
///     .unwrap();
/// assert_eq!(receipt.position(), 1);
/// ```
pub struct Ledger {
    pub(crate) log: SledLog,
    pub(crate) writer: Mutex<Projection>,
    readers: Readers,
    sealing_key: Option<SealingKey>,
}

/// How many events are read at a time when replaying the log.
const REPLAY_CHUNK: usize = 10_000;

impl Ledger {
    /// Opens the ledger in `dir` (created if needed), replaying its log.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, LedgerOptions::default())
    }

    /// Opens the ledger in `dir` with options.
    pub fn open_with(dir: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        let log = SledLog::open(dir, options.log).map_err(LedgerError::Open)?;
        let (mut projection, readers) = Projection::new();
        let head = log.head().position;
        let mut next = 1;
        while next <= head {
            let events = log.read(next, REPLAY_CHUNK).map_err(LedgerError::Damaged)?;
            if events.is_empty() {
                break;
            }
            next += events.len() as u64;
            for stored in events {
                projection.apply(stored.envelope);
            }
            if let Some(progress) = &options.replay_progress {
                progress(next - 1, head);
            }
        }
        projection.publish();
        Ok(Ledger {
            log,
            writer: Mutex::new(projection),
            readers,
            sealing_key: options.sealing_key,
        })
    }

    /// The handle for the hot path: cheap to clone, `Send` and `Sync`.
    pub fn authorizer(&self) -> Authorizer {
        Authorizer::new(self.readers.clone())
    }

    /// The log's durable head.
    pub fn head(&self) -> Head {
        self.log.head()
    }

    /// Walks the whole log and checks its hash chain (see
    /// [`tokenledger_store::EventLog::verify`]).
    pub fn verify(&self) -> Result<Verified, Damage> {
        self.log.verify()
    }

    /// As [`Ledger::verify`], telling `progress` the position reached and
    /// the head every so often.
    pub fn verify_with(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<Verified, Damage> {
        let head = self.head().position;
        self.log
            .verify_with(&mut |position| progress(position, head))
    }

    /// Reads the current state.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.writer.lock().read(f)
    }

    /// Decides `command` against the current state, appends what it causes
    /// and applies it to the projection, all before returning. Commands are
    /// decided one at a time, and each append expects the head the decision
    /// saw, so two conflicting commands cannot both succeed.
    pub fn execute(&self, actor: Actor, command: Command) -> Result<Receipt, LedgerError> {
        let mut projection = self.writer.lock();
        self.execute_locked(&mut projection, actor, &command)
    }

    fn execute_locked(
        &self,
        projection: &mut Projection,
        actor: Actor,
        command: &Command,
    ) -> Result<Receipt, LedgerError> {
        let now = Timestamp::from_system_time(SystemTime::now());
        let decided = projection
            .read(|state| decide(state, actor, now, command).map(|d| (d, state.position())))
            .map_err(LedgerError::Refused)?;
        let (decided, seen) = decided;
        let mut batch = Vec::with_capacity(decided.events.len());
        for event in decided.events {
            batch.push(NewEvent {
                event_id: fresh::event_id().map_err(LedgerError::Random)?,
                actor,
                company: decided.company,
                event,
            });
        }
        let count = batch.len();
        let positions = self
            .log
            .append(batch, Expectation::Head(seen))
            .map_err(LedgerError::Append)?;
        let first = positions.first().copied().unwrap_or(seen + 1);
        let stored = self.log.read(first, count).map_err(LedgerError::Damaged)?;
        let events: Vec<Envelope> = stored.into_iter().map(|s| s.envelope).collect();
        for envelope in &events {
            projection.apply(envelope.clone());
        }
        // INVARIANT (publish-before-return): see tokenledger-projection.
        projection.publish();
        Ok(Receipt { events })
    }

    /// Creates a token: draws its id and secret, seals the secret when the
    /// ledger has a sealing key, and records it. The secret is returned
    /// only here (and by [`Ledger::reveal`] when sealed).
    pub fn create_token(&self, actor: Actor, new: NewToken) -> Result<CreatedToken, LedgerError> {
        let token = fresh::token_id().map_err(LedgerError::Random)?;
        let secret = fresh::secret().map_err(LedgerError::Random)?;
        let sealed_secret = match &self.sealing_key {
            Some(key) => Some(sealing::seal(key, token, &secret).map_err(LedgerError::Sealing)?),
            None => None,
        };
        let command = Command::CreateToken {
            company: new.company,
            token,
            name: new.name,
            kind: new.kind,
            scope: new.scope,
            secret_digest: secret.digest(),
            sealed_secret,
            expires_at: new.expires_at,
        };
        let receipt = self.execute(actor, command)?;
        Ok(CreatedToken {
            token,
            secret,
            receipt,
        })
    }

    /// Shows a token's secret again to an admin. The reveal is recorded
    /// (durably) before the secret is returned; if it cannot be recorded,
    /// no secret is returned.
    pub fn reveal(&self, actor: Actor, token: TokenId) -> Result<Secret, LedgerError> {
        let mut projection = self.writer.lock();
        let now = Timestamp::from_system_time(SystemTime::now());
        let command = Command::RevealToken { token };
        // The rules first, so a member learns they may not, not whether a key exists.
        let sealed = projection
            .read(|state| {
                decide(state, actor, now, &command)
                    .map(|_| state.token(token).and_then(|t| t.sealed_secret.clone()))
            })
            .map_err(LedgerError::Refused)?;
        let (Some(key), Some(sealed)) = (&self.sealing_key, sealed) else {
            return Err(LedgerError::SecretNotKept(token));
        };
        // Unsealed before the reveal is recorded, so a reveal that cannot
        // show the secret is not recorded as one that did.
        let secret = sealing::open(key, token, &sealed).map_err(LedgerError::Sealing)?;
        self.execute_locked(&mut projection, actor, &command)?;
        Ok(secret)
    }
}
