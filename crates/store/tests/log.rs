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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

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

fn token_event(id: u128, token: TokenId) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::Teammate(TeammateId::from_u128(99)),
        company: COMPANY,
        event: Event::TokenRevealed { token },
    }
}

fn open(dir: &std::path::Path) -> SledLog {
    SledLog::open(dir, Options::default()).unwrap()
}

#[test]
fn positions_are_contiguous_from_one_and_batches_stay_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.head(), Head::EMPTY);
    assert_eq!(
        log.append(vec![event(1)], Expectation::Any).unwrap(),
        vec![1]
    );
    assert_eq!(
        log.append(vec![event(2), event(3), event(4)], Expectation::Any)
            .unwrap(),
        vec![2, 3, 4]
    );
    let all = log.read(1, 100).unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.envelope.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4]);
    assert_eq!(all[0].envelope.event_id, EventId::from_u128(1));
    assert_eq!(log.read(3, 1).unwrap().len(), 1);
    assert!(log.read(5, 10).unwrap().is_empty());
    assert_eq!(log.verify().unwrap().records, 4);
}

#[test]
fn the_log_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let log = open(dir.path());
        log.append(vec![event(1), event(2)], Expectation::Any)
            .unwrap();
        log.head()
    };
    let log = open(dir.path());
    assert_eq!(log.head(), head);
    assert_eq!(
        log.append(vec![event(3)], Expectation::Head(2)).unwrap(),
        vec![3]
    );
    assert_eq!(log.verify().unwrap().records, 3);
}

#[test]
fn a_failed_expectation_writes_nothing_and_says_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(vec![event(1)], Expectation::Any).unwrap();
    let error = log
        .append(vec![event(2)], Expectation::Head(0))
        .unwrap_err();
    assert_eq!(
        error,
        AppendError::Conflict {
            expected: Expectation::Head(0),
            found: 1
        }
    );
    assert!(error.to_string().contains("found it at 1"), "{error}");

    let token = TokenId::from_u128(5);
    let stream = Stream::Token(token);
    log.append(vec![token_event(10, token)], Expectation::Stream(stream, 0))
        .unwrap();
    let error = log
        .append(vec![token_event(11, token)], Expectation::Stream(stream, 0))
        .unwrap_err();
    assert_eq!(
        error,
        AppendError::Conflict {
            expected: Expectation::Stream(stream, 0),
            found: 2
        }
    );
    assert_eq!(log.head().position, 2);
    assert_eq!(log.stream_head(stream).unwrap(), 2);
    log.append(vec![token_event(11, token)], Expectation::Stream(stream, 2))
        .unwrap();
}

#[test]
fn a_retried_append_returns_its_original_positions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let batch = vec![event(1), event(2)];
    assert_eq!(
        log.append(batch.clone(), Expectation::Head(0)).unwrap(),
        vec![1, 2]
    );
    log.append(vec![event(3)], Expectation::Any).unwrap();
    assert_eq!(log.append(batch, Expectation::Head(0)).unwrap(), vec![1, 2]);
    assert_eq!(log.head().position, 3);
    assert_eq!(
        log.append(vec![event(3), event(4)], Expectation::Any),
        Err(AppendError::PartialRetry(EventId::from_u128(3)))
    );
    assert_eq!(
        log.append(vec![event(5), event(5)], Expectation::Any),
        Err(AppendError::DuplicateEventId(EventId::from_u128(5)))
    );
    assert_eq!(
        log.append(vec![], Expectation::Any),
        Err(AppendError::Empty)
    );
    assert_eq!(log.head().position, 3);
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

