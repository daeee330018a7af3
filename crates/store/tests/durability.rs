//! What the log does when the disk fails it, or hands back files that are
//! not the ones it wrote: a failed settle, a failed write and its undoing,
//! a panic on the writer, a journal missing or of another generation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokenledger_events::*;
use tokenledger_store::*;

const COMPANY: CompanyId = CompanyId::from_u128(1);

fn event(id: u128) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::System,
        company: COMPANY,
        event: Event::TeammateAdded {
            teammate: TeammateId::from_u128(id),
            name: Name::new("Someone").unwrap(),
            role: Role::Member,
        },
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Fail,
    Panic,
}

/// Fault points armed by the test, each failing or panicking while armed.
#[derive(Clone, Default)]
struct Faults(Arc<Mutex<Vec<(FaultPoint, Fault)>>>);

impl Faults {
    fn arm(&self, point: FaultPoint, fault: Fault) {
        self.0.lock().unwrap().push((point, fault));
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Options with these faults, settling after every second frame
    /// (each takes a 4 KiB block) if `settle_often` is set: the settle
    /// comes after the answer, so a test arms a fault between the two.
    fn options(&self, settle_often: bool) -> Options {
        let armed = Arc::clone(&self.0);
        let faults: FaultInjector = Arc::new(move |at| {
            let found = armed
                .lock()
                .unwrap()
                .iter()
                .find(|(point, _)| *point == at)
                .map(|(_, fault)| *fault);
            match found {
                Some(Fault::Fail) => Err(io::Error::other("injected: input/output error")),
                Some(Fault::Panic) => panic!("injected panic at {at:?}"),
                None => Ok(()),
            }
        });
        Options {
            faults: Some(faults),
            journal_bytes: settle_often.then_some(2 * 4096),
            ..Options::default()
        }
    }
}

fn open(dir: &Path) -> SledLog {
    SledLog::open(dir, Options::default()).unwrap()
}

fn written(dir: &Path, ids: std::ops::RangeInclusive<u128>) {
    let log = open(dir);
    for id in ids {
        log.append(vec![event(id)], Expectation::Any).unwrap();
    }
}

/// Once sled has settled, the journal is the only durable copy of what
/// was acknowledged since: a journal that is gone is refused, never made
/// anew and empty (which would silently drop those events).
#[test]
fn a_missing_or_emptied_journal_is_refused_not_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path(), 1..=3);
    let journal = dir.path().join("journal");
    let kept = std::fs::read(&journal).unwrap();
    std::fs::remove_file(&journal).unwrap();
    match SledLog::open(dir.path(), Options::default()) {
        Err(OpenError::DamagedJournal {
            offset: 0, problem, ..
        }) => {
            assert!(problem.contains("missing"), "{problem}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!journal.exists(), "a refused open made no journal");
    // Emptied, as a lost write of a new file's contents leaves it.
    std::fs::write(&journal, b"").unwrap();
    assert!(matches!(
        SledLog::open(dir.path(), Options::default()),
        Err(OpenError::DamagedJournal { offset: 0, .. })
    ));
    std::fs::write(&journal, &kept).unwrap();
    assert_eq!(open(dir.path()).verify().unwrap().records, 3);
}

/// sled records, at each settle, the generation and key the journal is
/// emptied to: a journal of an older generation (rolled back, or a header
/// write the disk lost) or made anew is refused.
#[test]
fn a_journal_sled_did_not_settle_with_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    written(dir.path(), 1..=2);
    let older = std::fs::read(&journal).unwrap();
    // One generation back is what a settle cut short leaves (below); two
    // are not.
    written(dir.path(), 3..=4);
    written(dir.path(), 5..=6);
    std::fs::write(&journal, &older).unwrap();
    match SledLog::open(dir.path(), Options::default()) {
        Err(error @ OpenError::WrongJournal { .. }) => {
            assert!(error.to_string().contains("generation"), "{error}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A new journal of another log, or this one made anew.
    let other = tempfile::tempdir().unwrap();
    written(other.path(), 1..=4);
    std::fs::copy(other.path().join("journal"), &journal).unwrap();
    assert!(matches!(
        SledLog::open(dir.path(), Options::default()),
        Err(OpenError::WrongJournal { .. })
    ));
}

/// A settle cut short after sled's part, before the journal's new header:
/// the journal is the generation before, which sled recorded too, and its
/// records are in sled already.
#[test]
fn a_settle_cut_short_before_the_journals_header_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for id in 1..=3 {
            log.append(vec![event(id)], Expectation::Any).unwrap();
        }
        // The journal as it was before the settle of the close.
        common::copy_dir(dir.path(), crashed.path());
    }
    std::fs::copy(crashed.path().join("journal"), dir.path().join("journal")).unwrap();
    let log = open(dir.path());
    assert_eq!(log.verify().unwrap().records, 3);
    assert_eq!(
        log.append(vec![event(4)], Expectation::Head(3)).unwrap(),
        vec![4]
    );
}

/// A settle whose flush or fsync fails leaves a mark; the next open does
/// not trust sled's files, which may read back what never reached the
/// disk (the page cache after a failed write-back): it copies them into
/// fresh ones, replays the journal over them and settles, and only then
/// empties the journal and removes the mark.
#[test]
fn a_failed_settle_leaves_a_mark_and_the_next_open_rebuilds_sled() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let mark = dir.path().join("settle-failed");
    let db = dir.path().join("sled").join("db");
    let log = SledLog::open(dir.path(), faults.options(true)).unwrap();
    log.append(vec![event(1)], Expectation::Any).unwrap();
    faults.arm(FaultPoint::Settle, Fault::Fail);
    // Answered: the journal holds it. The settle after it fails.
    assert_eq!(
        log.append(vec![event(2)], Expectation::Any).unwrap(),
        vec![2]
    );
    assert!(matches!(
        log.append(vec![event(3)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    assert!(mark.exists(), "the failed settle left no mark");
    drop(log);
    let before = std::fs::metadata(&db).unwrap().ino();
    let log = open(dir.path());
    assert_ne!(
        std::fs::metadata(&db).unwrap().ino(),
        before,
        "sled's files were not rebuilt"
    );
    assert!(!mark.exists());
    assert!(!dir.path().join("sled.replaced").exists());
    assert_eq!(log.verify().unwrap().records, 2);
    drop(log);

    // The settle of a close fails too: marked, and rebuilt at the next open.
    let log = SledLog::open(dir.path(), faults.options(false)).unwrap();
    log.append(vec![event(3)], Expectation::Any).unwrap();
    faults.arm(FaultPoint::Settle, Fault::Fail);
    drop(log);
    assert!(mark.exists(), "the failed settle of the close left no mark");
    faults.clear();
    let log = open(dir.path());
    assert!(!mark.exists());
    assert_eq!(log.verify().unwrap().records, 3);
}

/// A panic on the writer after it answered must not leave anyone waiting
/// for a head that will not come.
#[test]
fn a_panic_on_the_writer_wakes_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let log = Arc::new(SledLog::open(dir.path(), faults.options(true)).unwrap());
    let waiting = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let started = Instant::now();
            let head = log.wait_for(3, Duration::from_secs(60));
            (head, started.elapsed())
        })
    };
    log.append(vec![event(1)], Expectation::Any).unwrap();
    // The panic comes in the settle after the answer.
    faults.arm(FaultPoint::Settle, Fault::Panic);
    assert_eq!(
        log.append(vec![event(2)], Expectation::Any).unwrap(),
        vec![2]
    );
    let (head, waited) = waiting.join().unwrap();
    assert!(head <= 2);
    assert!(
        waited < Duration::from_secs(20),
        "a waiter slept on after the writer died: {waited:?}"
    );
    assert!(log.append(vec![event(3)], Expectation::Any).is_err());
    assert!(log.head().position <= 2);
    let mut subscription = Subscription::new(&*log, 3);
    let started = Instant::now();
    assert!(
        subscription
            .poll(10, Duration::from_secs(60))
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(log);
    faults.clear();
    assert_eq!(open(dir.path()).verify().unwrap().records, 2);
}

/// A panic on the inserter: the writer finds its thread gone and poisons
/// the log; a reader asking for the head covering an answered append is
/// not left waiting.
#[test]
fn a_panic_on_the_inserter_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let log = SledLog::open(dir.path(), faults.options(false)).unwrap();
    log.append(vec![event(1)], Expectation::Any).unwrap();
    faults.arm(FaultPoint::Insert, Fault::Panic);
    let _ = log.append(vec![event(2)], Expectation::Any);
    assert!(log.head().position <= 2);
    assert!(matches!(
        log.append(vec![event(3)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    drop(log);
    faults.clear();
    let log = open(dir.path());
    assert!(log.verify().unwrap().records >= 1);
}

/// A write that fails is wiped out before the append is answered, and
/// the log goes on; if wiping it out fails too, the frame may come back
/// after a crash, so the log is poisoned rather than answered `Io`.
#[test]
fn a_failed_write_is_wiped_out_and_a_failed_wipe_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let log = SledLog::open(dir.path(), faults.options(false)).unwrap();
    log.append(vec![event(1)], Expectation::Any).unwrap();
    faults.arm(FaultPoint::Write, Fault::Fail);
    assert!(matches!(
        log.append(vec![event(2)], Expectation::Any),
        Err(AppendError::Io(_))
    ));
    faults.clear();
    assert_eq!(
        log.append(vec![event(3)], Expectation::Head(1)).unwrap(),
        vec![2]
    );
    faults.arm(FaultPoint::Write, Fault::Fail);
    faults.arm(FaultPoint::Undo, Fault::Fail);
    assert!(matches!(
        log.append(vec![event(4)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    faults.clear();
    assert!(matches!(
        log.append(vec![event(5)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    drop(log);
    let log = open(dir.path());
    let ids: Vec<u128> = log
        .read(1, 10)
        .unwrap()
        .iter()
        .map(|e| e.envelope.event_id.as_u128())
        .collect();
    // The frame whose wiping failed was never answered `Ok`; it may or may
    // not be back (here it is whole), but nothing after it.
    assert!(ids == [1, 3] || ids == [1, 3, 4], "{ids:?}");
}

/// A checkpoint file a crash left half written is removed when the log
/// opens; whole ones stay.
#[test]
fn half_written_checkpoint_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path(), 1..=2);
    let head = open(dir.path()).head();
    let files = StateFiles::new(dir.path(), None);
    let whole = files.write(head, b"state", 2).unwrap();
    let partial = dir
        .path()
        .join("checkpoints")
        .join("state-00000000000000000009.ckpt.partial");
    std::fs::write(&partial, b"half a state").unwrap();
    drop(open(dir.path()));
    assert!(!partial.exists());
    assert!(whole.path.exists());
}
