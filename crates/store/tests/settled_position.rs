//! A settled position lowered in sled (by an attacker or a damaged disk):
//! an open that refuses the log must refuse it before recovering removes
//! a record or empties the journal, so that a refused open, `verify`
//! included, leaves the evidence as it found it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;
use common::through_sled;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokenledger_events::*;
use tokenledger_store::*;

const EVENTS: u128 = 40;
/// Where the settled position is lowered to: the end of a page, as a
/// settled position always is (events are appended 4 at a time).
const LOWERED: u64 = 20;

fn event(id: u128) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::System,
        company: CompanyId::from_u128(1),
        event: Event::WorkspaceCreated {
            workspace: WorkspaceId::from_u128(id),
            name: Name::new("Support").unwrap(),
        },
    }
}

fn keyed() -> Options {
    Options {
        checkpoint_key: Some(CheckpointKey::from_bytes([7; 32])),
        ..Options::default()
    }
}

fn knowing(head: Head) -> Options {
    Options {
        known_head: Some(head),
        ..Options::default()
    }
}

/// Given a log of EVENTS events, appended 4 at a time and closed.
fn given_a_log(dir: &Path, options: Options) -> Head {
    let log = SledLog::open(dir, options).unwrap();
    for chunk in (1..=EVENTS).collect::<Vec<_>>().chunks(4) {
        log.append(
            chunk.iter().map(|id| event(*id)).collect(),
            Expectation::Any,
        )
        .unwrap();
    }
    log.head()
}

/// Sets sled's settled position (`H`, `crates/store/src/sled_log.rs`).
fn set_settled(dir: &Path, position: u64) {
    through_sled(dir, |events| {
        events.insert(b"H", &position.to_be_bytes()[..]).unwrap();
    });
}

/// What sled holds: its settled position and the position of its last
/// record (the key of its last page, `crates/store/src/page.rs`).
fn sled_holds(dir: &Path) -> (u64, u64) {
    through_sled(dir, |events| {
        let settled = events.get(b"H").unwrap().unwrap();
        let last = events
            .scan_prefix(b"L")
            .keys()
            .next_back()
            .unwrap()
            .unwrap();
        (
            u64::from_be_bytes(settled.as_ref().try_into().unwrap()),
            u64::from_be_bytes(last[1..].try_into().unwrap()),
        )
    })
}

/// Puts the settled position back and opens the log with `options`: every
/// record of `head` is there, and the log is whole.
fn restored_holds(dir: &Path, settled: u64, head: Head, options: Options) {
    set_settled(dir, settled);
    let log = SledLog::open(dir, options).unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.verify().unwrap().records, head.position);
}

#[test]
fn a_lowered_settled_position_under_a_known_head_is_refused_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let head = given_a_log(dir.path(), Options::default());
    set_settled(dir.path(), LOWERED);
    for _ in 0..2 {
        match SledLog::open(dir.path(), knowing(head)) {
            Err(OpenError::RolledBack { known, found }) => {
                assert_eq!(known, head);
                assert_eq!(found.position, LOWERED);
            }
            Err(other) => panic!("refused for another reason: {other}"),
            Ok(_) => panic!("opened"),
        }
        assert_eq!(sled_holds(dir.path()), (LOWERED, head.position));
    }
    restored_holds(dir.path(), head.position, head, knowing(head));
}

#[test]
fn a_lowered_settled_position_under_the_signed_head_is_refused_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let head = given_a_log(dir.path(), keyed());
    set_settled(dir.path(), LOWERED);
    match SledLog::open(dir.path(), keyed()) {
        Err(OpenError::SignedHead {
            error: CheckpointError::Truncated { position, head: at },
            ..
        }) => assert_eq!((position, at), (head.position, LOWERED)),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("opened"),
    }
    assert_eq!(sled_holds(dir.path()), (LOWERED, head.position));
    restored_holds(dir.path(), head.position, head, keyed());
}

/// Lowered to 0 with the signed head deleted, the log would look new to
/// the key: recovering would take out every record and sign the empty log.
#[test]
fn a_log_lowered_to_nothing_without_its_signed_head_is_not_new() {
    let dir = tempfile::tempdir().unwrap();
    let head = given_a_log(dir.path(), keyed());
    set_settled(dir.path(), 0);
    std::fs::remove_file(dir.path().join("signed-head")).unwrap();
    match SledLog::open(dir.path(), keyed()) {
        Err(OpenError::SignedHead {
            error: CheckpointError::Missing,
            ..
        }) => {}
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("opened"),
    }
    assert_eq!(sled_holds(dir.path()), (0, head.position));
    restored_holds(dir.path(), head.position, head, Options::default());
}

/// The journal holds acknowledged records sled never took (its inserter
/// failed), and the settled position is then lowered below them: they do
/// not continue the log there, and the open is refused with sled and the
/// journal untouched.
#[test]
fn a_journal_that_does_not_continue_the_settled_position_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let settled = given_a_log(dir.path(), Options::default());
    {
        let armed = Arc::new(AtomicBool::new(false));
        let failing = Arc::clone(&armed);
        let failed = Arc::new(AtomicBool::new(false));
        let told = Arc::clone(&failed);
        let faults: FaultInjector = Arc::new(move |at| {
            if at == FaultPoint::Insert && failing.load(Ordering::SeqCst) {
                told.store(true, Ordering::SeqCst);
                Err(io::Error::other("injected: sled refuses"))
            } else {
                Ok(())
            }
        });
        let options = Options {
            faults: Some(faults),
            ..Options::default()
        };
        let log = SledLog::open(dir.path(), options).unwrap();
        armed.store(true, Ordering::SeqCst);
        let ids = EVENTS + 1..=EVENTS + 4;
        assert_eq!(
            log.append(ids.map(event).collect(), Expectation::Any),
            Ok((settled.position + 1..=settled.position + 4).collect())
        );
        // The inserter takes the group after the append is answered:
        // disarmed before it fails, the group would go in and settle.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !failed.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the insert never failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The log is poisoned: closing it does not settle.
        armed.store(false, Ordering::SeqCst);
    }
    set_settled(dir.path(), LOWERED);
    match SledLog::open(dir.path(), Options::default()) {
        Err(OpenError::Damaged(damage)) => assert_eq!(damage.position, LOWERED + 1),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("opened"),
    }
    assert_eq!(sled_holds(dir.path()), (LOWERED, settled.position));
    // Put back, the journal's records are still there to be taken in.
    set_settled(dir.path(), settled.position);
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.head().position, settled.position + 4);
    assert_eq!(log.verify().unwrap().records, settled.position + 4);
}
