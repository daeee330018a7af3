//! `authorize/*` and `concurrent/*`: decisions against 100,000 tokens and
//! 1,000 teammates, a mix of allows and refusals. `sha256` (one SHA-256 of
//! a secret's text) is the baseline `with_secret` is held to, measured in
//! the same run; `parse_secret` is everything tokenledger does to a
//! presented secret before the lookup (length, prefix, base32, checksum,
//! digest).

#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark whose setup fails should stop at once; indices are masked"
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod cedar;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use tokenledger_authz::{Command, Request};
use tokenledger_benches::world;
use tokenledger_events::{Actor, Secret, resolve_endpoint};

const CASES: usize = 4096;

fn authorize(c: &mut Criterion) {
    let world = world(10, 1_000, 100_000).expect("the world is generated");
    let authorizer = world.ledger.authorizer();
    let cases = &world.cases;
    assert_eq!(cases.len(), CASES);
    let allowed = cases
        .iter()
        .filter(|case| authorizer.authorize(case.token, &case.request).is_allowed())
        .count();
    eprintln!("authorize: {allowed} of {CASES} requests are allowed");
    let cedar =
        cedar::build(&world, cedar::RULES).expect("the Cedar entities and requests are built");
    let combined =
        cedar::build(&world, cedar::COMBINED).expect("the Cedar entities and requests are built");
    for (i, case) in cases.iter().enumerate() {
        let decision = authorizer.authorize(case.token, &case.request);
        assert_eq!(
            cedar.refused_by(i),
            decision.refusal.map(|refusal| refusal.rule.number()),
            "Cedar and tokenledger refuse request {i} by different rules"
        );
        assert_eq!(
            combined.allows(i),
            decision.is_allowed(),
            "Cedar's combined policy and tokenledger disagree on request {i}"
        );
    }
    eprintln!("authorize: Cedar agrees on all {CASES} requests, and on the rule of every refusal");

    let mut group = c.benchmark_group("authorize");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("sha256", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            black_box(Sha256::digest(cases[i].secret.expose().as_bytes()))
        })
    });
    group.bench_function("parse_secret", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            black_box(Secret::digest_of(cases[i].secret.expose()))
        })
    });
    group.bench_function("by_handle", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            black_box(authorizer.authorize(cases[i].token, &cases[i].request))
        })
    });
    group.bench_function("with_secret", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            black_box(authorizer.check(cases[i].secret.expose(), &cases[i].request))
        })
    });
    group.bench_function("cedar_policy", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            black_box(cedar.answer(i))
        })
    });
    group.bench_function("cedar_policy_combined", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            black_box(combined.answer(i))
        })
    });
    let mut requests: Vec<Request> = cases.iter().map(|case| case.request.clone()).collect();
    group.bench_function("endpoint", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            let (method, path) = &cases[i].endpoint;
            let endpoint = resolve_endpoint(*method, path).expect("a catalogued endpoint");
            requests[i].requirement = endpoint.requirement;
            black_box(authorizer.authorize(cases[i].token, &requests[i]))
        })
    });
    group.finish();

    // Two reader threads, with and without a writer executing a command
    // every 2 ms (a teammate's preference, turned on and off).
    let mut group = c.benchmark_group("concurrent");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    let run = |iterations: u64, with_writer: bool| {
        let done = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..2)
                .map(|thread| {
                    let authorizer = authorizer.clone();
                    scope.spawn(move || {
                        for n in 0..iterations / 2 {
                            let case = &cases[(n as usize * 2 + thread) % CASES];
                            black_box(authorizer.authorize(case.token, &case.request));
                        }
                    })
                })
                .collect();
            if with_writer {
                let (_, admin, member) = world.companies[0];
                let ledger = &world.ledger;
                let done = &done;
                scope.spawn(move || {
                    let mut allowed = false;
                    while !done.load(Ordering::Relaxed) {
                        allowed = !allowed;
                        ledger
                            .execute(
                                Actor::Teammate(admin),
                                Command::SetPrivateApiAccess {
                                    teammate: member,
                                    allowed,
                                },
                            )
                            .expect("the command is recorded");
                        std::thread::sleep(Duration::from_millis(2));
                    }
                });
            }
            for reader in readers {
                reader.join().expect("a reader thread");
            }
            let elapsed = start.elapsed();
            done.store(true, Ordering::Relaxed);
            elapsed
        })
    };
    group.bench_function("readers_2", |b| b.iter_custom(|n| run(n, false)));
    group.bench_function("readers_2_with_writer", |b| b.iter_custom(|n| run(n, true)));
    group.finish();
}

criterion_group!(benches, authorize);
criterion_main!(benches);
