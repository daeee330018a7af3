//! The event log on sled.
//!
//! Everything lives in one sled tree, `events`, under these keys:
//! - `L` ‖ position of its last record (u64, big-endian) → a page of the
//!   records of consecutive positions (see `page.rs` and `record.rs`);
//! - `J` and `F` ‖ an index of ids to positions, written in segments
//!   once per settle: of event ids, for idempotent retries, and of token
//!   ids, for reads of a token's stream (see `segments.rs`);
//! - `S` ‖ stream key ‖ first position → the positions of a run of the
//!   stream's events, for reads by stream (see `stream_index.rs`), for
//!   every stream but tokens';
//! - `H` → the position sled was last settled at: flushed and synced,
//!   with every record up to it whole;
//! - `G` → the journal generation that settle emptied the journal to,
//!   and fingerprints of its key and the one before (`settle_record.rs`);
//!   written in the settle's batch, so an open can tell a journal sled
//!   never agreed with;
//! - `V` → the layout version of all of these (u32, big-endian), written
//!   when the log is created; a log without it or in another is refused.
//!
//! A stream key is one tag byte (company 1, token 2, teammate 3, actor 4)
//! followed by the id as a big-endian u128.
//!
//! A group is made durable by the journal (`journal.rs`) and inserted
//! into sled one key at a time; a reopen takes out whatever sled holds
//! above `H` and puts back the journal's records whole (`Writer::recover`).
//! So an event and its index entries are there together or not at all
//! once the log is open, without the cost of a `sled::Batch` per group.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};
use tokenledger_events::{EncodedEvent, EventId, Timestamp};

use crate::backend::{self, Appending, check_batch_size, event_of_stream, stream_key, streams};
use crate::checkpoint::{Checkpoint, CheckpointKey};
use crate::dirs::{create_private_dir, private_file, sync_dir};
use crate::journal::{Journal, JournalError};
use crate::known_ids::KnownIds;
use crate::log::{
    AppendError, Damage, EventLog, Expectation, Hash, Head, NewEvent, Problem, StoredEvent,
    StoredRecord, Stream, Verified,
};
use crate::page::Page;
use crate::record::{self, ChainCheck, stored_event};
use crate::reply::{self, Reply};
use crate::segments::{EVENT_IDS, Index, TOKENS};
use crate::settle_record;
use crate::signed_head::{self, Signer};
use crate::state_files::StateFiles;
use crate::stream_index::{self, Tails};
use crate::worker::Worker;

mod writer;

use writer::{Pending, Writer, insert};

use crate::sled_options::{FaultPoint, JOURNAL_BYTES, OpenError, Options, inject};

const LOG: u8 = b'L';
/// The key of the position sled last settled at (see [`Writer::settle`]).
const SETTLED: u8 = b'H';
/// The key of the layout version, written when the log is created.
const LAYOUT: u8 = b'V';
/// The meaning of every key and value in the tree: pages (`page.rs`), the
/// segments of event ids and of tokens' streams (`segments.rs`), runs of
/// the stream index (`stream_index.rs`), `H`. Raised whenever
/// one of them changes, so that no build reads a log it would misread.
/// 2: event ids in buckets rather than one key each.
/// 3: a bucket chosen by a mix of the id's bits, not its leading bits.
/// 4: tokens' streams in buckets rather than runs.
/// 5: records, journal frames and state checkpoints hashed with BLAKE3.
/// 6: a company's runs carry its records.
/// 7: event ids and tokens' streams in segments written at each settle,
/// rather than buckets merged into at each event.
const LAYOUT_VERSION: u32 = 7;

fn log_key(position: u64) -> [u8; 9] {
    let mut key = [LOG; 9];
    let (_, tail) = key.split_at_mut(1);
    tail.copy_from_slice(&position.to_be_bytes());
    key
}

struct Trees {
    db: sled::Db,
    events: sled::Tree,
}

/// The two indexes of ids. The inserter adds a group's entries before its
/// records are durable, so readers bound what they find by the durable
/// head, as they do in the stream index; a settle moves the entries into
/// segments under the write lock, so a reader finds each in one place.
struct Indexes {
    ids: Index,
    tokens: Index,
}

struct Shared {
    trees: Trees,
    indexes: Arc<RwLock<Indexes>>,
    /// The head readers see: durable, and wholly in sled.
    durable: Mutex<Head>,
    /// The last position answered `Ok`: durable in the journal, and in
    /// sled once `durable` reaches it.
    acknowledged: AtomicU64,
    grew: Condvar,
    poisoned: AtomicBool,
    /// Appenders inside `append`, from before they encode their events
    /// until they have read their answer: the writer waits for those not
    /// yet in its group (`gather`).
    appending: AtomicUsize,
}

/// Poisons the log if the writer's thread unwinds: a panic there, even
/// after answering appends, must not leave `head()`, `wait_for` or a
/// subscription waiting for a head that will not come. Appends waiting
/// are answered by their replies' drop ([`AppendError::Closed`]).
struct PoisonOnUnwind(Arc<Shared>);

impl Drop for PoisonOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
            // Under the lock, so that no waiter misses the wake.
            let _durable = self.0.durable.lock();
            self.0.grew.notify_all();
        }
    }
}

/// One append waiting for the writer.
struct Request {
    job: Job,
    reply: Reply,
}

/// What an append brings.
enum Job {
    /// New events, encoded by the appender and placed and sealed by the
    /// writer.
    Events {
        batch: Vec<Prepared>,
        expectation: Expectation,
    },
    /// Records sealed elsewhere, to be checked against the head.
    Records(Vec<Vec<u8>>),
}

