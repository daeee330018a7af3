//! Tampering: records changed through sled, and bytes flipped in the
//! database files. Each is reported by `verify` or refused at open, with a
//! position; never a panic, never wrong data passed off as the log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;
use common::{copy_dir, through_sled};

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use tokenledger_events::*;
use tokenledger_store::*;

const EVENTS: u64 = 40;

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

/// Given a log of EVENTS events, appended a few at a time.
fn given_a_log(dir: &Path) -> (Head, Vec<StoredEvent>) {
    let log = SledLog::open(dir, Options::default()).unwrap();
    for chunk in (1..=u128::from(EVENTS)).collect::<Vec<_>>().chunks(4) {
        log.append(
            chunk.iter().map(|id| event(*id)).collect(),
            Expectation::Any,
        )
        .unwrap();
    }
    (log.head(), log.read(1, 1000).unwrap())
}

/// The key of the page whose last record is at `position`, as
/// `crates/store/src/page.rs` lays it out.
fn key(position: u64) -> Vec<u8> {
    let mut key = vec![b'L'];
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The page that holds `position`: its key, the positions of its first and
/// last records, and its bytes (layout byte, record count, records).
fn page_holding(log: &sled::Tree, position: u64) -> (Vec<u8>, u64, u64, Vec<u8>) {
    let (key, value) = log.range(key(position)..).next().unwrap().unwrap();
    let last = u64::from_be_bytes(key[1..].try_into().unwrap());
    let count = u64::from(u16::from_be_bytes([value[1], value[2]]));
    (key.to_vec(), last + 1 - count, last, value.to_vec())
}

/// The prefix of the runs of company `n`'s stream, as
/// `crates/store/src/stream_index.rs` lays them out.
fn company_runs(n: u128) -> Vec<u8> {
    let mut prefix = vec![b'S', 1];
    prefix.extend_from_slice(&n.to_be_bytes());
    prefix
}

/// The entries of a run of a company's stream: (position, record).
fn entries(mut value: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut entries = Vec::new();
    while !value.is_empty() {
        let position = u64::from_be_bytes(value[..8].try_into().unwrap());
        let len = u32::from_be_bytes(value[8..12].try_into().unwrap()) as usize;
        entries.push((position, value[12..12 + len].to_vec()));
        value = &value[12 + len..];
    }
    entries
}

fn encode(entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut value = Vec::new();
    for (position, record) in entries {
        value.extend_from_slice(&position.to_be_bytes());
        value.extend_from_slice(&(record.len() as u32).to_be_bytes());
        value.extend_from_slice(record);
    }
    value
}

fn damage_reported(dir: &Path) -> Damage {
    let log = SledLog::open(dir, Options::default()).unwrap();
    log.verify().unwrap_err()
}

#[test]
fn one_changed_byte_in_a_record_is_found_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    let changed = through_sled(dir.path(), |log| {
        // A page's last byte is its last record's.
        let (key, _, last, mut value) = page_holding(log, 17);
        let end = value.len() - 1;
        value[end] ^= 0x20;
        log.insert(key, value).unwrap();
        last
    });
    let damage = damage_reported(dir.path());
    assert_eq!(damage.position, changed);
    assert!(
        matches!(damage.problem, Problem::HashMismatch { .. }),
        "{damage}"
    );
    assert!(
        damage
            .to_string()
            .starts_with(&format!("log position {changed}:")),
        "{damage}"
    );
    // Reading over it reports the same place.
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.read(10, 20).unwrap_err().position, changed);
}

#[test]
fn a_changed_copy_in_a_companys_stream_is_found_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let (_, events) = given_a_log(dir.path());
    let changed = through_sled(dir.path(), |log| {
        let (key, value) = log.scan_prefix(company_runs(1)).nth(1).unwrap().unwrap();
        let mut value = value.to_vec();
        let (changed, _) = entries(&value).last().cloned().unwrap();
        let end = value.len() - 1;
        value[end] ^= 0x20;
        log.insert(key, &value[..]).unwrap();
        changed
    });
    let damage = damage_reported(dir.path());
    assert_eq!(damage.position, changed);
    assert!(
        matches!(damage.problem, Problem::HashMismatch { .. }),
        "{damage}"
    );
    // A read of the company's stream over it reports the same place; the
    // log itself still reads whole.
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    let company = Stream::Company(CompanyId::from_u128(1));
    assert_eq!(
        log.read_stream(company, 1, 100).unwrap_err().position,
        changed
    );
    assert_eq!(log.read(1, 100).unwrap(), events);
}

