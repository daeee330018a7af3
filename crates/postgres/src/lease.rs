//! Replicas' leases: what lets a removal return only once every replica
//! that may still allow has applied it.
//!
//! Each replica (each process with a ledger on the log) holds a row of
//! `tokenledger_leases`: its random id, the position it has applied, the
//! position a removal waits for it to apply (`owed`), and when the lease
//! ends, on the server's clock. ARCHITECTURE.md gives the argument; here
//! is what each statement keeps.
//!
//! - The holder may allow until [`Grant::Until`]: measured on its own
//!   monotonic clock from *before* it sent the statement that extended
//!   the lease, less a margin ([`Lease::margin`]).
//! - A lease is extended only if its holder has applied what it owes, and
//!   only while it is live on the server's clock (`renew`): one that
//!   expired there must be taken again (`join`), and its holder catches up
//!   to the head it reads after joining before it allows. The server's
//!   clock only ever makes a holder stop sooner: no removal stops waiting
//!   for a lease because the server's clock says it expired.
//! - INVARIANT (skip-only-what-cannot-return): a removal stops waiting for
//!   a lagging lease only through a mark. Still waiting after a moment, it
//!   marks the leases behind its position as owing it (synchronously
//!   committed), after which none can be extended without applying it;
//!   so each holder's last extension was sent before the mark committed,
//!   and its gate shuts a lease less a margin after that, on its own
//!   clock. The removal counts a lease and a margin from after the mark
//!   committed, on *its* monotonic clock, and returns then. Only the
//!   rates of the two monotonic clocks enter (they may differ by up to
//!   the margins over a lease); the server's wall clock, which may be
//!   stepped or differ after a failover, does not.
//! - Leases left by replicas gone (kill -9) are deleted by the removal
//!   that waited them out, and only those not extended since its mark
//!   (`applied` still behind it, `expires_at` unchanged), each in a
//!   statement that locks the row: a renewal in flight either lands first
//!   (and the lease stays) or finds it gone, and its holder joins again.
//!
//! Statements that extend a lease, and marks, are committed synchronously
//! whatever the server's or the session's `synchronous_commit` (each sets
//! it on in its own transaction): an extension lost in a crash of the
//! server would let a deletion end a lease its holder still relies on, and
//! a lost mark would let a lagging lease be extended after its waiter
//! stopped counting on it. Reports and deletions may be lost harmlessly (a
//! lost report makes a removal wait longer, a lost deletion leaves a lease
//! that the next removal waits out again), so they commit asynchronously,
//! sparing removals a flush. Each is one simple query: one round trip, run
//! as one implicit transaction, rolled back whole if any of it fails.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::{Client, SimpleQueryMessage};
use tokenledger_store::hex;

use crate::connect::{Fault, Server};
use crate::pool::Pool;
use crate::read::sql;
use crate::watch::{Known, LEASES};

/// The shortest lease taken: a margin of [`MIN_MARGIN`] is at most a
/// fifth of it, and renewing every third of it leaves room for a loaded
/// machine's scheduling and a synchronous commit.
pub const MIN_LEASE: Duration = Duration::from_millis(500);

/// The least margin taken off a lease, whatever its length: it absorbs
/// the difference in the monotonic clocks' rates and the holder's wake-up
/// after its gate's deadline, which do not shrink with a short lease.
pub const MIN_MARGIN: Duration = Duration::from_millis(100);

/// The longest lease taken: a removal may wait about this long.
pub const MAX_LEASE: Duration = Duration::from_secs(600);

/// How often a waiting removal looks at the leases when no notification
/// came.
const POLL: Duration = Duration::from_millis(5);

/// What extending a lease gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Held: the holder may allow until this instant of its own monotonic
    /// clock, which is before the server ends the lease.
    Until(Instant),
    /// Not extended: a removal waits for this position, which the holder
    /// has not applied. The lease it held stands until it ends.
    Owing(u64),
    /// Ended (expired, or ended by a waiting removal): the holder must
    /// [`Lease::join`] again, and catch up to the head before it allows.
    Lapsed,
}

/// A statement about leases failed (the text names the server, never a
/// password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseError(pub String);

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LeaseError {}

