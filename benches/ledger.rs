//! `ledger/*`: commands through the `Ledger`, each decided, made durable and
//! applied before it returns: `execute_single`, one caller at a time, and
//! `execute_8`, eight callers at once, time per command. Eight callers
//! share the log's syncs (`crates/authz/src/ledger/writer.rs`), so the
//! second should take a fraction of the first.
//!
//! The command is a token's creation, as an admin would make it: a new id
//! and secret drawn, the rules applied, one event appended.
//! `execute_once_single` is the same with an idempotency key, new each
//! time, as `tokenledger serve` sends one: what the look for the key in
//! the log costs beside `execute_single`.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenledger_authz::{IdempotencyKey, Ledger};
use tokenledger_benches::{company_and_admin, tags_token};
use tokenledger_events::{Actor, CompanyId, TeammateId};

fn create(ledger: &Ledger, company: CompanyId, admin: TeammateId) {
    black_box(
        ledger
            .create_token(Actor::Teammate(admin), tags_token(company))
            .expect("the token"),
    );
}

fn create_once(ledger: &Ledger, company: CompanyId, admin: TeammateId, n: u64) {
    let key = IdempotencyKey::new(&n.to_be_bytes(), b"POST /v1/tokens");
    black_box(
        ledger
            .create_token_once(Actor::Teammate(admin), tags_token(company), key)
            .expect("the token"),
    );
}

fn ledger(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger = Ledger::open(dir.path()).expect("the ledger opens");
    let (company, admin) = company_and_admin(&ledger);

    group.bench_function("execute_single", |b| {
        b.iter(|| create(&ledger, company, admin))
    });

    let mut n = 0u64;
    group.bench_function("execute_once_single", |b| {
        b.iter(|| {
            n += 1;
            create_once(&ledger, company, admin, n);
        })
    });

    group.bench_function("execute_8", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..8 {
                    let ledger = &ledger;
                    scope.spawn(move || {
                        let mine = iterations / 8 + u64::from(thread < iterations % 8);
                        for _ in 0..mine {
                            create(ledger, company, admin);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, ledger);
criterion_main!(benches);
