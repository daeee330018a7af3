//! The JSON-lines sink: a write that fails stops it taking records, so a
//! layer that refuses what it cannot record refuses from then on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokenledger_events::Timestamp;
use tokenledger_tower::{DecisionRecord, DecisionSink, JsonLinesSink, SinkError};

fn a_record(request_id: &str) -> DecisionRecord {
    let mut record = DecisionRecord::new(request_id.to_owned(), Timestamp::from_micros(1));
    record.status = 401;
    record.reason = "missing_bearer";
    record
}

#[test]
fn a_failed_write_is_reported_and_nothing_more_is_taken() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let sink = JsonLinesSink::open(Path::new("/dev/full"), 16).unwrap();
    sink.record(a_record("r1")).unwrap();
    assert!(sink.sync().is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sink.record(a_record("r2")) {
            Err(SinkError::Failed { cause }) => {
                assert!(cause.contains("space"), "{cause}");
                break;
            }
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            other => panic!("still taking records: {other:?}"),
        }
    }
    // Taken, then lost with the write: counted; refused later: not.
    assert_eq!(sink.lost(), 1);
}

#[test]
fn a_queue_of_no_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = JsonLinesSink::open(&dir.path().join("records.jsonl"), 0);
    assert_eq!(
        refused.err().map(|error| error.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
}

#[test]
fn records_are_lines_of_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    let sink = JsonLinesSink::open(&path, 16).unwrap();
    sink.record(a_record("r1")).unwrap();
    sink.record(a_record("r2")).unwrap();
    sink.sync().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["r1", "r2"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
