//! Revocation across replicas: once a command that removes access returns
//! on one replica, no replica allows what it removed, even while requests
//! hammer them; a replica that cannot renew its lease stops allowing, and
//! a removal does not wait for it for ever; a lost notification costs
//! latency only.

#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokenledger_authz::*;
use tokenledger_postgres::testing::Database;

use common::replicas::{REMOVALS, Removal, Target, all_at, given_a_company, replica};

/// What the hammering threads saw.
#[derive(Default)]
struct Seen {
    /// Decisions that started after the removal returned.
    after: AtomicU64,
    /// Of those, allowed: each a stale allow.
    stale: AtomicU64,
    /// Of all decisions, refused because the replica's lease lapsed.
    unavailable: AtomicU64,
}

/// Hammers `replica` with `request` until `stop`, from `threads` threads.
fn hammer<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    authorizer: &'s Authorizer,
    handle: TokenHandle,
    request: &'s Request,
    returned: &'s AtomicBool,
    stop: &'s AtomicBool,
    seen: &'s Seen,
) {
    scope.spawn(move || {
        while !stop.load(Ordering::Acquire) {
            // Read before the decision starts: a decision that starts once
            // the removal has returned must refuse.
            let after = returned.load(Ordering::SeqCst);
            let decision = authorizer.authorize(handle, request);
            if decision
                .refusal
                .is_some_and(|r| r.reason == Reason::LedgerClosed)
            {
                seen.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            if after {
                seen.after.fetch_add(1, Ordering::Relaxed);
                if decision.is_allowed() {
                    seen.stale.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::yield_now();
        }
    });
}

#[test]
fn once_a_removal_returns_on_one_replica_the_others_refuse_at_once() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let lease = Duration::from_secs(1);
    let replicas = [
        replica(&database, lease),
        replica(&database, lease),
        replica(&database, lease),
    ];
    let (company, admin) = given_a_company(&replicas[0]);
    let seen = Seen::default();
    let rounds = 30;
    let mut slowest = Duration::ZERO;
    let mut applied_when_returned = 0;
    for round in 0..rounds {
        let removal = REMOVALS[round % REMOVALS.len()];
        let (deleter, others) = {
            let at = round % replicas.len();
            let others: Vec<&Ledger> = (0..replicas.len())
                .filter(|i| *i != at)
                .map(|i| &*replicas[i])
                .collect();
            (&*replicas[at], others)
        };
        let target = Target::given(deleter, company, admin);
        let request = target.request(removal);
        let position = deleter.head().position;
        all_at(&[&*replicas[0], &*replicas[1], &*replicas[2]], position);
        let authorizers: Vec<Authorizer> = others.iter().map(|l| l.authorizer()).collect();
        let handles: Vec<TokenHandle> = authorizers
            .iter()
            .map(|a| a.authenticate(target.secret.expose()).unwrap())
            .collect();
        for (authorizer, handle) in authorizers.iter().zip(&handles) {
            assert!(authorizer.authorize(*handle, &request).is_allowed());
        }
        let returned = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for (authorizer, handle) in authorizers.iter().zip(&handles) {
                for _ in 0..2 {
                    hammer(
                        scope, authorizer, *handle, &request, &returned, &stop, &seen,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(5));
            let start = Instant::now();
            deleter
                .execute(
                    tokenledger_events::Actor::Teammate(target.admin),
                    target.removal(removal),
                )
                .unwrap();
            slowest = slowest.max(start.elapsed());
            returned.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            stop.store(true, Ordering::Release);
        });
        // Every other replica refuses, and, unless its lease lapsed under
        // the load, for the removal's own reason: it has applied it.
        for (authorizer, handle) in authorizers.iter().zip(&handles) {
            let refusal = authorizer.authorize(*handle, &request).refusal.unwrap();
            if refusal.reason != Reason::LedgerClosed {
                applied_when_returned += 1;
            }
        }
    }
    let (after, stale) = (
        seen.after.load(Ordering::Relaxed),
        seen.stale.load(Ordering::Relaxed),
    );
    eprintln!(
        "{rounds} removals: {after} decisions after they returned, {stale} stale allows, {} refused unavailable; slowest removal {slowest:?}",
        seen.unavailable.load(Ordering::Relaxed)
    );
    assert!(after > 0, "no decision was made after a removal returned");
    assert!(
        applied_when_returned > rounds,
        "the others refused for having applied the removal {applied_when_returned} times in {rounds} rounds"
    );
    assert_eq!(stale, 0, "decisions allowed after a removal returned");
    assert!(slowest < lease, "a removal waited {slowest:?}");
}

#[test]
fn a_replica_that_cannot_renew_stops_allowing_and_a_removal_does_not_wait_for_it() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let lease = Duration::from_millis(600);
    let (a, paused, healthy) = (
        replica(&database, lease),
        replica(&database, lease),
        replica(&database, lease),
    );
    let (company, admin) = given_a_company(&a);
    let target = Target::given(&a, company, admin);
    let spared = Target::given(&a, company, admin);
    all_at(&[&a, &paused, &healthy], a.head().position);
    let on_paused = paused.authorizer();
    let handle = on_paused.authenticate(target.secret.expose()).unwrap();
    let request = target.request(Removal::DeleteToken);
    assert!(on_paused.authorize(handle, &request).is_allowed());
    let block = lease * 3;
    let holding = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Holding the writer's desk stops the follower, which applies the
        // log and renews the lease: the replica is paused but answers.
        scope.spawn(|| {
            paused.with_state(|_| {
                holding.store(true, Ordering::Release);
                std::thread::sleep(block);
            });
        });
        while !holding.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let start = Instant::now();
        a.execute(
            tokenledger_events::Actor::Teammate(admin),
            Command::DeleteToken {
                token: target.token,
            },
        )
        .unwrap();
        let waited = start.elapsed();
        // Not applied there, and yet refused: its lease ended before the
        // delete returned.
        let refusal = on_paused.authorize(handle, &request).refusal.unwrap();
        assert_eq!(refusal.reason, Reason::LedgerClosed);
        assert_eq!(refusal.status(), 503);
        assert!(!paused.health().ready);
        // A mark after a tenth of a lease, then a lease and a margin at
        // most; twice a lease leaves room for a loaded machine.
        assert!(waited < lease * 2, "waited {waited:?}");
        assert!(
            waited >= lease / 4,
            "returned at once ({waited:?}): not waited for"
        );
        // The healthy replica applied it.
        let on_healthy = healthy.authorizer();
        let refusal = on_healthy
            .check(target.secret.expose(), &request)
            .refusal
            .unwrap();
        assert_eq!(refusal.rule, Rule::TokenLive);
        assert_ne!(refusal.reason, Reason::LedgerClosed);
        // While paused, nothing is allowed there, spared token included.
        let spared_request = spared.request(Removal::DeleteToken);
        assert!(
            !on_paused
                .check(spared.secret.expose(), &spared_request)
                .is_allowed()
        );
        eprintln!("the delete waited {waited:?} for a replica paused past its lease");
    });
    // Resumed: it takes a lease again, catches up, and allows again, but
    // not the deleted token.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !paused.health().ready {
        assert!(Instant::now() < deadline, "{:?}", paused.health());
        std::thread::sleep(Duration::from_millis(5));
    }
    let refusal = on_paused.authorize(handle, &request).refusal.unwrap();
    assert_eq!(refusal.rule, Rule::TokenLive);
    assert_ne!(refusal.reason, Reason::LedgerClosed);
    let spared_request = spared.request(Removal::DeleteToken);
    assert!(
        on_paused
            .check(spared.secret.expose(), &spared_request)
            .is_allowed()
    );
}

