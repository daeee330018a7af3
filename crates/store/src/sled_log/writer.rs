//! The sled log's writer: the thread that takes every append waiting,
//! checks it against the head, journals and syncs the group, puts it into
//! sled beside the sync (`insert`), settles sled, and recovers the log at
//! open. [`super::SledLog`] hands it requests and reads what it left.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use parking_lot::RwLock;
use tokenledger_events::{EventId, Timestamp};

use super::{
    DurableFiles, Indexes, Job, Prepared, Request, SETTLED, Shared, hash_at, head_of,
    indexed_position, log_key, open_storage, record_at, remove_above,
};
use crate::backend::{self, check_batch_size, stream_key, stream_keys};
use crate::journal::{AppendFailed, Entry, Journal, Recovered};
use crate::known_ids::KnownIds;
use crate::log::{AppendError, Damage, Expectation, Hash, Head, MAX_BATCH, Problem};
use crate::page;
use crate::record::{self, ChainCheck};
use crate::reply::Reply;
use crate::segments::Segment;
use crate::settle_record;
use crate::signed_head::Signer;
use crate::sled_options::{Clock, FaultInjector, FaultPoint, OpenError, inject};
use crate::stream_index::{self, Tails};
use crate::worker::Worker;

/// The thread that writes: it takes every append waiting, checks them in
/// order against the head it keeps, writes them to the journal as one
/// frame, and syncs the journal once for all of them while the inserter
/// thread puts them into sled key by key. The appends that arrive during
/// one sync are made durable together by the next (group commit).
///
/// A retry is recognised by its event ids: those of the group being
/// planned, then `known_ids`, which rules out most new ids without
/// asking sled, then the index of event ids.
///
/// INVARIANT (ack-after-sync): an append is answered `Ok` only after the
/// journal's sync that covers it returned, and readers see a record only
/// once the durable head reaches it, which is published when the group is
/// both synced and in sled. Every group is synced and in sled before the
/// next is planned, so a retry only ever finds durable records.
///
/// The answers go out before the inserter is done with the group, and
/// the writer waits for it while the appenders wake: in `group_commit_8`
/// that wait was 34 µs of each group's 274. So a reader asks for the head
/// only once it covers every answered append (`SledLog::head`): an
/// appender reads what it was told is there.
pub(super) struct Writer {
    /// The data directory, where a failed settle leaves its mark.
    pub(super) dir: PathBuf,
    pub(super) shared: Arc<Shared>,
    pub(super) head: Head,
    pub(super) last_time: Timestamp,
    pub(super) faults: Option<FaultInjector>,
    pub(super) clock: Option<Clock>,
    pub(super) journal: Journal,
    pub(super) journal_bytes: u64,
    pub(super) files: DurableFiles,
    /// Puts each group into sled while the journal syncs (`insert`).
    pub(super) inserter: Worker<Pending, Result<(), sled::Error>>,
    /// Which event ids are certainly not in the log, once gathered.
    pub(super) known_ids: KnownIds,
    /// Signs the head at each settle, with a checkpoint key, once the
    /// signed head found at open was checked.
    pub(super) signer: Option<Signer>,
}

/// The most appends committed together.
const MAX_GROUP: usize = 256;

/// The longest the writer waits for appenders on their way to its group.
const GATHER_WAIT: Duration = Duration::from_micros(80);

/// Adds to `group` the appends waiting, and those of appenders on their
/// way (`appending`), for up to `wait`.
///
/// On their way are appenders still encoding, and those answered by
/// the last group that have not yet left `append`: most append again
/// at once (a service under load, the benchmarks), and each that comes
/// back too late for this group would pay a whole sync more. One that
/// does not come back costs the group the wait. Without it, eight
/// appenders on this machine's two cores fell into two groups of about
/// four (4.3 on average, counted in a throwaway build) taking turns, each
/// gathered while the other synced; with it, groups of 8. In three
/// alternating rounds `append/group_commit_8` went from 38.2, 33.0 and
/// 31.0 µs an event to 28.2, 24.3 and 29.3, and `single_durable` did not
/// change (128, 118, 123 µs against 121, 122, 114).
pub(super) fn gather(
    inbox: &Receiver<Request>,
    group: &mut Vec<Request>,
    appending: &AtomicUsize,
    wait: Duration,
) {
    let deadline = Instant::now() + wait;
    while group.len() < MAX_GROUP {
        let request = if group.len() < appending.load(Ordering::Acquire) {
            inbox.recv_deadline(deadline).ok()
        } else {
            inbox.try_recv().ok()
        };
        match request {
            Some(request) => group.push(request),
            None => break,
        }
    }
}