/// This replica's lease, taken with [`crate::PgLog::lease`]. Ended on the
/// server when dropped, so that no removal waits for a replica gone.
pub struct Lease {
    id: [u8; 16],
    length: Duration,
    server: Server,
    /// The holder's own connection, for joining, renewing and reporting.
    own: Mutex<Option<Client>>,
    /// For waiting removals, which may be many at once.
    pool: Arc<Pool>,
    known: Arc<Known>,
    /// Ended by [`Lease::end`] since it was last joined: the drop then
    /// does not ask the server again (which may be down, and would hold
    /// the drop for its timeouts).
    ended: AtomicBool,
}

impl Lease {
    pub(crate) fn new(
        length: Duration,
        server: Server,
        pool: Arc<Pool>,
        known: Arc<Known>,
    ) -> Result<Lease, LeaseError> {
        if !(MIN_LEASE..=MAX_LEASE).contains(&length) {
            return Err(LeaseError(format!(
                "a lease of {} ms is out of range: it must last from {} ms to {} s",
                length.as_millis(),
                MIN_LEASE.as_millis(),
                MAX_LEASE.as_secs()
            )));
        }
        let mut id = [0; 16];
        getrandom::fill(&mut id)
            .map_err(|error| LeaseError(format!("no random replica id could be drawn: {error}")))?;
        Ok(Lease {
            id,
            length,
            server,
            own: Mutex::new(None),
            pool,
            known,
            ended: AtomicBool::new(false),
        })
    }

    /// How long a lease lasts on the server's clock.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// What the holder takes off each lease, and a waiting removal adds
    /// before it takes a marked lease for ended: a tenth of it, and at
    /// least [`MIN_MARGIN`]. The holder stops first unless the two
    /// monotonic clocks differ in rate by more than about a fifth over a
    /// lease (NTP keeps them within 0.05%).
    pub fn margin(&self) -> Duration {
        (self.length / 10).max(MIN_MARGIN)
    }

    /// The replica's id, in hex, for messages.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// Takes the lease (again), having applied `applied`: granted unless
    /// a removal waits for a position past it. Returns the grant and the
    /// log's head, read once the grant committed: the holder allows only
    /// after it has caught up to that head, since removals that ended its
    /// previous lease (or ran before it had one) did not wait for it, and
    /// each was recorded before that head was read.
    pub fn join(&self, applied: u64) -> Result<(Grant, u64), LeaseError> {
        self.ended.store(false, Ordering::Release);
        let sql = format!(
            "SET LOCAL synchronous_commit = on;
             WITH joined AS (
                 INSERT INTO tokenledger_leases AS lease (replica, applied, owed, expires_at)
                 VALUES ({id}, {applied}, 0, clock_timestamp() + {length})
                 ON CONFLICT (replica) DO UPDATE SET
                     applied = GREATEST(lease.applied, excluded.applied),
                     expires_at = CASE WHEN excluded.applied >= lease.owed
                         THEN excluded.expires_at ELSE lease.expires_at END
                 RETURNING owed
             )
             SELECT owed, pg_notify('{LEASES}', '') FROM joined;",
            id = self.literal(),
            applied = sql(applied),
            length = self.interval(),
        );
        let sent = Instant::now();
        let (owed, head) = self.on_own(|client| {
            let owed = first_number(&client.simple_query(&sql)?)?;
            // A statement of its own, after the grant's commit: a head read
            // in the grant's own snapshot could miss a removal committed
            // while the grant was on its way.
            let head = crate::watch::read_head(client)?;
            Ok::<_, Fault>((owed, head.position))
        })?;
        Ok((self.granted(sent, applied, owed), head))
    }

    /// Extends the lease, having applied `applied`, if it is still live on
    /// the server's clock and owes nothing past `applied`.
    pub fn renew(&self, applied: u64) -> Result<Grant, LeaseError> {
        let applied_sql = sql(applied);
        let sql = format!(
            "SET LOCAL synchronous_commit = on;
             WITH renewed AS (
                 UPDATE tokenledger_leases SET
                     applied = GREATEST(applied, {applied_sql}),
                     expires_at = CASE WHEN {applied_sql} >= owed
                         THEN clock_timestamp() + {length} ELSE expires_at END
                 WHERE replica = {id} AND expires_at > clock_timestamp()
                 RETURNING owed
             )
             SELECT owed, pg_notify('{LEASES}', '') FROM renewed;",
            id = self.literal(),
            length = self.interval(),
        );
        let sent = Instant::now();
        let owed = self.on_own(|client| first_number(&client.simple_query(&sql)?))?;
        Ok(match owed {
            None => Grant::Lapsed,
            owed => self.granted(sent, applied, owed),
        })
    }

