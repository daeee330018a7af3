//! Compaction: sled's files rewritten with only what the log holds.
//!
//! sled 0.34 reclaims the space of rewritten pages lazily, and every
//! append rewrites the leaves it lands in: the scale benchmarks' 5-million-
//! event log kept 19.4 GB of files (23.3 GB in layout 6, whose indexes
//! were merged into at every event). Copied key by key into a fresh
//! database it took 3.4 GB (4.3 GB), and sled opened the copy in 97 to
//! 123 ms (layout 6: 163 to 193 ms rather than 311 to 392; throwaway
//! programs).
//!
//! The copy is made beside the log (`sled.compacting`), reopened (so that
//! it is read back from its files, not from the memory of the sled that
//! wrote it), compared with the log key by key, synced, and then put in
//! its place by two renames; the old files are kept as `sled.replaced`
//! until the next open has checked and settled the copy, and removed then.
//! Opening finishes or undoes whatever a crash interrupted
//! ([`finish_interrupted`]), before sled is opened: a log is never
//! without one whole copy of its files.
//!
//! The same copy rebuilds sled's files after a settle failed
//! ([`rebuild`], `settle_record.rs`): written afresh and synced through
//! new descriptors, they do not depend on pages whose write-back failed.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::dirs::sync_dir;
use crate::journal;
use crate::sled_log::{
    DurableFiles, SledLog, io_error, journal_error, open_sled, open_storage, waiting_for_sled,
};
use crate::sled_options::{FaultInjector, FaultPoint, OpenError, Options, inject};

/// Where the copy is made.
const COMPACTING: &str = "sled.compacting";
/// Where the old files wait while the copy takes their place.
pub(crate) const REPLACED: &str = "sled.replaced";
/// Keys per `sled::Batch` of the copy.
const BATCH: u64 = 10_000;

/// What [`SledLog::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The size of sled's files before, in bytes.
    pub before: u64,
    /// Their size after, in bytes.
    pub after: u64,
    /// The keys copied.
    pub keys: u64,
}

impl SledLog {
    /// Rewrites the sled files of the log in `dir` with only what the log
    /// holds, and returns their sizes before and after. The log must not
    /// be open elsewhere; it is opened with `options` first (so a crash is
    /// recovered and a known head checked), then closed and copied.
    ///
    /// Nothing is replaced unless the copy holds every key and value of
    /// the log, byte for byte, and is synced. An error or a crash during
    /// the swap leaves the old files or the copy in place, whole, and the
    /// next open finishes or undoes the swap.
    ///
    /// ```
    /// use tokenledger_store::{Options, SledLog};
    ///
    /// let dir = tempfile::tempdir()?;
    /// drop(SledLog::open(dir.path(), Options::default())?);
    /// let compacted = SledLog::compact(dir.path(), Options::default())?;
    /// println!("sled's files: {} bytes, then {}", compacted.before, compacted.after);
    /// let log = SledLog::open(dir.path(), Options::default())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(dir: &Path, options: Options) -> Result<Compacted, OpenError> {
        SledLog::compact_with(dir, options, &mut |_, _| {})
    }

    /// [`SledLog::compact`], reporting its progress every 10,000 keys:
    /// `progress(copied, 0)` while copying (how many keys there are is
    /// known only once they are all read), then `progress(checked, keys)`
    /// while checking the copy, and once more when the check is done.
    pub fn compact_with(
        dir: &Path,
        options: Options,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Compacted, OpenError> {
        let faults = options.faults.clone();
        let log = SledLog::open(dir, options)?;
        // The same open file description as the log's lock: the directory
        // stays this process's after the log closes.
        let lock = log.lock.try_clone().map_err(io_error(dir))?;
        drop(log);
        let journal = dir.join("journal");
        if !journal::read(&journal)
            .map_err(journal_error(&journal))?
            .is_empty()
        {
            return Err(OpenError::Storage(
                "the log did not close cleanly (its journal is not empty), so it was not compacted"
                    .to_owned(),
            ));
        }
        let sled_dir = dir.join("sled");
        // No copy is left from before: opening removed any.
        let copy_dir = dir.join(COMPACTING);
        let compacted = copy(&sled_dir, &copy_dir, progress)?;
        swap(dir, &faults)?;
        drop(lock);
        Ok(compacted)
    }
}