/// What recovering will make of sled, worked out before it changes
/// anything ([`Writer::plan_recovery`]).
pub(super) struct Recovery {
    /// The settled position (or sled's last, if never settled): what is
    /// above it in sled is taken out.
    base: u64,
    /// Closed cleanly: nothing to take out, put back or settle.
    unchanged: bool,
    /// The journal's records above `base`, checked as continuing the log.
    pending: Pending,
    /// The head once they are back.
    pub(super) head: Head,
    last_time: Timestamp,
}

impl Recovery {
    /// The hash of the record at `position` in the log as recovering will
    /// leave it: sled's up to the settled position, the journal's above.
    pub(super) fn hash_at(
        &self,
        events: &sled::Tree,
        position: u64,
    ) -> Result<Option<Hash>, Damage> {
        if position <= self.base {
            return hash_at(events, position);
        }
        match self.pending.events.iter().find(|e| e.position == position) {
            None => Ok(None),
            Some(event) => record::open(&event.record)
                .map(|r| Some(r.hash))
                .map_err(|problem| Damage { position, problem }),
        }
    }
}

/// One event ready to be written.
struct Planned {
    position: u64,
    event_id: EventId,
    record: Vec<u8>,
    streams: Vec<[u8; 17]>,
}

/// What the group has changed so far, before it is committed.
#[derive(Default)]
pub(super) struct Pending {
    events: Vec<Planned>,
    /// The events the group adds to each stream it touches, in order, as
    /// indexes into `events`: what the stream index gets, and the last is
    /// the stream's head.
    streams: HashMap<[u8; 17], Vec<usize>>,
    event_ids: HashMap<EventId, u64>,
}

impl Writer {
    pub(super) fn run(mut self, inbox: &Receiver<Request>) {
        while let Ok(first) = inbox.recv() {
            let mut group = vec![first];
            gather(inbox, &mut group, &self.shared.appending, GATHER_WAIT);
            self.commit(group);
        }
        // Closed: leave sled whole and the journal empty, so the next open
        // has nothing to replay. If this fails, the journal still holds
        // everything and the next open replays it.
        if !self.shared.poisoned.load(Ordering::Acquire) && self.settle().is_ok() {
            // Empty now: the next open reads its headers, not the frames
            // of earlier generations that fill the rest of the file.
            let _ = self.journal.shrink();
        }
    }

    /// Works out what [`Writer::recover`] will make of sled: what was
    /// settled plus what the journal holds. Reads only, so that what it
    /// would produce can be checked before anything is changed.
    ///
    /// Groups reach sled one key at a time, so a crash can leave part of a
    /// group there, acknowledged or not. Everything above the settled
    /// position is to be taken out, and the journal's records above it put
    /// back whole: they must continue the log at the settled position, link
    /// by link, or the open is refused. The journal's records at or below it
    /// must be the ones sled holds. `last` is the position of sled's last
    /// record.
    pub(super) fn plan_recovery(
        &self,
        last: u64,
        recovered: Vec<Recovered>,
    ) -> Result<Recovery, OpenError> {
        let events = &self.shared.trees.events;
        // Without the key, the directory has never been settled by this
        // code: a new log, or one written with atomic batches, whose
        // records are all whole.
        let settled = match events.get([SETTLED]).map_err(open_storage)? {
            Some(value) => Some(
                <[u8; 8]>::try_from(value.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| {
                        OpenError::Storage("the settled position is not 8 bytes".to_owned())
                    })?,
            ),
            None => None,
        };
        let base = settled.unwrap_or(last);
        let (mut head, mut last_time) = record_at(events, base).map_err(OpenError::Damaged)?;
        // A log closed cleanly and settled: nothing to write on open.
        let unchanged = settled.is_some() && last == base && recovered.is_empty();
        let mut tail = Vec::new();
        for entry in recovered {
            if entry.position > base {
                tail.push(entry.record);
                continue;
            }
            let damage = |problem| {
                OpenError::Damaged(Damage {
                    position: entry.position,
                    problem,
                })
            };
            let hash = record::open(&entry.record).map_err(damage)?.hash;
            if hash_at(events, entry.position).map_err(OpenError::Damaged)? != Some(hash) {
                return Err(damage(Problem::JournalDisagrees));
            }
        }
        let mut pending = Pending::default();
        let refused = |error| match error {
            AppendError::Rejected(damage) => OpenError::Damaged(damage),
            other => OpenError::Storage(other.to_string()),
        };
        for chunk in tail.chunks(MAX_BATCH) {
            self.plan_records(chunk, &mut pending, &mut head, &mut last_time)
                .map_err(refused)?;
        }
        Ok(Recovery {
            base,
            unchanged,
            pending,
            head,
            last_time,
        })
    }

