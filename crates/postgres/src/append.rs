//! Appends: one thread per log writes them, in groups, each group one
//! transaction that holds the head row `FOR UPDATE`.
//!
//! INVARIANT (head-serializes): every append of every process locks the
//! head row before it reads anything it decides on (the head, a stream's
//! last event, which event ids are taken), and writes the new head in the
//! same transaction; so appends are totally ordered, positions are
//! gapless and each record is sealed after the one before it. The unique
//! keys on positions and event ids stand behind it.
//!
//! INVARIANT (ack-after-commit): an append is answered `Ok` only once
//! `COMMIT` has returned, or, when the connection failed during `COMMIT`,
//! once a new connection has found the group's first record, byte for
//! byte, where the group put it; otherwise it fails, saying whether
//! anything may have been written.
//!
//! Requests that arrive while a group commits form the next group: one
//! commit, and one wait for the WAL's flush, covers them all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use postgres::{Client, Transaction};
use tokenledger_events::{EncodedEvent, EventId, Timestamp};
use tokenledger_store::backend::{self, ChainCheck, StreamKey};
use tokenledger_store::{AppendError, Clock, Damage, Expectation, Head, Problem};

use crate::connect::{Fault, Server, describe};
use crate::read::{self, sql};
use crate::watch::{CHANNEL, Known, head_of};

/// The most requests committed together.
const MAX_GROUP: usize = 64;

/// How long the outcome of a failed `COMMIT` is looked for (a restart of
/// the server takes seconds) before it is reported unknown.
const RESOLVE_FOR: Duration = Duration::from_secs(15);

/// The longest a group waits for appenders on their way to it: small
/// beside a commit, which waits for the WAL's flush.
const GATHER_WAIT: Duration = Duration::from_micros(300);

/// A new event, encoded on its appender's thread.
pub(crate) struct Prepared {
    pub(crate) event_id: EventId,
    pub(crate) encoded: EncodedEvent,
    pub(crate) streams: Vec<StreamKey>,
}

pub(crate) enum Job {
    Events {
        batch: Vec<Prepared>,
        expectation: Expectation,
    },
    Records(Vec<Vec<u8>>),
}

pub(crate) struct Request {
    pub(crate) job: Job,
    pub(crate) reply: Sender<Result<Vec<u64>, AppendError>>,
}

/// One event ready to be written.
struct Planned {
    position: u64,
    event_id: EventId,
    record: Vec<u8>,
    streams: Vec<StreamKey>,
}

/// What the group has planned so far.
#[derive(Default)]
struct Pending {
    /// Event ids of the group's appends found in the log as it began, or
    /// the damage found where the log's index says one is.
    in_log: HashMap<EventId, Result<u64, Damage>>,
    events: Vec<Planned>,
    stream_heads: HashMap<StreamKey, u64>,
    event_ids: HashMap<EventId, u64>,
}

impl Pending {
    fn add(&mut self, planned: Vec<Planned>) -> Vec<u64> {
        let positions = planned.iter().map(|p| p.position).collect();
        for event in planned {
            for key in &event.streams {
                self.stream_heads.insert(*key, event.position);
            }
            self.event_ids.insert(event.event_id, event.position);
            self.events.push(event);
        }
        positions
    }
}

/// Why a group wrote nothing, or may have.
enum Failure {
    /// Before `COMMIT`: nothing was written.
    Before(postgres::Error),
    /// The head row did not convert: nothing was written.
    Head(Fault),
    /// `COMMIT` failed: written or not, to be found out by looking for
    /// `last`; if written, the outcomes and head are as planned.
    Commit {
        error: postgres::Error,
        last: Last,
        outcomes: Outcomes,
        head: Head,
    },
}

/// The last record a group planned, and where: what only this group's
/// transaction writes. Its event id is not: a keyed command's id is
/// derived from its idempotency key, and another process may commit the
/// same id meanwhile, in a group of its own. The record's bytes hold the
/// chain hash before it, its time and its event, so the record another
/// group wrote at that position differs; and, holding the hash of all
/// before it, found byte for byte it vouches for the whole group, where
/// the first would not for the records after it (the same request's
/// record, by another process at the same place in the chain, can be the
/// same bytes).
struct Last {
    position: u64,
    record: Vec<u8>,
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Failure {
        Failure::Before(error)
    }
}

pub(crate) struct Writer {
    /// Appenders inside `PgLog::append` (or `append_records`): those the
    /// next group may wait for.
    pub(crate) appending: Arc<AtomicUsize>,
    pub(crate) server: Server,
    pub(crate) client: Option<Client>,
    pub(crate) known: Arc<Known>,
    pub(crate) clock: Option<Clock>,
}

