//! The ledger's writer: commands from many callers decided in order and
//! made durable together, by whichever caller finds the writer free.
//!
//! A caller hands its command over as a request with a reply, then tries
//! the writer's desk. The caller that gets it leads: it takes every request
//! waiting (a group), decides each in turn against the state its
//! predecessors left, appends all their events to the log in one append,
//! so that one `fdatasync` covers the group, and answers each. The others
//! wait for their answer, not for a lock held across the sync. A leader
//! leads until its own command is answered, then hands the desk to the
//! first caller still waiting (told through its reply), so no caller leads
//! for ever under load.
//!
//! # Deciding after predecessors that are not yet recorded
//!
//! A command's events are applied to the projection's writer copy as soon
//! as it is decided, at the positions and time they will have, so that the
//! next command of the group is decided against them. Readers never see
//! that copy before the group is recorded: it is published only after the
//! log has confirmed the group, and only the desk's holder reads it. If the
//! append fails with nothing written, the group's events are discarded
//! ([`Projection::discard`]) and every command of the group gets the
//! error; if its outcome is unknown, or the log does not give the events
//! back as appended, the ledger closes, as it did for a single command
//! (unless, on a log shared with other processes, another recorded the
//! group's idempotency keys first, and the log wrote nothing: `once.rs`).
//!
//! The time is the one part of an event the log picks (it stamps each
//! append with its clock, never earlier than the last record's time). The
//! ledger gives the log that clock, so it reads the time first and knows
//! what the log will stamp, and decides each command at that time, so
//! that a command's events are valid at the time they carry. Should the
//! events read back carry another time anyway, the writer copy is rebuilt
//! from what the log holds.
//!
//! # Keyed commands
//!
//! A command with an idempotency key is looked for in the log before it
//! is decided, and answered from there if found (`once.rs`); a second
//! command with the same key in one group waits for the next.
//!
//! # No request is left waiting
//!
//! INVARIANT (someone-serves): a request sent to the inbox is answered. A
//! caller sends its request, then tries the desk; a caller that fails to
//! get it waits for its reply. Whoever holds the desk, on letting it go,
//! either hands it to a waiting request (whose caller leads next, or, if
//! someone else got the desk first, is served by them), or looks at the
//! count of requests sent, after a fence that orders it against the
//! senders' own fence, and serves again if one arrived. Every holder lets
//! go through [`Ledger::lead`], those who only read the state included
//! ([`WriterGuard`]); a holder that unwinds, a leader ([`Leading`]) or not,
//! hands the desk on in the same way, serving nothing, and a leader drops
//! its own request (its caller is unwinding). The requests of the group it held are
//! dropped unanswered: their callers' wait ends with
//! [`LedgerError::Unanswered`].

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, MutexGuard};
use tokenledger_events::{Actor, EncodedEvent, Envelope, Timestamp};
use tokenledger_projection::Projection;
use tokenledger_store::backend::Appending;
use tokenledger_store::{AppendError, Clock, Expectation, MAX_BATCH, NewEvent};

use super::{Ledger, LedgerError, Receipt};
use crate::command::{Command, decide};
use crate::fresh;
use crate::idempotency::IdempotencyKey;
use crate::observe;
use crate::readback::{self, Mismatch};

/// The most commands decided and appended together.
const MAX_GROUP: usize = 64;

/// The longest a leader waits for callers on their way to its group: as
/// the log's writer does for its appenders (`crates/store`, `gather`), and
/// for the same reason: callers answered by the last group most often
/// come back at once, and each that comes too late pays a whole sync.
const GATHER_WAIT: Duration = Duration::from_micros(80);

/// A command waiting for the writer.
struct Request {
    id: u64,
    actor: Actor,
    command: Command,
    /// Its idempotency key: its events' ids are derived from it, and it is
    /// looked for in the log before it is decided (`once.rs`).
    key: Option<IdempotencyKey>,
    reply: Sender<Answer>,
}

/// What a waiting caller is told.
enum Answer {
    /// Its command's outcome.
    Done(Result<Receipt, LedgerError>),
    /// The desk was handed to it: it leads now, if it can get the desk.
    Lead,
}

