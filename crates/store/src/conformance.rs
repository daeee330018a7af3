//! The `EventLog` tests every backend must pass (feature `conformance`):
//! positions and batches, reopening, expectations, retries, lookups by
//! event id, streams, reads from anywhere, subscriptions, time, concurrent
//! appenders, copies of sealed records, `verify`, and tampering found at
//! its position.
//!
//! A backend's tests implement [`Backend`] and call
//! [`conformance_tests!`](crate::conformance_tests) with an expression
//! that yields `Option<impl Backend>` (`None`: skip, having said why), so
//! that each case is a `#[test]` of its own:
//!
//! ```ignore
//! tokenledger_store::conformance_tests!(SledBackend::new());
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokenledger_events::{
    Actor, CompanyId, Event, EventId, Name, Role, TeammateId, Timestamp, TokenId,
};

use crate::{
    AppendError, Clock, Damage, EventLog, Expectation, GENESIS, Head, NewEvent, Problem, Stream,
    Subscription,
};

/// Damage done to a log at rest, as someone with write access to its
/// storage could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Flip a bit in the last byte of a stored record at or after this
    /// position (the backend says which record it changed).
    FlipLastByte(u64),
    /// Remove the record at this position, with whatever the backend
    /// stores it with (the backend says the first position removed).
    Remove(u64),
}

/// A backend under test: makes logs, reopens and damages them. One value
/// serves one test, and cleans up after it when dropped.
pub trait Backend {
    /// The log.
    type Log: EventLog + 'static;
    /// A new, empty log of its own, stamping appends with `clock` when
    /// given one.
    fn fresh(&self, clock: Option<Clock>) -> Self::Log;
    /// Closes `log` (the last one `fresh` made) and opens it again.
    fn reopen(&self, log: Self::Log) -> Self::Log;
    /// Closes `log` (the last one `fresh` made), damages it at rest, opens
    /// it again, and returns it with the position the damage is at.
    fn tamper(&self, log: Self::Log, tamper: Tamper) -> (Self::Log, u64);
}

/// The company of the suite's events.
pub const COMPANY: CompanyId = CompanyId::from_u128(1);

/// A teammate's addition to [`COMPANY`], with event id `id`.
pub fn event(id: u128) -> NewEvent {
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

/// A reveal of `token`, with event id `id`.
pub fn token_event(id: u128, token: TokenId) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::Teammate(TeammateId::from_u128(99)),
        company: COMPANY,
        event: Event::TokenRevealed { token },
    }
}

/// The positions of `stream`'s events in `log`.
pub fn positions_in(log: &dyn EventLog, stream: Stream) -> Vec<u64> {
    let events = log.read_stream(stream, 1, usize::MAX).unwrap();
    events.iter().map(|e| e.envelope.position).collect()
}

/// Positions run from 1 without gaps, and a batch's events are together.
pub fn positions_are_contiguous_from_one_and_batches_stay_together(backend: &impl Backend) {
    let log = backend.fresh(None);
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
    assert_eq!(all[0].previous, GENESIS);
    assert_eq!(all[1].previous, all[0].hash);
    assert_eq!(log.read(3, 1).unwrap().len(), 1);
    assert!(log.read(5, 10).unwrap().is_empty());
    assert_eq!(log.head().position, 4);
    assert_eq!(log.head().hash, all[3].hash);
    assert_eq!(log.verify().unwrap().records, 4);
}

/// What was appended is there after a reopen, and appends go on from it.
pub fn the_log_survives_reopening(backend: &impl Backend) {
    let log = backend.fresh(None);
    log.append(vec![event(1), event(2)], Expectation::Any)
        .unwrap();
    let head = log.head();
    let log = backend.reopen(log);
    assert_eq!(log.head(), head);
    assert_eq!(
        log.append(vec![event(3)], Expectation::Head(2)).unwrap(),
        vec![3]
    );
    assert_eq!(log.verify().unwrap().records, 3);
}

/// A `Head` or `Stream` expectation that does not hold writes nothing and
/// says what it found.
pub fn a_failed_expectation_writes_nothing_and_says_what_it_found(backend: &impl Backend) {
    let log = backend.fresh(None);
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
    assert_eq!(log.verify().unwrap().records, 3);
}

