//! What a settle leaves behind for the next open to check: in sled, the
//! journal's generation and key it expects; in the data directory, a mark
//! when a settle failed.
//!
//! `G` → the generation the journal is emptied to by this settle (u64 BE)
//! ‖ the fingerprint of its key ‖ the fingerprint of the key before it.
//! Written in the settle's batch, with `H`, before the journal's new
//! header: so an open finds the journal at that generation, or, if the
//! settle was cut short before its header was written, at the one before,
//! with the key before. Anything else is a journal that sled never agreed
//! with: removed and made anew, rolled back to an older copy, or a header
//! write the disk lost. Its records could be missing acknowledged events,
//! so the open is refused rather than the journal taken as it is.
//!
//! `settle-failed` is created and synced when a settle's flush or fsync
//! fails. Linux marks the pages of a failed write-back clean and leaves them
//! readable, and reports the error to the file descriptors open then, not
//! to one opened later: a reopen would read sled's settled position from
//! the page cache, see the journal agree with it, fsync a fresh descriptor
//! without error, and empty the journal, the only durable copy of the
//! acknowledged events. An open that finds the mark does not trust sled's
//! files: it copies what sled reads into fresh files (as compaction does),
//! syncs them, puts them in place, replays the journal over them and
//! settles; only once that settle has succeeded are the mark and the
//! journal's frames cleared (`SledLog::open`).

use std::io;
use std::path::Path;

use crate::dirs::{create_private_file, sync_dir};
use crate::journal_header::{Fingerprint, Header};
use crate::sled_log::open_storage;
use crate::sled_options::OpenError;

/// The key of the journal's expected generation.
pub(crate) const JOURNAL_KEY: u8 = b'G';

/// The file that marks a failed settle.
pub(crate) const FAILED_SETTLE: &str = "settle-failed";

/// The value of `G` for a settle that empties the journal from `current`
/// to `next`.
pub(crate) fn record(next: &Header, current: &Header) -> [u8; 40] {
    let mut value = [0; 40];
    let (generation, rest) = value.split_at_mut(8);
    let (next_key, current_key) = rest.split_at_mut(16);
    generation.copy_from_slice(&next.generation.to_be_bytes());
    next_key.copy_from_slice(&next.fingerprint());
    current_key.copy_from_slice(&current.fingerprint());
    value
}

/// Checks the journal's `header` against `G` in `events`: it must be the
/// generation and key the last settle emptied it to, or, if that settle
/// was cut short after sled's part and before the journal's header was
/// written, the ones before (whose records sled holds already). sled that
/// records nothing is a new log, or one last settled before `G` was.
pub(crate) fn check(events: &sled::Tree, header: &Header, path: &Path) -> Result<(), OpenError> {
    let Some(value) = events.get([JOURNAL_KEY]).map_err(open_storage)? else {
        return Ok(());
    };
    let bad = || OpenError::Storage("the journal's recorded generation is not 40 bytes".into());
    let value = <&[u8; 40]>::try_from(value.as_ref()).map_err(|_| bad())?;
    let (generation, rest) = value.split_first_chunk::<8>().ok_or_else(bad)?;
    let (next, current) = rest.split_first_chunk::<16>().ok_or_else(bad)?;
    let expected = u64::from_be_bytes(*generation);
    let found = header.generation;
    let fingerprint: Fingerprint = header.fingerprint();
    let emptied = found == expected && fingerprint == *next;
    let cut_short = found.checked_add(1) == Some(expected) && current == fingerprint.as_slice();
    if emptied || cut_short {
        return Ok(());
    }
    Err(OpenError::WrongJournal {
        path: path.to_owned(),
        found,
        expected,
    })
}

/// Leaves the durable mark of a failed settle in `dir`; returns the
/// settle's `error`, with what went wrong in marking it, if anything.
pub(crate) fn mark_failed(dir: &Path, error: io::Error) -> io::Error {
    let path = dir.join(FAILED_SETTLE);
    let marked = create_private_file(&path)
        .and_then(|file| file.sync_all())
        .and_then(|()| sync_dir(dir));
    match marked {
        Ok(()) => error,
        Err(mark) => io::Error::other(format!(
            "{error}; and marking the failed settle in `{}` failed too ({mark}): the disk is \
             failing, and a reopen may trust data that never reached it",
            path.display()
        )),
    }
}

/// Whether `dir` holds the mark of a failed settle.
pub(crate) fn is_marked(dir: &Path) -> Result<bool, OpenError> {
    let path = dir.join(FAILED_SETTLE);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(OpenError::Io { path, error }),
    }
}

/// Removes the mark, once a settle through fresh files has succeeded.
pub(crate) fn clear_mark(dir: &Path) -> io::Result<()> {
    let path = dir.join(FAILED_SETTLE);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