type Outcomes = Vec<Result<Vec<u64>, AppendError>>;

impl Writer {
    pub(crate) fn run(mut self, inbox: &Receiver<Request>) {
        while let Ok(first) = inbox.recv() {
            let mut group = vec![first];
            let deadline = Instant::now() + GATHER_WAIT;
            while group.len() < MAX_GROUP {
                // Appenders answered by the last group are on their way
                // back: without waiting for them, eight appenders fell
                // into groups of about three (`pg/group_commit_8`).
                let request = if group.len() < self.appending.load(Ordering::Acquire) {
                    inbox.recv_deadline(deadline).ok()
                } else {
                    inbox.try_recv().ok()
                };
                match request {
                    Some(request) => group.push(request),
                    None => break,
                }
            }
            self.commit(group);
        }
    }

    fn io(&self, detail: &str) -> AppendError {
        AppendError::Io(format!(
            "PostgreSQL at {} failed: {detail}",
            self.server.endpoint()
        ))
    }

    fn commit(&mut self, group: Vec<Request>) {
        let (jobs, replies): (Vec<Job>, Vec<_>) =
            group.into_iter().map(|r| (r.job, r.reply)).unzip();
        let outcomes = self.commit_jobs(jobs, replies.len());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // An appender gone has nothing to be told.
            let _ = reply.send(outcome);
        }
    }

    fn commit_jobs(&mut self, jobs: Vec<Job>, count: usize) -> Outcomes {
        let everyone = |error: AppendError| (0..count).map(|_| Err(error.clone())).collect();
        if self.client.as_ref().is_none_or(Client::is_closed) {
            match self.server.connect() {
                Ok(client) => self.client = Some(client),
                Err(error) => return everyone(AppendError::Io(error.to_string())),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return everyone(AppendError::Closed);
        };
        let clock = self.clock.clone();
        let now = move || match &clock {
            Some(clock) => clock(),
            None => Timestamp::from_system_time(SystemTime::now()),
        };
        match transact(client, jobs, &now) {
            Ok((outcomes, head)) => {
                self.known.advance(head);
                outcomes
            }
            Err(Failure::Before(error)) => everyone(self.io(&describe(&error))),
            Err(Failure::Head(fault)) => everyone(self.io(&fault.describe())),
            Err(Failure::Commit {
                error,
                last,
                outcomes,
                head,
            }) => {
                self.client = None;
                match self.resolve(&last) {
                    Ok(true) => {
                        self.known.advance(head);
                        outcomes
                    }
                    Ok(false) => everyone(self.io(&describe(&error))),
                    Err(unknown) => everyone(AppendError::Poisoned(format!(
                        "the outcome of a commit on PostgreSQL at {} is unknown ({}), and could not be found out: {unknown}",
                        self.server.endpoint(),
                        describe(&error)
                    ))),
                }
            }
        }
    }

    /// Whether the group whose `COMMIT` failed, and whose last record is
    /// `last`, is in the log. A server that is restarting (the usual
    /// reason a `COMMIT` fails) is asked again for up to [`RESOLVE_FOR`],
    /// so that the append fails cleanly or succeeds rather than leaving
    /// its outcome unknown, which closes the ledger.
    fn resolve(&mut self, last: &Last) -> Result<bool, String> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match self.look_for(last) {
                Ok(found) => return Ok(found),
                Err(error) if started.elapsed() + pause > RESOLVE_FOR => return Err(error),
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn look_for(&mut self, last: &Last) -> Result<bool, String> {
        let mut client = self.server.connect().map_err(|e| e.to_string())?;
        let found = committed(&mut client, last).map_err(|e| describe(&e))?;
        self.client = Some(client);
        Ok(found)
    }
}

/// Whether the log holds `last` where it was planned, byte for byte: the
/// group was written. Nothing there, or another record (another process's
/// group, which may hold the same event id), and it was not. Asked with
/// the head's lock held: a `COMMIT` that failed on this side of the
/// connection may still be finishing on the server (flushing, or waiting
/// for a synchronous standby), holding that lock until it ends, so what
/// is found then is final, never "not written" before it lands.
fn committed(client: &mut Client, last: &Last) -> Result<bool, postgres::Error> {
    let mut transaction = client.transaction()?;
    transaction.query_one(
        "SELECT position FROM tokenledger_head WHERE id = 0 FOR UPDATE",
        &[],
    )?;
    let row = transaction.query_opt(
        "SELECT record FROM tokenledger_events WHERE position = $1",
        &[&sql(last.position)],
    )?;
    let found = row.is_some_and(|row| row.get::<_, &[u8]>(0) == last.record.as_slice());
    transaction.rollback()?;
    Ok(found)
}

/// One group as one transaction: the head locked, each job planned
/// against what the group has reached, everything written, the head moved
/// and its followers notified. Returns each job's outcome and the new
/// head.
fn transact(
    client: &mut Client,
    jobs: Vec<Job>,
    now: &dyn Fn() -> Timestamp,
) -> Result<(Outcomes, Head), Failure> {
    let mut transaction = client.transaction()?;
    // INVARIANT (head-serializes): the lock comes first.
    let row = transaction.query_one(
        "SELECT position, hash, recorded_at FROM tokenledger_head WHERE id = 0 FOR UPDATE",
        &[],
    )?;
    // A head that does not convert is refused, never taken for 0 or a
    // zero hash: the group would be chained onto it and acknowledged.
    let mut head = head_of(&row).map_err(Failure::Head)?;
    let recorded_at: i64 = row.get(2);
    let mut last_time = Timestamp::from_micros(u64::try_from(recorded_at).map_err(|_| {
        Failure::Head(Fault::Malformed(format!(
            "the head row's time is {recorded_at}"
        )))
    })?);
    let mut pending = Pending::default();
    // Which of the group's new events' ids the log holds: one query for
    // the group, not one per append.
    let ids: Vec<EventId> = jobs
        .iter()
        .flat_map(|job| match job {
            Job::Events { batch, .. } => batch.iter().map(|e| e.event_id).collect(),
            Job::Records(_) => Vec::new(),
        })
        .collect();
    pending.in_log = in_log(&mut transaction, &ids)?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = match job {
            Job::Events { batch, expectation } => plan(
                &mut transaction,
                batch,
                expectation,
                now(),
                &mut pending,
                &mut head,
                &mut last_time,
            )?,
            Job::Records(records) => plan_records(
                &mut transaction,
                &records,
                &mut pending,
                &mut head,
                &mut last_time,
            )?,
        };
        outcomes.push(outcome);
    }
    let Some(last) = pending.events.last() else {
        transaction.rollback()?;
        return Ok((outcomes, head));
    };
    let last = Last {
        position: last.position,
        record: last.record.clone(),
    };
    write(&mut transaction, &pending, head, last_time)?;
    match transaction.commit() {
        Ok(()) => Ok((outcomes, head)),
        Err(error) => Err(Failure::Commit {
            error,
            last,
            outcomes,
            head,
        }),
    }
}