/// A retry (every id in the log) gets its positions back and appends
/// nothing; a partial retry, an id twice, and an empty batch are refused.
pub fn a_retried_append_returns_its_original_positions(backend: &impl Backend) {
    let log = backend.fresh(None);
    let batch = vec![event(1), event(2)];
    assert_eq!(
        log.append(batch.clone(), Expectation::Head(0)).unwrap(),
        vec![1, 2]
    );
    log.append(vec![event(3)], Expectation::Any).unwrap();
    assert_eq!(
        log.append(batch.clone(), Expectation::Head(0)).unwrap(),
        vec![1, 2]
    );
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
    // And after a reopen.
    let log = backend.reopen(log);
    assert_eq!(log.append(batch, Expectation::Any).unwrap(), vec![1, 2]);
    assert_eq!(log.head().position, 3);
}

/// An event is found by its id, before and after a reopen, among a few
/// hundred (more than one chunk of an index); an id the log lacks is not.
pub fn an_event_is_found_by_its_id(backend: &impl Backend) {
    let log = backend.fresh(None);
    let id = EventId::from_u128;
    assert_eq!(log.position_of(id(1)).unwrap(), None);
    for first in (1..=300).step_by(30) {
        let batch = (first..first + 30).map(event).collect();
        log.append(batch, Expectation::Any).unwrap();
    }
    let found = |log: &dyn EventLog| {
        for n in [1, 2, 29, 30, 31, 128, 129, 257, 300] {
            assert_eq!(log.position_of(id(n)).unwrap(), Some(n as u64), "{n}");
        }
        for n in [0, 301, 1 << 100] {
            assert_eq!(log.position_of(id(n)).unwrap(), None, "{n}");
        }
    };
    found(&log);
    let log = backend.reopen(log);
    found(&log);
    log.append(vec![event(1000)], Expectation::Any).unwrap();
    assert_eq!(log.position_of(id(1000)).unwrap(), Some(301));
    found(&log);
}

/// Streams hold the events of one token, teammate, company or actor.
pub fn streams_hold_the_events_of_one_token_teammate_company_or_actor(backend: &impl Backend) {
    let log = backend.fresh(None);
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
    assert_eq!(positions_in(&log, Stream::Token(a)), vec![1, 4]);
    assert_eq!(log.read_stream(Stream::Token(a), 2, 100).unwrap().len(), 1);
    assert_eq!(positions_in(&log, Stream::Company(COMPANY)).len(), 4);
    assert_eq!(
        positions_in(&log, Stream::Teammate(TeammateId::from_u128(3))),
        vec![3]
    );
    assert_eq!(
        positions_in(&log, Stream::Actor(TeammateId::from_u128(99))),
        vec![1, 2, 4]
    );
    assert_eq!(log.stream_head(Stream::Token(b)).unwrap(), 2);
    assert_eq!(
        log.stream_head(Stream::Token(TokenId::from_u128(77)))
            .unwrap(),
        0
    );
}

/// Reads by position and by stream agree with the whole log filtered,
/// from any position and for any limit, before and after reopening (with
/// batches that cross the sled log's pages of 64).
pub fn reads_from_any_position_agree_with_the_whole_log(backend: &impl Backend) {
    let log = backend.fresh(None);
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
    reads_agree(&log, &tokens, id as u64);
    reads_agree(&backend.reopen(log), &tokens, id as u64);
}

