//! The `Ledger`: commands decided against the current state, appended to
//! the durable log, and applied to the projection before they return.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokenledger_events::{
    Actor, CompanyId, Envelope, Event, EventId, Name, Secret, Timestamp, TokenId, TokenKind,
    TokenScope,
};
use tokenledger_projection::{Projection, Readers, State, encode_checkpoint};
use tokenledger_store::{
    AppendError, CheckpointKey, Compacted, Damage, EventLog, Head, OpenError, Options, Problem,
    SledLog, Stream, Verified,
};

use crate::authorizer::Authorizer;
use crate::checkpoints::{CheckpointWriteError, Checkpoints};
use crate::command::{Command, CommandError, decide};
use crate::decision::Location;
use crate::fresh::{self, RandomError};
use crate::gate::Gate;
use crate::history::replay;
use crate::idempotency::IdempotencyKey;
use crate::observe;
use crate::readback;
use crate::sealing::{self, Binding, SealingError, SealingKey};

#[cfg(feature = "postgres")]
mod follower;
mod health;
mod once;
mod writer;

use health::Applied;
pub use health::Health;
use writer::Writer;

/// How to open a ledger.
#[derive(Clone)]
pub struct LedgerOptions {
    /// Seals each new token's secret so an admin can reveal it again.
    /// Without it, a secret is shown once, at creation. Opening refuses a
    /// key when neither it nor one of `old_sealing_keys` sealed the
    /// newest sealed secret in the log.
    pub sealing_key: Option<SealingKey>,
    /// Keys rotated out: they open the secrets they sealed, and seal
    /// nothing new.
    pub old_sealing_keys: Vec<SealingKey>,
    /// The log's options: a known head kept outside the data directory,
    /// whether to refuse a directory that holds no log rather than create
    /// one (`must_exist`, for readers), and, for tests, fault injection
    /// and a clock.
    pub log: Options,
    /// Told the position reached and the head while the log is replayed
    /// on open, for a progress bar.
    pub replay_progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
    /// Save the state every this many events (0: never), in the data
    /// directory's `checkpoints` folder, so that opening replays only the
    /// events after the newest checkpoint. Saving blocks commands for as
    /// long as it takes to write the state. Only with a `checkpoint_key`,
    /// or with `trust_unsigned_checkpoints`.
    pub checkpoint_every: u64,
    /// Signs checkpoints of the state, and refuses unsigned ones, so that
    /// someone who can write the data directory cannot make the ledger
    /// start from a forged state; and signs the log's head, so that a log
    /// rewritten or rolled back behind it is refused at open (see
    /// [`Options::checkpoint_key`], which this key fills when set). Keep it
    /// outside the data directory. A log written without a key takes one
    /// only through [`Ledger::sign_head`]. Without it, checkpoints are
    /// neither written nor loaded (unless `trust_unsigned_checkpoints`):
    /// each open replays the whole log.
    pub checkpoint_key: Option<CheckpointKey>,
    /// Without a `checkpoint_key`, write and load unsigned checkpoints
    /// anyway (false by default; ignored with a key). The risk: anyone who
    /// can write the data directory can then write a checkpoint that
    /// matches the log's hash at its position but holds another state (a
    /// token with more scopes, say), which opening would serve and every
    /// later checkpoint would copy, while `verify` still finds the log
    /// intact. Only for a directory that no one else can write.
    pub trust_unsigned_checkpoints: bool,
    /// On a ledger shared by several processes (`Ledger::open_postgres`),
    /// how long each replica's lease lasts: a replica that cannot renew
    /// it for this long, less a margin (a tenth, 100 ms at least), stops
    /// allowing, and a removal waits at most about this long and a fifth
    /// for a replica that stopped following (2 s by default; from 500 ms
    /// to 10 minutes).
    /// Ignored on a data directory, which one process owns.
    pub replica_lease: Duration,
}

/// Each replica's lease by default: short enough that a removal is held
/// up for about two seconds at worst by a replica that stopped, long enough
/// that renewing it every two thirds of a second costs nothing and a
/// database that pauses for a second does not stop every replica.
pub const DEFAULT_REPLICA_LEASE: Duration = Duration::from_secs(2);

