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
//!   the lease, less a margin ([`Lease::margin`]). The server set the end
//!   from its own clock once the statement reached it, so the holder
//!   stops first, as long as neither clock runs faster than the other by
//!   more than the margin over one lease.
//! - A lease is extended only while it is live on the server's clock
//!   (`renew`), and only if its holder has applied what it owes. One that
//!   expired stays dead: its holder must `join` again, and then catch up
//!   to the head it reads after joining before it allows.
//! - INVARIANT (skip-only-what-cannot-return): a removal stops waiting for
//!   a lagging lease only once the server has ended it, by deleting it
//!   (`await_applied`) in a statement that locks the row, so a renewal in
//!   flight either lands first (and the removal waits on) or finds the
//!   lease gone.
//! - A removal still waiting after a moment marks the lagging leases as
//!   owing its position (synchronously committed), after which none can be
//!   extended without applying it: the wait is bounded by a lease.
//!
//! Statements that extend a lease, and marks, are committed synchronously:
//! an extension lost in a crash of the server would leave the server
//! ending a lease its holder still relies on, and a lost mark would let a
//! lagging lease be extended after its waiter stopped counting on it.
//! Reports and deletions may be lost harmlessly (a lost deletion leaves an
//! expired lease, which cannot be renewed either), so they commit
//! asynchronously. Each is one simple query: one round trip, run as one
//! implicit transaction, rolled back whole if any of it fails.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::{Client, SimpleQueryMessage};

use crate::connect::{Server, describe};
use crate::pool::Pool;
use crate::watch::{Known, LEASES};