/// What only the desk's holder touches.
pub(crate) struct Desk {
    projection: Projection,
    inbox: Receiver<Request>,
    /// Requests taken from the inbox and not yet decided: those that did
    /// not fit in a group, and the one the desk was handed to. They come
    /// before the inbox.
    deferred: VecDeque<Request>,
    /// The time of the log's last record: the log stamps no record
    /// earlier.
    last_time: Timestamp,
}

/// The writer: the projection's writing side and the requests for it.
pub(crate) struct Writer {
    desk: Mutex<Desk>,
    outbox: Sender<Request>,
    /// Requests sent and not yet taken from the inbox.
    queued: AtomicUsize,
    /// Callers inside [`Ledger::submit`].
    entered: AtomicUsize,
    next_id: AtomicU64,
    /// The clock the ledger was given (the system's by default).
    clock: Option<Clock>,
    /// The time the log stamps its next append with: the log's clock reads
    /// it (see [`Writer::log_clock`]).
    stamp: Arc<Mutex<Timestamp>>,
}

impl Writer {
    /// The writer over `projection`, for a log whose last record is at
    /// `last_time`, and the clock to give that log.
    pub(crate) fn new(
        projection: Projection,
        last_time: Timestamp,
        clock: Option<Clock>,
        stamp: Arc<Mutex<Timestamp>>,
    ) -> Writer {
        let (outbox, inbox) = mpsc::channel();
        Writer {
            desk: Mutex::new(Desk {
                projection,
                inbox,
                deferred: VecDeque::new(),
                last_time,
            }),
            outbox,
            queued: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            clock,
            stamp,
        }
    }

    /// The clock for the log: the time the writer set before its append.
    pub(crate) fn log_clock(stamp: &Arc<Mutex<Timestamp>>) -> Clock {
        let stamp = Arc::clone(stamp);
        Arc::new(move || *stamp.lock())
    }

    fn now(&self) -> Timestamp {
        match &self.clock {
            Some(clock) => clock(),
            None => Timestamp::from_system_time(SystemTime::now()),
        }
    }
}

/// The desk, held: the projection's writing side. Letting it go serves
/// the requests that arrived meanwhile (INVARIANT someone-serves).
pub(crate) struct WriterGuard<'a> {
    ledger: &'a Ledger,
    desk: Option<MutexGuard<'a, Desk>>,
}

impl Deref for WriterGuard<'_> {
    type Target = Projection;
    fn deref(&self) -> &Projection {
        match &self.desk {
            Some(desk) => &desk.projection,
            None => unreachable_desk(),
        }
    }
}

impl DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Projection {
        match &mut self.desk {
            Some(desk) => &mut desk.projection,
            None => unreachable_desk(),
        }
    }
}

impl WriterGuard<'_> {
    /// Events another process recorded were applied, the last stamped
    /// `at`: the log stamps nothing earlier from now on, so the writer
    /// must not foresee (and decide at) an earlier time either.
    #[cfg(feature = "postgres")]
    pub(crate) fn recorded_through(&mut self, at: Timestamp) {
        if let Some(desk) = &mut self.desk {
            desk.last_time = desk.last_time.max(at);
        }
    }
}

/// The guard holds the desk from its making to its drop.
#[expect(clippy::panic, reason = "a guard without its desk is a bug here")]
fn unreachable_desk() -> ! {
    panic!("the writer's guard was used after letting the desk go")
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let Some(desk) = self.desk.take() else {
            return;
        };
        // Unwinding (a panic under the guard): serving here could panic
        // again, which aborts the process; the desk is handed on instead,
        // as a leader that unwinds hands it on.
        if std::thread::panicking() {
            self.ledger.hand_on(desk);
        } else {
            self.ledger.lead(desk, None);
        }
    }
}

/// One command of a group, decided.
struct Member {
    reply: Sender<Answer>,
    /// Its events' range in the group's batch.
    from: usize,
    to: usize,
}

