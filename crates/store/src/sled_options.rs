//! How a log on sled is opened ([`Options`]), why an open is refused
//! ([`OpenError`]), and the fault points tests fail its I/O at.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokenledger_events::Timestamp;

use crate::checkpoint::{CheckpointError, CheckpointKey};
use crate::log::{Damage, Head, hex};

/// A place in an append where a test can make I/O fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Just before a group is written to the journal and sled (a full
    /// disk, say). Nothing has been written yet.
    Commit,
    /// After a group's frame is written to the journal, as a failure of
    /// that write: the frame is there, and must be wiped out (and the
    /// wiping synced) before the append is answered with the error.
    Write,
    /// When a failed frame is wiped out of the journal: the failure leaves
    /// a frame that may read as whole, and poisons the log.
    Undo,
    /// After a group is written, before the journal is synced to disk.
    Sync,
    /// On the inserter, before a group goes into sled. The group is in
    /// the journal, and its appends may be answered already.
    Insert,
    /// On the writer, when sled is flushed and synced at a settle (its
    /// batch, with the settled position, is in sled's memory): failing
    /// here is a failed flush or fsync. The journal still holds everything
    /// since the last settle, and the appends are answered.
    Settle,
    /// After the journal's sync for a group returned, before its appends
    /// are answered. Failing here fails the group as a failed sync does.
    Synced,
    /// In a settle, after sled's batch with the settled position went in,
    /// before sled is flushed (where `Settle` fails too).
    SettleBatch,
    /// In a settle, after sled's flush (which syncs its database file),
    /// before the blob files are synced.
    SledFlushed,
    /// In a settle, after sled's files are synced, before the journal is
    /// emptied.
    FilesSynced,
    /// In a compaction, between the two renames that swap sled's files
    /// (the old ones moved aside, the copy not yet in their place).
    Swap,
    /// In a compaction, once the copy is in place and the directory
    /// synced, before the old files are removed.
    Swapped,
    /// When the journal is emptied after a settle, after each copy of its
    /// new header is written and synced: the first passage leaves the
    /// first copy new and the second old.
    HeaderCopied,
}

/// Decides whether I/O fails at a [`FaultPoint`]; for tests.
pub type FaultInjector = Arc<dyn Fn(FaultPoint) -> io::Result<()> + Send + Sync>;

/// The clock the log reads for recorded-at times; for tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// How to open a log.
#[derive(Clone, Default)]
pub struct Options {
    /// A head recorded earlier outside the data directory: opening refuses
    /// a log that does not contain it (truncated, rolled back, or forked).
    pub known_head: Option<Head>,
    /// Signs the log's head, in the data directory's `signed-head` file,
    /// whenever sled settles and when the log closes; opening refuses a log
    /// whose signed head is missing (unless the log holds no record), forged, or
    /// names a record the log does not hold. Keep it outside the data
    /// directory. A log written without a key is signed only by
    /// [`SledLog::sign_head`], never on its own.
    pub checkpoint_key: Option<CheckpointKey>,
    /// Fault injection, for tests.
    pub faults: Option<FaultInjector>,
    /// The clock, for tests; the system clock by default.
    pub clock: Option<Clock>,
    /// How many bytes the journal may grow to before sled is flushed and
    /// synced and the journal emptied; [`JOURNAL_BYTES`] by default. A
    /// smaller journal is replayed faster after a crash; each emptying
    /// costs one sled flush and `fsync`.
    pub journal_bytes: Option<u64>,
    /// Refuse a directory that holds no log ([`OpenError::NoLog`]) rather
    /// than create one there, and create nothing: for readers, so that a
    /// mistyped path is not answered as an empty, intact log.
    pub must_exist: bool,
}

/// The journal's default size limit: 32 MiB, 8,192 frames of a block
/// each (a group of up to about 15 small events), or about 100,000 small
/// events in larger groups; replayed into sled in well under a second after
/// a crash. Each frame takes at least a 4 KiB block (`journal.rs`), so a
/// limit of 8 MiB, as when frames were packed, settled every 2,048 groups
/// rather than every 35,000 small events: four times as many settles, and
/// segments of the ids' indexes (`segments.rs`), as before, not sixteen.
pub const JOURNAL_BYTES: u64 = 32 << 20;

