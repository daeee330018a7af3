//! `append/*`: durable appends, against the floor of one write plus fsync
//! of a record of the same size to a plain file.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenledger_benches::{record_len, reveal};
use tokenledger_store::{EventLog, Expectation, Options, SledLog};

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    let next = AtomicU64::new(1);
    let id = || u128::from(next.fetch_add(1, Ordering::Relaxed));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = SledLog::open(&dir.path().join("log"), Options::default()).expect("the log opens");
    log.append(vec![reveal(id())], Expectation::Any)
        .expect("the first append");
    let len = record_len();

    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("floor"))
        .expect("the floor file");
    let record = vec![0x5a_u8; len];
    group.bench_function("fsync_floor", |b| {
        b.iter(|| {
            file.write_all(&record).expect("write");
            file.sync_all().expect("fsync");
        })
    });

    group.bench_function("single_durable", |b| {
        b.iter(|| {
            black_box(
                log.append(vec![reveal(id())], Expectation::Any)
                    .expect("append"),
            )
        })
    });

    let shared = Arc::new(log);
    group.bench_function("group_commit_8", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..8 {
                    let log = Arc::clone(&shared);
                    let next = &next;
                    scope.spawn(move || {
                        let mine = iterations / 8 + u64::from(thread < iterations % 8);
                        for _ in 0..mine {
                            let id = u128::from(next.fetch_add(1, Ordering::Relaxed));
                            log.append(vec![reveal(id)], Expectation::Any)
                                .expect("append");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100", |b| {
        b.iter(|| {
            let batch = (0..100).map(|_| reveal(id())).collect();
            black_box(shared.append(batch, Expectation::Any).expect("append"))
        })
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