/// Puts the copy in `sled.compacting` in the place of sled's files, which
/// are kept as `sled.replaced` until the next open has settled the copy
/// ([`remove_replaced`]).
fn swap(dir: &Path, faults: &Option<FaultInjector>) -> Result<(), OpenError> {
    let sled_dir = dir.join("sled");
    let copy_dir = dir.join(COMPACTING);
    // Dropped, but sled's threads may hold either database a moment
    // longer; once their files can be locked, nothing of sled writes
    // under either path any more.
    let _old = wait_unlocked(&sled_dir.join("db"))?;
    let _new = wait_unlocked(&copy_dir.join("db"))?;
    let replaced = dir.join(REPLACED);
    // Left by a compaction whose copy has not been opened since: that copy
    // is what is copied now, so the files before it can go.
    remove_dir(&replaced)?;
    fs::rename(&sled_dir, &replaced).map_err(io_error(&sled_dir))?;
    inject(faults, FaultPoint::Swap).map_err(io_error(dir))?;
    fs::rename(&copy_dir, &sled_dir).map_err(io_error(&copy_dir))?;
    sync(dir)?;
    inject(faults, FaultPoint::Swapped).map_err(io_error(dir))
}

/// Copies sled's files in `dir` into fresh ones and puts those in their
/// place, after a failed settle: see `settle_record.rs`. The journal is
/// left as it is; the open that follows replays it over the copy and
/// settles, and only then empties it.
pub(crate) fn rebuild(dir: &Path, faults: &Option<FaultInjector>) -> Result<(), OpenError> {
    copy(&dir.join("sled"), &dir.join(COMPACTING), &mut |_, _| {})?;
    swap(dir, faults)
}

/// Removes the files a compaction or a rebuild replaced, once an open has
/// checked and settled their copy.
pub(crate) fn remove_replaced(dir: &Path) -> Result<(), OpenError> {
    remove_dir(&dir.join(REPLACED))
}

impl SledLog {
    /// Waits until sled's threads have let go of the files of the log in
    /// `dir`, which this process has closed: sled finishes closing in the
    /// background, and a directory moved before it is done could miss what
    /// sled writes last.
    pub fn wait_closed(dir: &Path) -> Result<(), OpenError> {
        wait_unlocked(&dir.join("sled").join("db")).map(drop)
    }
}