/// Runs `during` while `ledger`'s follower is held (its writer's desk
/// taken for `block`): it neither applies the log nor renews its lease.
fn while_held<R: Send>(ledger: &Ledger, block: Duration, during: impl FnOnce() -> R + Send) -> R {
    let holding = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            ledger.with_state(|_| {
                holding.store(true, Ordering::Release);
                std::thread::sleep(block);
            });
        });
        while !holding.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        during()
    })
}

fn ready(ledger: &Ledger) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ledger.health().ready {
        assert!(Instant::now() < deadline, "{:?}", ledger.health());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_delete_refused_as_done_already_and_a_demotion_wait_for_a_replica_behind() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let lease = Duration::from_millis(600);
    let (a, lagging, c) = (
        replica(&database, lease),
        replica(&database, lease),
        replica(&database, lease),
    );
    let (company, admin) = given_a_company(&a);
    let target = Target::given(&a, company, admin);
    let second = fresh::teammate_id().unwrap();
    a.execute(
        tokenledger_events::Actor::Teammate(admin),
        Command::AddTeammate {
            company,
            teammate: second,
            name: tokenledger_events::Name::new("Grace").unwrap(),
            role: tokenledger_events::Role::Admin,
        },
    )
    .unwrap();
    all_at(&[&a, &lagging, &c], a.head().position);
    let on_lagging = lagging.authorizer();
    let handle = on_lagging.authenticate(target.secret.expose()).unwrap();
    let request = target.request(Removal::DeleteToken);
    assert!(on_lagging.authorize(handle, &request).is_allowed());
    let by = tokenledger_events::Actor::Teammate(admin);
    let delete = Command::DeleteToken {
        token: target.token,
    };
    // The same delete sent to a and to c (or retried on c after a 503):
    // c, which has applied a's, refuses it as done already, and must not
    // say so while the lagging replica still allows the token.
    while_held(&lagging, lease * 3, || {
        std::thread::scope(|scope| {
            let first = scope.spawn(|| a.execute(by, delete.clone()));
            let on_c = c.authorizer();
            let deadline = Instant::now() + Duration::from_secs(5);
            while on_c.check(target.secret.expose(), &request).is_allowed() {
                assert!(Instant::now() < deadline, "c never applied the delete");
                std::thread::yield_now();
            }
            let refused = c.execute(by, delete.clone());
            assert!(
                matches!(
                    refused,
                    Err(LedgerError::Refused(CommandError::TokenDeleted { .. }))
                ),
                "{refused:?}"
            );
            let decision = on_lagging.authorize(handle, &request);
            assert!(
                !decision.is_allowed(),
                "the lagging replica allows a token whose delete was refused as done"
            );
            first.join().unwrap().unwrap();
        });
    });
    // A demotion waits for a replica behind as a delete does.
    ready(&lagging);
    let waited = while_held(&lagging, lease * 3, || {
        let start = Instant::now();
        a.execute(
            by,
            Command::ChangeRole {
                teammate: second,
                role: tokenledger_events::Role::Member,
            },
        )
        .unwrap();
        start.elapsed()
    });
    assert!(
        waited >= lease / 4,
        "the demotion did not wait ({waited:?})"
    );
    assert!(waited < lease * 2, "the demotion waited {waited:?}");
}

