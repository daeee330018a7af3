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
//!
//! # Leases: revocation that holds across processes
//!
//! Each process holds a lease in the database (`tokenledger_postgres`'s
//! `lease.rs` keeps the statements and their argument; ARCHITECTURE.md
//! the protocol). The follower renews it every third of a lease with the
//! position readers see, and reports that position whenever it applies
//! new events. Decisions check the lease's end on the monotonic clock
//! ([`Gate`]): a process that could not renew in time refuses everything
//! (503) until it has taken a lease again and caught up to the head read
//! after taking it. A command that removes access ([`removes_access`])
//! returns only once every other process holding a live lease has applied
//! it, or that lease has ended (`Ledger::replicated`).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokenledger_events::{Event, Role, Timestamp};
use tokenledger_postgres::{Grant, Lease, PgLog};
use tokenledger_store::{EventLog, Head, Problem, Verified};

use super::writer::Writer;
use super::{Ledger, LedgerError, LedgerOptions, Opened, Receipt};
use crate::checkpoints::Checkpoints;
use crate::command::CommandError;
use crate::gate::Gate;
use crate::history::replay;
use crate::observe;
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
    /// Of `options.log`, only the known head and the clock apply. The
    /// process holds a lease of `options.replica_lease` (ended when the
    /// ledger is dropped); decisions refuse (503) while it has none.
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
        let lease = log
            .lease(options.replica_lease)
            .map_err(|e| LedgerError::Database(e.to_string()))?;
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
        let mut ledger = Ledger::open_on(opened, options)?;
        ledger.replica = Some(Replica {
            lease,
            gate: Arc::new(Gate::shut()),
            tending: Mutex::new(Tending::default()),
        });
        // Taken before anyone can ask for a decision, unless the database
        // fails now: then the follower tries again, refusing meanwhile.
        ledger.tend_lease();
        let ledger = Arc::new(ledger);
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

    /// Applies what other processes appended, up to the log's head now (one
    /// read of it: on PostgreSQL each is a query).
    pub(crate) fn catch_up_now(&self) -> Result<(), LedgerError> {
        self.catch_up_through(self.log.head().position)
    }

    /// Applies what the log holds until the state has applied `position`;
    /// an error if it cannot (the log does not give it back): never less
    /// than asked for, whatever the head as last read.
    pub(crate) fn catch_up_through(&self, position: u64) -> Result<(), LedgerError> {
        while self.catch_up_to(position)? < position {}
        Ok(())
    }

    /// Applies what the log holds past the state up to `head`, at most
    /// [`CHUNK`] events, and publishes it; returns the position applied.
    fn catch_up_to(&self, head: u64) -> Result<u64, LedgerError> {
        // Nothing to apply (this process's own commands, say): the desk,
        // which a command may hold for a whole append, is not waited for.
        let applied = self.applied.get();
        if applied >= head {
            self.refuse_if_closed()?;
            return Ok(applied);
        }
        let mut projection = self.writer();
        self.refuse_if_closed()?;
        let from = projection.read(|state| state.position());
        let to = head.min(from + CHUNK);
        if to <= from {
            return Ok(from);
        }
        let mut last_time = None;
        let replayed = replay(&*self.log, from, to, |stored| {
            last_time = Some(stored.envelope.recorded_at);
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
        if let Some(at) = last_time {
            projection.recorded_through(at);
        }
        // INVARIANT (publish-before-return): see tokenledger-projection.
        projection.publish();
        self.applied.set(to);
        self.checkpoint_if_due(&projection);
        drop(projection);
        // With the head as last read: no query for a metric, and with the
        // desk let go.
        observe::positions(head, to, self.last_checkpoint.load(Ordering::Relaxed));
        Ok(to)
    }
}

/// Follows the log, and keeps the lease, for as long as the ledger lives
/// and is open; ends the lease once it has closed.
fn follow(ledger: &Weak<Ledger>, log: &dyn EventLog) {
    let mut next = 1;
    let mut wait = Duration::ZERO;
    loop {
        let head = log.wait_for(next, wait);
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        // An error with the ledger open: the database is unreachable, and
        // the tail's wait paces the retries.
        if let Ok(applied) = ledger.catch_up_to(head) {
            next = applied + 1;
        }
        if ledger.refuse_if_closed().is_err() {
            ledger.end_lease();
            return;
        }
        wait = ledger.tend_lease();
    }
}

/// This process's lease, and the gate decisions check.
pub(crate) struct Replica {
    lease: Lease,
    gate: Arc<Gate>,
    /// Only the follower (and opening, before it starts) tends the lease.
    tending: Mutex<Tending>,
}

/// What the follower remembers of its lease.
#[derive(Default)]
struct Tending {
    /// Whether the lease is held: taken, and not found ended since.
    held: bool,
    /// When the last extension was sent.
    renewed: Option<Instant>,
    /// The position last told to the database.
    reported: u64,
}

impl Replica {
    pub(crate) fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.gate)
    }
}