impl Default for LedgerOptions {
    fn default() -> LedgerOptions {
        LedgerOptions {
            sealing_key: None,
            old_sealing_keys: Vec::new(),
            log: Options::default(),
            replay_progress: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_key: None,
            trust_unsigned_checkpoints: false,
            replica_lease: DEFAULT_REPLICA_LEASE,
        }
    }
}

impl LedgerOptions {
    /// The options with one checkpoint key for the state's checkpoints and
    /// the log's head: the ledger's, else the log's.
    fn one_key(mut self) -> LedgerOptions {
        let key = self
            .checkpoint_key
            .take()
            .or(self.log.checkpoint_key.take());
        self.log.checkpoint_key.clone_from(&key);
        self.checkpoint_key = key;
        self
    }
}

/// Checkpoint every 100,000 events by default: at the replay rate measured
/// on a million events (about 571,000 a second, `benches/scale.rs`),
/// opening then replays at most about a fifth of a second of log after the
/// checkpoint, and a checkpoint is written rarely.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100_000;

/// Why a ledger operation did nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum LedgerError {
    /// The data directory could not be opened.
    Open(OpenError),
    /// The database holding the log could not be opened (the text names
    /// the server, never a password).
    Database(String),
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
    /// A token's creation sent again with the same idempotency key
    /// ([`Ledger::create_token_once`]) found the token created by the
    /// first: nothing was created. Its secret was in the reply to the
    /// first (which the client may never have received, after a crash
    /// between the append and the reply) and is not kept in plain text: it
    /// cannot be shown again, since this ledger keeps no sealing key (or
    /// kept none when the token was created), or the token has since been
    /// deleted or has expired, so a reveal is refused.
    SecretShownOnce {
        /// The token the first creation made.
        token: TokenId,
        /// The log position of its creation.
        position: u64,
    },
    /// A command's idempotency key names events in the log that another
    /// actor caused, or that are not what the command makes (a token's
    /// creation that finds no token created): the key was used for
    /// another request. Nothing was decided or recorded.
    KeyReused {
        /// The log position of the events the key names.
        position: u64,
    },
    /// A checkpoint of the state could not be written.
    Checkpoint(CheckpointWriteError),
    /// A position past the end of the log was asked for.
    BeyondHead {
        /// The position asked for.
        position: u64,
        /// The log's head.
        head: u64,
    },
    /// A token, workspace or teammate that a question names does not exist
    /// (at the time asked about).
    NotFound(Missing),
    /// The log acknowledged a command's events but did not give them back
    /// as appended (fewer, none, elsewhere, or others): what it holds is
    /// not known. The ledger closed: readers refuse everything, and
    /// commands, investigations and exports are refused, until it is
    /// reopened.
    Unconfirmed {
        /// The positions acknowledged and the ids of the events appended.
        appended: Vec<(u64, EventId)>,
        /// The positions and ids of the events read back from there.
        read_back: Vec<(u64, EventId)>,
    },
    /// An earlier command's outcome is unknown (this error's text says
    /// which failure), so the ledger closed: nothing more is decided,
    /// recorded, or answered from the log or the state (histories, past
    /// states, timelines, exports) until it is reopened. Only `verify`
    /// still walks the log: it checks the chain the log holds, whose head
    /// may lack what was acknowledged.
    Closed(String),
    /// The call went unanswered, the ledger perhaps still open: the async
    /// runtime stopped before the call ran (nothing was done), or the
    /// writer unwound (a bug) with the command taken and not answered
    /// (whether it was recorded, the log says; the ledger closes if its
    /// events may be recorded and were not published).
    Unanswered(String),
    /// [`Ledger::wait_for_position`] timed out before the state readers
    /// see applied the position.
    NotApplied {
        /// The position waited for.
        position: u64,
        /// The position applied when the wait ended.
        applied: u64,
    },
    /// On a ledger shared by several processes: a command that removes
    /// access was recorded (or refused because what it removes was removed
    /// already), but that every other replica applied the removal (or
    /// stopped allowing) could not be confirmed, since the database did
    /// not answer. Until they apply it, they may still allow what it
    /// removed.
    Unreplicated {
        /// The position of the command's last event.
        position: u64,
        /// Why it could not be confirmed.
        detail: String,
    },
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Open(e) => fmt::Display::fmt(e, f),
            LedgerError::Database(e) => f.write_str(e),
            LedgerError::Damaged(e) => write!(f, "the log is damaged at {e}"),
            LedgerError::Refused(e) => fmt::Display::fmt(e, f),
            LedgerError::Append(e) => fmt::Display::fmt(e, f),
            LedgerError::Random(e) => fmt::Display::fmt(e, f),
            LedgerError::Sealing(e) => fmt::Display::fmt(e, f),
            LedgerError::Checkpoint(why) => write!(f, "the checkpoint was not written: {why}"),
            LedgerError::BeyondHead { position, head } => write!(
                f,
                "log position {position} is past the end of the log, which is at {head}"
            ),
            LedgerError::NotFound(what) => write!(f, "{what} does not exist"),
            LedgerError::Unconfirmed {
                appended,
                read_back,
            } => {
                let (appended, read_back) =
                    (readback::describe(appended), readback::describe(read_back));
                let others = if appended == read_back {
                    " with other contents"
                } else {
                    ""
                };
                write!(
                    f,
                    "the log acknowledged {appended} but gave back {read_back}{others}; the ledger is closed until it is reopened"
                )
            }
            LedgerError::Closed(why) => write!(
                f,
                "the ledger is closed until it is reopened, after a command whose outcome is unknown: {why}"
            ),
            LedgerError::Unanswered(why) => write!(f, "the call went unanswered: {why}"),
            LedgerError::NotApplied { position, applied } => write!(
                f,
                "log position {position} is not applied yet: the state is at {applied}"
            ),
            LedgerError::Unreplicated { position, detail } => write!(
                f,
                "the command was recorded at log position {position}, but not every replica could be confirmed to have applied it, so some may still allow what it removed: {detail}"
            ),
            LedgerError::SecretNotKept(token) => write!(
                f,
                "the secret of `{token}` cannot be revealed: this ledger has no sealing key, so secrets are shown once, at creation"
            ),
            LedgerError::SecretShownOnce { token, position } => write!(
                f,
                "`{token}` was created at log position {position} by an earlier request with this idempotency key; its secret was in the reply to that request and is not kept in plain text, so it can be shown again only by a reveal, which needs the sealing key and a token neither deleted nor expired"
            ),
            LedgerError::KeyReused { position } => write!(
                f,
                "this idempotency key was used for another request, recorded at log position {position}; use a new key for a new request"
            ),
        }
    }
}