impl Ledger {
    /// Holds the writer's desk, for reading or changing the projection's
    /// writing side outside a command.
    pub(crate) fn writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            ledger: self,
            desk: Some(self.writer.desk.lock()),
        }
    }

    /// Hands `command` to the writer and waits for its outcome, leading
    /// when the desk is free.
    pub(crate) fn submit(
        &self,
        actor: Actor,
        command: Command,
        key: Option<IdempotencyKey>,
    ) -> Result<Receipt, LedgerError> {
        let writer = &self.writer;
        let _entered = Appending::enter(&writer.entered);
        let id = writer.next_id.fetch_add(1, Ordering::Relaxed);
        // Unbounded: a caller may be told to lead more than once before it
        // reads its answer, and a leader must never wait on a reply.
        let (reply, answer) = mpsc::channel();
        writer.queued.fetch_add(1, Ordering::SeqCst);
        if writer
            .outbox
            .send(Request {
                id,
                actor,
                command,
                key,
                reply,
            })
            .is_err()
        {
            // The inbox lives as long as the ledger: not reached.
            writer.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(LedgerError::Unanswered("the writer is gone".to_owned()));
        }
        // INVARIANT (someone-serves): pairs with the fence in `lead`.
        fence(Ordering::SeqCst);
        loop {
            if let Some(desk) = writer.desk.try_lock() {
                // Answered already by another leader (perhaps after being
                // told to lead, which no longer matters): serve one group,
                // as any holder does, and go.
                if let Some(outcome) = answered(&answer) {
                    self.lead(desk, None);
                    return outcome;
                }
                self.lead(desk, Some(id));
            }
            match answer.recv() {
                Ok(Answer::Done(outcome)) => return outcome,
                Ok(Answer::Lead) => {}
                // Every request is answered before its sender is dropped.
                Err(mpsc::RecvError) => {
                    return Err(LedgerError::Unanswered(
                        "the writer unwound with the command taken".to_owned(),
                    ));
                }
            }
        }
    }

    /// Serves with the desk held: groups until the request `mine` is
    /// answered (one group for a holder without one), then hands the desk
    /// to the first request waiting, or lets it go and serves again if a
    /// request arrived as it did. Should serving unwind, [`Leading`] lets
    /// the desk go as well.
    fn lead<'a>(&'a self, desk: MutexGuard<'a, Desk>, mine: Option<u64>) {
        let mut leading = Leading {
            ledger: self,
            desk: Some(desk),
            mine,
        };
        while let Some(desk) = leading.desk.as_deref_mut() {
            loop {
                let (served, answered) = self.serve_group(desk, leading.mine);
                if !served || leading.mine.is_none() || answered {
                    break;
                }
            }
            leading.desk = leading.desk.take().and_then(|desk| self.let_go(desk));
            leading.mine = None;
        }
    }

    /// Lets the desk go without serving, as many times as `let_go` gives
    /// it back: for a holder that unwinds.
    fn hand_on<'a>(&'a self, desk: MutexGuard<'a, Desk>) {
        let mut held = Some(desk);
        while let Some(desk) = held {
            held = self.let_go(desk);
        }
    }

    /// Hands the desk to the first request waiting; if none waits, lets
    /// it go, and returns it held again if a request arrived as it did
    /// and no one else took the desk: its holder serves.
    fn let_go<'a>(&'a self, mut desk: MutexGuard<'a, Desk>) -> Option<MutexGuard<'a, Desk>> {
        if let Some(next) = next_waiting(&mut desk, &self.writer.queued) {
            drop(desk);
            // A caller gone would have been answered: nothing to hand.
            let _ = next.send(Answer::Lead);
            return None;
        }
        drop(desk);
        // INVARIANT (someone-serves): pairs with the fence in `submit`.
        fence(Ordering::SeqCst);
        if self.writer.queued.load(Ordering::SeqCst) == 0 {
            return None;
        }
        // Taken by someone else: its holder serves on letting it go.
        self.writer.desk.try_lock()
    }

    /// Gathers a group, decides, records and answers it. Returns whether
    /// there was a group, and whether `mine` was answered in it.
    fn serve_group(&self, desk: &mut Desk, mine: Option<u64>) -> (bool, bool) {
        let group = gather(desk, &self.writer);
        if group.is_empty() {
            return (false, false);
        }
        let mut answered = false;
        let deferred = self.record_group(desk, group, &mut |id| answered |= Some(id) == mine);
        // Those that did not fit come first next time, in their order.
        for request in deferred.into_iter().rev() {
            desk.deferred.push_front(request);
        }
        (true, answered)
    }

    /// Decides `group` in order, appends what it causes as one append,
    /// and answers each request (`answered` is told its id). Returns the
    /// requests that did not fit in one append, undecided.
    fn record_group(
        &self,
        desk: &mut Desk,
        group: Vec<Request>,
        answered: &mut dyn FnMut(u64),
    ) -> Vec<Request> {
        let desk = &mut CloseOnUnwind { ledger: self, desk };
        let mut reply = |request_id: u64, to: &Sender<Answer>, outcome| {
            answered(request_id);
            // The caller waits for it; it cannot have gone.
            let _ = to.send(Answer::Done(outcome));
        };
        // INVARIANT (nothing-unpublished-between-groups): every group ends
        // published, discarded or closed, so events still unpublished here
        // are those of a group that unwound half-way; they were never
        // recorded and must not be published with the next.
        desk.projection.discard();
        if let Err(error) = self.refuse_if_closed() {
            for request in group {
                reply(request.id, &request.reply, Err(clone_error(&error)));
            }
            return Vec::new();
        }
        let raw = self.writer.now();
        // What the log will stamp: its clock reads `raw`, and it never
        // goes back before its last record. Commands are decided at this
        // time too: one decided at another (an expiry checked at the
        // clock, the events stamped later) could record what its
        // re-decision at the events' time refuses (`rules_replay.rs`).
        let stamp = raw.max(desk.last_time);
        let seen = desk.projection.read(|state| state.position());
        let mut batch: Vec<NewEvent> = Vec::new();
        let mut applied: Vec<Envelope> = Vec::new();
        let mut members: Vec<(u64, Member)> = Vec::new();
        // Refusals decided after a predecessor's unrecorded events: told
        // once the group is recorded, since until then the state they
        // were decided against may never exist. A caller told "no such
        // token" while the delete that removed it is not yet durable would
        // take the token for gone; if that append then fails, it is not.
        let mut held: Vec<(u64, Sender<Answer>, LedgerError)> = Vec::new();
        let mut requests = group.into_iter();
        let mut deferred = Vec::new();
        // The keys of the group's commands decided: a second command with
        // one of them waits for the next group, where it finds the first
        // recorded (or not, if it failed).
        let mut keys = Vec::new();
        // Those of the commands placed in the batch, not of those refused,
        // held or deferred: whether the log can hold another process's
        // events under the batch's ids depends on these alone.
        let mut keyed_members = 0;
        for request in requests.by_ref() {
            if let Some(key) = request.key {
                if keys.contains(&key) {
                    deferred.push(request);
                    continue;
                }
                // Found: answered from the log, whatever becomes of the
                // group, and not decided again.
                match self.recorded_before(request.actor, &request.command, &key) {
                    Ok(None) => keys.push(key),
                    Ok(Some(receipt)) => {
                        reply(request.id, &request.reply, Ok(receipt));
                        continue;
                    }
                    Err(error) => {
                        reply(request.id, &request.reply, Err(error));
                        continue;
                    }
                }
            }
            let events = match group_events(&desk.projection, &request, stamp) {
                Ok(events) => events,
                Err(error) if batch.is_empty() => {
                    reply(request.id, &request.reply, Err(error));
                    continue;
                }
                Err(error) => {
                    held.push((request.id, request.reply, error));
                    continue;
                }
            };
            if batch.len() + events.len() > MAX_BATCH {
                deferred.push(request);
                break;
            }
            let from = batch.len();
            for new in events {
                let envelope = Envelope {
                    position: seen + 1 + batch.len() as u64,
                    event_id: new.event_id,
                    recorded_at: stamp,
                    actor: new.actor,
                    company: new.company,
                    event: new.event.clone(),
                };
                // Seen by the commands after it in this group only: the
                // copy is published once the log confirms the group.
                desk.projection.apply(envelope.clone());
                applied.push(envelope);
                batch.push(new);
            }
            keyed_members += usize::from(request.key.is_some());
            members.push((
                request.id,
                Member {
                    reply: request.reply,
                    from,
                    to: batch.len(),
                },
            ));
        }
        deferred.extend(requests);
        if batch.is_empty() {
            return deferred;
        }
        let keyed = match keyed_members {
            0 => Keyed::None,
            all if all == members.len() => Keyed::All,
            _ => Keyed::Some,
        };
        let recorded = self.append_group(desk, batch, seen, raw, &applied, keyed);
        match &recorded {
            Ok(events) => {
                // The head the group reached: its append expected the head
                // at `seen`. Not read from the log, where it may be a query
                // (PostgreSQL) that every member would wait for.
                let reached = seen + events.len() as u64;
                observe::group(
                    members.len(),
                    reached,
                    reached,
                    self.last_checkpoint.load(Ordering::Relaxed),
                );
                for (id, member) in members {
                    let mine = events.get(member.from..member.to).unwrap_or_default();
                    let receipt = Receipt {
                        events: mine.to_vec(),
                        replayed: false,
                    };
                    reply(id, &member.reply, Ok(receipt));
                }
                for (id, to, refusal) in held {
                    reply(id, &to, Err(refusal));
                }
            }
            Err(error) => {
                // The held refusals were decided against a state that was
                // never recorded: their commands were not run either way.
                let held = held.into_iter().map(|(id, to, _)| (id, to));
                let members = members.into_iter().map(|(id, member)| (id, member.reply));
                for (id, to) in members.chain(held) {
                    reply(id, &to, Err(clone_error(error)));
                }
            }
        }
        if recorded.is_ok() {
            // After the replies: a checkpoint's write is no caller's wait.
            self.checkpoint_if_due(&desk.projection);
        }
        deferred
    }

    /// Appends a group's `batch`, decided against the head at `seen` and
    /// applied to the writer copy as `applied`; confirms it and publishes
    /// it. Returns the events as the log holds them. On an error, the
    /// group's events are gone from the writer copy, or the ledger closed.
    ///
    /// A `keyed` group on a log other processes append to may meet one of
    /// them recording the same key between the look and the append: the
    /// log then takes the append for a retry and writes nothing. That is
    /// a conflict, not a reason to close (`once.rs`). Only ids derived
    /// from keys can be another process's: a group holding any event with
    /// a random id that the log answers as all found is not a race, and
    /// closes the ledger.
    fn append_group(
        &self,
        desk: &mut Desk,
        batch: Vec<NewEvent>,
        seen: u64,
        raw: Timestamp,
        applied: &[Envelope],
        keyed: Keyed,
    ) -> Result<Vec<Envelope>, LedgerError> {
        // Some of the group's ids may be another process's: a partial
        // retry (the log wrote nothing) is a lost race.
        let raced = keyed != Keyed::None && self.follows;
        // All of them may be: an answer as a retry is a lost race.
        let retried = keyed == Keyed::All && self.follows;
        let count = batch.len();
        // Kept to compare with what the log gives back.
        let appended = batch.clone();
        *self.writer.stamp.lock() = raw;
        self.applied.recording(seen + count as u64);
        let positions = match self.log.append(batch, Expectation::Head(seen)) {
            Ok(positions) => positions,
            // The events may or may not be durable: a delete among them
            // must not leave readers allowing.
            Err(error @ (AppendError::Poisoned(_) | AppendError::Closed)) => {
                return Err(self.close(&mut desk.projection, LedgerError::Append(error)));
            }
            Err(AppendError::PartialRetry(_)) if raced => {
                return Err(self.lost_race(&mut desk.projection, seen));
            }
            Err(error) => {
                desk.projection.discard();
                self.applied.recording(0);
                return Err(LedgerError::Append(error));
            }
        };
        // INVARIANT (fresh-at-head): a batch written under
        // `Expectation::Head(seen)` lands at exactly `seen + 1..=seen +
        // count`. Any other answer is the log's answer to a retry: every
        // id was in the log already, at those positions, and nothing was
        // written. Read back from where a write lands, so that such an
        // answer never passes the check below, even where the events the
        // log found hold what this group decided: applying them would
        // move the state back to what they recorded then.
        let fresh = positions.iter().copied().eq(seen + 1..=seen + count as u64);
        if retried && !fresh {
            return Err(self.lost_race(&mut desk.projection, seen));
        }
        let stored = match self.log.read(seen + 1, count) {
            Ok(stored) => stored,
            Err(damage) => {
                return Err(self.close(&mut desk.projection, LedgerError::Damaged(damage)));
            }
        };
        let events: Vec<Envelope> = stored.into_iter().map(|s| s.envelope).collect();
        if let Err(Mismatch {
            appended,
            read_back,
        }) = readback::confirm(&appended, &positions, &events)
        {
            // The same ids where they were acknowledged, holding other
            // events: another process's, recorded under the same keys.
            if retried && appended == read_back {
                return Err(self.lost_race(&mut desk.projection, seen));
            }
            let error = LedgerError::Unconfirmed {
                appended,
                read_back,
            };
            return Err(self.close(&mut desk.projection, error));
        }
        if events != applied {
            // Another time than foreseen: the writer copy is rebuilt from
            // what the log holds.
            desk.projection.discard();
            for envelope in &events {
                desk.projection.apply(envelope.clone());
            }
        }
        if let Some(last) = events.last() {
            desk.last_time = last.recorded_at;
        }
        // INVARIANT (publish-before-return): see tokenledger-projection.
        desk.projection.publish();
        let applied = desk.projection.read(|state| state.position());
        self.applied.set(applied);
        Ok(events)
    }
}

