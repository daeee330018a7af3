//! The writer's own tests: a writer that unwinds (closing the ledger, or
//! handing the desk on), and events the log stamps otherwise than
//! foreseen. Races between processes are in `races.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails loudly"
)]

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use tokenledger_events::{CompanyId, Event, Name};
use tokenledger_projection::{State, encode_checkpoint};

use super::*;

#[test]
fn a_writer_unwinding_with_events_not_published_closes_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let company = CompanyId::from_u128(7);
    let authorizer = ledger.authorizer();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut desk = ledger.writer.desk.lock();
        let desk = CloseOnUnwind {
            ledger: &ledger,
            desk: &mut desk,
        };
        desk.desk.projection.apply(Envelope {
            position: 1,
            event_id: fresh::event_id().unwrap(),
            recorded_at: Timestamp::from_micros(1),
            actor: Actor::System,
            company,
            event: Event::CompanyCreated {
                company,
                name: Name::new("Acme").unwrap(),
            },
        });
        panic!("a bug between the append and the publish");
    }));
    assert!(unwound.is_err());
    assert!(ledger.health().closed.is_some());
    assert!(matches!(
        ledger.refuse_if_closed(),
        Err(LedgerError::Closed(_))
    ));
    assert_eq!(authorizer.position(), None);
}

#[test]
fn a_writer_unwinding_with_nothing_unpublished_leaves_the_ledger_open() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut desk = ledger.writer.desk.lock();
        let _desk = CloseOnUnwind {
            ledger: &ledger,
            desk: &mut desk,
        };
        panic!("a bug before anything was applied");
    }));
    assert!(unwound.is_err());
    assert!(ledger.health().closed.is_none());
}

/// A metrics recorder that fails on a group's size, which the leader
/// records after the group is published and before it answers.
struct FailsOnGroups;

impl metrics::Recorder for FailsOnGroups {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        assert_ne!(
            key.name(),
            observe::COMMAND_GROUP_SIZE,
            "the recorder failed"
        );
        Histogram::noop()
    }
}

fn create(id: usize) -> Command {
    Command::CreateCompany {
        company: CompanyId::from_u128(id as u128 + 1),
        name: Name::new("Acme").unwrap(),
    }
}

/// Sends `count` creations to the writer, each from a thread of its
/// own, in order, while the desk is held; each tells `done` its id
/// and its outcome.
fn send_while_held(ledger: &Arc<Ledger>, count: usize, done: &Sender<(usize, Outcome)>) {
    for id in 0..count {
        let (sender, done) = (Arc::clone(ledger), done.clone());
        std::thread::spawn(move || {
            let outcome = sender.execute(Actor::System, create(id)).map(|_| ());
            let _ = done.send((id, outcome));
        });
        while ledger.writer.queued.load(Ordering::SeqCst) <= id {
            std::thread::yield_now();
        }
    }
}

type Outcome = Result<(), LedgerError>;

/// The ids of the `count` callers of `outcomes` whose command was
/// recorded; fails if one is left waiting, or told anything but that
/// its call went unanswered.
fn recorded(outcomes: &Receiver<(usize, Outcome)>, count: usize) -> Vec<usize> {
    let mut recorded = Vec::new();
    for _ in 0..count {
        let (id, outcome) = outcomes
            .recv_timeout(Duration::from_secs(30))
            .expect("a request left waiting");
        match outcome {
            Ok(()) => recorded.push(id),
            Err(LedgerError::Unanswered(_)) => {}
            Err(other) => panic!("{id}: {other}"),
        }
    }
    recorded.sort_unstable();
    recorded
}

/// A panic under a guard that only reads (a follower's catch-up, a
/// `with_state` closure) with commands waiting: the guard hands the
/// desk on rather than serve them on the unwinding thread, where a
/// second panic (here the recorder's) would abort the process.
#[test]
fn a_guard_dropped_by_a_panic_hands_the_desk_on_serving_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    let desk = ledger.writer();
    let (done, outcomes) = mpsc::channel();
    send_while_held(&ledger, 3, &done);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        metrics::with_local_recorder(&FailsOnGroups, || {
            let _held = desk;
            panic!("a bug under the guard");
        })
    }));
    assert!(unwound.is_err());
    // Served by their own callers, with the recorder of their threads.
    assert_eq!(recorded(&outcomes, 3), vec![0, 1, 2]);
    assert!(ledger.health().closed.is_none());
}

#[test]
fn a_leader_that_panics_hands_the_desk_to_the_requests_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    // One more than a group: the last waits in the inbox while the
    // first group is recorded, and its leader panics.
    let desk = ledger.writer();
    let (done, outcomes) = mpsc::channel();
    send_while_held(&ledger, MAX_GROUP + 1, &done);
    // This thread leads as it lets the desk go, with the recorder.
    let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        metrics::with_local_recorder(&FailsOnGroups, || drop(desk));
    }));
    assert!(led.is_err());
    // The panicking group's callers get an error (their events were
    // published before the panic); the one left over is served by its
    // own caller, handed the desk.
    assert_eq!(recorded(&outcomes, MAX_GROUP + 1), vec![MAX_GROUP]);
    assert_eq!(ledger.head().position, MAX_GROUP as u64 + 1);
    assert!(ledger.health().closed.is_none());
}

#[test]
fn a_leader_that_panics_before_its_own_turn_drops_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    // Left waiting, with no one to serve them, as a leader's own
    // request can be: behind a group and one more.
    let desk = ledger.writer.desk.lock();
    let (done, outcomes) = mpsc::channel();
    send_while_held(&ledger, MAX_GROUP + 1, &done);
    drop(desk);
    let mine = MAX_GROUP + 1;
    let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        metrics::with_local_recorder(&FailsOnGroups, || {
            ledger.execute(Actor::System, create(mine))
        })
    }));
    assert!(led.is_err());
    assert_eq!(recorded(&outcomes, MAX_GROUP + 1), vec![MAX_GROUP]);
    // The panicking caller's command was not run after it.
    assert_eq!(ledger.head().position, MAX_GROUP as u64 + 1);
    let company = CompanyId::from_u128(mine as u128 + 1);
    assert!(ledger.with_state(|state| state.company(company).is_none()));
}

#[test]
fn events_the_log_stamps_otherwise_than_foreseen_are_applied_as_it_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let company = CompanyId::from_u128(7);
    let new = NewEvent {
        event_id: fresh::event_id().unwrap(),
        actor: Actor::System,
        company,
        event: Event::CompanyCreated {
            company,
            name: Name::new("Acme").unwrap(),
        },
    };
    // Applied to decide what follows, with a time the log will not use.
    let foreseen = Envelope {
        position: 1,
        event_id: new.event_id,
        recorded_at: Timestamp::from_micros(1),
        actor: new.actor,
        company,
        event: new.event.clone(),
    };
    let mut desk = ledger.writer.desk.lock();
    desk.projection.apply(foreseen.clone());
    let raw = Timestamp::from_micros(5_000_000);
    let events = ledger
        .append_group(&mut desk, vec![new], 0, raw, &[foreseen], Keyed::None)
        .unwrap();
    assert_eq!(events[0].recorded_at, raw);
    let mut expected = State::new();
    expected.apply(&events[0]);
    let expected = encode_checkpoint(&expected).unwrap();
    assert_eq!(desk.projection.read(encode_checkpoint).unwrap(), expected);
    assert_eq!(desk.last_time, raw);
    drop(desk);
    let readers = ledger.readers.clone();
    assert_eq!(
        readers.read(|state| encode_checkpoint(state).ok(), || None),
        Some(expected)
    );
}
