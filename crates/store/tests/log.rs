//! The log's contract: positions, atomic batches, expectations, retries,
//! streams, subscriptions, time, locking, checkpoints, faults.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokenledger_events::*;
use tokenledger_store::conformance::{COMPANY, event, positions_in, token_event};
use tokenledger_store::*;

mod common;

/// The conformance suite on sled: each log in a directory of its own.
struct Sled {
    dirs: parking_lot::Mutex<Vec<tempfile::TempDir>>,
}

impl Sled {
    fn new() -> Option<Sled> {
        Some(Sled {
            dirs: parking_lot::Mutex::new(Vec::new()),
        })
    }

    fn last(&self) -> std::path::PathBuf {
        self.dirs.lock().last().unwrap().path().to_owned()
    }
}

impl tokenledger_store::conformance::Backend for Sled {
    type Log = SledLog;

    fn fresh(&self, clock: Option<Clock>) -> SledLog {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(
            dir.path(),
            Options {
                clock,
                ..Options::default()
            },
        )
        .unwrap();
        self.dirs.lock().push(dir);
        log
    }

    fn reopen(&self, log: SledLog) -> SledLog {
        drop(log);
        open(&self.last())
    }

    fn tamper(
        &self,
        log: SledLog,
        tamper: tokenledger_store::conformance::Tamper,
    ) -> (SledLog, u64) {
        drop(log);
        let dir = self.last();
        let at = common::through_sled(&dir, |tree| {
            let (key, first, last, mut value) = match tamper {
                tokenledger_store::conformance::Tamper::FlipLastByte(p)
                | tokenledger_store::conformance::Tamper::Remove(p) => {
                    common::page_holding(tree, p)
                }
            };
            match tamper {
                // A page's last byte is its last record's.
                tokenledger_store::conformance::Tamper::FlipLastByte(_) => {
                    let end = value.len() - 1;
                    value[end] ^= 0x20;
                    tree.insert(key, value).unwrap();
                    last
                }
                tokenledger_store::conformance::Tamper::Remove(_) => {
                    tree.remove(key).unwrap();
                    first
                }
            }
        });
        (open(&dir), at)
    }
}

tokenledger_store::conformance_tests!(Sled::new());

fn open(dir: &std::path::Path) -> SledLog {
    SledLog::open(dir, Options::default()).unwrap()
}

/// The writer learns the ids written before it opened from the segments
/// of the index of event ids, on a thread of their own, and then skips the lookup for an id
/// it has not seen; one it missed would be appended again.
#[test]
fn a_retry_after_reopening_finds_the_original_while_the_ids_are_gathered_and_after() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for batch in (1..=5_000).collect::<Vec<u128>>().chunks(100) {
            log.append(
                batch.iter().map(|id| event(*id)).collect(),
                Expectation::Any,
            )
            .unwrap();
        }
    }
    let log = open(dir.path());
    // Gathering starts once a thousand events are written since opening.
    let fresh: Vec<Vec<NewEvent>> = (200_001..=201_000)
        .map(event)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(<[NewEvent]>::to_vec)
        .collect();
    for (batch, first) in fresh.iter().zip((5_001..).step_by(100)) {
        let positions = log.append(batch.clone(), Expectation::Any).unwrap();
        assert_eq!(positions, (first..first + 100).collect::<Vec<u64>>());
    }
    let mut head = 6_000;
    for id in 1..=5_000 {
        assert_eq!(
            log.append(vec![event(id)], Expectation::Any).unwrap(),
            vec![id as u64]
        );
        // New events among the retries, some written while the ids are
        // gathered: each is itself retried below.
        if id % 50 == 0 {
            head += 1;
            assert_eq!(
                log.append(vec![event(100_000 + id)], Expectation::Any)
                    .unwrap(),
                vec![head]
            );
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for (position, id) in (6_001..).zip((50..=5_000).step_by(50)) {
        assert_eq!(
            log.append(vec![event(100_000 + id)], Expectation::Any)
                .unwrap(),
            vec![position]
        );
        assert_eq!(
            log.append(vec![event(id)], Expectation::Any).unwrap(),
            vec![id as u64]
        );
    }
    for (batch, first) in fresh.iter().zip((5_001..).step_by(100)) {
        let positions = log.append(batch.clone(), Expectation::Any).unwrap();
        assert_eq!(positions, (first..first + 100).collect::<Vec<u64>>());
    }
    assert_eq!(log.head().position, head);
    assert_eq!(log.verify().unwrap().records, head);
}

/// A settle moves a token's entries from memory into a segment of the
/// index while readers read the token's stream: each reader must find
/// every event acknowledged before it began, once and in order.
#[test]
fn a_tokens_stream_read_while_settles_move_its_entries_finds_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        // A settle every few appends.
        journal_bytes: Some(1024),
        ..Options::default()
    };
    let log = SledLog::open(dir.path(), options).unwrap();
    let token = TokenId::from_u128(5);
    let acknowledged = parking_lot::Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for id in 1..=400 {
                let batch = vec![token_event(id, token), event(1_000 + id)];
                let at = log.append(batch, Expectation::Any).unwrap();
                acknowledged.lock().push(at[0]);
            }
            done.store(true, Ordering::Release);
        });
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let before = acknowledged.lock().clone();
                    let found = positions_in(&log, Stream::Token(token));
                    assert!(found.is_sorted_by(|a, b| a < b), "{found:?}");
                    assert_eq!(found[..before.len()], before[..]);
                    let head = log.stream_head(Stream::Token(token)).unwrap();
                    assert!(head >= found.last().copied().unwrap_or(0));
                }
            });
        }
    });
    let all = acknowledged.into_inner();
    drop(log);
    let log = open(dir.path());
    assert_eq!(positions_in(&log, Stream::Token(token)), all);
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path());
    let error = SledLog::open(dir.path(), Options::default()).err().unwrap();
    assert!(matches!(error, OpenError::Locked(_)), "{error}");
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
}