/// Which of a group's commands carry an idempotency key, and so which of
/// its events have ids derived from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyed {
    /// None: every id is drawn at random, and no other process holds one.
    None,
    /// Some, not all.
    Some,
    /// Every one.
    All,
}

/// The events `request` causes, decided against the writer copy at `now`
/// (the time they will be recorded at),
/// each with a fresh id (or one derived from its idempotency key) and
/// checked to encode: a command the log could not take fails alone, not
/// with the group it arrived in.
fn group_events(
    projection: &Projection,
    request: &Request,
    now: Timestamp,
) -> Result<Vec<NewEvent>, LedgerError> {
    let decided = projection
        .read(|state| decide(state, request.actor, now, &request.command))
        .map_err(LedgerError::Refused)?;
    let count = decided.events.len();
    if count == 0 {
        return Err(LedgerError::Append(AppendError::Empty));
    }
    if count > MAX_BATCH {
        return Err(LedgerError::Append(AppendError::TooManyEvents {
            events: count,
        }));
    }
    let mut events = Vec::with_capacity(count);
    for (index, event) in (0..).zip(decided.events) {
        let event_id = match &request.key {
            Some(key) => key.event_id(index),
            None => fresh::event_id().map_err(LedgerError::Random)?,
        };
        EncodedEvent::new(event_id, request.actor, decided.company, &event)
            .map_err(|error| LedgerError::Append(AppendError::Encode(error)))?;
        events.push(NewEvent {
            event_id,
            actor: request.actor,
            company: decided.company,
            event,
        });
    }
    Ok(events)
}