/// Copies every tree of the database in `from` into a new one in `to`,
/// checks the copy key by key, and syncs it.
fn copy(
    from: &Path,
    to: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Compacted, OpenError> {
    let old = open_sled(from)?;
    let new = open_sled(to)?;
    let before = old.size_on_disk().map_err(open_storage)?;
    let mut keys = 0u64;
    for name in old.tree_names() {
        let source = old.open_tree(&name).map_err(open_storage)?;
        let target = new.open_tree(&name).map_err(open_storage)?;
        let mut batch = sled::Batch::default();
        let mut batched = 0u64;
        for entry in source.iter() {
            let (key, value) = entry.map_err(open_storage)?;
            batch.insert(key, value);
            batched += 1;
            if batched == BATCH {
                target
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(open_storage)?;
                keys += batched;
                batched = 0;
                progress(keys, 0);
            }
        }
        target.apply_batch(batch).map_err(open_storage)?;
        keys += batched;
    }
    new.flush().map_err(open_storage)?;
    // Compared as read back from the files: sled that wrote the copy would
    // answer from its memory. Reopening also makes sled write a snapshot
    // of the copy, without which an open reads all of it: 650 ms for the
    // 1M-event log's copy, against 47 to 63 ms after; paid here rather
    // than at the service's next start.
    drop(new);
    drop(wait_unlocked(&to.join("db"))?);
    let new = open_sled(to)?;
    check_copy(&old, &new, &mut |checked| progress(checked, keys))?;
    new.flush().map_err(open_storage)?;
    DurableFiles::open(to)?.sync().map_err(io_error(to))?;
    let after = new.size_on_disk().map_err(open_storage)?;
    Ok(Compacted {
        before,
        after,
        keys,
    })
}

/// Whether `new` holds the trees of `old`, each with the same keys and
/// values in the same order.
fn check_copy(
    old: &sled::Db,
    new: &sled::Db,
    progress: &mut dyn FnMut(u64),
) -> Result<(), OpenError> {
    let differs = |what: String| {
        OpenError::Storage(format!(
            "the copy differs from the log {what}, so it was not used"
        ))
    };
    // sled lists its trees from a hash map, in no particular order.
    let sorted = |db: &sled::Db| {
        let mut names = db.tree_names();
        names.sort_unstable();
        names
    };
    if sorted(old) != sorted(new) {
        return Err(differs("in its trees".to_owned()));
    }
    let mut checked = 0u64;
    for name in old.tree_names() {
        let source = old.open_tree(&name).map_err(open_storage)?;
        let target = new.open_tree(&name).map_err(open_storage)?;
        let mut copied = target.iter();
        for entry in source.iter() {
            let (key, value) = entry.map_err(open_storage)?;
            match copied.next().transpose().map_err(open_storage)? {
                Some((k, v)) if k == key && v == value => {}
                _ => return Err(differs(format!("at key {}", crate::hex(&key)))),
            }
            checked += 1;
            if checked.is_multiple_of(BATCH) {
                progress(checked);
            }
        }
        if copied.next().is_some() {
            return Err(differs("after its last key".to_owned()));
        }
    }
    progress(checked);
    Ok(())
}

/// Finishes or undoes a compaction a crash interrupted in `dir`: the old
/// files are put back unless the copy already took their place, and a
/// copy that did not is removed. Returns whether the old files are still
/// kept beside a copy that took their place: the open removes them once it
/// has checked and settled the copy ([`remove_replaced`]). Called with the
/// directory's lock held, before sled opens.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<bool, OpenError> {
    let sled_dir = dir.join("sled");
    let replaced = dir.join(REPLACED);
    let mut kept = false;
    if exists(&replaced)? {
        if exists(&sled_dir)? {
            kept = true;
        } else {
            fs::rename(&replaced, &sled_dir).map_err(io_error(&replaced))?;
            sync(dir)?;
        }
    }
    remove_dir(&dir.join(COMPACTING))?;
    Ok(kept)
}

/// A lock on sled's file `db`, once sled holds it no longer.
fn wait_unlocked(db: &Path) -> Result<File, OpenError> {
    let file = File::open(db).map_err(io_error(db))?;
    match waiting_for_sled(
        || file.try_lock(),
        |error| matches!(error, fs::TryLockError::WouldBlock),
    ) {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(OpenError::Locked(db.to_owned())),
        Err(fs::TryLockError::Error(error)) => Err(OpenError::Io {
            path: db.to_owned(),
            error,
        }),
    }
}

fn exists(path: &Path) -> Result<bool, OpenError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// Removes the directory at `path` and everything in it, if it is there.
fn remove_dir(path: &Path) -> Result<(), OpenError> {
    match fs::remove_dir_all(path) {
        Ok(()) => path.parent().map_or(Ok(()), sync),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(path)(error)),
    }
}