#[test]
fn a_file_is_not_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let error = SledLog::open(&file, Options::default()).err().unwrap();
    assert!(matches!(error, OpenError::NotADirectory(_)), "{error}");
}

#[test]
fn opening_with_a_known_head_refuses_a_rolled_back_log() {
    let dir = tempfile::tempdir().unwrap();
    let early = tempfile::tempdir().unwrap();
    let known = {
        let log = open(dir.path());
        log.append(vec![event(1), event(2)], Expectation::Any)
            .unwrap();
        let other = open(early.path());
        other.append(vec![event(1)], Expectation::Any).unwrap();
        log.head()
    };
    let options = Options {
        known_head: Some(known),
        ..Options::default()
    };
    assert!(SledLog::open(dir.path(), options.clone()).is_ok());
    // A copy of an older directory, or another history, does not contain it.
    let error = SledLog::open(early.path(), options).err().unwrap();
    assert!(matches!(error, OpenError::RolledBack { .. }), "{error}");
}

#[test]
fn checkpoints_vouch_for_the_head_under_their_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(vec![event(1), event(2)], Expectation::Any)
        .unwrap();
    let key = CheckpointKey::from_bytes([3; 32]);
    let checkpoint = Checkpoint::sign(log.head(), &key);
    checkpoint.check(&key, &log).unwrap();
    log.append(vec![event(3)], Expectation::Any).unwrap();
    checkpoint.check(&key, &log).unwrap();

    let wrong_key = CheckpointKey::from_bytes([4; 32]);
    assert_eq!(
        checkpoint.check(&wrong_key, &log),
        Err(CheckpointError::BadMac)
    );
    let mut forged = checkpoint;
    forged.head.position = 3;
    assert_eq!(forged.check(&key, &log), Err(CheckpointError::BadMac));

    let ahead = Checkpoint::sign(
        Head {
            position: 9,
            hash: [0; 32],
        },
        &key,
    );
    assert!(matches!(
        ahead.check(&key, &log),
        Err(CheckpointError::Truncated { .. })
    ));
    let other = Checkpoint::sign(
        Head {
            position: 2,
            hash: [1; 32],
        },
        &key,
    );
    assert!(matches!(
        other.check(&key, &log),
        Err(CheckpointError::Rewritten { .. })
    ));
}

/// Opens a log in `dir` whose fault point `point` fails while the flag
/// returned with it is set.
fn open_failing_at(dir: &std::path::Path, point: FaultPoint) -> (SledLog, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let failing = Arc::clone(&armed);
    let faults: FaultInjector = Arc::new(move |at| {
        if at == point && failing.load(Ordering::SeqCst) {
            Err(io::Error::other("injected: no space left on device"))
        } else {
            Ok(())
        }
    });
    let options = Options {
        faults: Some(faults),
        ..Options::default()
    };
    (SledLog::open(dir, options).unwrap(), armed)
}

#[test]
fn a_failure_before_the_commit_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (log, armed) = open_failing_at(dir.path(), FaultPoint::Commit);
    log.append(vec![event(1)], Expectation::Any).unwrap();
    let before = log.head();
    armed.store(true, Ordering::SeqCst);
    let error = log
        .append(vec![event(2), event(3)], Expectation::Any)
        .unwrap_err();
    assert!(matches!(error, AppendError::Io(_)), "{error}");
    assert!(error.to_string().contains("no space left"), "{error}");
    assert_eq!(log.head(), before);
    assert_eq!(log.read(1, 10).unwrap().len(), 1);
    // The same events go in once the fault clears.
    armed.store(false, Ordering::SeqCst);
    assert_eq!(
        log.append(vec![event(2), event(3)], Expectation::Head(1))
            .unwrap(),
        vec![2, 3]
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.verify().unwrap().records, 3);
}