/// The desk while a group is decided and recorded. Should the writer
/// unwind with events applied and not published, whether the log took
/// them is unknown (the append may have returned): a delete among them
/// must not leave readers allowing, so the ledger closes, as it does for
/// an append whose outcome is unknown.
struct CloseOnUnwind<'a> {
    ledger: &'a Ledger,
    desk: &'a mut Desk,
}

impl Deref for CloseOnUnwind<'_> {
    type Target = Desk;
    fn deref(&self) -> &Desk {
        self.desk
    }
}

impl DerefMut for CloseOnUnwind<'_> {
    fn deref_mut(&mut self) -> &mut Desk {
        self.desk
    }
}

impl Drop for CloseOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && self.desk.projection.has_unpublished() {
            let why = "the writer panicked while recording a group".to_owned();
            self.ledger
                .close(&mut self.desk.projection, LedgerError::Closed(why));
        }
    }
}

/// The desk in [`Ledger::lead`], which takes it out on letting it go. A
/// leader that unwinds with it (a panic in a metrics recorder, or in a
/// checkpoint's write) serves nothing more: dropped, this drops the
/// leader's own request, whose caller is unwinding and would never act on
/// a turn to lead, and lets the desk go as `lead` does (INVARIANT
/// someone-serves).
struct Leading<'a> {
    ledger: &'a Ledger,
    desk: Option<MutexGuard<'a, Desk>>,
    mine: Option<u64>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let Some(mut desk) = self.desk.take() else {
            return;
        };
        if let Some(mine) = self.mine {
            // Sent before its caller took the desk: in the inbox if not
            // taken from it.
            while let Ok(request) = desk.inbox.try_recv() {
                self.ledger.writer.queued.fetch_sub(1, Ordering::SeqCst);
                desk.deferred.push_back(request);
            }
            desk.deferred.retain(|request| request.id != mine);
        }
        self.ledger.hand_on(desk);
    }
}