#[test]
fn streams_hold_the_events_of_one_token_teammate_company_or_actor() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let a = TokenId::from_u128(1);
    let b = TokenId::from_u128(2);
    log.append(
        vec![
            token_event(1, a),
            token_event(2, b),
            event(3),
            token_event(4, a),
        ],
        Expectation::Any,
    )
    .unwrap();
    let of_a: Vec<u64> = log
        .read_stream(Stream::Token(a), 1, 100)
        .unwrap()
        .iter()
        .map(|e| e.envelope.position)
        .collect();
    assert_eq!(of_a, vec![1, 4]);
    assert_eq!(log.read_stream(Stream::Token(a), 2, 100).unwrap().len(), 1);
    assert_eq!(
        log.read_stream(Stream::Company(COMPANY), 1, 100)
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        log.read_stream(Stream::Teammate(TeammateId::from_u128(3)), 1, 100)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        log.read_stream(Stream::Actor(TeammateId::from_u128(99)), 1, 100)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(log.stream_head(Stream::Token(b)).unwrap(), 2);
    assert_eq!(
        log.stream_head(Stream::Token(TokenId::from_u128(77)))
            .unwrap(),
        0
    );
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

fn positions_in(log: &SledLog, stream: Stream) -> Vec<u64> {
    let events = log.read_stream(stream, 1, usize::MAX).unwrap();
    events.iter().map(|e| e.envelope.position).collect()
}

/// Reads by position and by stream must agree with the whole log filtered,
/// from any position and for any limit, wherever the pages (up to 64
/// records, stored under their last position) begin and end.
#[test]
fn reads_from_any_position_agree_with_the_whole_log_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let tokens = [1, 2, 3].map(TokenId::from_u128);
    let mut id = 0;
    for size in [1, 7, 64, 65, 130, 3, 1, 200, 2] {
        let batch = (0..size)
            .map(|_| {
                id += 1;
                match id % 5 {
                    0 => event(id),
                    n => token_event(id, tokens[(n % 3) as usize]),
                }
            })
            .collect();
        log.append(batch, Expectation::Any).unwrap();
    }
    let check = |log: &SledLog| {
        let all = log.read(1, 10_000).unwrap();
        assert_eq!(all.len(), id as usize);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let from = x % (id as u64 + 2);
            let limit = (x >> 20) as usize % 150;
            let wanted: Vec<_> = all
                .iter()
                .filter(|e| e.envelope.position >= from)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(log.read(from, limit).unwrap(), wanted, "from {from}");
            // A buffer handed round again keeps what it held, and gains
            // exactly what `read` returns.
            let mut into = all[..3].to_vec();
            log.read_into(from, limit, &mut into).unwrap();
            assert_eq!(into[..3], all[..3]);
            assert_eq!(into[3..], wanted[..], "into, from {from}");
            for stream in tokens
                .iter()
                .map(|t| Stream::Token(*t))
                .chain([Stream::Company(COMPANY)])
            {
                let wanted: Vec<_> = all
                    .iter()
                    .filter(|e| e.envelope.position >= from)
                    .filter(|e| match stream {
                        Stream::Token(t) => e.envelope.event.token() == Some(t),
                        _ => true,
                    })
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(
                    log.read_stream(stream, from, limit).unwrap(),
                    wanted,
                    "{stream} from {from} limit {limit}"
                );
            }
        }
        for token in tokens {
            let last = all
                .iter()
                .rev()
                .find(|e| e.envelope.event.token() == Some(token))
                .map(|e| e.envelope.position);
            assert_eq!(
                log.stream_head(Stream::Token(token)).unwrap(),
                last.unwrap()
            );
        }
        assert_eq!(log.verify().unwrap().records, id as u64);
    };
    check(&log);
    drop(log);
    // Reopened: everything comes from sled, settled on close.
    check(&open(dir.path()));
}