fn id_bytes(id: EventId) -> Vec<u8> {
    id.as_u128().to_be_bytes().to_vec()
}

fn write(
    transaction: &mut Transaction<'_>,
    pending: &Pending,
    head: Head,
    last_time: Timestamp,
) -> Result<(), postgres::Error> {
    let positions: Vec<i64> = pending.events.iter().map(|e| sql(e.position)).collect();
    let ids: Vec<Vec<u8>> = pending
        .events
        .iter()
        .map(|e| id_bytes(e.event_id))
        .collect();
    let records: Vec<&[u8]> = pending.events.iter().map(|e| e.record.as_slice()).collect();
    transaction.execute(
        "INSERT INTO tokenledger_events (position, event_id, record)
         SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
        &[&positions, &ids, &records],
    )?;
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut at: Vec<i64> = Vec::new();
    for event in &pending.events {
        for key in &event.streams {
            keys.push(key.as_slice());
            at.push(sql(event.position));
        }
    }
    transaction.execute(
        "INSERT INTO tokenledger_streams (stream, position)
         SELECT * FROM unnest($1::bytea[], $2::bigint[])",
        &[&keys, &at],
    )?;
    let time = i64::try_from(last_time.as_micros()).unwrap_or(i64::MAX);
    transaction.execute(
        "UPDATE tokenledger_head SET position = $1, hash = $2, recorded_at = $3 WHERE id = 0",
        &[&sql(head.position), &head.hash.as_slice(), &time],
    )?;
    // Delivered on commit, and only then.
    transaction.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &head.position.to_string()],
    )?;
    Ok(())
}

