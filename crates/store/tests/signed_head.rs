//! The signed head: with a checkpoint key, the log keeps its head signed
//! in the data directory, refreshed at each settle and on close, and an
//! open refuses a log whose signed head is missing, forged, or not in it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;
use common::copy_dir;

use std::path::Path;

use tokenledger_events::*;
use tokenledger_store::*;

const SIGNED_HEAD: &str = "signed-head";

fn key(byte: u8) -> CheckpointKey {
    CheckpointKey::from_bytes([byte; 32])
}

fn keyed(byte: u8) -> Options {
    Options {
        checkpoint_key: Some(key(byte)),
        ..Options::default()
    }
}

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

/// Appends events `ids` of `company` one at a time, opened with `options`,
/// and closes the log; returns its head.
fn append(
    dir: &Path,
    options: Options,
    ids: std::ops::RangeInclusive<u128>,
    company: u128,
) -> Head {
    let log = SledLog::open(dir, options).unwrap();
    for id in ids {
        log.append(vec![event(id, company)], Expectation::Any)
            .unwrap();
    }
    log.head()
}

fn refused(dir: &Path, options: Options) -> (CheckpointError, String) {
    match SledLog::open(dir, options) {
        Err(OpenError::SignedHead { error, path }) => {
            assert_eq!(path, dir.join(SIGNED_HEAD));
            let message = OpenError::SignedHead {
                path,
                error: error.clone(),
            }
            .to_string();
            (error, message)
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn a_closed_log_reopens_with_its_key_and_its_signed_head_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // A new log is signed at once, empty.
    drop(SledLog::open(dir.path(), keyed(1)).unwrap());
    assert!(dir.path().join(SIGNED_HEAD).exists());
    append(dir.path(), keyed(1), 1..=5, 1);
    let head = append(dir.path(), keyed(1), 6..=9, 1);
    let log = SledLog::open(dir.path(), keyed(1)).unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.verify().unwrap().records, 9);
}

#[test]
fn a_missing_signed_head_on_a_log_with_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), keyed(1), 1..=3, 1);
    std::fs::remove_file(dir.path().join(SIGNED_HEAD)).unwrap();
    let (error, message) = refused(dir.path(), keyed(1));
    assert_eq!(error, CheckpointError::Missing);
    assert!(message.contains("there is none"), "{message}");
    // Refusing signed nothing.
    assert!(!dir.path().join(SIGNED_HEAD).exists());
}

#[test]
fn a_forged_signed_head_or_one_under_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), keyed(1), 1..=3, 1);
    let (error, message) = refused(dir.path(), keyed(2));
    assert_eq!(error, CheckpointError::BadMac);
    assert!(message.contains("forged, or the wrong key"), "{message}");

    // A changed bit of the MAC, the file's last 32 bytes.
    let path = dir.path().join(SIGNED_HEAD);
    let original = std::fs::read(&path).unwrap();
    let mut forged = original.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    std::fs::write(&path, &forged).unwrap();
    assert_eq!(refused(dir.path(), keyed(1)).0, CheckpointError::BadMac);

    // A file cut short is damaged, not missing.
    std::fs::write(&path, &original[..40]).unwrap();
    assert!(matches!(
        refused(dir.path(), keyed(1)).0,
        CheckpointError::Malformed(_)
    ));

    // The original opens.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(
        SledLog::open(dir.path(), keyed(1)).unwrap().head().position,
        3
    );
}

/// An older copy of the directory, as an attacker could restore, beside
/// the newer signed head: the log ends before the position signed.
#[test]
fn a_log_rolled_back_behind_its_signed_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), keyed(1), 1..=4, 1);
    let older = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), older.path());
    append(dir.path(), keyed(1), 5..=8, 1);
    std::fs::copy(dir.path().join(SIGNED_HEAD), older.path().join(SIGNED_HEAD)).unwrap();
    let (error, message) = refused(older.path(), keyed(1));
    assert_eq!(
        error,
        CheckpointError::Truncated {
            position: 8,
            head: 4
        }
    );
    assert!(message.contains("truncated or rolled back"), "{message}");
    // Without the key nothing is checked: the older log opens.
    assert_eq!(
        SledLog::open(older.path(), Options::default())
            .unwrap()
            .head()
            .position,
        4
    );
}

