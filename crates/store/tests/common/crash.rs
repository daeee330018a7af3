//! The crash tests' child and check: a child appends batches from four
//! threads and prints each acknowledgement (or compacts over and over);
//! the parent checks a reopened log against every acknowledgement.
//! `crash.rs` kills the child; `power_loss.rs` also loses what it did not
//! sync.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tokenledger_events::*;
use tokenledger_store::*;

pub const CHILD: &str = "TOKENLEDGER_CRASH_CHILD";
pub const JOURNAL_BYTES: &str = "TOKENLEDGER_CRASH_JOURNAL_BYTES";
/// Set, the child compacts the log over and over rather than appending.
pub const COMPACT: &str = "TOKENLEDGER_CRASH_COMPACT";
/// Set, the log is opened with [`checkpoint_key`], so it keeps a signed
/// head, rewritten at every settle.
pub const SIGNED: &str = "TOKENLEDGER_CRASH_SIGNED";
pub const THREADS: u128 = 4;
pub const BATCH: u128 = 3;

/// An event id: the run's nonce, the thread, the batch, the index in the batch.
pub fn event_id(nonce: u128, thread: u128, batch: u128, index: u128) -> u128 {
    (nonce << 64) | (thread << 48) | (batch << 2) | index
}

pub fn batch_of(id: u128) -> u128 {
    id >> 2
}

/// The checkpoint key of a signed log: in the test, as no real key is.
pub fn checkpoint_key() -> CheckpointKey {
    CheckpointKey::from_bytes([7; 32])
}

/// Options with the checkpoint key if `SIGNED` is set.
pub fn signed_if_asked() -> Options {
    Options {
        checkpoint_key: std::env::var_os(SIGNED).map(|_| checkpoint_key()),
        ..Options::default()
    }
}

pub fn child(dir: &Path) {
    let options = Options {
        journal_bytes: std::env::var(JOURNAL_BYTES)
            .ok()
            .and_then(|v| v.parse().ok()),
        ..signed_if_asked()
    };
    if std::env::var_os(COMPACT).is_some() {
        println!("open");
        loop {
            SledLog::compact(dir, options.clone()).unwrap();
            println!("compacted");
        }
    }
    let log = SledLog::open(dir, options).unwrap();
    println!("open");
    let nonce = nonce();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let log = &log;
            scope.spawn(move || {
                for batch in 0.. {
                    let events = new_batch(nonce, thread, batch);
                    let first = events[0].event_id;
                    let positions = log.append(events, Expectation::Any).unwrap();
                    acknowledge(first, positions[0]);
                }
            });
        }
    });
}

/// Tells the parent a batch is acknowledged, in one line: `ack <first
/// event id> <first position>`.
pub fn acknowledge(first: EventId, position: u64) {
    println!("ack {} {position}", first.as_u128());
}

/// A number no other child of the run uses, for the ids of its events.
pub fn nonce() -> u128 {
    u128::from(std::process::id()) << 32
        | u128::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        )
}

/// The batch `batch` of thread `thread`: BATCH events.
pub fn new_batch(nonce: u128, thread: u128, batch: u128) -> Vec<NewEvent> {
    (0..BATCH)
        .map(|index| {
            let id = event_id(nonce, thread, batch, index);
            NewEvent {
                event_id: EventId::from_u128(id),
                actor: Actor::System,
                // A company per thread: a stream each, whose runs grow
                // across crashes; and a token per thread, whose stream is
                // kept in the index of token ids.
                company: CompanyId::from_u128(1 + thread),
                event: if index % 2 == 0 {
                    Event::WorkspaceCreated {
                        workspace: WorkspaceId::from_u128(id),
                        name: Name::new("crash").unwrap(),
                    }
                } else {
                    Event::TokenRevealed {
                        token: TokenId::from_u128(1 + thread),
                    }
                },
            }
        })
        .collect()
}

/// Reads a child's lines: each acknowledged batch (first event id →
/// first position), and how many times each other line came.
pub fn read_child(
    stdout: impl std::io::Read,
    opened: std::sync::mpsc::Sender<String>,
) -> (Vec<(u128, u64)>, BTreeMap<String, usize>) {
    use std::io::BufRead;
    let mut acks = Vec::new();
    let mut others = BTreeMap::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.split(' ').collect();
        // A line cut by the kill does not parse, and is no acknowledgement.
        if let ["ack", id, position] = parts[..] {
            if let (Ok(id), Ok(position)) = (id.parse::<u128>(), position.parse::<u64>()) {
                acks.push((id, position));
            }
            continue;
        }
        let _ = opened.send(line.clone());
        *others.entry(line).or_insert(0) += 1;
    }
    (acks, others)
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Checks the log in `dir` against every acknowledged batch; a failure
/// names the kill point `point`.
pub fn check(dir: &Path, acknowledged: &BTreeMap<u128, u64>, point: impl std::fmt::Display) {
    check_with(dir, Options::default(), acknowledged, point);
}

/// [`check`], opening the log with `options`.
pub fn check_with(
    dir: &Path,
    options: Options,
    acknowledged: &BTreeMap<u128, u64>,
    point: impl std::fmt::Display,
) {
    let log = SledLog::open(dir, options)
        .unwrap_or_else(|e| panic!("kill point {point}: the log does not reopen: {e}"));
    let verified = log
        .verify()
        .unwrap_or_else(|e| panic!("kill point {point}: the log does not verify: {e}"));
    let events = log.read(1, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, verified.records);
    let by_position: BTreeMap<u64, u128> = events
        .iter()
        .map(|e| (e.envelope.position, e.envelope.event_id.as_u128()))
        .collect();
    for (id, position) in acknowledged {
        assert_eq!(
            by_position.get(position),
            Some(id),
            "kill point {point}: acknowledged event {id} is not at position {position}"
        );
    }
    // Each company's stream and each token's holds exactly its events,
    // however the runs of the index were cut and its segments written.
    for thread in 0..THREADS {
        let (company, token) = (
            CompanyId::from_u128(1 + thread),
            TokenId::from_u128(1 + thread),
        );
        for stream in [Stream::Company(company), Stream::Token(token)] {
            let expected: Vec<u64> = events
                .iter()
                .filter(|e| match stream {
                    Stream::Token(_) => e.envelope.event.token() == Some(token),
                    _ => e.envelope.company == company,
                })
                .map(|e| e.envelope.position)
                .collect();
            let found: Vec<u64> = log
                .read_stream(stream, 1, usize::MAX)
                .unwrap_or_else(|e| panic!("kill point {point}: {stream} does not read: {e}"))
                .iter()
                .map(|e| e.envelope.position)
                .collect();
            assert_eq!(found, expected, "kill point {point}: {stream}");
            assert_eq!(
                log.stream_head(stream).unwrap(),
                expected.last().copied().unwrap_or(0),
                "kill point {point}: the head of {stream}"
            );
        }
    }
    // All of a batch or none of it, in consecutive positions.
    let mut batches: BTreeMap<u128, Vec<u64>> = BTreeMap::new();
    for event in &events {
        batches
            .entry(batch_of(event.envelope.event_id.as_u128()))
            .or_default()
            .push(event.envelope.position);
    }
    for (batch, positions) in batches {
        let first = positions[0];
        assert_eq!(
            positions,
            (first..first + BATCH as u64).collect::<Vec<_>>(),
            "kill point {point}: batch {batch} is partly there"
        );
    }
    // sled's threads finish closing in the background: what they write
    // last belongs to this check, not to the next child (nor, for the
    // power-loss test, to what a crash can lose).
    drop(log);
    SledLog::wait_closed(dir).unwrap();
}
