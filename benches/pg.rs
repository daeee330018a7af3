//! The log on PostgreSQL against its floor, on the same server in the same
//! run: `pg/insert_commit_floor` is a plain `INSERT` of a 200-byte row and
//! its `COMMIT` (one round trip and one WAL flush), `pg/append_single` one
//! durable append through `PgLog` (goal: at most 1.5 times the floor), and
//! `pg/group_commit_8` eight appenders at once, per event (goal: four
//! times one appender's throughput or more). Between replicas (ledgers on
//! one database, leases of the default length): `pg/replicate` from an
//! append returning on replica A to replica B having applied it (goal: p50
//! at most 2 ms), `pg/revoke_3_replicas` a token's delete on one of three
//! replicas, until it returns (goal: p99 at most 20 ms; each printed with
//! its percentiles), and `pg/authorize_leased` a decision by handle on a
//! replica, which checks its lease (`authorize/by_handle` is the same
//! without one). `pg/replica_start_1m_events`: a new replica, no
//! checkpoint, reaching the head of the scale bench's million-event log
//! (`benches/scale.rs`, generated once under
//! `target/tokenledger-bench-data`) copied into PostgreSQL, in events a
//! second, beside `open/replay_1m_events` on sled. Needs a server
//! (`$TOKENLEDGER_TEST_POSTGRES`, else 127.0.0.1:5432 as `postgres`);
//! without one it says so and measures nothing.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenledger_authz::{Command, Ledger, LedgerOptions, Location, Request, fresh};
use tokenledger_benches::generate::{ONE_MILLION, generated};
use tokenledger_benches::{company_and_admin, reveal, tags_token};
use tokenledger_events::{Actor, Name, Requirement, Timestamp};
use tokenledger_postgres::testing::Database;
use tokenledger_postgres::{Options, PgLog};
use tokenledger_store::{EventLog, Expectation, SledLog};

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

/// The median and 99th percentile of `samples`.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: usize| {
        samples
            .get((samples.len() * q / 100).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (at(50), at(99))
}

fn replicas(c: &mut Criterion) {
    let Some(database) = Database::fresh() else {
        return;
    };
    let open = || {
        Ledger::open_postgres(&database.url, None, LedgerOptions::default())
            .expect("a replica opens")
    };
    let (a, b, third) = (open(), open(), open());
    let (company, admin) = company_and_admin(&a);
    let mut group = c.benchmark_group("pg");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));

    let mut replicated = Vec::new();
    group.bench_function("replicate", |bench| {
        bench.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let receipt = a
                    .execute(
                        Actor::Teammate(admin),
                        Command::CreateWorkspace {
                            company,
                            workspace: fresh::workspace_id().expect("an id"),
                            name: Name::new("Support").expect("a name"),
                        },
                    )
                    .expect("the workspace");
                let returned = Instant::now();
                b.wait_for_position(receipt.position(), Duration::from_secs(10))
                    .expect("b applies it");
                let took = returned.elapsed();
                replicated.push(took);
                total += took;
            }
            total
        })
    });

    let mut revoked = Vec::new();
    group.bench_function("revoke_3_replicas", |bench| {
        bench.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let created = a
                    .create_token(Actor::Teammate(admin), tags_token(company))
                    .expect("the token");
                for replica in [&b, &third] {
                    replica
                        .wait_for_position(created.receipt.position(), Duration::from_secs(10))
                        .expect("applied");
                }
                let start = Instant::now();
                a.execute(
                    Actor::Teammate(admin),
                    Command::DeleteToken {
                        token: created.token,
                    },
                )
                .expect("the delete");
                let took = start.elapsed();
                revoked.push(took);
                total += took;
            }
            total
        })
    });

    let created = a
        .create_token(Actor::Teammate(admin), tags_token(company))
        .expect("the token");
    b.wait_for_position(created.receipt.position(), Duration::from_secs(10))
        .expect("applied");
    let authorizer = b.authorizer();
    let handle = authorizer
        .authenticate(created.secret.expose())
        .expect("a live token");
    let request = Request {
        requirement: Requirement::Scope("tags:read".parse().expect("a scope")),
        resource: "tag_1".parse().expect("a resource"),
        location: Location::Global(company),
        at: Timestamp::from_micros(u64::MAX / 2),
    };
    assert!(authorizer.authorize(handle, &request).is_allowed());
    group.bench_function("authorize_leased", |bench| {
        bench.iter(|| black_box(authorizer.authorize(handle, &request)))
    });
    group.finish();
    for (name, samples) in [
        ("pg/replicate", &mut replicated),
        ("pg/revoke_3_replicas", &mut revoked),
    ] {
        let (p50, p99) = percentiles(samples);
        eprintln!(
            "{name}: {} samples, p50 {p50:?}, p99 {p99:?}",
            samples.len()
        );
    }
}

/// A replica that starts with no checkpoint replays the whole log from
/// PostgreSQL before it returns: timed from the call to the ledger it
/// returns, as `open/replay_1m_events` times an open on sled.
fn replica_start(c: &mut Criterion) {
    let Some(database) = Database::fresh() else {
        return;
    };
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tokenledger-bench-data");
    let million = generated(&data, ONE_MILLION).expect("the million-event log");
    let events = copy(&million.dir, &database.url);
    let mut group = c.benchmark_group("pg");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(events));
    group.bench_function("replica_start_1m_events", |bench| {
        bench.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let replica = Ledger::open_postgres(&database.url, None, LedgerOptions::default())
                    .expect("a replica opens");
                total += started.elapsed();
                assert_eq!(
                    replica.applied_position(),
                    events,
                    "the replica reached the head"
                );
                drop(black_box(replica));
            }
            total
        })
    });
    group.finish();
}

/// The sled log in `dir` copied record by record into the database at
/// `url` (as `import` does); returns how many events it holds.
fn copy(dir: &Path, url: &str) -> u64 {
    let from = SledLog::open(dir, tokenledger_store::Options::default()).expect("the sled log");
    let to = PgLog::open(url, Options::default()).expect("the log opens");
    let head = from.head();
    while to.head().position < head.position {
        let records = from
            .read_records(to.head().position + 1, 10_000)
            .expect("records read");
        to.append_records(records.into_iter().map(|record| record.bytes).collect())
            .expect("records copied");
    }
    assert_eq!(to.head(), head, "the copy has the same head");
    head.position
}

criterion_group!(benches, pg, replicas, replica_start);
criterion_main!(benches);
