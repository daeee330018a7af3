//! A ledger on PostgreSQL (feature `postgres`): one of several processes
//! sharing one log, each a full peer.
//!
//! Each process keeps its own projection and decides locally, as a ledger
//! on sled does. What another process appends, a follower thread applies
//! here: woken by the log's tail (`LISTEN/NOTIFY`, polling behind it), it
//! takes the writer's desk, applies the new events to the writer copy and
//! publishes them, exactly as a group of this process's own commands is.
//! A command is decided against the state this process has applied and
//! appended expecting the head at that position; if another process
//! appended first, nothing is written, the ledger catches up and decides
//! again (`Ledger::submit_again_on_conflict`). A receipt's position is a
//! consistency token: [`Ledger::wait_for_position`] on any process waits
//! until its follower has applied it.
//!
//! Checkpoints stay local files of each process, in the directory it is
//! given; one given none replays the whole log from PostgreSQL at open.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokenledger_events::Timestamp;
use tokenledger_postgres::PgLog;
use tokenledger_store::{EventLog, Head, Problem, Verified};

use super::writer::Writer;
use super::{Ledger, LedgerError, LedgerOptions, Opened};
use crate::checkpoints::Checkpoints;
use crate::history::replay;
use crate::transfer::{TransferError, check_file};

/// The most events applied in one hold of the writer's desk, so that
/// commands are not held up behind a long catch-up.
const CHUNK: u64 = 4096;

/// The longest the follower waits on the log's tail before it looks for
/// the head itself, and whether the ledger is gone.
const FOLLOW_WAIT: Duration = Duration::from_millis(250);

impl Ledger {
    /// Opens the ledger whose log is in the PostgreSQL database `url`
    /// (`postgres://USER@HOST:PORT/DATABASE`), creating its schema on
    /// first use, with this process's checkpoints in `checkpoint_dir` (in
    /// its `checkpoints` folder; none: none are kept, and opening replays
    /// the whole log). Other processes may open the same database at the
    /// same time: a follower thread applies what they append, for as long
    /// as the ledger lives.
    ///
    /// Of `options.log`, only the known head and the clock apply.
    pub fn open_postgres(
        url: &str,
        checkpoint_dir: Option<&Path>,
        options: LedgerOptions,
    ) -> Result<Arc<Ledger>, LedgerError> {
        let mut options = options.one_key();
        let clock = options.log.clock.take();
        let stamp = Arc::new(Mutex::new(Timestamp::EPOCH));
        let database = tokenledger_postgres::Options {
            clock: Some(Writer::log_clock(&stamp)),
            known_head: options.log.known_head,
            ..tokenledger_postgres::Options::default()
        };
        let log = PgLog::open(url, database).map_err(|e| LedgerError::Database(e.to_string()))?;
        let checkpoints = match checkpoint_dir {
            Some(dir) => Checkpoints::new(
                dir,
                options.checkpoint_key.clone(),
                options.trust_unsigned_checkpoints,
            ),
            None => Checkpoints::none(),
        };
        let newest = checkpoints.newest();
        let log: Arc<dyn EventLog> = Arc::new(log);
        let opened = Opened {
            log: Arc::clone(&log),
            checkpoints,
            newest,
            clock,
            stamp,
            follows: true,
        };
        let ledger = Arc::new(Ledger::open_on(opened, options)?);
        let weak = Arc::downgrade(&ledger);
        std::thread::Builder::new()
            .name("tokenledger-follower".to_owned())
            .spawn(move || follow(&weak, &*log))
            .map_err(|e| LedgerError::Database(format!("no follower thread could start: {e}")))?;
        Ok(ledger)
    }

    /// Imports an export into the empty log of the PostgreSQL database
    /// `url` (its schema made if needed), and returns what its
    /// verification found: the migration path from a data directory.
    /// The file is checked whole first, writing nothing, as
    /// [`Ledger::import`] checks it; a log that is not empty is refused.
    /// Unlike a directory, the database is not swapped in whole at the
    /// end: an import that fails half-way leaves the records appended so
    /// far, which a second import refuses; drop and recreate the database.
    pub fn import_postgres(
        url: &str,
        file: &Path,
        expect_head: Option<Head>,
        options: LedgerOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Verified, TransferError> {
        let checked = check_file(file)?;
        if let Some(expected) = expect_head
            && expected != checked
        {
            return Err(TransferError::UnexpectedHead {
                expected,
                found: checked,
            });
        }
        let ledger = Ledger::open_postgres(url, None, options).map_err(TransferError::Ledger)?;
        let held = ledger.head().position;
        if held != 0 {
            return Err(TransferError::Ledger(LedgerError::Database(format!(
                "the database already holds a log of {held} events: an import starts a new one, into an empty database"
            ))));
        }
        ledger.append_checked(file, checked, progress)
    }

    /// Applies what the log holds past the state, up to [`CHUNK`] events,
    /// and publishes it; returns the position applied.
    pub(crate) fn catch_up(&self) -> Result<u64, LedgerError> {
        let mut projection = self.writer();
        self.refuse_if_closed()?;
        let from = projection.read(|state| state.position());
        let to = self.log.head().position.min(from + CHUNK);
        if to <= from {
            return Ok(from);
        }
        let replayed = replay(&*self.log, from, to, |stored| {
            projection.apply(stored.envelope.clone());
        });
        if let Err(error) = replayed {
            projection.discard();
            // Damage is for good: the state cannot follow the log, so it
            // stops answering. A failed connection is tried again.
            return Err(match &error {
                LedgerError::Damaged(damage) if !matches!(damage.problem, Problem::Storage(_)) => {
                    self.close(&mut projection, error)
                }
                _ => error,
            });
        }
        // INVARIANT (publish-before-return): see tokenledger-projection.
        projection.publish();
        self.applied.set(to);
        self.checkpoint_if_due(&projection);
        Ok(to)
    }
}

/// Follows the log for as long as the ledger lives and is open.
fn follow(ledger: &Weak<Ledger>, log: &dyn EventLog) {
    let mut next = 1;
    loop {
        log.wait_for(next, FOLLOW_WAIT);
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        match ledger.catch_up() {
            Ok(applied) => next = applied + 1,
            Err(_) if ledger.refuse_if_closed().is_err() => return,
            // The database is unreachable: the tail's wait paces the retries.
            Err(_) => {}
        }
    }
}
