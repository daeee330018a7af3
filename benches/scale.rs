//! Start-up and time travel at scale, on generated logs kept under
//! `target/tokenledger-bench-data` (generated on the first run):
//! `open/replay_1m_events` (a million events replayed, no checkpoint),
//! `open/checkpoint_1m_tokens` (a checkpoint of a million live tokens, at
//! the head of a 5-million-event log), `asof/random_point` (a decision as
//! of a random position of that log, from the token's company's events),
//! the resident memory per live token after opening and the slowest of a
//! thousand commands right after, printed, and
//! `authorize_1m_tokens/by_handle`, the hot path at that size, beside
//! `authorize_1m_tokens/hashmap_floor`, its baseline. An open is
//! timed from the call to the ledger it returns; closing it is not.
//!
//! The memory is measured in a fresh process (this bench run again, with
//! [`MEASURE_MEMORY`] set): in this one, generating or checking the logs
//! first leaves freed memory that opening would reuse unseen.

#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use tokenledger_authz::{
    CheckpointKey, Command, Ledger, LedgerOptions, Location, Request, decide_request,
};
use tokenledger_benches::generate::{
    FIVE_MILLION, ONE_MILLION, Rng, generated, secret_of, teammate,
};
use tokenledger_events::{Actor, Requirement, Timestamp, TokenId};

/// Set to a log's directory, the bench only measures the memory of opening
/// it, and exits.
const MEASURE_MEMORY: &str = "TOKENLEDGER_MEASURE_MEMORY";

fn data_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tokenledger-bench-data")
}

/// No checkpoint written by itself (the bench writes the one it opens
/// from), and every checkpoint signed and checked with a fixed key, as a
/// deployment that uses checkpoints must: without a key none is loaded.
/// No checkpoint written, and no key: how the replay is measured.
fn unkeyed() -> LedgerOptions {
    LedgerOptions {
        checkpoint_every: 0,
        ..LedgerOptions::default()
    }
}

fn options() -> LedgerOptions {
    LedgerOptions {
        checkpoint_every: 0,
        checkpoint_key: Some(CheckpointKey::from_bytes([0x5c; 32])),
        ..LedgerOptions::default()
    }
}

/// Resident bytes of this process, from its own accounting.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Opens the log in `dir` from its checkpoint, then runs one command, and
/// prints the resident memory each added per live token.
fn measure_memory(dir: &Path) {
    let live_tokens = FIVE_MILLION.live_tokens;
    let before = resident_bytes();
    let ledger = Ledger::open_with(dir, options()).expect("open");
    let after = resident_bytes();
    assert!(ledger.warnings().is_empty(), "{:?}", ledger.warnings());
    println!(
        "memory: {} resident bytes per live token after opening ({} MiB for {} tokens)",
        after.saturating_sub(before) / live_tokens,
        after.saturating_sub(before) >> 20,
        live_tokens
    );

    // The first command gives the writer a copy of its own.
    let started = Instant::now();
    set_private_access(&ledger, true);
    let written = resident_bytes();
    println!(
        "memory: {} resident bytes per live token after the first command ({} MiB), which took {:.1?}",
        written.saturating_sub(before) / live_tokens,
        written.saturating_sub(before) >> 20,
        started.elapsed()
    );

    // A service appends right after it restarts. sled 0.34.7 stalled those
    // appends for about 20 s here (vendor/README.md), so the slowest is
    // printed.
    let commands = 1_000;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..commands {
        let command = Instant::now();
        set_private_access(&ledger, i % 2 == 0);
        slowest = slowest.max(command.elapsed());
    }
    println!(
        "after reopening: {commands} more commands in {:.1?}, the slowest {:.1?}",
        started.elapsed(),
        slowest
    );
    // Back at the head, so that `open/checkpoint_1m_tokens` replays nothing.
    ledger.checkpoint().expect("checkpoint");
}

/// Runs one small command: a teammate's private resources opened to API
/// access, or closed.
fn set_private_access(ledger: &Ledger, allowed: bool) {
    ledger
        .execute(
            Actor::System,
            Command::SetPrivateApiAccess {
                teammate: teammate(&FIVE_MILLION, 0, 1),
                allowed,
            },
        )
        .expect("a command");
}

/// The time `iterations` opens of the log in `dir` take, without closing
/// each: that frees the state and settles sled, which `b.iter` would
/// count (60 to 90 ms of a million tokens' open).
fn opening(dir: &Path, options: impl Fn() -> LedgerOptions, iterations: u64) -> Duration {
    let mut opening = Duration::ZERO;
    for _ in 0..iterations {
        let started = Instant::now();
        let ledger = Ledger::open_with(dir, options()).expect("open");
        opening += started.elapsed();
        drop(black_box(ledger));
    }
    opening
}