/// Each variant's text includes its cause's; `source` gives the cause
/// itself, to match or downcast.
impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Open(error) => Some(error),
            LedgerError::Damaged(error) => Some(error),
            LedgerError::Refused(error) => Some(error),
            LedgerError::Append(error) => Some(error),
            LedgerError::Random(error) => Some(error),
            LedgerError::Sealing(error) => Some(error),
            LedgerError::Checkpoint(error) => Some(error),
            _ => None,
        }
    }
}

/// What a question named that does not exist (at the time asked about).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// A token.
    Token(TokenId),
    /// A teammate's private inbox, or a workspace, at a time.
    Location {
        /// The location.
        location: Location,
        /// The time asked about.
        at: Timestamp,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Token(token) => write!(f, "token `{token}`"),
            Missing::Location { location, at } => write!(f, "{location} at {at}"),
        }
    }
}

/// What a command recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The events as they stand in the log, with positions and times.
    pub events: Vec<Envelope>,
    /// Whether the events were recorded by an earlier command with the
    /// same idempotency key ([`Ledger::execute_once`]), and this one
    /// decided nothing: they are that command's, as the log holds them.
    pub replayed: bool,
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
    /// The log: sled's (this process's alone), or one shared with other
    /// processes, which a follower thread applies here (`follower.rs`).
    pub(crate) log: Arc<dyn EventLog>,
    /// Whether other processes append to the log: then a command that
    /// finds the head moved catches up and is decided again.
    follows: bool,
    /// The projection's writing side, and the commands waiting for it.
    writer: Writer,
    readers: Readers,
    sealing_key: Option<SealingKey>,
    old_sealing_keys: Vec<SealingKey>,
    checkpoints: Checkpoints,
    checkpoint_every: u64,
    /// The position of the newest checkpoint written or loaded.
    last_checkpoint: AtomicU64,
    /// What went wrong without stopping anything: checkpoints skipped on
    /// open, or not written.
    warnings: Mutex<Vec<String>>,
    /// Why the ledger closed while open, once a command's outcome became
    /// unknown; commands are refused from then on.
    closed: OnceLock<String>,
    /// The position readers see, for health and consistency tokens.
    applied: Applied,
    /// This process's lease, on a log shared with other processes.
    #[cfg(feature = "postgres")]
    replica: Option<follower::Replica>,
}