    /// Brings sled back to what `recovery` planned: takes out everything
    /// above the settled position and puts the journal's records back.
    ///
    /// Then, unless the log was closed cleanly, sled is settled: that
    /// writes `H` into a log that never had it, which must happen before
    /// the first append, since until then nothing marks where whole groups
    /// end; and it empties the journal, so the next open has nothing to
    /// redo. (Without it a crash would still recover: sled keeps a prefix
    /// of its writes, so the removals above reach the disk before any
    /// later write does.)
    /// `untrusted`: sled's files were rebuilt after a failed settle, and
    /// are settled even if nothing changed, so that the journal is emptied
    /// only once they are known to be on disk.
    pub(super) fn recover(&mut self, recovery: Recovery, untrusted: bool) -> Result<(), OpenError> {
        let Recovery {
            base,
            unchanged,
            pending,
            head,
            last_time,
        } = recovery;
        remove_above(&self.shared.trees.events, base).map_err(OpenError::Damaged)?;
        self.inserter.begin(pending);
        self.inserted().map_err(OpenError::Storage)?;
        self.head = head;
        self.last_time = last_time;
        if !unchanged || untrusted {
            self.settle()
                .map_err(|e| OpenError::Storage(e.to_string()))?;
        }
        *self.shared.durable.lock() = head;
        Ok(())
    }

    /// Makes sled hold everything inserted durably, with the position it
    /// has reached, then empties the journal.
    ///
    /// The entries of the ids' indexes since the last settle go into sled
    /// as segments in the same batch as the position, so that a crash
    /// leaves both or neither.
    fn settle(&mut self) -> io::Result<()> {
        let settled = self.head.position;
        let mut batch = sled::Batch::default();
        let written: [Option<Segment>; 2] = {
            let indexes = self.shared.indexes.read();
            [
                indexes.ids.write_segment(settled, &mut batch),
                indexes.tokens.write_segment(settled, &mut batch),
            ]
        };
        batch.insert(&[SETTLED], &settled.to_be_bytes()[..]);
        // The journal's next header is made now and recorded with the
        // position, so that an open can tell the journal sled agreed with.
        let next = self.journal.header().next()?;
        batch.insert(
            &[settle_record::JOURNAL_KEY],
            &settle_record::record(&next, self.journal.header())[..],
        );
        self.shared
            .trees
            .events
            .apply_batch(batch)
            .map_err(io::Error::other)?;
        if let Err(error) = inject(&self.faults, FaultPoint::SettleBatch) {
            return Err(settle_record::mark_failed(&self.dir, error));
        }
        {
            let mut indexes = self.shared.indexes.write();
            let [ids, tokens] = written;
            indexes.ids.settled(ids);
            indexes.tokens.settled(tokens);
        }
        let durable = inject(&self.faults, FaultPoint::Settle)
            .and_then(|()| self.shared.trees.db.flush().map_err(io::Error::other))
            .and_then(|_| inject(&self.faults, FaultPoint::SledFlushed))
            .and_then(|()| self.files.sync())
            .and_then(|()| inject(&self.faults, FaultPoint::FilesSynced));
        if let Err(error) = durable {
            return Err(settle_record::mark_failed(&self.dir, error));
        }
        let faults = &self.faults;
        self.journal
            .clear(next, &mut || inject(faults, FaultPoint::HeaderCopied))?;
        // Signed only now: a signed head names a record no crash takes back.
        match &mut self.signer {
            Some(signer) => signer.sign(self.head),
            None => Ok(()),
        }
    }

