//! Runs of the stream index above the settled position, left by a crash
//! whose runs reached the disk without their pages (a drive that reorders
//! writes, a lost write; issue 28, item 5): every open takes them out,
//! whichever stream they belong to, so that no read by stream returns a
//! position that was never acknowledged, nor one a later append reuses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;
use common::through_sled;

use std::path::Path;

use tokenledger_events::*;
use tokenledger_store::*;

fn event(id: u128, company: u128) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::System,
        company: CompanyId::from_u128(company),
        event: Event::WorkspaceCreated {
            workspace: WorkspaceId::from_u128(id),
            name: Name::new("Support").unwrap(),
        },
    }
}

/// The key of a run of `company`'s stream that starts at `first`
/// (`crates/store/src/stream_index.rs`).
fn run_key(company: u128, first: u64) -> Vec<u8> {
    let mut key = vec![b'S', 1];
    key.extend_from_slice(&company.to_be_bytes());
    key.extend_from_slice(&first.to_be_bytes());
    key
}

/// One entry of a run of records: position, length, record.
fn entry(position: u64, record: &[u8]) -> Vec<u8> {
    let mut entry = position.to_be_bytes().to_vec();
    entry.extend_from_slice(&(record.len() as u32).to_be_bytes());
    entry.extend_from_slice(record);
    entry
}

fn positions(log: &SledLog, company: u128) -> Vec<u64> {
    log.read_stream(
        Stream::Company(CompanyId::from_u128(company)),
        1,
        usize::MAX,
    )
    .unwrap()
    .iter()
    .map(|e| e.envelope.position)
    .collect()
}

/// Gives company 1 a run entry above `settled` (a merge onto its last
/// run, which starts at `first`), and company 2, which has no event
/// above it either, a whole run there: neither has a page above `settled`.
fn leave_runs_above(dir: &Path, first: u64, settled: u64) {
    through_sled(dir, |events| {
        let last_run = events.get(run_key(1, first)).unwrap().unwrap();
        let len = u32::from_be_bytes(last_run[8..12].try_into().unwrap()) as usize;
        let record = last_run[12..12 + len].to_vec();
        let mut grown = last_run.to_vec();
        grown.extend(entry(settled + 1, &record));
        events.insert(run_key(1, first), grown).unwrap();
        events
            .insert(run_key(2, settled + 2), entry(settled + 2, &record))
            .unwrap();
    });
}

#[test]
fn an_open_takes_out_runs_above_the_settled_position_whatever_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SledLog::open(dir.path(), Options::default()).unwrap();
        log.append(vec![event(1, 1), event(2, 2)], Expectation::Any)
            .unwrap();
        log.append(vec![event(3, 1), event(4, 2)], Expectation::Any)
            .unwrap();
    }
    // Closed cleanly: settled at 4, company 1's only run starts at 1.
    leave_runs_above(dir.path(), 1, 4);

    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(positions(&log, 1), vec![1, 3]);
    assert_eq!(positions(&log, 2), vec![2, 4]);
    for (company, head) in [(1, 3), (2, 4)] {
        let stream = Stream::Company(CompanyId::from_u128(company));
        assert_eq!(log.stream_head(stream).unwrap(), head, "{stream}");
    }
    // The positions the stale runs named are appended again, for
    // another company: neither stream gains them.
    log.append(vec![event(5, 3), event(6, 3)], Expectation::Any)
        .unwrap();
    assert_eq!(positions(&log, 1), vec![1, 3]);
    assert_eq!(positions(&log, 2), vec![2, 4]);
    assert_eq!(positions(&log, 3), vec![5, 6]);
    assert_eq!(log.verify().unwrap().records, 6);
}