#[test]
fn a_replica_closed_by_damage_ends_its_lease_so_removals_do_not_wait_for_it() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let lease = Duration::from_secs(5);
    let (a, damaged) = (replica(&database, lease), replica(&database, lease));
    let (company, admin) = given_a_company(&a);
    let target = Target::given(&a, company, admin);
    all_at(&[&a, &damaged], a.head().position);
    let by = tokenledger_events::Actor::Teammate(admin);
    // A record the damaged replica has yet to apply is changed in the
    // database: applying it, the replica finds the chain broken and closes.
    while_held(&damaged, Duration::from_millis(300), || {
        let workspace = fresh::workspace_id().unwrap();
        let position = a
            .execute(
                by,
                Command::CreateWorkspace {
                    company,
                    workspace,
                    name: tokenledger_events::Name::new("Sales").unwrap(),
                },
            )
            .unwrap()
            .position();
        database
            .client()
            .execute(
                "UPDATE tokenledger_events
                 SET record = set_byte(record, 100, get_byte(record, 100) # 1)
                 WHERE position = $1",
                &[&i64::try_from(position).unwrap()],
            )
            .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leases: i64 = database
            .client()
            .query_one("SELECT count(*) FROM tokenledger_leases", &[])
            .unwrap()
            .get(0);
        if leases == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed replica's lease stays"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!damaged.health().ready);
    let start = Instant::now();
    a.execute(
        by,
        Command::DeleteToken {
            token: target.token,
        },
    )
    .unwrap();
    let waited = start.elapsed();
    assert!(
        waited < lease / 5,
        "the delete waited {waited:?} for a closed replica"
    );
}

#[test]
fn a_lost_notification_costs_latency_only() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let lease = Duration::from_secs(1);
    let (a, b) = (replica(&database, lease), replica(&database, lease));
    let (company, admin) = given_a_company(&a);
    let mut admin_db = database.client();
    for round in 0..5 {
        let target = Target::given(&a, company, admin);
        all_at(&[&a, &b], a.head().position);
        let on_b = b.authorizer();
        let handle = on_b.authenticate(target.secret.expose()).unwrap();
        let request = target.request(Removal::DeleteToken);
        assert!(on_b.authorize(handle, &request).is_allowed());
        // Every listening connection dropped: the delete's notification,
        // and b's report that it applied it, reach no one.
        let dropped = admin_db
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'tokenledger-watch' AND datname = current_database()",
                &[],
            )
            .unwrap();
        assert!(!dropped.is_empty(), "round {round}: no listener found");
        let start = Instant::now();
        a.execute(
            tokenledger_events::Actor::Teammate(admin),
            Command::DeleteToken {
                token: target.token,
            },
        )
        .unwrap();
        let waited = start.elapsed();
        let refusal = on_b.authorize(handle, &request).refusal.unwrap();
        assert_eq!(refusal.rule, Rule::TokenLive, "round {round}");
        assert!(waited < lease, "round {round}: waited {waited:?}");
        eprintln!("round {round}: with the listeners dropped, the delete took {waited:?}");
    }
}