/// The shortest lease taken.
pub const MIN_LEASE: Duration = Duration::from_millis(20);

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
        })
    }

    /// How long a lease lasts on the server's clock.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// What the holder takes off each lease: a tenth of it, so that the
    /// holder stops first unless its clock and the server's differ in rate
    /// by a tenth (NTP keeps them within 0.05%), and a waiting removal
    /// adds as much before it takes a lease for ended.
    pub fn margin(&self) -> Duration {
        self.length / 10
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
        let sql = format!(
            "WITH joined AS (
                 INSERT INTO tokenledger_leases AS lease (replica, applied, owed, expires_at)
                 VALUES ({id}, {applied}, 0, clock_timestamp() + {length})
                 ON CONFLICT (replica) DO UPDATE SET
                     applied = GREATEST(lease.applied, excluded.applied),
                     expires_at = CASE WHEN excluded.applied >= lease.owed
                         THEN excluded.expires_at ELSE lease.expires_at END
                 RETURNING owed
             )
             SELECT owed, pg_notify('{LEASES}', '') FROM joined",
            id = self.literal(),
            applied = sql_position(applied),
            length = self.interval(),
        );
        let sent = Instant::now();
        let (rows, head) = self.on_own(|client| {
            let rows = client.simple_query(&sql)?;
            // A statement of its own, after the grant's commit: a head read
            // in the grant's own snapshot could miss a removal committed
            // while the grant was on its way.
            let head = crate::watch::read_head(client)?;
            Ok((rows, head.position))
        })?;
        Ok((self.granted(sent, applied, first_number(&rows)), head))
    }

    /// Extends the lease, having applied `applied`, if it is still live on
    /// the server's clock and owes nothing past `applied`.
    pub fn renew(&self, applied: u64) -> Result<Grant, LeaseError> {
        let applied_sql = sql_position(applied);
        let sql = format!(
            "WITH renewed AS (
                 UPDATE tokenledger_leases SET
                     applied = GREATEST(applied, {applied_sql}),
                     expires_at = CASE WHEN {applied_sql} >= owed
                         THEN clock_timestamp() + {length} ELSE expires_at END
                 WHERE replica = {id} AND expires_at > clock_timestamp()
                 RETURNING owed
             )
             SELECT owed, pg_notify('{LEASES}', '') FROM renewed",
            id = self.literal(),
            length = self.interval(),
        );
        let sent = Instant::now();
        let rows = self.on_own(|client| client.simple_query(&sql))?;
        Ok(match first_number(&rows) {
            None => Grant::Lapsed,
            owed => self.granted(sent, applied, owed),
        })
    }

    /// Says that the holder has applied `applied`, without extending the
    /// lease, and wakes the removals waiting for it. Committed
    /// asynchronously: lost, it only makes removals wait longer.
    pub fn report(&self, applied: u64) -> Result<(), LeaseError> {
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             UPDATE tokenledger_leases SET applied = GREATEST(applied, {applied})
                 WHERE replica = {id};
             SELECT pg_notify('{LEASES}', '');",
            id = self.literal(),
            applied = sql_position(applied),
        );
        self.on_own(|client| client.batch_execute(&sql))
    }

    /// Waits until every other replica whose lease is live has applied
    /// `position`, or its lease has ended; returns how many leases it
    /// waited for at the last look. Bounded by about a lease and a tenth:
    /// a replica still behind after a tenth of a lease is marked as owing
    /// `position`, so its lease cannot be extended without applying it,
    /// and once a lease and a margin have passed since the mark, every
    /// lease marked has ended, whether or not the server still answers.
    /// An error only when no mark could be made within a lease and a
    /// margin (the server unreachable): then other replicas may still be
    /// behind.
    pub fn await_applied(&self, position: u64) -> Result<usize, LeaseError> {
        let start = Instant::now();
        let patience = self.length / 10;
        let give_up = self.length + self.margin();
        let mut ended_by: Option<Instant> = None;
        let mut failed = None;
        let mut behind = 0;
        loop {
            let seen = self.known.lease_changes();
            match self.pool.with(|client| self.behind(client, position)) {
                Ok(0) => return Ok(0),
                Ok(count) => behind = count,
                Err(error) => failed = Some(error),
            }
            let waited = start.elapsed();
            match ended_by {
                Some(ended) if Instant::now() >= ended => return Ok(behind),
                Some(_) => {}
                None if waited >= patience => match self.pool.with(|c| self.mark(c, position)) {
                    // INVARIANT (skip-only-what-cannot-return): measured
                    // from after the mark committed, so every lease it
                    // marked has ended on the server's clock by then.
                    Ok(()) => ended_by = Some(Instant::now() + self.length + self.margin()),
                    Err(error) => failed = Some(error),
                },
                None => {}
            }
            if ended_by.is_none() && waited >= give_up {
                return Err(LeaseError(format!(
                    "whether the other replicas applied position {position} is not known: {}",
                    failed.unwrap_or_else(|| "the leases could not be marked".to_owned())
                )));
            }
            self.known.wait_for_lease_change(seen, POLL);
        }
    }

    /// Ends the leases behind `position` that have expired, and counts
    /// those behind it still live.
    fn behind(&self, client: &mut Client, position: u64) -> Result<usize, postgres::Error> {
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             DELETE FROM tokenledger_leases
                 WHERE applied < {position} AND replica <> {id}
                 AND expires_at <= clock_timestamp();
             SELECT count(*) FROM tokenledger_leases
                 WHERE applied < {position} AND replica <> {id};",
            id = self.literal(),
            position = sql_position(position),
        );
        let rows = client.simple_query(&sql)?;
        Ok(first_number(&rows).map_or(0, |count| usize::try_from(count).unwrap_or(usize::MAX)))
    }

    /// Marks the leases behind `position` as owing it; committed
    /// synchronously, since the bound on the wait rests on it.
    fn mark(&self, client: &mut Client, position: u64) -> Result<(), postgres::Error> {
        let sql = format!(
            "UPDATE tokenledger_leases SET owed = GREATEST(owed, {position})
                 WHERE applied < {position} AND replica <> {id}",
            id = self.literal(),
            position = sql_position(position),
        );
        client.batch_execute(&sql)
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
    fn on_own<T>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
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
                describe(&error)
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
    /// Ends the lease, so that removals do not wait for it to expire;
    /// if the server cannot be told, it expires.
    fn drop(&mut self) {
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             DELETE FROM tokenledger_leases WHERE replica = {id};
             SELECT pg_notify('{LEASES}', '');",
            id = self.literal(),
        );
        let _ = self.on_own(|client| client.batch_execute(&sql));
    }
}

/// A position as SQL's `bigint`.
fn sql_position(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// The first column of the first row, as a number.
fn first_number(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|text| text.parse().ok()),
        _ => None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