#[test]
fn a_failure_to_sync_poisons_the_log_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (log, armed) = open_failing_at(dir.path(), FaultPoint::Sync);
    log.append(vec![event(1)], Expectation::Any).unwrap();
    armed.store(true, Ordering::SeqCst);
    assert!(matches!(
        log.append(vec![event(2)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    armed.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(vec![event(3)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    assert_eq!(
        log.head().position,
        1,
        "an unacknowledged event is not readable"
    );
    drop(log);
    let log = open(dir.path());
    let verified = log.verify().unwrap();
    assert!(verified.records <= 2, "{verified:?}");
}

/// A fault point that stops its thread once, when armed, until the test
/// opens its gate: how a test holds the writer in its sync, or the
/// inserter before sled, in the middle of a group.
struct Held {
    armed: Arc<AtomicBool>,
    reached: std::sync::mpsc::Receiver<()>,
    gate: std::sync::mpsc::Sender<()>,
}

impl Held {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Waits for the point to be reached.
    fn reached(&self) {
        self.reached.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    fn open(&self) {
        self.gate.send(()).unwrap();
    }
}

/// Opens a log in `dir` whose fault point `point` is held (see [`Held`]).
/// The gate comes second, so it is dropped first: after a failed
/// assertion, that frees the held thread and the log can close.
fn open_held(dir: &std::path::Path, point: FaultPoint) -> (Arc<SledLog>, Held) {
    let armed = Arc::new(AtomicBool::new(false));
    let (entered, reached) = std::sync::mpsc::channel();
    let (gate, shut) = std::sync::mpsc::channel::<()>();
    let shut = std::sync::Mutex::new(shut);
    let arming = Arc::clone(&armed);
    let faults: FaultInjector = Arc::new(move |at| {
        // Disarmed on the way through: the point is held once.
        if at == point && arming.swap(false, Ordering::SeqCst) {
            let _ = entered.send(());
            let _ = shut.lock().unwrap().recv();
        }
        Ok(())
    });
    let options = Options {
        faults: Some(faults),
        ..Options::default()
    };
    let log = Arc::new(SledLog::open(dir, options).unwrap());
    (
        log,
        Held {
            armed,
            reached,
            gate,
        },
    )
}

fn append_in_thread(
    log: &Arc<SledLog>,
    id: u128,
    expectation: Expectation,
) -> std::thread::JoinHandle<Result<Vec<u64>, AppendError>> {
    let log = Arc::clone(log);
    std::thread::spawn(move || log.append(vec![event(id)], expectation))
}

/// The journal syncs while the group goes into sled; neither an append
/// nor a retry of it, sent during that sync, may return before the sync
/// has, nor may the record be read.
#[test]
fn an_append_and_its_retry_are_answered_only_once_the_sync_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (log, held) = open_held(dir.path(), FaultPoint::Sync);
    held.arm();
    let first = append_in_thread(&log, 1, Expectation::Any);
    held.reached();
    let retry = append_in_thread(&log, 1, Expectation::Any);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!first.is_finished(), "answered before its sync returned");
    assert!(
        !retry.is_finished(),
        "a retry answered before the sync returned"
    );
    assert_eq!(log.head().position, 0, "a record readable before its sync");
    for stream in [
        Stream::Company(COMPANY),
        Stream::Teammate(TeammateId::from_u128(1)),
    ] {
        assert_eq!(
            log.stream_head(stream).unwrap(),
            0,
            "{stream:?} moved before the sync"
        );
        assert!(log.read_stream(stream, 1, 10).unwrap().is_empty());
    }
    held.open();
    assert_eq!(first.join().unwrap(), Ok(vec![1]));
    assert_eq!(retry.join().unwrap(), Ok(vec![1]));
    assert_eq!(log.head().position, 1);
}

/// An append is answered once its group is synced, while the group may
/// still be going into sled; the head a reader gets covers it all the
/// same, so an appender reads what it was told is there.
#[test]
fn an_answered_append_is_readable_though_sled_is_still_taking_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, held) = open_held(dir.path(), FaultPoint::Insert);
    held.arm();
    assert_eq!(log.append(vec![event(1)], Expectation::Any), Ok(vec![1]));
    held.reached();
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.read(1, 10))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !reader.is_finished(),
        "a read went ahead of an answered append"
    );
    held.open();
    let read = reader.join().unwrap().unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].envelope.event_id, EventId::from_u128(1));
}

/// A group whose appends were answered is in the journal: if sled then
/// fails to take it, the log is poisoned, readers are not left waiting
/// for it, and a reopen puts it back.
#[test]
fn an_answered_group_sled_failed_to_take_comes_back_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, armed) = open_failing_at(dir.path(), FaultPoint::Insert);
    let log = Arc::new(log);
    log.append(vec![event(1)], Expectation::Any).unwrap();
    // Once the head covers it, the first group is in sled: only the
    // second meets the fault.
    assert_eq!(log.head().position, 1);
    armed.store(true, Ordering::SeqCst);
    assert_eq!(log.append(vec![event(2)], Expectation::Any), Ok(vec![2]));
    let (sent, head) = std::sync::mpsc::channel();
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || sent.send(log.head()))
    };
    let head = head.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        head.map(|head| head.position),
        Ok(1),
        "sled does not hold it"
    );
    reader.join().unwrap().unwrap();
    armed.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(vec![event(3)], Expectation::Any),
        Err(AppendError::Poisoned(_))
    ));
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.verify().unwrap().records, 2);
    assert_eq!(
        log.read(2, 1).unwrap()[0].envelope.event_id,
        EventId::from_u128(2)
    );
}