/// The requests for the next group: those deferred, then the inbox's, and
/// those of callers on their way for up to [`GATHER_WAIT`].
fn gather(desk: &mut Desk, writer: &Writer) -> Vec<Request> {
    let mut group: Vec<Request> = desk.deferred.drain(..).collect();
    let take = |request| {
        writer.queued.fetch_sub(1, Ordering::SeqCst);
        request
    };
    while group.len() < MAX_GROUP {
        match desk.inbox.try_recv() {
            Ok(request) => group.push(take(request)),
            Err(_) => break,
        }
    }
    if group.is_empty() {
        return group;
    }
    let deadline = Instant::now() + GATHER_WAIT;
    while group.len() < MAX_GROUP && group.len() < writer.entered.load(Ordering::Acquire) {
        let left = deadline.saturating_duration_since(Instant::now());
        match desk.inbox.recv_timeout(left) {
            Ok(request) => group.push(take(request)),
            Err(_) => break,
        }
    }
    group
}

/// The outcome already in `answer`, skipping any turn to lead sent before
/// it: a caller told to lead may have been served by someone else since.
fn answered(answer: &Receiver<Answer>) -> Option<Result<Receipt, LedgerError>> {
    loop {
        match answer.try_recv() {
            Ok(Answer::Done(outcome)) => return Some(outcome),
            Ok(Answer::Lead) => {}
            Err(_) => return None,
        }
    }
}

/// The first request waiting, kept at the front of the deferred ones, and
/// the way to tell its caller to lead; `None` if none waits.
fn next_waiting(desk: &mut Desk, queued: &AtomicUsize) -> Option<Sender<Answer>> {
    if desk.deferred.is_empty() {
        let request = desk.inbox.try_recv().ok()?;
        queued.fetch_sub(1, Ordering::SeqCst);
        desk.deferred.push_back(request);
    }
    desk.deferred.front().map(|request| request.reply.clone())
}

/// A group's error, once for each of its commands.
fn clone_error(error: &LedgerError) -> LedgerError {
    match error {
        LedgerError::Append(e) => LedgerError::Append(e.clone()),
        LedgerError::Damaged(e) => LedgerError::Damaged(e.clone()),
        LedgerError::Unconfirmed {
            appended,
            read_back,
        } => LedgerError::Unconfirmed {
            appended: appended.clone(),
            read_back: read_back.clone(),
        },
        LedgerError::Closed(why) => LedgerError::Closed(why.clone()),
        other => LedgerError::Closed(other.to_string()),
    }
}

#[cfg(test)]
mod races;

#[cfg(test)]
mod tests;