/// The baseline of `authorize_1m_tokens/by_handle`: `sampled` found in a
/// std `HashMap` of `tokens` 64-byte rows, then a bit of the row tested,
/// as MEASUREMENTS.md's "HashMap lookup plus a few bit tests" at this
/// size. The other ids are random; the sampled ones are spread over the
/// map as they are over the ledger's table, so each lookup costs what
/// reaching one row of a million costs on this machine.
fn hashmap_floor(sampled: &[TokenId], tokens: u64) -> HashMap<TokenId, [u64; 8]> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut random = || u128::from(rng.below(u64::MAX));
    let mut rows = HashMap::with_capacity(tokens as usize);
    while (rows.len() as u64) < tokens.saturating_sub(sampled.len() as u64) {
        rows.insert(TokenId::from_u128(random() << 64 | random()), [0x5a; 8]);
    }
    rows.extend(sampled.iter().map(|token| (*token, [0x5a; 8])));
    rows
}

fn scale(c: &mut Criterion) {
    let started = Instant::now();
    let small = generated(&data_root(), ONE_MILLION).expect("the 1M-event log");
    let large = generated(&data_root(), FIVE_MILLION).expect("the 5M-event log");
    eprintln!("logs ready in {:.1?}", started.elapsed());

    // The generator writes without a key; the log takes the bench's key
    // once, verified, as an operator's would (`sign-head`).
    for log in [&small, &large] {
        if !log.dir.join("signed-head").exists() {
            let key = options().checkpoint_key.expect("the bench's key");
            Ledger::sign_head(&log.dir, &key, LedgerOptions::default()).expect("sign the head");
        }
    }
    // The large log's checkpoint at its head, written once, and again when
    // this build skips it (its layout or its key changed).
    let started = Instant::now();
    let ledger = Ledger::open_with(&large.dir, options()).expect("open");
    if !ledger.warnings().is_empty() || !large.dir.join("checkpoints").exists() {
        eprintln!("5M events replayed in {:.1?}", started.elapsed());
        let started = Instant::now();
        ledger.checkpoint().expect("checkpoint");
        eprintln!(
            "checkpoint of 1M tokens written in {:.1?}",
            started.elapsed()
        );
    }
    drop(ledger);
    let _ = std::fs::remove_dir_all(small.dir.join("checkpoints"));

    let measured = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env(MEASURE_MEMORY, &large.dir)
        .status()
        .expect("the memory measurement runs");
    assert!(measured.success(), "the memory measurement failed");

    let mut group = c.benchmark_group("open");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(ONE_MILLION.events));
    group.bench_function("replay_1m_events", |b| {
        // Without the key, as before checkpoints needed one: a replay from
        // genesis loads no checkpoint, and the signed head's check is one
        // read, so the figure stays comparable with earlier runs.
        b.iter_custom(|iterations| opening(&small.dir, unkeyed, iterations));
    });
    group.throughput(Throughput::Elements(large.live_tokens));
    group.bench_function("checkpoint_1m_tokens", |b| {
        b.iter_custom(|iterations| opening(&large.dir, options, iterations));
    });
    group.finish();

    let ledger = Ledger::open_with(&large.dir, options()).expect("open");
    let head = ledger.head().position;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next = move |n: u64| rng.below(n);
    let started = Instant::now();
    let state = ledger.state_at(1 + next(head)).expect("as of");
    eprintln!(
        "the whole state as of position {} rebuilt in {:.1?}",
        state.position(),
        started.elapsed()
    );
    drop(state);

    // The hot path at a million tokens: a token already authenticated.
    let authorizer = ledger.authorizer();
    let requests: Vec<_> = large
        .live
        .iter()
        .map(|(token, company)| {
            let request = Request {
                requirement: Requirement::Scope("conversations:read".parse().expect("scope")),
                resource: "cnv_1".parse().expect("resource"),
                location: Location::Global(*company),
                at: Timestamp::from_micros(u64::MAX / 2),
            };
            let handle = authorizer
                .authenticate(secret_of(*token).expose())
                .expect("a live token's secret authenticates");
            (handle, request)
        })
        .collect();
    let mut group = c.benchmark_group("authorize_1m_tokens");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("by_handle", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            let (token, request) = &requests[i];
            black_box(authorizer.authorize(*token, request))
        });
    });
    let sampled: Vec<TokenId> = large.live.iter().map(|(token, _)| *token).collect();
    let floor = hashmap_floor(&sampled, large.live_tokens);
    let mut i = 0;
    group.bench_function("hashmap_floor", |b| {
        b.iter(|| {
            i = (i + 1) % sampled.len();
            black_box(floor.get(&sampled[i]).is_some_and(|row| row[1] & 4 != 0))
        });
    });
    drop(floor);
    group.finish();

    let mut group = c.benchmark_group("asof");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("random_point", |b| {
        b.iter(|| {
            let (token, company) = large.live[next(large.live.len() as u64) as usize];
            let position = 1 + next(head);
            let state = ledger.company_state_at(company, position).expect("as of");
            let request = Request {
                requirement: Requirement::Scope("conversations:read".parse().expect("scope")),
                resource: "cnv_1".parse().expect("resource"),
                location: Location::Global(company),
                at: Timestamp::from_micros(u64::MAX / 2),
            };
            black_box(decide_request(&state, secret_of(token).expose(), &request))
        });
    });
    group.finish();
}

criterion_group!(benches, scale);

fn main() {
    if let Some(dir) = std::env::var_os(MEASURE_MEMORY) {
        measure_memory(Path::new(&dir));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