/// How many times a command that met another process's append is decided
/// again before its conflict is returned. Processes that append back to
/// back leave a loser a window of about one append to catch up, decide and
/// append in; with 12 tries, 1 run in 10 of three processes creating 15
/// tokens each saw a command give up. The pauses between tries are capped
/// (`submit_again_on_conflict`), so 40 tries sleep half a second at most;
/// catching up, deciding and appending again come on top, and catching up
/// lasts as long as other processes keep appending.
const DECIDE_AGAIN: u32 = 40;

/// A log just opened, and what opening a ledger over it needs.
struct Opened {
    log: Arc<dyn EventLog>,
    checkpoints: Checkpoints,
    newest: Option<(
        tokenledger_store::StateFile,
        crate::checkpoints::ReadCheckpoint,
    )>,
    clock: Option<tokenledger_store::Clock>,
    stamp: Arc<Mutex<Timestamp>>,
    follows: bool,
}

/// How many events are replayed between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

impl Ledger {
    /// Opens the ledger in `dir` (created if needed), replaying its log.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, LedgerOptions::default())
    }

    /// Rewrites the storage files of the closed ledger in `dir` with only
    /// what its log holds, and returns their sizes before and after: the
    /// store reclaims the space of rewritten index entries slowly, and a
    /// long-lived log's files grow to several times its contents. The log
    /// must not be open; nothing is replaced unless the copy holds the
    /// whole log.
    pub fn compact(dir: &Path, options: LedgerOptions) -> Result<Compacted, LedgerError> {
        Ledger::compact_with(dir, options, &mut |_, _| {})
    }

    /// [`Ledger::compact`], reporting its progress every 10,000 keys:
    /// `progress(copied, 0)` while copying, then `progress(checked, keys)`
    /// while checking the copy, and once more when the check is done.
    pub fn compact_with(
        dir: &Path,
        options: LedgerOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Compacted, LedgerError> {
        SledLog::compact_with(dir, options.one_key().log, progress).map_err(LedgerError::Open)
    }

    /// Adopts `key` as the checkpoint key of the closed ledger in `dir`,
    /// whose log was written without one: verifies the whole log and, only
    /// if it is intact, signs its head (see [`SledLog::sign_head`]). Check
    /// the head returned against one recorded elsewhere, if there is one
    /// (or pass it as `options.log.known_head`): what is signed here is
    /// vouched for from now on. A log that was kept with `key` before and
    /// lost its signed head is refused without a known head it contains
    /// ([`OpenError::KeyedBefore`]).
    pub fn sign_head(
        dir: &Path,
        key: &CheckpointKey,
        options: LedgerOptions,
    ) -> Result<Verified, LedgerError> {
        SledLog::sign_head(dir, key, options.log).map_err(LedgerError::Open)
    }

    /// Opens the ledger in `dir` with options.
    pub fn open_with(dir: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        let mut options = options.one_key();
        // The log stamps appends with the time the writer reads first, so
        // the writer knows the time of the events it decides (`writer.rs`).
        let clock = options.log.clock.take();
        let stamp = Arc::new(Mutex::new(Timestamp::EPOCH));
        options.log.clock = Some(Writer::log_clock(&stamp));
        let checkpoints = Checkpoints::new(
            dir,
            options.checkpoint_key.clone(),
            options.trust_unsigned_checkpoints,
        );
        // The newest checkpoint is read and decoded while sled opens: at a
        // million tokens each takes hundreds of milliseconds, and only the
        // check against the log needs the log. Nothing read is used before
        // the log is open, so before this process holds the directory.
        let log_options = std::mem::take(&mut options.log);
        let (log, newest) = std::thread::scope(|scope| {
            let newest = scope.spawn(|| checkpoints.newest());
            let log = SledLog::open(dir, log_options);
            let newest = newest
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (log, newest)
        });
        let log = log.map_err(LedgerError::Open)?;
        let opened = Opened {
            log: Arc::new(log),
            checkpoints,
            newest,
            clock,
            stamp,
            follows: false,
        };
        Ledger::open_on(opened, options)
    }

    /// Replays `opened.log` from the newest checkpoint that agrees with it
    /// and builds the ledger over it.
    fn open_on(opened: Opened, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        let Opened {
            log,
            checkpoints,
            newest,
            clock,
            stamp,
            follows,
        } = opened;
        // Other processes may append meanwhile: the replay is checked
        // against the head read before it.
        let head_at_start = log.head();
        let head = head_at_start.position;
        let mut warnings = Vec::new();
        let loaded = checkpoints.load(&*log, head, &mut warnings, newest)?;
        let from = loaded.as_ref().map_or(0, State::position);
        // The tail is folded into the state before anyone can read it, so
        // each event is applied once and nothing waits to be published.
        let mut state = loaded.unwrap_or_default();
        let reached = replay(&*log, from, head, |stored| {
            state.apply(&stored.envelope);
            let position = stored.envelope.position;
            if let Some(progress) = &options.replay_progress
                && (position % PROGRESS_EVERY == 0 || position == head)
            {
                progress(position, head);
            }
        })?;
        check_reached_head(head_at_start, reached)?;
        let last_time = last_recorded(&*log, head)?;
        // One copy, shared with the readers until the first command.
        let applied = state.position();
        let (projection, readers) = Projection::starting_from(state);
        let ledger = Ledger {
            log,
            follows,
            writer: Writer::new(projection, last_time, clock, stamp),
            readers,
            sealing_key: options.sealing_key,
            old_sealing_keys: options.old_sealing_keys,
            checkpoints,
            checkpoint_every: options.checkpoint_every,
            last_checkpoint: AtomicU64::new(from),
            warnings: Mutex::new(warnings),
            closed: OnceLock::new(),
            applied: Applied::new(applied),
            #[cfg(feature = "postgres")]
            replica: None,
        };
        observe::closed(false);
        observe::positions(head, applied, from);
        if from > 0 {
            observe::checkpoint();
        }
        ledger.check_sealing_keys()?;
        ledger.checkpoint_if_due(&ledger.writer());
        Ok(ledger)
    }

    /// The sealing keys, current first.
    fn sealing_keys(&self) -> impl Iterator<Item = &SealingKey> + Clone {
        self.sealing_key.iter().chain(&self.old_sealing_keys)
    }

    /// Refuses keys of which none sealed the newest sealed secret, read
    /// from the creation of the newest token created sealed: one read.
    /// Tokens created since without a key do not hide it, so a wrong key
    /// cannot slip in behind them.
    fn check_sealing_keys(&self) -> Result<(), LedgerError> {
        if self.sealing_keys().next().is_none() {
            return Ok(());
        }
        let Some(newest) = self.with_state(|state| state.newest_sealed_token().map(|t| t.id()))
        else {
            return Ok(());
        };
        match sealed_at_creation(&*self.log, newest).map_err(LedgerError::Damaged)? {
            Some((binding, sealed)) => sealing::check_keys(self.sealing_keys(), &binding, &sealed)
                .map_err(LedgerError::Sealing),
            None => Ok(()),
        }
    }

    /// What went wrong without stopping anything: checkpoints skipped as
    /// damaged, or ignored as unsigned, when opening (the log was replayed
    /// instead), or not written.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().clone()
    }

    /// Saves the state now as a checkpoint; returns its position. An error
    /// without a checkpoint key, unless unsigned checkpoints are trusted
    /// (see [`LedgerOptions::trust_unsigned_checkpoints`]).
    pub fn checkpoint(&self) -> Result<u64, LedgerError> {
        let projection = self.writer();
        self.refuse_if_closed()?;
        self.write_checkpoint(&projection)
    }

    fn write_checkpoint(&self, projection: &Projection) -> Result<u64, LedgerError> {
        self.checkpoints.writable()?;
        let bytes = projection
            .read(encode_checkpoint)
            .map_err(|e| LedgerError::Checkpoint(CheckpointWriteError::Encode(e)))?;
        // The state's own position: another process may have moved the
        // log's head past it.
        let position = projection.read(State::position);
        let head = self.head_at(position)?;
        self.checkpoints.write(head, &bytes)?;
        self.last_checkpoint.store(head.position, Ordering::Relaxed);
        observe::checkpoint();
        Ok(head.position)
    }

    /// The log's head as it was at `position`: the hash of the record
    /// there.
    fn head_at(&self, position: u64) -> Result<Head, LedgerError> {
        if position == 0 {
            return Ok(Head::EMPTY);
        }
        let record = self.log.read(position, 1).map_err(LedgerError::Damaged)?;
        let hash = record
            .first()
            .map(|e| e.hash)
            .ok_or(LedgerError::Damaged(Damage {
                position,
                problem: Problem::Missing,
            }))?;
        Ok(Head { position, hash })
    }

    /// Decides and records `command`; where other processes append to
    /// the log, a command that found the head moved (a conflict: nothing
    /// was written) catches up and is decided again against the new
    /// state, at most [`DECIDE_AGAIN`] times.
    ///
    /// A keyed command that met another process's append of the same key
    /// gets a conflict too (`ledger/once.rs`): decided again, it finds
    /// the events that process recorded.
    fn submit_again_on_conflict(
        &self,
        actor: Actor,
        command: Command,
        key: Option<IdempotencyKey>,
    ) -> Result<Receipt, LedgerError> {
        if !self.follows {
            return self.submit(actor, command, key);
        }
        let mut again = 0;
        loop {
            match self.submit(actor, command.clone(), key) {
                Err(LedgerError::Append(AppendError::Conflict { .. })) if again < DECIDE_AGAIN => {
                    again += 1;
                    // Processes that keep meeting each other's appends
                    // draw apart: a random pause, doubling in range.
                    let range = 100u64 << again.min(7);
                    let pause = getrandom::u64().unwrap_or(0) % range;
                    std::thread::sleep(std::time::Duration::from_micros(pause));
                    self.catch_up_now()?;
                }
                outcome => return outcome,
            }
        }
    }

    /// One process to a log: nothing appended by another to catch up with
    /// (on PostgreSQL, `ledger/follower.rs`).
    #[cfg(not(feature = "postgres"))]
    fn catch_up_now(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// One process to a log: what it holds, this process applied.
    #[cfg(not(feature = "postgres"))]
    fn catch_up_through(&self, _position: u64) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Writes a checkpoint when enough events have been appended since the
    /// last. A failure is a warning, not an error: the log is the truth,
    /// and the next open replays more of it.
    fn checkpoint_if_due(&self, projection: &Projection) {
        if self.checkpoint_every == 0 || !self.checkpoints.trusted() {
            return;
        }
        // The state's position, which a checkpoint saves, rather than the
        // log's head: on PostgreSQL the head is a query, and the leader of
        // a group, whose own command has its answer, would wait for it.
        let position = projection.read(State::position);
        let last = self.last_checkpoint.load(Ordering::Relaxed);
        if position - last.min(position) < self.checkpoint_every {
            return;
        }
        if let Err(error) = self.write_checkpoint(projection) {
            self.warnings.lock().push(error.to_string());
        }
    }

    /// The newest trusted checkpoint at or before `position` that is whole
    /// and agrees with the log, if any.
    pub(crate) fn checkpoint_at_or_before(
        &self,
        position: u64,
    ) -> Result<Option<State>, LedgerError> {
        self.checkpoints
            .load(&*self.log, position, &mut Vec::new(), None)
    }

    /// The handle for the hot path: cheap to clone, `Send` and `Sync`.
    pub fn authorizer(&self) -> Authorizer {
        let authorizer = Authorizer::new(self.readers.clone(), self.gate());
        #[cfg(feature = "tokio")]
        let authorizer = authorizer.watching(self.applied_watch());
        authorizer
    }

    /// The log's durable head.
    pub fn head(&self) -> Head {
        self.log.head()
    }

    /// Walks the whole log and checks its hash chain (see
    /// [`tokenledger_store::EventLog::verify`]). It answers on a closed
    /// ledger too: the chain it checks is what the log holds, which may
    /// lack what was acknowledged before the ledger closed.
    pub fn verify(&self) -> Result<Verified, Damage> {
        self.log.verify()
    }

    /// As [`Ledger::verify`], telling `progress` every so often the checks
    /// done and the checks to do: two a record, its place in the chain and
    /// its company's copy of it.
    pub fn verify_with(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<Verified, Damage> {
        let checks = 2 * self.head().position;
        self.log.verify_with(&mut |done| progress(done, checks))
    }

    /// Reads the current state: the closed one, which holds nothing, once
    /// the ledger has closed after a command whose outcome is unknown.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.writer().read(f)
    }

    /// Decides `command` against the current state, appends what it causes
    /// and applies it to the projection, all before returning. Commands are
    /// decided one at a time, in the order they reach the writer, each
    /// against the state its predecessors left; those that arrive together
    /// are appended together, so that one sync of the log covers them all
    /// (`ledger/writer.rs`). Each append expects the head the decisions
    /// saw, so two conflicting commands cannot both succeed. If the log
    /// does not give the events back as appended, or the append's outcome
    /// is unknown, the ledger closes: readers refuse everything and
    /// commands are refused until it is reopened.
    ///
    /// On a ledger shared by several processes, a command that removes
    /// access returns only once every other replica holding a lease has
    /// applied it or its lease has ended (`ledger/follower.rs`), so no
    /// replica allows what it removed from then on; so does a refusal
    /// that says the removal was made already (a retried delete).
    pub fn execute(&self, actor: Actor, command: Command) -> Result<Receipt, LedgerError> {
        self.execute_keyed(actor, command, None)
    }

    /// [`Ledger::execute`], with or without an idempotency key.
    fn execute_keyed(
        &self,
        actor: Actor,
        command: Command,
        key: Option<IdempotencyKey>,
    ) -> Result<Receipt, LedgerError> {
        let start = Instant::now();
        let submitted = self
            .submit_again_on_conflict(actor, command, key)
            .and_then(|receipt| self.applied_through(receipt));
        let outcome = self.replicated(submitted);
        observe::command(&outcome, start.elapsed());
        outcome
    }

    /// The lease gate decisions check, on a log shared with other
    /// processes.
    #[cfg(feature = "postgres")]
    fn gate(&self) -> Option<Arc<Gate>> {
        self.replica.as_ref().map(follower::Replica::gate)
    }

    #[cfg(not(feature = "postgres"))]
    fn gate(&self) -> Option<Arc<Gate>> {
        None
    }

    #[cfg(not(feature = "postgres"))]
    fn replicated(&self, outcome: Result<Receipt, LedgerError>) -> Result<Receipt, LedgerError> {
        outcome
    }

    /// Refuses while the ledger is closed.
    pub(crate) fn refuse_if_closed(&self) -> Result<(), LedgerError> {
        match self.closed.get() {
            Some(why) => Err(LedgerError::Closed(why.clone())),
            None => Ok(()),
        }
    }

    /// What `read` answers from the log or the state, refused if the
    /// ledger is closed before it starts or by the time it ends: a closed
    /// ledger's log may lack what it acknowledged (a delete), so an
    /// investigation read from it could show a deleted token live.
    pub(crate) fn while_open<T>(
        &self,
        read: impl FnOnce() -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.refuse_if_closed()?;
        let answer = read()?;
        self.refuse_if_closed()?;
        Ok(answer)
    }

    /// Closes the ledger after `error`, an append whose outcome is not
    /// known: the projection may lack what the log holds (a delete), so
    /// readers see the closed state and refuse everything, and commands
    /// are refused, until the ledger is reopened and replays the log.
    /// Returns `error`.
    fn close(&self, projection: &mut Projection, error: LedgerError) -> LedgerError {
        projection.close();
        self.closed.get_or_init(|| error.to_string());
        observe::closed(true);
        // Waiters for a position find it closed.
        self.applied.wake_all();
        error
    }

    /// Creates a token: draws its id and secret, seals the secret when the
    /// ledger has a sealing key, and records it. The secret is returned
    /// only here (and by [`Ledger::reveal`] when sealed).
    pub fn create_token(&self, actor: Actor, new: NewToken) -> Result<CreatedToken, LedgerError> {
        let (token, secret, command) = self.token_to_create(new)?;
        let receipt = self.execute(actor, command)?;
        Ok(CreatedToken {
            token,
            secret,
            receipt,
        })
    }

    /// A new token's id and secret, drawn, and the command that creates
    /// it, its secret sealed when the ledger has a sealing key.
    fn token_to_create(&self, new: NewToken) -> Result<(TokenId, Secret, Command), LedgerError> {
        let token = fresh::token_id().map_err(LedgerError::Random)?;
        let secret = fresh::secret().map_err(LedgerError::Random)?;
        let sealed_secret = match &self.sealing_key {
            Some(key) => Some(
                sealing::seal(key, token, new.company, &secret).map_err(LedgerError::Sealing)?,
            ),
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
        Ok((token, secret, command))
    }

    /// Shows a token's secret again to an admin. The reveal is recorded
    /// (durably) before the secret is returned; if it cannot be recorded,
    /// no secret is returned.
    pub fn reveal(&self, actor: Actor, token: TokenId) -> Result<Secret, LedgerError> {
        self.refuse_if_closed()?;
        let now = Timestamp::from_system_time(SystemTime::now());
        let command = Command::RevealToken { token };
        // The rules first, so a member learns they may not, not whether a key exists.
        self.with_state(|state| decide(state, actor, now, &command))
            .map_err(LedgerError::Refused)?;
        let (binding, sealed) =
            match sealed_at_creation(&*self.log, token).map_err(LedgerError::Damaged)? {
                Some(found) if self.sealing_keys().next().is_some() => found,
                _ => return Err(LedgerError::SecretNotKept(token)),
            };
        // Unsealed, and checked against the digest, before the reveal is
        // recorded, so a reveal that cannot show the secret is not
        // recorded as one that did. The reveal is decided again by the
        // writer, against the state then: a token deleted meanwhile is
        // refused, and its secret not returned. What was sealed at its
        // creation never changes.
        let secret =
            sealing::open(self.sealing_keys(), &binding, &sealed).map_err(LedgerError::Sealing)?;
        self.execute(actor, command)?;
        Ok(secret)
    }
}

/// Checks that a replay that ran to the head reached the log's head as
/// read before it: the same position, and the same hash, so that the last
/// link checked ends at the head the log will append after.
fn check_reached_head(head: Head, reached: Head) -> Result<(), LedgerError> {
    if reached != head {
        return Err(LedgerError::Damaged(Damage {
            position: head.position,
            problem: Problem::HeadDisagrees {
                head: head.hash,
                found: reached.hash,
            },
        }));
    }
    Ok(())
}

/// The time of the record at `head`, the last replayed (the epoch for an
/// empty log): the log stamps no later record earlier.
fn last_recorded(log: &dyn EventLog, head: u64) -> Result<Timestamp, LedgerError> {
    if head == 0 {
        return Ok(Timestamp::EPOCH);
    }
    let last = log.read(head, 1).map_err(LedgerError::Damaged)?;
    Ok(last
        .first()
        .map_or(Timestamp::EPOCH, |stored| stored.envelope.recorded_at))
}

/// What `token`'s creation recorded: its binding and sealed secret, if it
/// has one. One read of the token's stream: the sealed secret is not kept
/// in memory, where every token would pay for it on every request.
fn sealed_at_creation(
    log: &dyn EventLog,
    token: TokenId,
) -> Result<Option<(Binding, tokenledger_events::SealedSecret)>, Damage> {
    let created = log.read_stream(Stream::Token(token), 1, 1)?;
    Ok(match created.into_iter().next().map(|e| e.envelope) {
        Some(envelope) => match envelope.event {
            Event::TokenCreated {
                token: created,
                secret_digest,
                sealed_secret: Some(sealed),
                ..
            } if created == token => Some((
                Binding {
                    token,
                    company: envelope.company,
                    digest: secret_digest,
                },
                sealed,
            )),
            _ => None,
        },
        None => None,
    })
}
