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

mod common;
use common::crash::{CHILD, COMPACT, JOURNAL_BYTES, Rng, check, child};

fn main() {
    match std::env::var_os(CHILD) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
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