/// The positions of those of `ids` already in the log, or in the group;
/// the damage where the log's index names a record that does not hold its
/// id.
fn taken(
    transaction: &mut Transaction<'_>,
    ids: &[EventId],
    pending: &Pending,
) -> Result<Result<HashMap<EventId, u64>, Damage>, postgres::Error> {
    let mut found = HashMap::new();
    for (id, at) in in_log(transaction, ids)? {
        match at {
            Ok(position) => found.insert(id, position),
            Err(damage) => return Ok(Err(damage)),
        };
    }
    found.extend(
        ids.iter()
            .filter_map(|id| pending.event_ids.get(id).map(|p| (*id, *p))),
    );
    Ok(Ok(found))
}

/// The positions of those of `ids` in the log, each checked against the
/// record there ([`read::checked_position`]). Only ids the log holds (a
/// retry's) bring their records back: a new append's cost nothing more.
fn in_log(
    transaction: &mut Transaction<'_>,
    ids: &[EventId],
) -> Result<HashMap<EventId, Result<u64, Damage>>, postgres::Error> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let wanted: Vec<Vec<u8>> = ids.iter().map(|id| id_bytes(*id)).collect();
    let rows = transaction.query(
        "SELECT event_id, position, record FROM tokenledger_events WHERE event_id = ANY($1)",
        &[&wanted],
    )?;
    for row in rows {
        let id: &[u8] = row.get(0);
        if let Ok(id) = <[u8; 16]>::try_from(id) {
            let id = EventId::from_u128(u128::from_be_bytes(id));
            found.insert(id, read::checked_position(id, row.get(1), row.get(2)));
        }
    }
    Ok(found)
}

fn stream_head(
    transaction: &mut Transaction<'_>,
    key: &StreamKey,
    pending: &Pending,
) -> Result<u64, postgres::Error> {
    if let Some(position) = pending.stream_heads.get(key) {
        return Ok(*position);
    }
    let row = transaction.query_one(
        "SELECT coalesce(max(position), 0) FROM tokenledger_streams WHERE stream = $1",
        &[&key.as_slice()],
    )?;
    let position: i64 = row.get(0);
    Ok(u64::try_from(position).unwrap_or(0))
}

/// Checks one append against what the group has reached and, if it
/// holds, seals its records into the group. The outer error is the
/// database's, the inner the append's own.
fn plan(
    transaction: &mut Transaction<'_>,
    batch: Vec<Prepared>,
    expectation: Expectation,
    now: Timestamp,
    pending: &mut Pending,
    head: &mut Head,
    last_time: &mut Timestamp,
) -> Result<Result<Vec<u64>, AppendError>, postgres::Error> {
    let ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
    let mut seen = HashSet::with_capacity(ids.len());
    if let Some(id) = ids.iter().find(|id| !seen.insert(**id)) {
        return Ok(Err(AppendError::DuplicateEventId(*id)));
    }
    let mut found: HashMap<EventId, u64> = HashMap::with_capacity(ids.len());
    for id in &ids {
        let at = match (pending.event_ids.get(id), pending.in_log.get(id)) {
            (Some(position), _) | (None, Some(Ok(position))) => *position,
            // Refused as sled refuses it: an index to mend, not a retry.
            (None, Some(Err(damage))) => return Ok(Err(AppendError::Io(damage.to_string()))),
            (None, None) => continue,
        };
        found.insert(*id, at);
    }
    if ids.iter().all(|id| found.contains_key(id)) {
        return Ok(Ok(ids
            .iter()
            .filter_map(|id| found.get(id).copied())
            .collect()));
    }
    if let Some(id) = ids.iter().find(|id| found.contains_key(id)) {
        return Ok(Err(AppendError::PartialRetry(*id)));
    }
    let found = match expectation {
        Expectation::Any => None,
        Expectation::Head(expected) => (head.position != expected).then_some(head.position),
        Expectation::Stream(stream, expected) => {
            let found = stream_head(transaction, &backend::stream_key(stream), pending)?;
            (found != expected).then_some(found)
        }
    };
    if let Some(found) = found {
        return Ok(Err(AppendError::Conflict {
            expected: expectation,
            found,
        }));
    }
    let (recorded_at, flags) = backend::stamp(now, *last_time);
    let mut planned = Vec::with_capacity(batch.len());
    let mut chain = *head;
    for event in batch {
        let position = chain.position + 1;
        let bytes = match event.encoded.place(position, recorded_at) {
            Ok(bytes) => bytes,
            Err(error) => return Ok(Err(AppendError::Encode(error))),
        };
        let (record, hash) = backend::seal(&chain.hash, flags, &bytes);
        chain = Head { position, hash };
        planned.push(Planned {
            position,
            event_id: event.event_id,
            record,
            streams: event.streams,
        });
    }
    *head = chain;
    *last_time = recorded_at;
    Ok(Ok(pending.add(planned)))
}

