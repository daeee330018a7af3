//! `log/scan`: events read back, checked (each record's hash) and decoded,
//! per second.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenledger_benches::reveal;
use tokenledger_store::{EventLog, Expectation, Options, SledLog};

const EVENTS: u64 = 200_000;
const CHUNK: usize = 10_000;

fn scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = SledLog::open(dir.path(), Options::default()).expect("the log opens");
    for start in (0..EVENTS).step_by(1000) {
        let batch = (start..start + 1000)
            .map(|i| reveal(u128::from(i) + 1))
            .collect();
        log.append(batch, Expectation::Any).expect("append");
    }

    let mut group = c.benchmark_group("log");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(EVENTS));
    group.bench_function("scan", |b| {
        b.iter(|| {
            let mut from = 1;
            while from <= EVENTS {
                let events = log.read(from, CHUNK).expect("read");
                from += events.len() as u64;
                black_box(events);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