fn sync(dir: &Path) -> Result<(), OpenError> {
    sync_dir(dir).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly at the first surprise"
    )]

    use super::*;
    use crate::{EventLog, Expectation, Head, NewEvent, StoredEvent, Stream};
    use tokenledger_events::{Actor, CompanyId, Event, EventId, TeammateId, TokenId};

    /// A reveal touching one of 50 tokens, 7 teammates and 3 companies, so
    /// the copy carries every kind of index key.
    fn reveal(n: u128) -> NewEvent {
        NewEvent {
            event_id: EventId::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
            actor: Actor::Teammate(TeammateId::from_u128(n % 7 + 1)),
            company: CompanyId::from_u128(n % 3 + 1),
            event: Event::TokenRevealed {
                token: TokenId::from_u128(n % 50 + 1),
            },
        }
    }

    /// What a reader sees of the log in `dir`: its head, every event, and
    /// the streams the events touch.
    fn seen(dir: &Path) -> (Head, Vec<StoredEvent>, Vec<Vec<StoredEvent>>) {
        let log = SledLog::open(dir, Options::default()).unwrap();
        log.verify().unwrap();
        let streams = (1..=50)
            .map(|t| Stream::Token(TokenId::from_u128(t)))
            .chain((1..=7).map(|t| Stream::Actor(TeammateId::from_u128(t))))
            .chain((1..=3).map(|c| Stream::Company(CompanyId::from_u128(c))))
            .map(|stream| log.read_stream(stream, 1, usize::MAX).unwrap())
            .collect();
        (log.head(), log.read(1, usize::MAX).unwrap(), streams)
    }

    /// A log in `dir` of 1,200 reveals, appended 40 at a time.
    fn written(dir: &Path) {
        let log = SledLog::open(dir, Options::default()).unwrap();
        for batch in 0..30 {
            let events = (0..40).map(|i| reveal(batch * 40 + i)).collect();
            log.append(events, Expectation::Any).unwrap();
        }
    }

    #[test]
    fn compaction_keeps_every_record_index_and_the_head() {
        let dir = tempfile::tempdir().unwrap();
        written(dir.path());
        let before = seen(dir.path());
        assert_eq!(before.0.position, 1_200);

        let mut reports = Vec::new();
        let compacted = SledLog::compact_with(dir.path(), Options::default(), &mut |done, of| {
            reports.push((done, of))
        })
        .unwrap();
        assert!(compacted.keys > 1_200 / 64);
        assert_eq!(reports.last(), Some(&(compacted.keys, compacted.keys)));
        assert!(compacted.before > 0 && compacted.after > 0);
        assert!(!dir.path().join(COMPACTING).exists());
        // The old files wait for an open that checks and settles the copy.
        assert!(dir.path().join(REPLACED).join("db").exists());
        assert_eq!(seen(dir.path()), before);
        assert!(!dir.path().join(REPLACED).exists());

        // And the log goes on from where it was.
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        let positions = log.append(vec![reveal(5_000)], Expectation::Any).unwrap();
        assert_eq!(positions, vec![1_201]);
        let again = log.append(vec![reveal(7)], Expectation::Any).unwrap();
        assert_eq!(again, vec![8], "a retry still finds its first position");
    }

    #[test]
    fn an_interrupted_compaction_leaves_the_log_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        written(path);
        let before = seen(path);
        let junk = |name: &str| {
            fs::create_dir_all(path.join(name)).unwrap();
            fs::write(path.join(name).join("db"), b"half a copy").unwrap();
        };

        // Cut while copying: the copy is removed.
        junk(COMPACTING);
        assert_eq!(seen(path), before);
        assert!(!path.join(COMPACTING).exists());

        // Cut between the renames: the old files come back.
        junk(COMPACTING);
        fs::rename(path.join("sled"), path.join(REPLACED)).unwrap();
        assert_eq!(seen(path), before);
        assert!(!path.join(REPLACED).exists() && !path.join(COMPACTING).exists());

        // Cut after the copy took their place: the old files go.
        junk(REPLACED);
        assert_eq!(seen(path), before);
        assert!(!path.join(REPLACED).exists());

        // A reader that creates no log finds it between the renames too.
        fs::rename(path.join("sled"), path.join(REPLACED)).unwrap();
        let reading = Options {
            must_exist: true,
            ..Options::default()
        };
        assert_eq!(SledLog::open(path, reading).unwrap().head(), before.0);
    }

    #[test]
    fn a_log_open_elsewhere_is_not_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        assert!(matches!(
            SledLog::compact(dir.path(), Options::default()),
            Err(OpenError::Locked(_))
        ));
        drop(log);
        assert!(SledLog::compact(dir.path(), Options::default()).is_ok());
    }
}