    /// Says that the holder has applied `applied`, without extending the
    /// lease, and wakes the removals waiting for it. Committed
    /// asynchronously, sparing the follower a flush after every event it
    /// applies: lost in a crash of the server, it only makes removals
    /// wait longer (for a mark), since no removal stops counting a lease
    /// on what it did not see.
    pub fn report(&self, applied: u64) -> Result<(), LeaseError> {
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             UPDATE tokenledger_leases SET applied = GREATEST(applied, {applied})
                 WHERE replica = {id};
             SELECT pg_notify('{LEASES}', '');",
            id = self.literal(),
            applied = sql(applied),
        );
        self.on_own(|client| client.batch_execute(&sql))
    }

    /// Ends the lease, so that removals stop waiting for it at once; the
    /// holder must allow nothing from now on (a dropped or closed ledger).
    /// Best effort, bounded by the connection's and the statement's
    /// timeouts: a lease not ended is waited out by the next removal.
    /// Asked once: a second call (the drop's, after a closed ledger ended
    /// it) does nothing until the lease is joined again.
    pub fn end(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             DELETE FROM tokenledger_leases WHERE replica = {id};
             SELECT pg_notify('{LEASES}', '');",
            id = self.literal(),
        );
        let _ = self.on_own(|client| client.batch_execute(&sql));
    }

    /// Waits until every other replica whose lease is live has applied
    /// `position`, or can no longer allow; returns how many leases it
    /// waited for at the last look. Bounded by about a lease and a fifth:
    /// a replica still behind after a tenth of a lease is marked as owing
    /// `position`, so its lease cannot be extended without applying it,
    /// and once a lease and a margin have passed since the mark on this
    /// process's monotonic clock, every holder marked has stopped
    /// allowing, whether or not the server still answers; the leases
    /// marked and not extended since are then deleted. An error only when
    /// no mark could be made within a lease and a margin (the server
    /// unreachable): then other replicas may still be behind.
    pub fn await_applied(&self, position: u64) -> Result<usize, LeaseError> {
        let start = Instant::now();
        let patience = self.length / 10;
        let give_up = self.length + self.margin();
        let mut marked: Option<(Instant, Vec<Marked>)> = None;
        let mut failed = None;
        let mut behind = 0;
        loop {
            let seen = self.known.lease_changes();
            match self.pool.with(|client| self.behind(client, position)) {
                Ok(0) => return Ok(0),
                Ok(count) => behind = count,
                Err(error) => failed = Some(error),
            }
            match &marked {
                Some((ended, leases)) if Instant::now() >= *ended => {
                    // Best effort: a lease left is waited out by the next
                    // removal again, and deleted then.
                    let _ = self
                        .pool
                        .with(|client| self.end_marked(client, position, leases));
                    return Ok(behind);
                }
                Some(_) => {}
                None if start.elapsed() >= patience => {
                    match self.pool.with(|client| self.mark(client, position)) {
                        // INVARIANT (skip-only-what-cannot-return): counted
                        // from after the mark committed, on this process's
                        // monotonic clock: every holder marked sent its last
                        // extension before that, and stops allowing a lease
                        // less a margin after sending it, on its own.
                        Ok(leases) => {
                            marked = Some((Instant::now() + self.length + self.margin(), leases));
                        }
                        Err(error) => failed = Some(error),
                    }
                }
                None => {}
            }
            if marked.is_none() && start.elapsed() >= give_up {
                return Err(LeaseError(format!(
                    "whether the other replicas applied position {position} is not known: {}",
                    failed.unwrap_or_else(|| "the leases could not be marked".to_owned())
                )));
            }
            self.known.wait_for_lease_change(seen, POLL);
        }
    }

    /// Counts the other leases behind `position`, expired or not: only a
    /// mark waited out lets a removal stop counting one. No count is an
    /// error, never 0.
    fn behind(&self, client: &mut Client, position: u64) -> Result<usize, Fault> {
        let sql = format!(
            "SELECT count(*) FROM tokenledger_leases
                 WHERE applied < {position} AND replica <> {id}",
            id = self.literal(),
            position = sql(position),
        );
        let rows = client.simple_query(&sql)?;
        let count = first_number(&rows)?.ok_or_else(|| {
            Fault::Malformed("the count of the leases behind came back without a row".to_owned())
        })?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Marks the leases behind `position` as owing it, committed
    /// synchronously since the bound on the wait rests on it; returns
    /// those marked, as they stood.
    fn mark(&self, client: &mut Client, position: u64) -> Result<Vec<Marked>, Fault> {
        let sql = format!(
            "SET LOCAL synchronous_commit = on;
             UPDATE tokenledger_leases SET owed = GREATEST(owed, {position})
                 WHERE applied < {position} AND replica <> {id}
                 RETURNING encode(replica, 'hex'), expires_at::text;",
            id = self.literal(),
            position = sql(position),
        );
        let rows = client.simple_query(&sql)?;
        // One that does not read back is only not deleted: the mark holds.
        Ok(rows
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Marked::read(row.get(0)?, row.get(1)?),
                _ => None,
            })
            .collect())
    }

    /// Deletes the leases `marked` whose holders have neither applied
    /// `position` nor extended them since the mark (a lease extended since
    /// has applied it, and an extension sets a new `expires_at`): their
    /// holders stopped allowing, and must join again and catch up.
    fn end_marked(
        &self,
        client: &mut Client,
        position: u64,
        marked: &[Marked],
    ) -> Result<(), Fault> {
        if marked.is_empty() {
            return Ok(());
        }
        let leases: Vec<String> = marked
            .iter()
            .map(|lease| {
                format!(
                    "(decode('{}', 'hex'), '{}'::timestamptz)",
                    lease.replica, lease.expires_at
                )
            })
            .collect();
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             DELETE FROM tokenledger_leases
                 WHERE applied < {position} AND replica <> {id}
                 AND (replica, expires_at) IN (VALUES {leases});
             SELECT pg_notify('{LEASES}', '');",
            id = self.literal(),
            position = sql(position),
            leases = leases.join(", "),
        );
        client.batch_execute(&sql)?;
        Ok(())
    }

    fn granted(&self, sent: Instant, applied: u64, owed: Option<u64>) -> Grant {
        match owed {
            None => Grant::Lapsed,
            Some(owed) if owed > applied => Grant::Owing(owed),
            Some(_) => Grant::Until(sent + self.length - self.margin()),
        }
    }

    /// Runs `work` on the holder's own connection, made anew after one
    /// failed with it.
    fn on_own<T, E: Into<Fault>>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, E>,
    ) -> Result<T, LeaseError> {
        let mut own = self.own.lock();
        let client = match &mut *own {
            Some(client) if !client.is_closed() => client,
            slot => slot.insert(
                self.server
                    .connect_named("tokenledger-lease")
                    .map_err(|error| LeaseError(error.to_string()))?,
            ),
        };
        let outcome = work(client);
        if client.is_closed() {
            *own = None;
        }
        outcome.map_err(|error| {
            LeaseError(format!(
                "PostgreSQL at {} failed: {}",
                self.server.endpoint(),
                error.into().describe()
            ))
        })
    }

    /// The id as an SQL literal.
    fn literal(&self) -> String {
        format!("decode('{}', 'hex')", hex(&self.id))
    }

    fn interval(&self) -> String {
        format!("interval '{} microseconds'", self.length.as_micros())
    }
}