    fn now(&self) -> Timestamp {
        match &self.clock {
            Some(clock) => clock(),
            None => Timestamp::from_system_time(SystemTime::now()),
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        if self.shared.poisoned.load(Ordering::Acquire) {
            for request in group {
                request.reply.send(Err(AppendError::Poisoned(
                    "an earlier commit could not be made durable".to_owned(),
                )));
            }
            return;
        }
        let indexes = &self.shared.indexes;
        self.known_ids
            .catch_up(&self.shared.trees.events, self.head.position, || {
                indexes.read().ids.recent_ids().collect()
            });
        let mut pending = Pending::default();
        let mut head = self.head;
        let mut last_time = self.last_time;
        let mut replies = Vec::new();
        for Request { job, reply } in group {
            let planned = match job {
                Job::Events { batch, expectation } => {
                    self.plan(batch, expectation, &mut pending, &mut head, &mut last_time)
                }
                Job::Records(records) => {
                    self.plan_records(&records, &mut pending, &mut head, &mut last_time)
                }
            };
            match planned {
                Ok(positions) => replies.push((reply, positions)),
                Err(error) => reply.send(Err(error)),
            }
        }
        // Added before the write: if it fails, an id the log lacks costs
        // only a lookup in sled later.
        self.known_ids
            .add(pending.events.iter().map(|event| event.event_id.as_u128()));
        if !pending.events.is_empty()
            && let Err(error) = self.write(pending)
        {
            if let AppendError::Poisoned(_) = error {
                self.poison(replies, &error);
                return;
            }
            // Nothing of this group was written: the appends that needed it
            // fail; retries of earlier appends found durable records.
            let applied = self.head.position;
            let (failed, kept): (Vec<_>, Vec<_>) = replies
                .into_iter()
                .partition(|(_, positions)| positions.iter().any(|p| *p > applied));
            for (reply, _) in failed {
                reply.send(Err(error.clone()));
            }
            replies = kept;
            head = self.head;
            last_time = self.last_time;
        }
        // The inserter has the group if it planned events and they were
        // written; a failed write put `head` back.
        let inserting = head.position > self.head.position;
        self.head = head;
        self.last_time = last_time;
        self.shared
            .acknowledged
            .store(head.position, Ordering::Release);
        for (reply, positions) in replies {
            reply.send(Ok(positions));
        }
        if inserting && let Err(error) = self.inserted() {
            // The group is acknowledged and in the journal, which a reopen
            // puts back into sled whole.
            self.poison(Vec::new(), &AppendError::Poisoned(error));
            return;
        }
        *self.shared.durable.lock() = head;
        self.shared.grew.notify_all();
        if self.journal.len() >= self.journal_bytes
            && let Err(error) = self.settle()
        {
            self.poison(Vec::new(), &AppendError::Poisoned(error.to_string()));
        }
    }

    /// After a failed sync or sled write, the state on disk or in sled is
    /// unknown: every append waiting, and every later one, fails until the
    /// log is reopened.
    fn poison(&self, replies: Vec<(Reply, Vec<u64>)>, error: &AppendError) {
        self.shared.poisoned.store(true, Ordering::Release);
        for (reply, _) in replies {
            reply.send(Err(error.clone()));
        }
        // Readers waiting for an acknowledged head that will not come
        // stop waiting; under the lock, so none misses the wake.
        let _durable = self.shared.durable.lock();
        self.shared.grew.notify_all();
    }

    /// Writes the group to the journal and makes it durable there, and
    /// meanwhile has the inserter put it into sled; on `Ok` the inserter
    /// is still at it, and the caller collects its result (`inserted`). A
    /// failure to write the journal leaves both as they were (`Io`); a
    /// failure to sync is `Poisoned`, and the caller poisons the log.
    ///
    /// The inserts are most of a group's work and need no trip to the
    /// device, so they run on the inserter while this thread waits for the
    /// sync: a group costs the longer of the two, not their sum. In three
    /// alternating runs `append/single_durable` went from 3.19, 3.11 and
    /// 2.91 times the same run's `fsync_floor` to 1.87, 2.04 and 2.29.
    fn write(&mut self, pending: Pending) -> Result<(), AppendError> {
        let io = |e: io::Error| AppendError::Io(e.to_string());
        inject(&self.faults, FaultPoint::Commit).map_err(io)?;
        let before = self.journal.len();
        let entries: Vec<Entry<'_>> = pending
            .events
            .iter()
            .map(|event| Entry {
                position: event.position,
                record: &event.record,
            })
            .collect();
        self.journal
            .append(&entries)
            .map_err(|failed| match failed {
                AppendFailed::Undone(error) => io(error),
                AppendFailed::Broken(error) => AppendError::Poisoned(error),
            })?;
        drop(entries);
        self.inserter.begin(pending);
        let synced = inject(&self.faults, FaultPoint::Sync)
            .and_then(|()| self.journal.sync())
            .and_then(|()| inject(&self.faults, FaultPoint::Synced));
        let Err(sync) = synced else {
            return Ok(());
        };
        if let Err(error) = self.inserted() {
            // Part of the group may be in sled; only a reopen, which takes
            // out everything above the settled position, clears it. And
            // the frame is wiped out again, or that reopen would bring back
            // what the caller is told failed.
            let undone = self.journal.undo(before);
            return Err(AppendError::Poisoned(match undone {
                Ok(()) => format!("{sync}; and {error}"),
                Err(undo) => format!("{sync}; and {error}; and undoing it failed: {undo}"),
            }));
        }
        Err(AppendError::Poisoned(sync.to_string()))
    }

    /// Waits for the inserter to finish the group begun last.
    fn inserted(&self) -> Result<(), String> {
        match self.inserter.finish() {
            Some(result) => result.map_err(|error| error.to_string()),
            None => Err("the thread inserting into sled has ended".to_owned()),
        }
    }

    fn stream_head(&self, key: &[u8; 17], pending: &Pending) -> Result<u64, AppendError> {
        if let Some(head) = pending
            .streams
            .get(key)
            .and_then(|indexes| pending.events_at(indexes).last())
        {
            return Ok(head.position);
        }
        head_of(&self.shared, key, u64::MAX).map_err(|problem| AppendError::Io(problem.to_string()))
    }

    fn existing_position(
        &self,
        id: EventId,
        pending: &Pending,
    ) -> Result<Option<u64>, AppendError> {
        if let Some(position) = pending.event_ids.get(&id) {
            return Ok(Some(*position));
        }
        if !self.known_ids.may_hold(id.as_u128()) {
            return Ok(None);
        }
        // Every group is in sled, and in the index, before the next is
        // planned: whatever the index holds is below the group.
        indexed_position(&self.shared, id, u64::MAX)
            .map_err(|damage| AppendError::Io(damage.to_string()))
    }

    /// Checks one append against the state the group has reached and, if it
    /// holds, adds its records to the group. Returns its positions.
    fn plan(
        &self,
        batch: Vec<Prepared>,
        expectation: Expectation,
        pending: &mut Pending,
        head: &mut Head,
        last_time: &mut Timestamp,
    ) -> Result<Vec<u64>, AppendError> {
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        for event in &batch {
            if !seen.insert(event.encoded.event_id()) {
                return Err(AppendError::DuplicateEventId(event.encoded.event_id()));
            }
        }
        // A retry: every id is in the log already.
        let mut existing = Vec::with_capacity(batch.len());
        for event in &batch {
            let id = event.encoded.event_id();
            existing.push((id, self.existing_position(id, pending)?));
        }
        if existing.iter().all(|(_, position)| position.is_some()) {
            return Ok(existing.iter().filter_map(|(_, p)| *p).collect());
        }
        if let Some((id, _)) = existing.iter().find(|(_, position)| position.is_some()) {
            return Err(AppendError::PartialRetry(*id));
        }
        match expectation {
            Expectation::Any => {}
            Expectation::Head(expected) => {
                if head.position != expected {
                    return Err(AppendError::Conflict {
                        expected: expectation,
                        found: head.position,
                    });
                }
            }
            Expectation::Stream(stream, expected) => {
                let found = self.stream_head(&stream_key(stream), pending)?;
                if found != expected {
                    return Err(AppendError::Conflict {
                        expected: expectation,
                        found,
                    });
                }
            }
        }
        // Place everything before touching the group, so a failure leaves it as it was.
        let now = self.now();
        let (recorded_at, flags) = backend::stamp(now, *last_time);
        let mut planned = Vec::with_capacity(batch.len());
        let mut chain = *head;
        for event in batch {
            let position = chain.position + 1;
            let bytes = event
                .encoded
                .place(position, recorded_at)
                .map_err(AppendError::Encode)?;
            let (record, hash) = record::seal(&chain.hash, flags, &bytes);
            chain = Head { position, hash };
            planned.push(Planned {
                position,
                event_id: event.encoded.event_id(),
                record,
                streams: event.streams,
            });
        }
        *head = chain;
        *last_time = recorded_at;
        Ok(pending.add(planned))
    }

    /// Checks records sealed elsewhere against the head the group has
    /// reached, as `verify` checks stored ones, and adds them to the group.
    fn plan_records(
        &self,
        records: &[Vec<u8>],
        pending: &mut Pending,
        head: &mut Head,
        last_time: &mut Timestamp,
    ) -> Result<Vec<u64>, AppendError> {
        check_batch_size(records.len())?;
        let mut planned = Vec::with_capacity(records.len());
        let mut chain = ChainCheck::after(*head, *last_time);
        for bytes in records {
            let envelope = chain.check(bytes).map_err(AppendError::Rejected)?.envelope;
            let taken = self
                .existing_position(envelope.event_id, pending)?
                .is_some()
                || planned
                    .iter()
                    .any(|p: &Planned| p.event_id == envelope.event_id);
            if taken {
                return Err(AppendError::Rejected(Damage {
                    position: envelope.position,
                    problem: Problem::DuplicateEventId(envelope.event_id),
                }));
            }
            planned.push(Planned {
                position: envelope.position,
                event_id: envelope.event_id,
                record: bytes.clone(),
                streams: stream_keys(&envelope),
            });
        }
        *head = chain.head();
        *last_time = chain.last_time();
        Ok(pending.add(planned))
    }
}

/// Inserts a group into sled, in memory: the journal makes it durable,
/// and a reopen makes it whole (see [`Writer::recover`]). `tails` is the
/// last run of each stream written since opening. Runs on the inserter.
///
/// The group's records go into pages (`page.rs`), each with its event
/// ids; then each stream it touches gets its positions, in runs
/// (`stream_index.rs`). One key at a time, pages before index entries,
/// rather than one `sled::Batch`: sled 0.34 writes out its I/O buffer
/// for every batch (`pin_log`), a second write on the device beside the
/// journal's. A five-key event took 24 to 28 µs in a batch against 10
/// to 14 µs key by key (sled alone, 50,000 events, a throwaway
/// program), and `append/single_durable` went from 96 to 61 µs. Since
/// sled recovers a prefix of its writes, an index entry is never there
/// without its page.
pub(super) fn insert(
    events: &sled::Tree,
    tails: &mut Tails,
    indexes: &RwLock<Indexes>,
    pending: &Pending,
) -> Result<(), sled::Error> {
    for records in page::split(&pending.events, |event| event.record.len()) {
        let Some(last) = records.last() else {
            continue;
        };
        let bytes = page::encode(records.iter().map(|event| event.record.as_slice()));
        events.insert(log_key(last.position), bytes)?;
    }
    let mut tokens = Vec::new();
    for (stream, at) in &pending.streams {
        if let Some(token) = stream_index::token_of(stream) {
            tokens.push((token, at));
            continue;
        }
        let entries: Vec<(u64, &[u8])> = pending
            .events_at(at)
            .map(|event| (event.position, event.record.as_slice()))
            .collect();
        tails.extend(events, stream, &entries)?;
    }
    let mut indexes = indexes.write();
    for event in &pending.events {
        indexes.ids.add(event.event_id.as_u128(), event.position);
    }
    for (token, at) in tokens {
        for event in pending.events_at(at) {
            indexes.tokens.add(token, event.position);
        }
    }
    Ok(())
}

impl Pending {
    /// Adds checked records to the group; returns their positions.
    fn add(&mut self, planned: Vec<Planned>) -> Vec<u64> {
        let positions = planned.iter().map(|p| p.position).collect();
        for event in planned {
            for key in &event.streams {
                self.streams
                    .entry(*key)
                    .or_default()
                    .push(self.events.len());
            }
            self.event_ids.insert(event.event_id, event.position);
            self.events.push(event);
        }
        positions
    }

    /// The group's events at `indexes`, which `add` took from `events`
    /// as it grew, so every one is there.
    fn events_at<'a>(&'a self, indexes: &'a [usize]) -> impl Iterator<Item = &'a Planned> {
        indexes.iter().filter_map(|index| self.events.get(*index))
    }
}
