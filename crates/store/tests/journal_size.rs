//! A log closed cleanly leaves its journal cut back to its headers: an
//! open reads the whole journal file, and a grown journal's frames of
//! earlier generations are megabytes it cannot use.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use tokenledger_events::*;
use tokenledger_store::*;

/// The journal's two header blocks.
const HEADERS: u64 = 2 * 4096;

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

#[test]
fn a_clean_close_cuts_the_journal_back_to_its_headers_and_it_grows_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let options = Options {
        // Settles now and then while appending, as a grown journal does.
        journal_bytes: Some(64 * 1024),
        ..Options::default()
    };
    let log = SledLog::open(dir.path(), options.clone()).unwrap();
    for id in 1..=300 {
        log.append(vec![event(id)], Expectation::Any).unwrap();
    }
    assert!(std::fs::metadata(&journal).unwrap().len() > HEADERS);
    let head = log.head();
    drop(log);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), HEADERS);

    let log = SledLog::open(dir.path(), options.clone()).unwrap();
    assert_eq!(log.head(), head);
    for id in 301..=400 {
        log.append(vec![event(id)], Expectation::Any).unwrap();
    }
    let head = log.head();
    drop(log);
    let log = SledLog::open(dir.path(), options).unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.read(1, 400).unwrap().len(), 400);
    assert!(log.verify().is_ok());
}