impl Drop for Lease {
    /// Ends the lease, so that removals do not wait for it.
    fn drop(&mut self) {
        self.end();
    }
}

/// A lease as a mark found it.
struct Marked {
    /// The replica's id, in hex.
    replica: String,
    /// Its end, as the server writes a `timestamptz`.
    expires_at: String,
}

impl Marked {
    /// Only what can be put back in a statement as it is: hex digits, and
    /// a time without quotes or backslashes.
    fn read(replica: &str, expires_at: &str) -> Option<Marked> {
        let hex = !replica.is_empty() && replica.bytes().all(|b| b.is_ascii_hexdigit());
        let plain = expires_at.bytes().all(|b| b != b'\'' && b != b'\\');
        (hex && plain).then(|| Marked {
            replica: replica.to_owned(),
            expires_at: expires_at.to_owned(),
        })
    }
}

/// A position as SQL's `bigint`.
/// The first column of the first row, as a number; none if no row came,
/// and an error if the row holds something else.
fn first_number(messages: &[SimpleQueryMessage]) -> Result<Option<u64>, Fault> {
    let Some(row) = messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    }) else {
        return Ok(None);
    };
    let text = row.get(0).unwrap_or("NULL");
    text.parse()
        .map(Some)
        .map_err(|_| Fault::Malformed(format!("`{text}` where a count or position was due")))
}
