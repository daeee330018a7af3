//! `append/*`: durable appends, against two floors measured in the same
//! run on records of the same size: `fsync_floor`, one write plus fsync to
//! a plain file; and `group_commit_floor_8`, eight threads appending to a
//! plain file through the least a group commit needs (one thread writes
//! every record waiting and syncs once, then wakes their appenders). The
//! second was what `group_commit_8` could reach with no work of its own;
//! the log now does better than it, since its journal is written over
//! rather than appended to and its writer waits for appenders on their
//! way to a group (`crates/store`), neither of which the floors do.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
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

    let floor = GroupCommitFloor::start(&dir.path().join("group-floor"));
    group.bench_function("group_commit_floor_8", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..8 {
                    let floor = &floor;
                    let record = &record;
                    scope.spawn(move || {
                        let mine = iterations / 8 + u64::from(thread < iterations % 8);
                        for _ in 0..mine {
                            floor.append(record);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    floor.stop();

    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100", |b| {
        b.iter(|| {
            let batch = (0..100).map(|_| reveal(id())).collect();
            black_box(shared.append(batch, Expectation::Any).expect("append"))
        })
    });
    group.finish();
}

/// The least a group commit does, for `group_commit_floor_8`: the log's
/// writer without the log. Appenders hand records to one thread over a
/// crossbeam channel, as `SledLog`'s do; it writes every record waiting
/// with one write and one `fdatasync`, as the journal does a group, and
/// then wakes each appender through a mutex and condition variable, as
/// the log's replies do.
struct GroupCommitFloor {
    records: Sender<(Vec<u8>, Arc<Done>)>,
    writer: JoinHandle<()>,
}

#[derive(Default)]
struct Done {
    synced: Mutex<bool>,
    ready: Condvar,
}

impl GroupCommitFloor {
    fn start(path: &Path) -> GroupCommitFloor {
        let mut file = File::create(path).expect("the group floor's file");
        let (records, inbox) = crossbeam_channel::unbounded::<(Vec<u8>, Arc<Done>)>();
        let writer = std::thread::spawn(move || {
            while let Ok(first) = inbox.recv() {
                let mut group = vec![first];
                group.extend(inbox.try_iter());
                let bytes: Vec<u8> = group
                    .iter()
                    .flat_map(|(record, _)| record)
                    .copied()
                    .collect();
                file.write_all(&bytes).expect("write");
                file.sync_data().expect("fdatasync");
                for (_, done) in group {
                    *done.synced.lock() = true;
                    done.ready.notify_one();
                }
            }
        });
        GroupCommitFloor { records, writer }
    }

    fn append(&self, record: &[u8]) {
        let done = Arc::new(Done::default());
        self.records
            .send((record.to_vec(), Arc::clone(&done)))
            .expect("the floor's writer runs");
        let mut synced = done.synced.lock();
        done.ready.wait_while(&mut synced, |synced| !*synced);
    }

    fn stop(self) {
        drop(self.records);
        self.writer.join().expect("the floor's writer ends");
    }
}

criterion_group!(benches, append);
criterion_main!(benches);