/// Checks records sealed elsewhere as `verify` checks stored ones, and
/// adds them to the group.
fn plan_records(
    transaction: &mut Transaction<'_>,
    records: &[Vec<u8>],
    pending: &mut Pending,
    head: &mut Head,
    last_time: &mut Timestamp,
) -> Result<Result<Vec<u64>, AppendError>, postgres::Error> {
    if let Err(error) = backend::check_batch_size(records.len()) {
        return Ok(Err(error));
    }
    let mut chain = ChainCheck::after(*head, *last_time);
    let mut planned: Vec<Planned> = Vec::with_capacity(records.len());
    for bytes in records {
        let envelope = match chain.check(bytes) {
            Ok(event) => event.envelope,
            Err(damage) => return Ok(Err(AppendError::Rejected(damage))),
        };
        planned.push(Planned {
            position: envelope.position,
            event_id: envelope.event_id,
            record: bytes.clone(),
            streams: backend::stream_keys(&envelope),
        });
    }
    let ids: Vec<EventId> = planned.iter().map(|p| p.event_id).collect();
    let found = match taken(transaction, &ids, pending)? {
        Ok(found) => found,
        Err(damage) => return Ok(Err(AppendError::Rejected(damage))),
    };
    let mut seen = HashSet::with_capacity(ids.len());
    for event in &planned {
        if found.contains_key(&event.event_id) || !seen.insert(event.event_id) {
            return Ok(Err(AppendError::Rejected(Damage {
                position: event.position,
                problem: Problem::DuplicateEventId(event.event_id),
            })));
        }
    }
    *head = chain.head();
    *last_time = chain.last_time();
    Ok(Ok(pending.add(planned)))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "a test fails loudly"
    )]

    use postgres::NoTls;
    use tokenledger_events::{Actor, CompanyId, Event, Name};
    use tokenledger_store::{EventLog, NewEvent};

    use super::*;
    use crate::testing::Database;
    use crate::{Options, PgLog};

    /// The record of a one-event group, appended to `database`.
    fn recorded(database: &Database, id: EventId, name: &str) -> Last {
        let log = PgLog::open(&database.url, Options::default()).unwrap();
        let company = CompanyId::from_u128(1);
        let new = NewEvent {
            event_id: id,
            actor: Actor::System,
            company,
            event: Event::CompanyCreated {
                company,
                name: Name::new(name).unwrap(),
            },
        };
        let position = log.append(vec![new], Expectation::Head(0)).unwrap()[0];
        let record = log.read_records(position, 1).unwrap().remove(0).bytes;
        Last { position, record }
    }

    /// A `COMMIT` that failed while another process committed the same
    /// event id (derived from the same idempotency key) at the position
    /// planned: the group was not written, though the id is in the log.
    #[test]
    fn a_failed_commit_is_resolved_by_its_last_record_not_its_event_id() {
        let (Some(ours), Some(theirs)) = (Database::fresh(), Database::fresh()) else {
            return;
        };
        let id = EventId::from_u128(7);
        // What our group planned, as it would have stood in the log.
        let planned = self::recorded(&ours, id, "Ours");
        let recorded = self::recorded(&theirs, id, "Theirs");
        assert_eq!(planned.position, recorded.position);
        let mut client = Client::connect(&theirs.url, NoTls).unwrap();
        assert!(!committed(&mut client, &planned).unwrap());
        assert!(committed(&mut client, &recorded).unwrap());
        let further = Last {
            position: 2,
            record: recorded.record.clone(),
        };
        assert!(!committed(&mut client, &further).unwrap());
    }

    /// The look waits for a transaction that holds the head's lock (a
    /// `COMMIT` the server is still finishing), so what it finds is final.
    #[test]
    fn a_failed_commit_is_looked_for_once_the_head_is_free() {
        let Some(database) = Database::fresh() else {
            return;
        };
        let planned = recorded(&database, EventId::from_u128(7), "Ours");
        let mut holder = Client::connect(&database.url, NoTls).unwrap();
        let mut finishing = holder.transaction().unwrap();
        finishing
            .query_one(
                "SELECT position FROM tokenledger_head WHERE id = 0 FOR UPDATE",
                &[],
            )
            .unwrap();
        let url = database.url.clone();
        let look = std::thread::spawn(move || {
            let mut client = Client::connect(&url, NoTls).unwrap();
            let started = Instant::now();
            let found = committed(&mut client, &planned).unwrap();
            (found, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        finishing.rollback().unwrap();
        let (found, waited) = look.join().unwrap();
        assert!(found);
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
    }
}