/// The event log on sled; see the crate docs for its durability promise.
pub struct SledLog {
    shared: Arc<Shared>,
    requests: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Held for the life of the log: the directory's exclusive lock.
    pub(crate) lock: File,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |error| OpenError::Io {
        path: path.to_owned(),
        error,
    }
}

pub(crate) fn journal_error(path: &Path) -> impl FnOnce(JournalError) -> OpenError + '_ {
    move |error| match error {
        JournalError::Io(error) => OpenError::Io {
            path: path.to_owned(),
            error,
        },
        JournalError::Damaged { offset, problem } => OpenError::DamagedJournal {
            path: path.to_owned(),
            offset,
            problem,
        },
    }
}

fn storage(error: sled::Error) -> Problem {
    Problem::Storage(error.to_string())
}

pub(crate) fn open_storage(error: sled::Error) -> OpenError {
    OpenError::Storage(error.to_string())
}

/// The position in a log key (`L` ‖ position).
fn position_of(key: &[u8]) -> Result<u64, Problem> {
    let bytes: [u8; 8] = key
        .strip_prefix(&[LOG])
        .and_then(|rest| rest.try_into().ok())
        .ok_or(Problem::BadKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

impl SledLog {
    /// Opens the log in `dir`, creating it (readable by its owner only)
    /// unless [`Options::must_exist`] says not to.
    pub fn open(dir: &Path, options: Options) -> Result<SledLog, OpenError> {
        if dir.exists() && !dir.is_dir() {
            return Err(OpenError::NotADirectory(dir.to_owned()));
        }
        if options.must_exist {
            holds_log(dir)?;
        }
        create_private_dir(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(error)) => {
                return Err(OpenError::Io {
                    path: lock_path,
                    error,
                });
            }
        }
        let checkpoints = StateFiles::new(dir, None);
        checkpoints
            .remove_partial()
            .map_err(io_error(&dir.join("checkpoints")))?;
        let replaced = crate::compact::finish_interrupted(dir)?;
        // A settle failed last time: sled's files are not trusted (see
        // `settle_record.rs`), and are copied into fresh ones first.
        let untrusted = settle_record::is_marked(dir)?;
        if untrusted {
            crate::compact::rebuild(dir, &options.faults)?;
        }
        let sled_dir = dir.join("sled");
        let db = open_sled(&sled_dir)?;
        let events = db.open_tree("events").map_err(open_storage)?;
        // Runs of the stream index grow by merging, which appends
        // (`stream_index.rs`).
        events.set_merge_operator(stream_index::append);
        check_layout(&events)?;
        let indexes = Arc::new(RwLock::new(Indexes {
            ids: Index::load(&events, EVENT_IDS).map_err(OpenError::Damaged)?,
            tokens: Index::load(&events, TOKENS).map_err(OpenError::Damaged)?,
        }));
        let inserter = {
            let events = events.clone();
            let indexes = Arc::clone(&indexes);
            let mut tails = Tails::default();
            let faults = options.faults.clone();
            Worker::start("tl-log-inserter", move |pending: Pending| {
                inject(&faults, FaultPoint::Insert).map_err(sled::Error::Io)?;
                insert(&events, &mut tails, &indexes, &pending)
            })
            .map_err(io_error(dir))?
        };
        let trees = Trees { events, db };
        let files = DurableFiles::open(&sled_dir)?;
        let last = last_position(&trees.events).map_err(OpenError::Damaged)?;
        let journal_path = dir.join("journal");
        // Once sled has settled, the journal has been made and synced: it
        // is not made anew then.
        let settled_before = trees.events.contains_key([SETTLED]).map_err(open_storage)?;
        let (mut journal, recovered) =
            Journal::open(&journal_path, !settled_before).map_err(journal_error(&journal_path))?;
        journal.faults.clone_from(&options.faults);
        settle_record::check(&trees.events, journal.header(), &journal_path)?;
        let shared = Arc::new(Shared {
            trees,
            indexes,
            durable: Mutex::new(Head::EMPTY),
            acknowledged: AtomicU64::new(0),
            appending: AtomicUsize::new(0),
            grew: Condvar::new(),
            poisoned: AtomicBool::new(false),
        });
        let mut writer = Writer {
            dir: dir.to_owned(),
            shared: Arc::clone(&shared),
            head: Head::EMPTY,
            last_time: Timestamp::EPOCH,
            faults: options.faults,
            clock: options.clock,
            journal,
            journal_bytes: options.journal_bytes.unwrap_or(JOURNAL_BYTES),
            files,
            inserter,
            known_ids: KnownIds::new(),
            signer: None,
        };
        // The heads that vouch for the log are checked against what
        // recovering would leave, before it removes or empties anything: a
        // settled position lowered by an attacker or a damaged disk must
        // not make this open delete the records above it and only then
        // refuse. Nothing is signed until then either: recovering settles,
        // and a settle that signed would vouch for what it found.
        let recovery = writer.plan_recovery(last, recovered)?;
        let events = &shared.trees.events;
        if let Some(known) = options.known_head {
            check_known_head(known, recovery.head, |position| {
                recovery.hash_at(events, position)
            })?;
        }
        let signer = match options.checkpoint_key {
            Some(key) => Some(Signer::check(
                dir,
                key,
                recovery.head,
                last > 0,
                |position| recovery.hash_at(events, position),
            )?),
            None => None,
        };
        writer.recover(recovery, untrusted)?;
        // Only now, with a settle through fresh files done: the old files,
        // of a failed settle or of a compaction, are no longer needed.
        if untrusted || replaced {
            crate::compact::remove_replaced(dir)?;
        }
        if untrusted {
            settle_record::clear_mark(dir).map_err(io_error(dir))?;
        }
        if let Some(mut signer) = signer {
            // What recovering settled, or the empty head of a new log.
            signer.sign(writer.head).map_err(io_error(dir))?;
            writer.signer = Some(signer);
        }
        let (requests, inbox) = crossbeam_channel::unbounded();
        let writer = std::thread::Builder::new()
            .name("tl-log-writer".to_owned())
            .spawn(move || {
                let _unwinding = PoisonOnUnwind(Arc::clone(&writer.shared));
                writer.run(&inbox);
            })
            .map_err(io_error(dir))?;
        Ok(SledLog {
            shared,
            requests: Some(requests),
            writer: Some(writer),
            lock,
        })
    }
}

/// Whether `dir` holds a log, looking without creating anything: a log has
/// its journal and sled's database file, which opening creates (sled
/// first) and nothing removes. During a compaction's swap sled's files
/// wait under `sled.replaced` (`compact.rs`), and opening puts them back.
fn holds_log(dir: &Path) -> Result<(), OpenError> {
    let no_log = |missing| OpenError::NoLog {
        path: dir.to_owned(),
        missing,
    };
    if !dir.is_dir() {
        return Err(no_log("it does not exist"));
    }
    if !dir.join("journal").is_file() {
        return Err(no_log("it has no journal"));
    }
    let database = ["sled", crate::compact::REPLACED]
        .iter()
        .any(|sled| dir.join(sled).join("db").is_file());
    if !database {
        return Err(no_log("it has no database (`sled/db`)"));
    }
    Ok(())
}

impl SledLog {
    /// Adopts `key` for the log in `dir`, written without one: walks the
    /// whole log as [`EventLog::verify`] does and, only if it is intact,
    /// signs its head, so that later opens with the key (see
    /// [`Options::checkpoint_key`]) vouch for it. A log that has a signed
    /// head already is refused: that head is checked by opening with its
    /// key, and replacing it is an operator's decision (remove the file).
    /// `options.known_head`, if given, is checked first. A log that was
    /// kept with `key` before (a checkpoint of the state in `checkpoints/`
    /// is signed with it) and has lost its signed head is refused unless
    /// `options.known_head` names a record it holds: its history may have
    /// been rewritten and the signed head removed to hide it, and signing
    /// it blind would vouch for the rewrite. Returns what was verified;
    /// its head is the head signed.
    pub fn sign_head(
        dir: &Path,
        key: &CheckpointKey,
        options: Options,
    ) -> Result<Verified, OpenError> {
        // A known head at 0 names no record, and so vouches for nothing.
        let head_known = options.known_head.is_some_and(|head| head.position > 0);
        let log = SledLog::open(
            dir,
            Options {
                checkpoint_key: None,
                ..options
            },
        )?;
        let path = dir.join(signed_head::FILE);
        if signed_head::read(dir)?.is_some() {
            return Err(OpenError::AlreadySigned(path));
        }
        if !head_known {
            let checkpoints = StateFiles::new(dir, Some(key.clone()));
            let signed = checkpoints
                .first_signed()
                .map_err(io_error(&dir.join("checkpoints")))?;
            if let Some(file) = signed {
                return Err(OpenError::KeyedBefore {
                    checkpoint: file.path,
                });
            }
        }
        let verified = log.verify().map_err(OpenError::Damaged)?;
        // No append can land between the walk and the signature: this
        // handle holds the directory, and it appends nothing.
        signed_head::write(dir, &Checkpoint::sign(verified.head, key)).map_err(io_error(&path))?;
        Ok(verified)
    }
}

/// How long to wait for sled's own lock on its files.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens sled. Our `LOCK` is held already, so no other process has the
/// directory; but a log of this process that was just dropped can still
/// hold sled's lock on its `db` file for a moment, while sled's background
/// threads finish (they own the file, not the handle). So a lock conflict
/// is waited out, briefly, instead of reported.
///
/// sled 0.34 panics on some damage it meets recovering its files ("tried to
/// serialize Uninitialized"): that is an error here, naming the directory,
/// never a panic of the caller.
pub(crate) fn open_sled(sled_dir: &Path) -> Result<sled::Db, OpenError> {
    // sled would create it with the umask's mode.
    create_private_dir(sled_dir).map_err(io_error(sled_dir))?;
    let opening = || {
        waiting_for_sled(
            || sled::Config::new().path(sled_dir).open(),
            |error| error.to_string().contains("could not acquire lock"),
        )
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(opening)) {
        Ok(opened) => opened.map_err(open_storage),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(OpenError::Storage(format!(
                "sled failed recovering `{}` ({why}): its files are damaged; restore the data directory from a backup, or import an export",
                sled_dir.display()
            )))
        }
    }
}