#[test]
fn a_copy_cut_from_or_moved_out_of_a_companys_stream_is_found() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    // Cut: the second record of the first run.
    let cut = through_sled(dir.path(), |log| {
        let (key, value) = log.scan_prefix(company_runs(1)).next().unwrap().unwrap();
        let mut kept = entries(&value);
        let (cut, _) = kept.remove(1);
        log.insert(key, encode(&kept)).unwrap();
        cut
    });
    let damage = damage_reported(dir.path());
    assert_eq!(
        damage,
        Damage {
            position: cut,
            problem: Problem::CopyDisagrees("is missing"),
        }
    );

    // Moved: the last run, under company 2.
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    let moved = through_sled(dir.path(), |log| {
        let (key, value) = log
            .scan_prefix(company_runs(1))
            .next_back()
            .unwrap()
            .unwrap();
        log.remove(&key).unwrap();
        let mut elsewhere = company_runs(2);
        elsewhere.extend_from_slice(&key[18..]);
        log.insert(elsewhere, value.clone()).unwrap();
        entries(&value)[0].0
    });
    let damage = damage_reported(dir.path());
    assert_eq!(
        damage,
        Damage {
            position: moved,
            problem: Problem::CopyDisagrees("is in another company's stream"),
        }
    );
    // A read of company 2's stream refuses the stranger too.
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        log.read_stream(Stream::Company(CompanyId::from_u128(2)), 1, 1000),
        Err(Damage {
            position: moved,
            problem: Problem::IndexDisagrees("it is not in the stream read"),
        })
    );
}

/// The first entry of the index of event ids, as
/// `crates/store/src/segments.rs` lays them out: chunks under `J` ‖ `I`,
/// entries of id (16 bytes) ‖ position (8), and filters under `F` ‖ `I`,
/// after an 8-byte count.
const EVENT_ID_CHUNKS: [u8; 2] = [b'J', b'I'];
const EVENT_ID_FILTERS: [u8; 2] = [b'F', b'I'];
const ENTRY: usize = 24;

#[test]
fn an_entry_cut_from_or_a_filter_emptied_in_the_index_of_event_ids_is_found() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    // Cut: the second entry of the first chunk.
    let cut = through_sled(dir.path(), |log| {
        let (key, value) = log.scan_prefix(EVENT_ID_CHUNKS).next().unwrap().unwrap();
        let (kept, rest) = value.split_at(ENTRY);
        let (second, rest) = rest.split_at(ENTRY);
        log.insert(key, [kept, rest].concat()).unwrap();
        u64::from_be_bytes(second[16..].try_into().unwrap())
    });
    assert_eq!(
        damage_reported(dir.path()),
        Damage {
            position: cut,
            problem: Problem::IndexDisagrees("its segment holds other entries than it should"),
        }
    );

    // Emptied: a filter that holds no id, so every lookup would miss.
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    through_sled(dir.path(), |log| {
        let (key, value) = log.scan_prefix(EVENT_ID_FILTERS).next().unwrap().unwrap();
        let mut emptied = value.to_vec();
        emptied[8..].fill(0);
        log.insert(key, emptied).unwrap();
    });
    assert_eq!(
        damage_reported(dir.path()),
        Damage {
            position: 1,
            problem: Problem::IndexDisagrees("the filter of its segment leaves its id out"),
        }
    );
}

#[test]
fn a_deleted_page_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    let first = through_sled(dir.path(), |log| {
        let (key, first, _, _) = page_holding(log, 9);
        log.remove(key).unwrap();
        first
    });
    let damage = damage_reported(dir.path());
    assert_eq!(damage.position, first);
    assert_eq!(damage.problem, Problem::Gap { expected: first });
}

#[test]
fn a_page_moved_to_another_position_is_found() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    let (moved_to, found) = through_sled(dir.path(), |log| {
        let (_, first, last, value) = page_holding(log, 1);
        let (key, next, _, _) = page_holding(log, last + 1);
        log.insert(key, value).unwrap();
        (next, first)
    });
    let damage = damage_reported(dir.path());
    assert_eq!(damage.position, moved_to);
    assert_eq!(damage.problem, Problem::PositionMismatch { found });
}

