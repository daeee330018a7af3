//! The crash test: the log survives being killed at any moment.
//!
//! The test binary runs itself as a child that appends batches of three
//! events from four threads and prints each acknowledgement. The parent
//! kills it with SIGKILL a random delay after it has opened the log (or,
//! one time in five, after it started, which lands kills in opening and
//! recovery too), reopens the log, and checks
//! that every acknowledged event is at its acknowledged position, that no
//! batch is partly there, and that the chain verifies; then starts the
//! child again on the same directory. Every third child starts on the
//! journal its killed predecessor left, unchecked, so recovery is itself
//! killed and followed by more appends; every other child keeps a journal
//! of 4 KiB, so kills also land while sled is synced and the journal
//! emptied. Every fourth child compacts the log over and over instead
//! of appending, so kills land in the copy and the swap of sled's files
//! too. 50 kill points by default;
//! `TOKENLEDGER_CRASH_ITERATIONS` asks for more, `TOKENLEDGER_CRASH_SEED`
//! repeats a run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokenledger_events::*;
use tokenledger_store::*;

const CHILD: &str = "TOKENLEDGER_CRASH_CHILD";
const JOURNAL_BYTES: &str = "TOKENLEDGER_CRASH_JOURNAL_BYTES";
/// Set, the child compacts the log over and over rather than appending.
const COMPACT: &str = "TOKENLEDGER_CRASH_COMPACT";
const THREADS: u128 = 4;
const BATCH: u128 = 3;

fn main() {
    match std::env::var_os(CHILD) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

/// An event id: the run's nonce, the thread, the batch, the index in the batch.
fn event_id(nonce: u128, thread: u128, batch: u128, index: u128) -> u128 {
    (nonce << 64) | (thread << 48) | (batch << 2) | index
}

fn batch_of(id: u128) -> u128 {
    id >> 2
}

fn child(dir: &Path) {
    let options = Options {
        journal_bytes: std::env::var(JOURNAL_BYTES)
            .ok()
            .and_then(|v| v.parse().ok()),
        ..Options::default()
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
    let nonce = u128::from(std::process::id()) << 32
        | u128::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let log = &log;
            scope.spawn(move || {
                for batch in 0.. {
                    let events: Vec<NewEvent> = (0..BATCH)
                        .map(|index| {
                            let id = event_id(nonce, thread, batch, index);
                            NewEvent {
                                event_id: EventId::from_u128(id),
                                actor: Actor::System,
                                // A company per thread: a stream each,
                                // whose runs grow across crashes; and a
                                // token per thread, whose stream is kept
                                // in the index of token ids.
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
                        .collect();
                    let first = events[0].event_id;
                    let positions = log.append(events, Expectation::Any).unwrap();
                    // One line per acknowledged batch: `ack <first event id> <first position>`.
                    println!("ack {} {}", first.as_u128(), positions[0]);
                }
            });
        }
    });
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn parent() {
    let iterations: usize = std::env::var("TOKENLEDGER_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("TOKENLEDGER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test: {iterations} kill points, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Every batch ever acknowledged: first event id → first position.
    let mut acknowledged: BTreeMap<u128, u64> = BTreeMap::new();
    let mut compactions = 0;
    let started = Instant::now();
    for iteration in 0..iterations {
        let journal_bytes = if iteration % 2 == 0 { "4096" } else { "" };
        let compacting = iteration % 4 == 3;
        let mut child = Command::new(&exe);
        if compacting {
            child.env(COMPACT, "1");
        }
        let mut child = child
            .env(CHILD, dir.path())
            .env(JOURNAL_BYTES, journal_bytes)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (opened, open) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut compactions = 0;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "open" {
                    let _ = opened.send(());
                    continue;
                }
                if line == "compacted" {
                    compactions += 1;
                    continue;
                }
                let parts: Vec<&str> = line.split(' ').collect();
                // A line cut by the kill does not parse, and is no acknowledgement.
                if let ["ack", id, position] = parts[..]
                    && let (Ok(id), Ok(position)) = (id.parse::<u128>(), position.parse::<u64>())
                {
                    acks.push((id, position));
                }
            }
            (acks, compactions)
        });
        // A slow start (a debug build, a loaded machine) must not leave
        // every kill before the first append.
        if iteration % 5 != 4 {
            open.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("kill point {iteration}: the child did not open: {e}"));
        }
        // A compaction of this log takes longer than an append: its kills
        // are spread wider, to land in the swap of its files too.
        let delay = if compacting {
            5 + rng.next() % 1_500
        } else {
            5 + rng.next() % 120
        };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        // Killed, not ended on its own: a child that panicked (an append
        // that failed) would otherwise pass for a killed one.
        assert_eq!(
            status.signal(),
            Some(9),
            "kill point {iteration}: the child ended on its own: {status}"
        );
        let (acks, done) = reader.join().unwrap();
        acknowledged.extend(acks);
        compactions += done;
        if compacting || iteration % 3 != 2 || iteration + 1 == iterations {
            check(dir.path(), &acknowledged, iteration);
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "no append was acknowledged before a kill: nothing was checked"
    );
    println!(
        "crash test: {iterations} kill points, {} acknowledged batches, all present and whole, \
         {compactions} compactions finished, in {:.1} s",
        acknowledged.len(),
        started.elapsed().as_secs_f64()
    );
}

fn check(dir: &Path, acknowledged: &BTreeMap<u128, u64>, iteration: usize) {
    let log = SledLog::open(dir, Options::default())
        .unwrap_or_else(|e| panic!("kill point {iteration}: the log does not reopen: {e}"));
    let verified = log
        .verify()
        .unwrap_or_else(|e| panic!("kill point {iteration}: the log does not verify: {e}"));
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
            "kill point {iteration}: acknowledged event {id} is not at position {position}"
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
                .unwrap_or_else(|e| panic!("kill point {iteration}: {stream} does not read: {e}"))
                .iter()
                .map(|e| e.envelope.position)
                .collect();
            assert_eq!(found, expected, "kill point {iteration}: {stream}");
            assert_eq!(
                log.stream_head(stream).unwrap(),
                expected.last().copied().unwrap_or(0),
                "kill point {iteration}: the head of {stream}"
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
            "kill point {iteration}: batch {batch} is partly there"
        );
    }
}