/// [`reads_from_any_position_agree_with_the_whole_log`]'s checks, on a log
/// of `records` records whose token events name `tokens`.
fn reads_agree(log: &impl EventLog, tokens: &[TokenId], records: u64) {
    let all = log.read(1, 10_000).unwrap();
    assert_eq!(all.len() as u64, records);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = x % (records + 2);
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
        let records = log.read_records(from, limit).unwrap();
        let events: Vec<_> = records.into_iter().map(|r| r.event).collect();
        assert_eq!(events, wanted, "records, from {from}");
        let streams = tokens.iter().map(|t| Stream::Token(*t));
        for stream in streams.chain([Stream::Company(COMPANY)]) {
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
    for &token in tokens {
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
    assert_eq!(log.verify().unwrap().records, records);
}

/// A subscription delivers every event, in order, as it lands.
pub fn a_subscription_delivers_events_as_they_land(backend: &impl Backend) {
    let log = Arc::new(backend.fresh(None));
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

/// The recorded time never goes backwards; a clamped time is flagged and
/// counted by `verify`.
pub fn recorded_time_never_goes_backwards_and_clamping_is_kept(backend: &impl Backend) {
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = {
        let now = Arc::clone(&now);
        Arc::new(move || Timestamp::from_micros(now.load(Ordering::SeqCst))) as Clock
    };
    let log = backend.fresh(Some(clock));
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

/// Appenders racing on the head: each wins or conflicts, none is lost.
pub fn concurrent_appenders_with_expectations_lose_no_update(backend: &impl Backend) {
    let log = Arc::new(backend.fresh(None));
    let next_id = Arc::new(AtomicU64::new(1));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let log = Arc::clone(&log);
            let next_id = Arc::clone(&next_id);
            std::thread::spawn(move || {
                let (mut won, mut lost) = (0u64, 0u64);
                for _ in 0..25 {
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
    assert_eq!(won + lost, 200);
    assert!(lost > 0, "8 threads racing on the head never conflicted");
    assert_eq!(log.head().position, won);
    assert_eq!(log.verify().unwrap().records, won);
}

/// Sealed records copy a log byte for byte; one that does not continue the
/// copy is refused with nothing of its batch written.
pub fn sealed_records_copy_a_log_byte_for_byte_and_a_wrong_one_is_refused(backend: &impl Backend) {
    let source = backend.fresh(None);
    for id in 1..=5 {
        source.append(vec![event(id)], Expectation::Any).unwrap();
    }
    let records = source.read_records(1, 100).unwrap();
    assert_eq!(records.len(), 5);
    let copy = backend.fresh(None);
    let bytes = |range: std::ops::Range<usize>| -> Vec<Vec<u8>> {
        records[range].iter().map(|r| r.bytes.clone()).collect()
    };
    let refused = copy.append_records(bytes(1..3)).unwrap_err();
    assert!(
        matches!(&refused, AppendError::Rejected(Damage { position: 1, .. })),
        "{refused}"
    );
    assert_eq!(copy.head(), Head::EMPTY);
    copy.append_records(bytes(0..2)).unwrap();
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

fn given_forty_events(log: &dyn EventLog) {
    for chunk in (1..=40u128).collect::<Vec<_>>().chunks(4) {
        let batch = chunk.iter().map(|id| event(*id)).collect();
        log.append(batch, Expectation::Any).unwrap();
    }
}

/// A changed byte in a stored record is found at its position, by
/// `verify` and by a read over it.
pub fn one_changed_byte_in_a_record_is_found_at_its_position(backend: &impl Backend) {
    let log = backend.fresh(None);
    given_forty_events(&log);
    let (log, changed) = backend.tamper(log, Tamper::FlipLastByte(17));
    let damage = log.verify().unwrap_err();
    assert_eq!(damage.position, changed, "{damage}");
    assert!(
        matches!(damage.problem, Problem::HashMismatch { .. }),
        "{damage}"
    );
    assert_eq!(log.read(10, 20).unwrap_err().position, changed);
}

/// A record removed is a gap, for `verify` and for a read over it.
pub fn a_removed_record_is_a_gap(backend: &impl Backend) {
    let log = backend.fresh(None);
    given_forty_events(&log);
    let (log, first) = backend.tamper(log, Tamper::Remove(9));
    let damage = log.verify().unwrap_err();
    assert_eq!(damage.position, first, "{damage}");
    assert_eq!(damage.problem, Problem::Gap { expected: first });
    assert_eq!(log.read(1, 40).unwrap_err().position, first);
}

/// One `#[test]` per conformance case, for the backend `$backend` (an
/// expression of type `Option<impl Backend>`, evaluated once per test).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@cases $backend;
            positions_are_contiguous_from_one_and_batches_stay_together,
            the_log_survives_reopening,
            a_failed_expectation_writes_nothing_and_says_what_it_found,
            a_retried_append_returns_its_original_positions,
            an_event_is_found_by_its_id,
            streams_hold_the_events_of_one_token_teammate_company_or_actor,
            reads_from_any_position_agree_with_the_whole_log,
            a_subscription_delivers_events_as_they_land,
            recorded_time_never_goes_backwards_and_clamping_is_kept,
            concurrent_appenders_with_expectations_lose_no_update,
            sealed_records_copy_a_log_byte_for_byte_and_a_wrong_one_is_refused,
            one_changed_byte_in_a_record_is_found_at_its_position,
            a_removed_record_is_a_gap,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports, reason = "the backend's expression may use its module's items")]
            use super::*;
            $(
                #[test]
                fn $case() {
                    if let Some(backend) = $backend {
                        $crate::conformance::$case(&backend);
                    }
                }
            )*
        }
    };
}