/// `attempt`, made again every 10 ms while it fails as `busy` says (sled's
/// lock on a `db` file still held, as above), for up to [`SLED_LOCK_WAIT`].
pub(crate) fn waiting_for_sled<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    busy: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    loop {
        match attempt() {
            Err(error) if busy(&error) && started.elapsed() < SLED_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// A page as sled hands it out: the position of its last record and its
/// bytes.
struct StoredPage {
    last: u64,
    bytes: sled::IVec,
}

impl StoredPage {
    /// The first page whose last record is at or after `position`: the one
    /// that holds it, unless the log has a gap there.
    fn at_or_after(events: &sled::Tree, position: u64) -> Result<Option<StoredPage>, Damage> {
        let damage = |problem| Damage { position, problem };
        let Some((key, bytes)) = events
            .range(log_key(position)..=log_key(u64::MAX))
            .next()
            .transpose()
            .map_err(|e| damage(storage(e)))?
        else {
            return Ok(None);
        };
        let last = position_of(&key).map_err(damage)?;
        Ok(Some(StoredPage { last, bytes }))
    }

    fn decode(&self, position: u64) -> Result<Page<'_>, Damage> {
        Page::decode(self.last, &self.bytes).map_err(|problem| Damage { position, problem })
    }

    /// The record at `position`, `None` if this page does not hold it.
    fn record(&self, position: u64) -> Result<Option<&[u8]>, Damage> {
        Ok(self.decode(position)?.get(position))
    }
}

/// The bytes of the record at `position`, `None` if the log has none there.
fn record_bytes(events: &sled::Tree, position: u64) -> Result<Option<Vec<u8>>, Damage> {
    match StoredPage::at_or_after(events, position)? {
        None => Ok(None),
        Some(page) => Ok(page.record(position)?.map(<[u8]>::to_vec)),
    }
}

fn hash_at(events: &sled::Tree, position: u64) -> Result<Option<Hash>, Damage> {
    match record_bytes(events, position)? {
        None => Ok(None),
        Some(bytes) => record::open(&bytes)
            .map(|r| Some(r.hash))
            .map_err(|problem| Damage { position, problem }),
    }
}

/// The head and recorded time at `position` (the empty head at 0).
fn record_at(events: &sled::Tree, position: u64) -> Result<(Head, Timestamp), Damage> {
    if position == 0 {
        return Ok((Head::EMPTY, Timestamp::EPOCH));
    }
    let bytes = record_bytes(events, position)?.ok_or(Damage {
        position,
        problem: Problem::Missing,
    })?;
    let event = stored_event(position, &bytes)?;
    Ok((
        Head {
            position,
            hash: event.hash,
        },
        event.envelope.recorded_at,
    ))
}

/// Takes every record above `position` out of sled, with its index entries.
/// `position` must end a page, as a settled position always does.
fn remove_above(events: &sled::Tree, position: u64) -> Result<(), Damage> {
    let above: Vec<_> = events
        .range(log_key(position + 1)..=log_key(u64::MAX))
        .collect::<Result<_, _>>()
        .map_err(|e| Damage {
            position: position + 1,
            problem: storage(e),
        })?;
    let mut pages = Vec::new();
    for (key, bytes) in above {
        let last = position_of(&key).map_err(|problem| Damage {
            position: position + 1,
            problem,
        })?;
        let page = Page::decode(last, &bytes).map_err(|problem| Damage {
            position: position + 1,
            problem,
        })?;
        if page.first() <= position {
            return Err(Damage {
                position: page.first(),
                problem: Problem::Page("a page spans the position sled was settled at"),
            });
        }
        pages.push((key, page.first()));
    }
    // Runs first, of every stream, not only of the streams of the pages
    // above: a run can reach the disk without its page
    // (`stream_index::remove_all_above`). The ids' indexes hold nothing
    // above a settled position: their segments are written with it, and
    // their other entries in memory.
    stream_index::remove_all_above(events, position).map_err(|problem| Damage {
        position: position + 1,
        problem,
    })?;
    for (key, first) in pages {
        events.remove(&key).map_err(|e| Damage {
            position: first,
            problem: storage(e),
        })?;
    }
    Ok(())
}

/// The position of the last event of `stream` at or before `at_most`, 0
/// if it has none: from the index of token ids for a token's stream, else
/// from the stream index.
fn head_of(shared: &Shared, stream: &[u8; 17], at_most: u64) -> Result<u64, Problem> {
    let Some(token) = stream_index::token_of(stream) else {
        return stream_index::head(&shared.trees.events, stream, at_most);
    };
    let positions = shared
        .indexes
        .read()
        .tokens
        .positions(&shared.trees.events, token)?;
    Ok(positions
        .into_iter()
        .rev()
        .find(|position| *position <= at_most)
        .unwrap_or(0))
}

/// Refuses a log whose head `found` is behind `known`, or that holds
/// another record at its position; `hash_at` reads the log.
fn check_known_head(
    known: Head,
    found: Head,
    hash_at: impl FnOnce(u64) -> Result<Option<Hash>, Damage>,
) -> Result<(), OpenError> {
    if known.position == 0 {
        return Ok(());
    }
    let at = hash_at(known.position).map_err(OpenError::Damaged)?;
    if found.position < known.position || at != Some(known.hash) {
        return Err(OpenError::RolledBack { known, found });
    }
    Ok(())
}

/// Refuses a log in another layout, and records this one in a new log.
/// The version is settled with everything else at the end of the first
/// open, before any append: a record is never there without it.
fn check_layout(events: &sled::Tree) -> Result<(), OpenError> {
    let expected = LAYOUT_VERSION;
    match events.get([LAYOUT]).map_err(open_storage)? {
        Some(value) => {
            let found = <[u8; 4]>::try_from(value.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    OpenError::Storage(format!(
                        "the layout version is {} bytes long, not 4",
                        value.len()
                    ))
                })?;
            if found == expected {
                Ok(())
            } else {
                Err(OpenError::Layout {
                    found: Some(found),
                    expected,
                })
            }
        }
        None if events.is_empty() => {
            events
                .insert([LAYOUT], &expected.to_be_bytes()[..])
                .map_err(open_storage)?;
            Ok(())
        }
        None => Err(OpenError::Layout {
            found: None,
            expected,
        }),
    }
}