/// Another history of the same length, signed with the same key: the
/// signed position holds another record.
#[test]
fn a_rewritten_log_is_refused_at_the_signed_position() {
    let dir = tempfile::tempdir().unwrap();
    let head = append(dir.path(), keyed(1), 1..=4, 1);
    let other = tempfile::tempdir().unwrap();
    let other_head = append(other.path(), keyed(1), 1..=4, 2);
    std::fs::copy(dir.path().join(SIGNED_HEAD), other.path().join(SIGNED_HEAD)).unwrap();
    let (error, message) = refused(other.path(), keyed(1));
    assert_eq!(
        error,
        CheckpointError::Rewritten {
            position: 4,
            signed: head.hash,
            found: other_head.hash,
        }
    );
    assert!(message.contains("rewritten"), "{message}");
}

/// The signed head moves with each settle, not only on close: an older
/// copy taken while the log was open is refused beside the signed head
/// that a settle wrote after it.
#[test]
fn a_settle_refreshes_the_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        // Three frames of a block each: the first append does not settle,
        // so the copy below is not made while a settle signs.
        journal_bytes: Some(3 * 4096),
        ..keyed(1)
    };
    let log = SledLog::open(dir.path(), options.clone()).unwrap();
    log.append(vec![event(1, 1)], Expectation::Any).unwrap();
    let older = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), older.path());
    let signed = std::fs::read(dir.path().join(SIGNED_HEAD)).unwrap();
    let mut id = 2;
    while std::fs::read(dir.path().join(SIGNED_HEAD)).unwrap() == signed {
        assert!(id < 1_000, "no settle signed the head");
        log.append(vec![event(id, 1)], Expectation::Any).unwrap();
        id += 1;
    }
    // Still open: the newer signed head is a settle's.
    std::fs::copy(dir.path().join(SIGNED_HEAD), older.path().join(SIGNED_HEAD)).unwrap();
    assert!(matches!(
        refused(older.path(), options).0,
        CheckpointError::Truncated { head: 1, .. }
    ));
    drop(log);
}

#[test]
fn a_log_written_without_a_key_is_signed_only_explicitly_and_only_whole() {
    let dir = tempfile::tempdir().unwrap();
    let head = append(dir.path(), Options::default(), 1..=6, 1);
    // Opening with a key does not sign it silently.
    assert_eq!(refused(dir.path(), keyed(1)).0, CheckpointError::Missing);
    let verified = SledLog::sign_head(dir.path(), &key(1), Options::default()).unwrap();
    assert_eq!((verified.records, verified.head), (6, head));
    assert_eq!(SledLog::open(dir.path(), keyed(1)).unwrap().head(), head);
    // Signed once: a second adoption is refused, whatever the key.
    assert!(matches!(
        SledLog::sign_head(dir.path(), &key(2), Options::default()),
        Err(OpenError::AlreadySigned(_))
    ));

    // A log that does not verify is not signed.
    let damaged = tempfile::tempdir().unwrap();
    append(damaged.path(), Options::default(), 1..=6, 1);
    let db = sled::open(damaged.path().join("sled")).unwrap();
    let events = db.open_tree("events").unwrap();
    // The copy of a record in its company's stream, cut: only `verify`
    // walks those.
    let (run, _) = events.scan_prefix([b'S', 1]).next().unwrap().unwrap();
    events.remove(run).unwrap();
    db.flush().unwrap();
    drop(events);
    drop(db);
    assert!(matches!(
        SledLog::sign_head(damaged.path(), &key(1), Options::default()),
        Err(OpenError::Damaged(_))
    ));
    assert!(!damaged.path().join(SIGNED_HEAD).exists());
}
