//! The log on PostgreSQL against its floor, on the same server in the same
//! run: `pg/insert_commit_floor` is a plain `INSERT` of a 200-byte row and
//! its `COMMIT` (one round trip and one WAL flush), `pg/append_single` one
//! durable append through `PgLog` (goal: at most 1.5 times the floor), and
//! `pg/group_commit_8` eight appenders at once, per event (goal: four
//! times one appender's throughput or more). Needs a server
//! (`$TOKENLEDGER_TEST_POSTGRES`, else 127.0.0.1:5432 as `postgres`);
//! without one it says so and measures nothing.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenledger_benches::reveal;
use tokenledger_postgres::testing::Database;
use tokenledger_postgres::{Options, PgLog};
use tokenledger_store::{EventLog, Expectation};

fn pg(c: &mut Criterion) {
    let Some(database) = Database::fresh() else {
        return;
    };
    let mut group = c.benchmark_group("pg");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));

    let mut client = database.client();
    client
        .batch_execute("CREATE TABLE floor (id bigserial PRIMARY KEY, payload bytea NOT NULL)")
        .expect("the floor's table");
    let payload = vec![0x5a_u8; 200];
    group.bench_function("insert_commit_floor", |b| {
        b.iter(|| {
            black_box(
                client
                    .execute("INSERT INTO floor (payload) VALUES ($1)", &[&payload])
                    .expect("insert"),
            )
        })
    });

    let log = PgLog::open(&database.url, Options::default()).expect("the log opens");
    let next = AtomicU64::new(1);
    group.bench_function("append_single", |b| {
        b.iter(|| {
            let id = u128::from(next.fetch_add(1, Ordering::Relaxed));
            black_box(
                log.append(vec![reveal(id)], Expectation::Any)
                    .expect("append"),
            )
        })
    });

    group.bench_function("group_commit_8", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..8 {
                    let (log, next) = (&log, &next);
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
    group.finish();
}

criterion_group!(benches, pg);
criterion_main!(benches);