/// The position of the last record, 0 if there is none.
fn last_position(events: &sled::Tree) -> Result<u64, Damage> {
    let last = events
        .scan_prefix([LOG])
        .keys()
        .next_back()
        .transpose()
        .map_err(|e| Damage {
            position: 0,
            problem: storage(e),
        })?;
    last.map_or(Ok(0), |key| {
        position_of(&key).map_err(|problem| Damage {
            position: 0,
            problem,
        })
    })
}

/// sled's files, synced before the journal is emptied.
///
/// sled's `flush()` syncs its database file (our copy: sled 0.34.7's only
/// waited for `sync_file_range`, which does not flush the drive's cache;
/// `vendor/README.md`). What it does not sync are the blob files, synced
/// here at each settle, and the directories that hold sled's files,
/// synced once, at open.
pub(crate) struct DurableFiles {
    dir: PathBuf,
}

impl DurableFiles {
    pub(crate) fn open(sled_dir: &Path) -> Result<DurableFiles, OpenError> {
        let files = DurableFiles {
            dir: sled_dir.to_owned(),
        };
        // New files sled created on open must be reachable after a crash.
        // (What sled recovered it syncs itself, at open: `vendor/README.md`.)
        sync_dir(sled_dir).map_err(io_error(sled_dir))?;
        if let Some(parent) = sled_dir.parent() {
            sync_dir(parent).map_err(io_error(parent))?;
        }
        Ok(files)
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        // sled writes a page (a leaf with its values) over a quarter of a
        // segment, 128 KiB, to a file of its own, and never syncs it: a
        // leaf of three pages of the log each holding one record of 48 KiB
        // (the limit is 64 KiB) passes that (the power-loss test's `LARGE`).
        let blobs = self.dir.join("blobs");
        if let Ok(entries) = fs::read_dir(&blobs) {
            let mut any = false;
            for entry in entries {
                any = true;
                match File::open(entry?.path()) {
                    Ok(blob) => blob.sync_all()?,
                    // sled removes a blob once no page points at it, at any
                    // moment: one gone since the listing has nothing left
                    // to make durable.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
            if any {
                sync_dir(&blobs)?;
            }
        }
        Ok(())
    }
}

/// How many records `verify` walks between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

/// A new event as its appender made it ready: all the writer adds is the
/// position and time (`EncodedEvent::place`) and the chain (`record::seal`).
/// The encoding is done on the appender's thread because the writer's
/// work is what every appender of a group waits for.
struct Prepared {
    encoded: EncodedEvent,
    streams: Vec<[u8; 17]>,
}

impl Prepared {
    /// Encodes `event`, and checks that its record reads back as `event`:
    /// placing it changes only the position and time.
    fn new(event: NewEvent) -> Result<Prepared, AppendError> {
        let streams = Stream::of(&event).map(stream_key).collect();
        let encoded = backend::prepare(&event)?;
        Ok(Prepared { encoded, streams })
    }
}

/// The position of the event `id`, at or below `head`, as the index of
/// event ids gives it; checked against the record there, since a retry
/// is answered with that position as where its events are, and a keyed
/// command with the events there: an index entry edited to name another
/// record must not pass.
fn indexed_position(shared: &Shared, id: EventId, head: u64) -> Result<Option<u64>, Damage> {
    let events = &shared.trees.events;
    let found = shared
        .indexes
        .read()
        .ids
        .positions(events, id.as_u128())
        .map_err(|problem| Damage {
            position: 0,
            problem,
        })?;
    let Some(position) = found.into_iter().find(|position| *position <= head) else {
        return Ok(None);
    };
    let record = record_bytes(events, position)?.ok_or(Damage {
        position,
        problem: Problem::Missing,
    })?;
    let event = stored_event(position, &record)?;
    if event.envelope.event_id != id {
        return Err(Damage {
            position,
            problem: Problem::IndexDisagrees("it does not hold the event id looked up"),
        });
    }
    Ok(Some(position))
}

/// Checks that a page read in order starts where the previous one ended,
/// at `expected`; or, for the first page of a read (`first_read`), that it
/// holds `expected`.
fn check_starts_at(page: &Page<'_>, expected: u64, first_read: bool) -> Result<(), Damage> {
    let first = page.first();
    if first > expected {
        return Err(Damage {
            position: expected,
            problem: Problem::Gap { expected },
        });
    }
    if first < expected && !first_read {
        return Err(Damage {
            position: expected,
            problem: Problem::Page("the page overlaps the one before it"),
        });
    }
    Ok(())
}

impl SledLog {
    /// Reads records `from..from + limit` up to the durable head, checking
    /// each, and returns what `each` makes of each, given its bytes.
    fn read_as<T>(
        &self,
        from: u64,
        limit: usize,
        read: &mut Vec<T>,
        mut each: impl FnMut(StoredEvent, &[u8]) -> T,
    ) -> Result<(), Damage> {
        let from = from.max(1);
        let head = self.head().position;
        if from > head || limit == 0 {
            return Ok(());
        }
        let last = head.min(from.saturating_add(limit as u64 - 1));
        // Sized once: growing it moved every event read so far again
        // (with the moves of each push, about 4% of the samples of
        // replaying the scale bench's 1M-event log).
        read.reserve(usize::try_from(last - from + 1).unwrap_or(limit));
        let mut expected = from;
        for entry in self
            .shared
            .trees
            .events
            .range(log_key(from)..=log_key(u64::MAX))
        {
            if expected > last {
                break;
            }
            let damage = |problem| Damage {
                position: expected,
                problem,
            };
            let (key, bytes) = entry.map_err(|e| damage(storage(e)))?;
            let page_last = position_of(&key).map_err(damage)?;
            let page = Page::decode(page_last, &bytes).map_err(damage)?;
            // Only the first page may start before `from`.
            check_starts_at(&page, expected, expected == from)?;
            for (position, record) in page.iter() {
                if position < expected {
                    continue;
                }
                if position > last {
                    break;
                }
                read.push(each(stored_event(position, record)?, record));
                expected += 1;
            }
        }
        if expected <= last {
            return Err(Damage {
                position: expected,
                problem: Problem::Missing,
            });
        }
        Ok(())
    }
}

impl EventLog for SledLog {
    fn append(
        &self,
        batch: Vec<NewEvent>,
        expectation: Expectation,
    ) -> Result<Vec<u64>, AppendError> {
        let requests = self.requests.as_ref().ok_or(AppendError::Closed)?;
        check_batch_size(batch.len())?;
        let _appending = Appending::enter(&self.shared.appending);
        let batch = batch
            .into_iter()
            .map(Prepared::new)
            .collect::<Result<_, _>>()?;
        let (reply, answer) = reply::reply();
        requests
            .send(Request {
                job: Job::Events { batch, expectation },
                reply,
            })
            .map_err(|_| AppendError::Closed)?;
        answer.wait()
    }

    fn append_records(&self, records: Vec<Vec<u8>>) -> Result<Head, AppendError> {
        let requests = self.requests.as_ref().ok_or(AppendError::Closed)?;
        let (reply, answer) = reply::reply();
        requests
            .send(Request {
                job: Job::Records(records),
                reply,
            })
            .map_err(|_| AppendError::Closed)?;
        answer.wait()?;
        Ok(self.head())
    }

    fn head(&self) -> Head {
        let mut durable = self.shared.durable.lock();
        // An appender is answered only after `acknowledged` covers its
        // append, so a head asked for after the answer covers it too.
        let acknowledged = self.shared.acknowledged.load(Ordering::Acquire);
        let shared = &self.shared;
        shared.grew.wait_while(&mut durable, |head| {
            head.position < acknowledged && !shared.poisoned.load(Ordering::Acquire)
        });
        *durable
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, Damage> {
        let mut read = Vec::new();
        self.read_into(from, limit, &mut read)?;
        Ok(read)
    }

    fn read_into(
        &self,
        from: u64,
        limit: usize,
        into: &mut Vec<StoredEvent>,
    ) -> Result<(), Damage> {
        self.read_as(from, limit, into, |event, _| event)
    }

    fn read_records(&self, from: u64, limit: usize) -> Result<Vec<StoredRecord>, Damage> {
        let mut read = Vec::new();
        self.read_as(from, limit, &mut read, |event, bytes| StoredRecord {
            event,
            bytes: bytes.to_vec(),
        })?;
        Ok(read)
    }

    fn read_stream(
        &self,
        stream: Stream,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Damage> {
        let head = self.head().position;
        let stream = stream_key(stream);
        let tree = &self.shared.trees.events;
        let mut events = Vec::new();
        if stream_index::carries_records(&stream) {
            stream_index::for_each_record(tree, &stream, from, head, |position, record| {
                if events.len() >= limit {
                    return Ok(false);
                }
                events.push(event_of_stream(position, record, &stream)?);
                Ok(true)
            })?;
            return Ok(events);
        }
        let damage = |position| move |problem| Damage { position, problem };
        let positions: Box<dyn Iterator<Item = Result<u64, Problem>>> =
            match stream_index::token_of(&stream) {
                Some(token) => {
                    let positions = self.shared.indexes.read().tokens.positions(tree, token);
                    let wanted = move |position: &u64| (from..=head).contains(position);
                    Box::new(
                        positions
                            .map_err(damage(from))?
                            .into_iter()
                            .filter(wanted)
                            .map(Ok),
                    )
                }
                None => Box::new(
                    stream_index::positions_between(tree, &stream, from, head)
                        .map_err(damage(from))?,
                ),
            };
        // Nearby events of a stream often share a page: keep the last one.
        let mut page: Option<StoredPage> = None;
        for position in positions {
            let position = position.map_err(damage(from))?;
            if events.len() >= limit {
                break;
            }
            if page.as_ref().is_none_or(|p| p.last < position) {
                page = StoredPage::at_or_after(tree, position)?;
            }
            let missing = Damage {
                position,
                problem: Problem::Missing,
            };
            let record = page
                .as_ref()
                .ok_or(missing.clone())?
                .record(position)?
                .ok_or(missing)?;
            events.push(event_of_stream(position, record, &stream)?);
        }
        Ok(events)
    }

    /// Asks the index of event ids: its segments' filters first, then a
    /// chunk of each segment that may hold `id`. The writer's filter of
    /// every id (`known_ids.rs`) is its own, on its thread: a lookup here
    /// does not wait for the writer.
    fn position_of(&self, id: EventId) -> Result<Option<u64>, Damage> {
        let durable = self.head().position;
        indexed_position(&self.shared, id, durable)
    }

    fn stream_head(&self, stream: Stream) -> Result<u64, Damage> {
        let durable = self.head().position;
        head_of(&self.shared, &stream_key(stream), durable).map_err(|problem| Damage {
            position: 0,
            problem,
        })
    }

    fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        let mut head = self.shared.durable.lock();
        if head.position < position {
            let _ = self.shared.grew.wait_while_for(
                &mut head,
                |h| h.position < position && !self.shared.poisoned.load(Ordering::Acquire),
                timeout,
            );
        }
        head.position
    }

    fn verify_with(&self, progress: &mut dyn FnMut(u64)) -> Result<Verified, Damage> {
        let mut chain = ChainCheck::new();
        let mut clamped = 0;
        // The copies are checked up to the durable head as the walk starts:
        // a group is wholly in sled, its copies too, before it is durable,
        // whereas a later one may be in the middle of going in.
        let durable = self.head().position;
        // The first half of each record's hash, by position, to check its
        // company's copy with: 16 bytes a record, where the whole would be
        // 32; a copy that differs and matches it is a second preimage of
        // 128 bits of BLAKE3.
        let mut hashes = Vec::with_capacity(usize::try_from(durable).unwrap_or(0));
        let events = &self.shared.trees.events;
        let mut ids = EVENT_IDS.check(events, durable)?;
        let mut tokens = TOKENS.check(events, durable)?;
        for entry in events.scan_prefix([LOG]) {
            let expected = chain.head().position + 1;
            let damage = |problem| Damage {
                position: expected,
                problem,
            };
            let (key, bytes) = entry.map_err(|e| damage(storage(e)))?;
            let last = position_of(&key).map_err(damage)?;
            let page = Page::decode(last, &bytes).map_err(damage)?;
            check_starts_at(&page, expected, false)?;
            for (position, record) in page.iter() {
                let event = chain.check(record)?;
                clamped += u64::from(event.clock_clamped);
                if position <= durable {
                    hashes.push(stream_index::hash_half(&event.hash));
                }
                ids.expect(event.envelope.event_id.as_u128(), position);
                for stream in streams(&event.envelope) {
                    if let Stream::Token(token) = stream {
                        tokens.expect(token.as_u128(), position);
                    }
                }
                ids.passed(events, position)?;
                tokens.passed(events, position)?;
                if position % PROGRESS_EVERY == 0 {
                    progress(position);
                }
            }
        }
        let previous = chain.head();
        // Against the head as the walk started: appends since may have
        // landed behind the walk.
        if previous.position < durable {
            return Err(Damage {
                position: previous.position + 1,
                problem: Problem::Missing,
            });
        }
        ids.finish()?;
        tokens.finish()?;
        // The copies take about as long as the chain: the count goes on
        // past the head rather than stand at it.
        let mut copies = 0;
        let beyond = stream_index::check_copies(
            events,
            &hashes,
            |envelope| stream_key(Stream::Company(envelope.company)),
            || {
                copies += 1;
                if copies % PROGRESS_EVERY == 0 {
                    progress(durable + copies);
                }
            },
        )?;
        // Copies past those checked are of appends that landed since, whose
        // pages are there (a page goes in before its copies), or else were
        // left behind when their records were cut.
        let last = last_position(events)?;
        if let Some(position) = beyond.into_iter().filter(|p| *p > last).min() {
            return Err(Damage {
                position,
                problem: Problem::CopyDisagrees("has no record in the log"),
            });
        }
        progress(2 * durable);
        Ok(Verified {
            records: previous.position,
            head: previous,
            clamped,
        })
    }
}

impl Drop for SledLog {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has made every append
        // already sent durable, and settled sled.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly at the first surprise"
    )]

    use std::time::Instant;

    use super::writer::gather;
    use super::*;
    use tokenledger_events::encode_envelope;

    fn settled(log: &SledLog) -> Option<u64> {
        let value = log.shared.trees.events.get([SETTLED]).unwrap()?;
        Some(u64::from_be_bytes(value.as_ref().try_into().unwrap()))
    }

    /// An event of company 1 with id `id`.
    fn event(id: u128) -> NewEvent {
        let company = tokenledger_events::CompanyId::from_u128(1);
        NewEvent {
            event_id: EventId::from_u128(id),
            actor: tokenledger_events::Actor::System,
            company,
            event: tokenledger_events::Event::CompanyCreated {
                company,
                name: tokenledger_events::Name::new("Acme").unwrap(),
            },
        }
    }

    fn request() -> Request {
        Request {
            job: Job::Records(Vec::new()),
            reply: reply::reply().0,
        }
    }

    #[test]
    fn a_group_waits_for_appenders_on_their_way_and_no_longer() {
        let (requests, inbox) = crossbeam_channel::unbounded();
        let appending = AtomicUsize::new(1);
        let started = Instant::now();
        let mut group = vec![request()];
        gather(&inbox, &mut group, &appending, Duration::from_secs(30));
        assert_eq!(group.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no appender was on its way"
        );

        // One more on its way, which sends a moment later.
        appending.store(2, Ordering::Release);
        let late = std::thread::spawn({
            let requests = requests.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                requests.send(request()).unwrap();
            }
        });
        let mut group = vec![request()];
        gather(&inbox, &mut group, &appending, Duration::from_secs(30));
        late.join().unwrap();
        assert_eq!(group.len(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it stopped once both came"
        );

        // One that never comes is waited for until the deadline only.
        let mut group = vec![request()];
        gather(&inbox, &mut group, &appending, Duration::from_millis(50));
        assert_eq!(group.len(), 1);
        drop(requests);
    }

    #[test]
    fn the_journal_is_emptied_into_sled_as_it_fills_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        // Three frames of a block each.
        let options = Options {
            journal_bytes: Some(3 * 4096),
            ..Options::default()
        };
        let log = SledLog::open(dir.path(), options).unwrap();
        let mut most = 0;
        for id in 1..=50 {
            log.append(vec![event(id)], Expectation::Any).unwrap();
            // One frame, of one record, per append.
            most = most.max(crate::journal::read(&journal).unwrap().len());
        }
        // The first two appends fill it without a settle; the third's
        // settle may come after its answer.
        assert!((2..=3).contains(&most), "{most}");
        drop(log);
        assert!(crate::journal::read(&journal).unwrap().is_empty());
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        assert_eq!(log.verify().unwrap().records, 50);
        assert_eq!(log.read(1, 100).unwrap().len(), 50);
    }