/// Why a log could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) has the directory open.
    Locked(PathBuf),
    /// The path exists and is not a directory.
    NotADirectory(PathBuf),
    /// [`Options::must_exist`] was asked, and the directory holds no log
    /// (or does not exist).
    NoLog {
        /// The directory.
        path: PathBuf,
        /// What a log has and it lacks.
        missing: &'static str,
    },
    /// The directory could not be created or read.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// sled refused to open the database.
    Storage(String),
    /// A record at or above the position sled was last settled at is
    /// damaged or missing, or the journal holds a record that does not
    /// continue the log.
    Damaged(Damage),
    /// A frame of the journal, other than the last, is damaged, or
    /// neither of its headers is whole, or it is in an earlier format.
    DamagedJournal {
        /// The journal's path.
        path: PathBuf,
        /// Where the damage starts, in bytes.
        offset: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The journal is not the one sled's last settle recorded: another
    /// generation, or another key. It was removed and made anew, rolled
    /// back, or a write of its header was lost, and it may lack
    /// acknowledged events.
    WrongJournal {
        /// The journal's path.
        path: PathBuf,
        /// The journal's generation.
        found: u64,
        /// The generation sled recorded.
        expected: u64,
    },
    /// The directory holds a log in a layout this build does not read.
    Layout {
        /// The layout version the log records; `None` for a log written
        /// before layouts were recorded.
        found: Option<u32>,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The signed head (see [`Options::checkpoint_key`]) does not vouch
    /// for the log: missing, damaged, forged, or naming a record the log
    /// does not hold.
    SignedHead {
        /// The signed head's file.
        path: PathBuf,
        /// What is wrong.
        error: CheckpointError,
    },
    /// [`SledLog::sign_head`] was asked to sign a log that has a signed
    /// head already.
    AlreadySigned(PathBuf),
    /// [`SledLog::sign_head`] was asked, without a known head, to sign a
    /// log kept with that key before (a checkpoint of the state is signed
    /// with it), whose signed head was removed.
    KeyedBefore {
        /// The checkpoint file signed with the key.
        checkpoint: PathBuf,
    },
    /// The log does not contain the known head: it was truncated, rolled back
    /// or replaced.
    RolledBack {
        /// The head that was known.
        known: Head,
        /// The head found.
        found: Head,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked(path) => write!(
                f,
                "`{}` is in use by another process; only one process may open a data directory",
                path.display()
            ),
            OpenError::NotADirectory(path) => {
                write!(f, "`{}` is not a directory", path.display())
            }
            OpenError::NoLog { path, missing } => {
                write!(f, "`{}` holds no log: {missing}", path.display())
            }
            OpenError::Io { path, error } => write!(f, "`{}`: {error}", path.display()),
            OpenError::Storage(e) => write!(f, "the database could not be opened: {e}"),
            OpenError::Damaged(damage) => write!(f, "the log is damaged at {damage}"),
            OpenError::DamagedJournal {
                path,
                offset,
                problem,
            } => write!(
                f,
                "the journal `{}` is damaged at byte {offset}: {problem}",
                path.display()
            ),
            OpenError::WrongJournal {
                path,
                found,
                expected,
            } => write!(
                f,
                "the journal `{}` is generation {found}, and sled's last settle recorded generation {expected} (or the one before it) with another key: the journal was replaced, rolled back or lost a write, and may lack acknowledged events",
                path.display()
            ),
            OpenError::Layout {
                found: Some(found),
                expected,
            } => write!(
                f,
                "the log is in layout version {found}; this build reads only version {expected}"
            ),
            OpenError::Layout {
                found: None,
                expected,
            } => write!(
                f,
                "the log records no layout version: it was written before layouts were recorded, and this build reads only version {expected}"
            ),
            OpenError::SignedHead { path, error } => write!(
                f,
                "the signed head `{}` does not vouch for this log: {error}",
                path.display()
            ),
            OpenError::AlreadySigned(path) => write!(
                f,
                "the log has a signed head already (`{}`); remove it first to sign the log's head anew",
                path.display()
            ),
            OpenError::KeyedBefore { checkpoint } => write!(
                f,
                "the log was kept with this checkpoint key before (`{}` is signed with it), so its signed head was removed, which is suspect: its records may have been changed since; compare the log with a head kept outside the data directory and pass that head as --known-head to sign it",
                checkpoint.display()
            ),
            OpenError::RolledBack { known, found } => write!(
                f,
                "the log does not contain the known head (position {}, hash {}); its head is at position {} (hash {}): it was truncated, rolled back or replaced",
                known.position,
                hex(&known.hash),
                found.position,
                hex(&found.hash)
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { error, .. } => Some(error),
            OpenError::Damaged(damage) => Some(damage),
            OpenError::SignedHead { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Fails at `point` if `faults` says so.
pub(crate) fn inject(faults: &Option<FaultInjector>, point: FaultPoint) -> io::Result<()> {
    match faults {
        Some(inject) => inject(point),
        None => Ok(()),
    }
}