#[test]
fn a_garbled_page_is_found_at_the_position_it_should_start() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    let first = through_sled(dir.path(), |log| {
        let (key, first, _, mut value) = page_holding(log, 21);
        // The length of its first record, now longer than the page.
        value[3] = 0xff;
        log.insert(key, value).unwrap();
        first
    });
    let damage = damage_reported(dir.path());
    assert_eq!(damage.position, first);
    assert!(matches!(damage.problem, Problem::Page(_)), "{damage}");
}

#[test]
fn a_truncated_tail_is_refused_with_a_known_head() {
    let dir = tempfile::tempdir().unwrap();
    let (head, _) = given_a_log(dir.path());
    let kept = through_sled(dir.path(), |log| {
        let (_, first, _, _) = page_holding(log, 30);
        for position in first..=EVENTS {
            log.remove(key(position)).unwrap();
        }
        first - 1
    });
    // The position sled was last settled at is beyond the end.
    // (Its company's copies of the records cut are still there too.)
    let error = SledLog::open(dir.path(), Options::default()).err().unwrap();
    assert!(
        matches!(
            error,
            OpenError::Damaged(Damage {
                position: EVENTS,
                problem: Problem::Missing
            })
        ),
        "{error}"
    );
    // Rewrite that. The company's copies of what was cut now lie above the
    // settled position, where every open takes the runs out whatever their
    // stream (a crash can leave runs there without their pages: issue 28,
    // item 5). So only a known head tells a log cut this way, and it is
    // refused before anything is removed.
    through_sled(dir.path(), |log| {
        log.insert(b"H", &kept.to_be_bytes()[..]).unwrap();
    });
    let copies_above = |dir: &Path| {
        through_sled(dir, |log| {
            log.scan_prefix(company_runs(1))
                .flat_map(|run| entries(&run.unwrap().1))
                .filter(|(position, _)| *position > kept)
                .count()
        })
    };
    assert!(copies_above(dir.path()) > 0);
    let options = Options {
        known_head: Some(head),
        ..Options::default()
    };
    let error = SledLog::open(dir.path(), options).err().unwrap();
    assert!(matches!(error, OpenError::RolledBack { .. }), "{error}");
    assert!(
        copies_above(dir.path()) > 0,
        "a refused open removed copies"
    );
    // Without the known head a shorter log is a consistent log.
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.verify().unwrap().records, kept);
    drop(log);
    assert_eq!(copies_above(dir.path()), 0);
}

#[test]
fn a_log_in_another_layout_or_in_none_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    given_a_log(dir.path());
    let written = through_sled(dir.path(), |log| {
        log.insert(b"V", &8u32.to_be_bytes()[..]).unwrap()
    })
    .expect("the log was created with its layout version");
    let error = SledLog::open(dir.path(), Options::default()).err().unwrap();
    assert!(
        matches!(error, OpenError::Layout { found: Some(8), expected } if expected.to_be_bytes()[..] == written[..]),
        "{error}"
    );
    assert!(error.to_string().contains("layout version 8"), "{error}");

    // A log written before layouts were recorded has none.
    through_sled(dir.path(), |log| {
        log.remove(b"V").unwrap();
    });
    let error = SledLog::open(dir.path(), Options::default()).err().unwrap();
    assert!(
        matches!(error, OpenError::Layout { found: None, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no layout version"), "{error}");

    // Refusing wrote nothing: the version put back, the log opens whole.
    through_sled(dir.path(), |log| {
        log.insert(b"V", written).unwrap();
    });
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.verify().unwrap().records, EVENTS);
}

/// Flips one byte of a database file, then opens and verifies with the
/// known head. Returns what happened, or panics if damage went unnoticed.
fn flip_and_check(
    original: &Path,
    file: &str,
    offset: u64,
    head: Head,
    events: &[StoredEvent],
) -> &'static str {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(original, dir.path());
    let path = dir.path().join("sled").join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (offset as usize) % bytes.len();
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let options = Options {
            known_head: Some(head),
            ..Options::default()
        };
        let log = match SledLog::open(dir.path(), options) {
            Err(error) => {
                assert!(!error.to_string().is_empty());
                return "refused at open";
            }
            Ok(log) => log,
        };
        if log.verify().is_err() {
            return "reported by verify";
        }
        match log.read(1, 1000) {
            Err(_) => "reported by read",
            Ok(read) => {
                assert_eq!(read, events, "{file} byte {at} changed the log silently");
                "no effect on the log"
            }
        }
    }));
    match outcome {
        Ok(what) => what,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{file} byte {at}: panicked: {message}");
        }
    }
}