impl Ledger {
    /// Takes, renews or reports the lease as due, with the position readers
    /// see; returns how long the follower may wait before it is due again.
    fn tend_lease(&self) -> Duration {
        let Some(replica) = &self.replica else {
            return FOLLOW_WAIT;
        };
        let length = replica.lease.length();
        // Soon after a failure or while owing; never past a renewal.
        let retry = (length / 10).min(FOLLOW_WAIT);
        let renew_every = length / 3;
        let mut tending = replica.tending.lock();
        let applied = self.applied.get();
        if !tending.held {
            return match self.take_lease(replica, &mut tending) {
                true => renew_every.min(FOLLOW_WAIT),
                false => retry,
            };
        }
        // Reported first: a removal waiting for this position should not
        // wait for the renewal's synchronous commit too.
        if applied > tending.reported && replica.lease.report(applied).is_ok() {
            tending.reported = applied;
        }
        let left = tending.renewed.map_or(Duration::ZERO, |sent| {
            renew_every.saturating_sub(sent.elapsed())
        });
        if !left.is_zero() {
            return left.min(FOLLOW_WAIT);
        }
        let sent = Instant::now();
        match replica.lease.renew(applied) {
            Ok(Grant::Until(until)) => {
                replica.gate.open_until(until);
                tending.renewed = Some(sent);
                tending.reported = tending.reported.max(applied);
                renew_every.min(FOLLOW_WAIT)
            }
            // Behind a removal's position: catching up comes first, and the
            // lease held stands until it ends.
            Ok(Grant::Owing(_)) | Err(_) => retry,
            Ok(Grant::Lapsed) => {
                replica.gate.close();
                tending.held = false;
                Duration::ZERO
            }
        }
    }

    /// Ends the lease of a ledger closed (damage, or a command whose
    /// outcome is unknown): it allows nothing until reopened, so removals
    /// need not wait for it until it would have expired.
    fn end_lease(&self) {
        if let Some(replica) = &self.replica {
            replica.gate.close();
            replica.lease.end();
        }
    }

    /// Takes the lease, then catches up to the head read after it was
    /// granted, and only then lets decisions allow: removals that ended a
    /// previous lease did not wait for this process. Returns whether it is
    /// held.
    fn take_lease(&self, replica: &Replica, tending: &mut Tending) -> bool {
        let applied = self.applied.get();
        let sent = Instant::now();
        // The head is read once the grant committed: every removal that
        // did not wait for this lease was recorded before it.
        let Ok((Grant::Until(until), head)) = replica.lease.join(applied) else {
            return false;
        };
        while self.applied.get() < head {
            // Taken again next time, and caught up again: a renewal must
            // not open the gate on a state that never caught up. Up to the
            // head read, not the log's head now, which is the last one seen
            // when the database does not answer.
            if self.catch_up_to(head).is_err() {
                return false;
            }
        }
        tending.held = true;
        tending.renewed = Some(sent);
        tending.reported = applied;
        replica.gate.open_anew(until);
        true
    }

    /// Waits, after a command that removes access, until every other
    /// process holding a lease has applied it or its lease has ended;
    /// after a refusal that says a removal was made already, until they
    /// have applied the position it was decided at: the caller takes it
    /// as the removal holding (a retry after `Unreplicated`, or the same
    /// delete sent to two replicas), while a replica behind may still
    /// allow what it removed.
    pub(super) fn replicated(
        &self,
        outcome: Result<Receipt, LedgerError>,
    ) -> Result<Receipt, LedgerError> {
        let Some(replica) = &self.replica else {
            return outcome;
        };
        let position = match &outcome {
            Ok(receipt) if receipt.events.iter().any(|e| removes_access(&e.event)) => {
                receipt.position()
            }
            // Decided against a state at or before what is applied now.
            Err(LedgerError::Refused(refusal)) if reports_removal(refusal) => self.applied.get(),
            _ => return outcome,
        };
        match replica.lease.await_applied(position) {
            Ok(_) => outcome,
            Err(error) => Err(LedgerError::Unreplicated {
                position,
                detail: error.to_string(),
            }),
        }
    }
}