    #[test]
    fn a_retry_or_look_the_index_of_event_ids_names_at_another_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        log.append(vec![event(1)], Expectation::Any).unwrap();
        log.append(vec![event(2)], Expectation::Any).unwrap();
        // As if an entry had been edited: event 3 said to be at position 1.
        log.shared.indexes.write().ids.add(3, 1);
        let refused = log.append(vec![event(3)], Expectation::Any).unwrap_err();
        let expected = Damage {
            position: 1,
            problem: Problem::IndexDisagrees("it does not hold the event id looked up"),
        };
        assert_eq!(refused, AppendError::Io(expected.to_string()));
        // Nor does a keyed command's look for it.
        let id = tokenledger_events::EventId::from_u128(3);
        assert_eq!(log.position_of(id), Err(expected));
        assert_eq!(log.head().position, 2);
        // A true retry still gets its position back.
        assert_eq!(log.append(vec![event(2)], Expectation::Any), Ok(vec![2]));
    }

    #[test]
    fn a_stream_read_refuses_a_record_its_index_names_wrongly() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        log.append(vec![event(1), event(2)], Expectation::Any)
            .unwrap();
        let token = tokenledger_events::TokenId::from_u128(0x70);
        // As if an entry had been edited: a company's record put in a
        // token's stream.
        log.shared.indexes.write().tokens.add(token.as_u128(), 2);
        assert_eq!(
            log.read_stream(Stream::Token(token), 1, 10),
            Err(Damage {
                position: 2,
                problem: Problem::IndexDisagrees("it is not in the stream read"),
            })
        );
    }

    #[test]
    fn a_new_log_is_settled_at_open_before_any_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        assert_eq!(settled(&log), Some(0));
    }

    #[test]
    fn a_log_that_was_never_settled_is_settled_at_its_end_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        log.append(vec![event(1), event(2)], Expectation::Any)
            .unwrap();
        drop(log);
        // As a log written before `H` existed would be.
        let db = open_sled(&dir.path().join("sled")).unwrap();
        db.open_tree("events").unwrap().remove([SETTLED]).unwrap();
        db.flush().unwrap();
        drop(db);
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        assert_eq!(settled(&log), Some(2));
        assert_eq!(log.head().position, 2);
    }

    #[test]
    fn a_blob_sled_removed_since_the_listing_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        fs::write(dir.path().join("db"), b"").unwrap();
        fs::write(blobs.join("1"), b"kept").unwrap();
        // Listed, then gone when opened: as a blob sled removes between.
        std::os::unix::fs::symlink(blobs.join("removed"), blobs.join("2")).unwrap();
        let files = DurableFiles::open(dir.path()).unwrap();
        files.sync().unwrap();
    }

    /// A copy in a company's stream that is a well-sealed record, but not
    /// the log's, and a copy that is there twice: both are found, though
    /// each copy's own hash holds.
    #[test]
    fn a_forged_or_repeated_copy_in_a_companys_stream_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        log.append((1..=4).map(event).collect(), Expectation::Any)
            .unwrap();
        // The answer can come before the group is in sled; the head waits
        // for it (`SledLog::head`), and the tree is read directly below.
        assert_eq!(log.head().position, 4);
        let events = &log.shared.trees.events;
        let stream = stream_key(Stream::Company(event(1).company));
        let run = stream_index::key(&stream, 1);
        let original = events.get(run).unwrap().unwrap();
        let entries: Vec<(u64, Vec<u8>)> = stream_index::records(&run, &original)
            .unwrap()
            .into_iter()
            .map(|(p, r)| (p, r.to_vec()))
            .collect();
        let encode = |entries: &[(u64, Vec<u8>)]| {
            stream_index::encode_records(entries.iter().map(|(p, r)| (*p, r.as_slice())))
        };
        let copy_of = |position: u64| log.read(position, 1).unwrap().remove(0).envelope;
        assert!(log.verify().is_ok());

        // Position 3's copy, sealed after another predecessor.
        let mut forged = entries.clone();
        let envelope = encode_envelope(&copy_of(3)).unwrap();
        forged[2].1 = record::seal(&[7; 32], 0, &envelope).0;
        events.insert(run, encode(&forged)).unwrap();
        let damage = log.verify().unwrap_err();
        assert_eq!(
            (damage.position, damage.problem),
            (3, Problem::CopyDisagrees("is not the record in the log"))
        );

        // Position 3 again in a run of its own.
        events.insert(run, encode(&entries)).unwrap();
        events
            .insert(stream_index::key(&stream, 3), encode(&entries[2..3]))
            .unwrap();
        let damage = log.verify().unwrap_err();
        assert_eq!(
            (damage.position, damage.problem),
            (3, Problem::CopyDisagrees("is there twice"))
        );
    }

    /// `verify` while appends land: copies of records the walk did not
    /// reach are not damage.
    #[test]
    fn verify_passes_while_appends_land() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        let done = AtomicBool::new(false);
        let mut verified = 0;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for id in (1..=2_000).step_by(4) {
                    log.append((id..id + 4).map(event).collect(), Expectation::Any)
                        .unwrap();
                }
                done.store(true, Ordering::Release);
            });
            while !done.load(Ordering::Acquire) {
                log.verify().unwrap();
                verified += 1;
            }
        });
        assert!(verified > 0);
        assert_eq!(log.verify().unwrap().records, 2_000);
    }

    /// The count goes on through the copies, and ends at twice the head.
    #[test]
    fn verify_reports_progress_through_both_passes() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        let records = 2 * PROGRESS_EVERY + 1;
        for first in (1..=u128::from(records)).step_by(1_000) {
            let last = (first + 999).min(u128::from(records));
            log.append((first..=last).map(event).collect(), Expectation::Any)
                .unwrap();
        }
        let mut reported = Vec::new();
        log.verify_with(&mut |done| reported.push(done)).unwrap();
        let step = PROGRESS_EVERY;
        let expected = [
            step,
            2 * step,
            records + step,
            records + 2 * step,
            2 * records,
        ];
        assert_eq!(reported, expected);
    }
}