#[test]
fn a_subscription_delivers_events_as_they_land() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    log.append(vec![event(1)], Expectation::Any).unwrap();
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for id in 2..=20 {
                log.append(vec![event(id)], Expectation::Any).unwrap();
            }
        })
    };
    let mut subscription = Subscription::new(log.as_ref(), 1);
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let batch = subscription.poll(7, Duration::from_secs(5)).unwrap();
        assert!(!batch.is_empty(), "no event within 5 s after {seen:?}");
        seen.extend(batch.iter().map(|e| e.envelope.position));
    }
    writer.join().unwrap();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    assert!(
        subscription
            .poll(5, Duration::from_millis(10))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn recorded_time_never_goes_backwards_and_clamping_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = {
        let now = Arc::clone(&now);
        Arc::new(move || Timestamp::from_micros(now.load(Ordering::SeqCst))) as Clock
    };
    let log = SledLog::open(
        dir.path(),
        Options {
            clock: Some(clock),
            ..Options::default()
        },
    )
    .unwrap();
    log.append(vec![event(1)], Expectation::Any).unwrap();
    now.store(500_000, Ordering::SeqCst);
    log.append(vec![event(2)], Expectation::Any).unwrap();
    now.store(2_000_000, Ordering::SeqCst);
    log.append(vec![event(3)], Expectation::Any).unwrap();
    let events = log.read(1, 10).unwrap();
    let times: Vec<u64> = events
        .iter()
        .map(|e| e.envelope.recorded_at.as_micros())
        .collect();
    assert_eq!(times, vec![1_000_000, 1_000_000, 2_000_000]);
    let clamped: Vec<bool> = events.iter().map(|e| e.clock_clamped).collect();
    assert_eq!(clamped, vec![false, true, false]);
    assert_eq!(log.verify().unwrap().clamped, 1);
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

#[test]
fn concurrent_appenders_with_expectations_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let next_id = Arc::new(AtomicU64::new(1));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let log = Arc::clone(&log);
            let next_id = Arc::clone(&next_id);
            std::thread::spawn(move || {
                let (mut won, mut lost) = (0u64, 0u64);
                for _ in 0..40 {
                    let head = log.head().position;
                    let id = u128::from(next_id.fetch_add(1, Ordering::SeqCst));
                    match log.append(vec![event(id)], Expectation::Head(head)) {
                        Ok(positions) => {
                            assert_eq!(positions, vec![head + 1]);
                            won += 1;
                        }
                        Err(AppendError::Conflict { found, .. }) => {
                            assert!(found > head);
                            lost += 1;
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
                (won, lost)
            })
        })
        .collect();
    let (mut won, mut lost) = (0, 0);
    for thread in threads {
        let (w, l) = thread.join().unwrap();
        won += w;
        lost += l;
    }
    assert_eq!(won + lost, 320);
    assert!(lost > 0, "8 threads racing on the head never conflicted");
    assert_eq!(log.head().position, won);
    assert_eq!(log.verify().unwrap().records, won);
}

#[test]
fn sealed_records_copy_a_log_byte_for_byte_and_a_wrong_one_is_refused() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    for id in 1..=5 {
        source.append(vec![event(id)], Expectation::Any).unwrap();
    }
    let records = source.read_records(1, 100).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0].event.previous, GENESIS);
    assert_eq!(records[1].event.previous, records[0].event.hash);

    let copy_dir = tempfile::tempdir().unwrap();
    let copy = open(copy_dir.path());
    let bytes = |range: std::ops::Range<usize>| -> Vec<Vec<u8>> {
        records[range].iter().map(|r| r.bytes.clone()).collect()
    };
    // Out of order: position 2 does not continue an empty log.
    let refused = copy.append_records(bytes(1..3)).unwrap_err();
    assert!(
        matches!(&refused, AppendError::Rejected(Damage { position: 1, .. })),
        "{refused}"
    );
    assert_eq!(copy.head(), Head::EMPTY);

    copy.append_records(bytes(0..2)).unwrap();
    // A flipped byte in the third record: refused at position 3, and the
    // two before it stay.
    let mut damaged = bytes(2..5);
    damaged[0][80] ^= 1;
    let refused = copy.append_records(damaged).unwrap_err();
    assert!(
        matches!(
            &refused,
            AppendError::Rejected(Damage {
                position: 3,
                problem: Problem::HashMismatch { .. }
            })
        ),
        "{refused}"
    );
    assert_eq!(copy.head().position, 2);
    // A record already copied does not continue the copy.
    assert!(matches!(
        copy.append_records(bytes(0..1)),
        Err(AppendError::Rejected(Damage { position: 3, .. }))
    ));

    assert_eq!(copy.append_records(bytes(2..5)).unwrap(), source.head());
    assert_eq!(copy.verify().unwrap(), source.verify().unwrap());
    assert_eq!(copy.read(1, 100).unwrap(), source.read(1, 100).unwrap());
    let stream = Stream::Teammate(TeammateId::from_u128(4));
    assert_eq!(
        copy.read_stream(stream, 1, 10).unwrap(),
        source.read_stream(stream, 1, 10).unwrap()
    );
}