/// Whether `refusal` tells its caller that access was removed already:
/// then it waits for the removal to hold everywhere, as the removal did.
/// A new kind of refusal must be placed here (the match has no default).
pub(crate) fn reports_removal(refusal: &CommandError) -> bool {
    match refusal {
        CommandError::TokenDeleted { .. }
        | CommandError::TeammateDeactivated(_)
        | CommandError::ActorDeactivated { .. }
        | CommandError::WorkspaceDeleted(_) => true,
        // A demotion retried: the teammate is a member already.
        CommandError::RoleUnchanged { role, .. } => *role != Role::Admin,
        CommandError::NotPermitted { .. }
        | CommandError::UnknownActor { .. }
        | CommandError::UnknownCompany(_)
        | CommandError::UnknownTeammate(_)
        | CommandError::UnknownWorkspace(_)
        | CommandError::UnknownToken(_)
        | CommandError::AlreadyExists { .. }
        | CommandError::DuplicateSecret
        | CommandError::LastAdmin(_)
        | CommandError::WorkspaceNotInCompany(_)
        | CommandError::InvalidScope(_)
        | CommandError::ExpiryNotInFuture { .. }
        | CommandError::ExpiryTooLate { .. }
        | CommandError::TokenExpired { .. } => false,
    }
}

/// Whether a replica that has not applied `event` may allow something the
/// state after it refuses. Only events that can only add access, or only
/// record, say no; a new kind of event must be placed here (the match has
/// no default), and waits until it is.
pub(crate) fn removes_access(event: &Event) -> bool {
    match event {
        Event::CompanyCreated { .. }
        | Event::TeammateAdded { .. }
        | Event::WorkspaceCreated { .. }
        | Event::TokenCreated { .. }
        | Event::TokenRevealed { .. } => false,
        Event::PrivateApiAccessChanged { allowed, .. }
        | Event::PrivateApiAccessSetForAll { allowed } => !allowed,
        // A demotion takes away what an admin may do; commands are decided
        // at the head anyway (a stale replica's append conflicts), but it
        // costs little to treat it as the removal it is.
        Event::TeammateRoleChanged { role, .. } => *role != Role::Admin,
        Event::TeammateDeactivated { .. }
        | Event::WorkspaceDeleted { .. }
        | Event::TokenDeleted { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use tokenledger_events::{Actor, TeammateId, TokenId, WorkspaceId};
    use tokenledger_projection::Provenance;

    use super::*;

    #[test]
    fn what_removes_access_waits_and_what_only_adds_does_not() {
        let (teammate, token, workspace) = (
            TeammateId::from_u128(1),
            TokenId::from_u128(2),
            WorkspaceId::from_u128(3),
        );
        let removals = [
            Event::TokenDeleted { token },
            Event::TeammateDeactivated { teammate },
            Event::WorkspaceDeleted { workspace },
            Event::PrivateApiAccessChanged {
                teammate,
                allowed: false,
            },
            Event::PrivateApiAccessSetForAll { allowed: false },
            Event::TeammateRoleChanged {
                teammate,
                role: Role::Member,
            },
        ];
        for event in &removals {
            assert!(removes_access(event), "{event:?}");
        }
        let additions = [
            Event::TokenRevealed { token },
            Event::PrivateApiAccessChanged {
                teammate,
                allowed: true,
            },
            Event::PrivateApiAccessSetForAll { allowed: true },
            Event::TeammateRoleChanged {
                teammate,
                role: Role::Admin,
            },
        ];
        for event in &additions {
            assert!(!removes_access(event), "{event:?}");
        }
    }

    #[test]
    fn a_refusal_that_says_a_removal_was_made_waits_and_others_do_not() {
        let teammate = TeammateId::from_u128(1);
        let done = [
            CommandError::TokenDeleted {
                token: TokenId::from_u128(2),
                deleted: Provenance {
                    position: 7,
                    at: Timestamp::EPOCH,
                    actor: Actor::System,
                },
            },
            CommandError::TeammateDeactivated(teammate),
            CommandError::WorkspaceDeleted(WorkspaceId::from_u128(3)),
            CommandError::RoleUnchanged {
                teammate,
                role: Role::Member,
            },
        ];
        for refusal in &done {
            assert!(reports_removal(refusal), "{refusal:?}");
        }
        let others = [
            CommandError::RoleUnchanged {
                teammate,
                role: Role::Admin,
            },
            CommandError::UnknownToken(TokenId::from_u128(2)),
            CommandError::LastAdmin(teammate),
            CommandError::DuplicateSecret,
        ];
        for refusal in &others {
            assert!(!reports_removal(refusal), "{refusal:?}");
        }
    }
}