/// The journal of a log that was not closed, as a crash leaves it: its
/// frames are what a reopen puts back. A damaged frame before the last is
/// refused with its offset; a damaged last frame is taken for a write torn
/// by the crash, which the known head catches.
#[test]
fn a_damaged_journal_frame_is_refused_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    for chunk in [[1, 2], [3, 4], [5, 6]] {
        log.append(chunk.map(event).to_vec(), Expectation::Any)
            .unwrap();
    }
    let (head, events) = (log.head(), log.read(1, 10).unwrap());
    // Copied while open, as if the process had died here.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    drop(log);
    let journal = std::fs::read(crashed.path().join("journal")).unwrap();
    let last = journal.iter().rposition(|&b| b != 0).unwrap();
    let known = Options {
        known_head: Some(head),
        ..Options::default()
    };

    let opened = |damaged_at: Option<usize>| {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), copy.path());
        let mut bytes = journal.clone();
        if let Some(at) = damaged_at {
            bytes[at] ^= 0x40;
        }
        std::fs::write(copy.path().join("journal"), &bytes).unwrap();
        SledLog::open(copy.path(), known.clone()).map(|log| log.read(1, 10).unwrap())
    };
    assert_eq!(opened(None).unwrap(), events, "the control");
    // The header's two copies lie in blocks of their own: either one
    // damaged, the other reads.
    for at in [0, 4096 + 11] {
        assert_eq!(opened(Some(at)).unwrap(), events, "byte {at}");
    }
    // The first frame starts after the two 4 KiB blocks of headers.
    for at in [8192, 8192 + 11, 8192 + 100] {
        match opened(Some(at)) {
            Err(OpenError::DamagedJournal { offset: 8192, .. }) => {}
            other => panic!("byte {at}: {other:?}"),
        }
    }
    match opened(Some(last)) {
        Err(OpenError::RolledBack { .. }) => {}
        other => panic!("the last frame: {other:?}"),
    }
}

/// sled treats a damaged entry in its file as a torn write and recovers
/// the log up to it, silently dropping everything after: on its own that
/// is a shorter log that verifies. The known head, kept outside the data
/// directory, is what turns that into a refusal.
#[test]
fn flipped_bytes_in_the_database_files_never_pass_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (head, events) = given_a_log(dir.path());
    let len = std::fs::metadata(dir.path().join("sled/db")).unwrap().len();
    // The control: an untouched copy opens and reads back the same log.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let reopened = SledLog::open(copy.path(), Options::default()).unwrap();
    assert_eq!(reopened.read(1, 1000).unwrap(), events);
    let mut outcomes = std::collections::BTreeMap::new();
    // Offsets spread over the file, from a fixed seed so a failure repeats.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let what = flip_and_check(dir.path(), "db", x % len, head, &events);
        *outcomes.entry(what).or_insert(0) += 1;
    }
    let what = flip_and_check(dir.path(), "conf", 3, head, &events);
    *outcomes.entry(what).or_insert(0) += 1;
    eprintln!("outcomes of 61 flipped bytes: {outcomes:?}");
}

/// sled's files as the power-loss test left them once, before our copy
/// of sled recorded only synced positions in its segment headers
/// (`vendor/README.md`): recovering them, sled 0.34 panics ("tried to
/// serialize Uninitialized"). Damaged files are an error naming the
/// directory, never a panic.
#[test]
fn sled_files_whose_recovery_panics_are_refused_with_an_error() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-panics-recovering");
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("sled");
    std::fs::create_dir(&sled_dir).unwrap();
    std::fs::copy(fixture.join("conf"), sled_dir.join("conf")).unwrap();
    let compressed = std::fs::File::open(fixture.join("db.zst")).unwrap();
    let mut db = ruzstd::decoding::StreamingDecoder::new(compressed).unwrap();
    std::io::copy(
        &mut db,
        &mut std::fs::File::create(sled_dir.join("db")).unwrap(),
    )
    .unwrap();

    let opened = catch_unwind(AssertUnwindSafe(|| {
        SledLog::open(dir.path(), Options::default())
    }));

    let error = match opened {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(_)) => panic!("damaged sled files opened"),
        Err(_) => panic!("opening damaged sled files panicked"),
    };
    assert!(error.contains("sled failed recovering"), "{error}");
    assert!(error.contains(&sled_dir.display().to_string()), "{error}");
}
