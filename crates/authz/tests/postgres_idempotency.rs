//! Idempotency keys across replicas: the same keyed creation sent to two
//! replicas of one log, one after the other or at once, makes one token,
//! and both answer it; a replica that meets the other's events under its
//! key between its look and its append catches up and answers from the
//! log, and closes nothing.

#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::sync::{Arc, Barrier};

use common::ledger::{name, new_tags_token};
use common::replicas::{all_at, given_a_company};
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_postgres::testing::Database;

/// A replica, sealing secrets with the key every replica shares if
/// `sealed`.
fn replica(database: &Database, sealed: bool) -> Arc<Ledger> {
    let options = LedgerOptions {
        sealing_key: sealed.then(|| SealingKey::from_bytes([3; 32])),
        ..LedgerOptions::default()
    };
    Ledger::open_postgres(&database.url, None, options).unwrap()
}

/// The token a keyed creation answers, and its secret if shown: without
/// a sealing key, a creation sent again says the token exists and its
/// secret was in the first reply.
fn created_once(
    ledger: &Ledger,
    by: Actor,
    company: CompanyId,
    key: IdempotencyKey,
) -> (TokenId, Option<String>) {
    match ledger.create_token_once(by, new_tags_token(company), key) {
        Ok(created) => (created.token, Some(created.secret.expose().to_owned())),
        Err(LedgerError::SecretShownOnce { token, .. }) => (token, None),
        Err(other) => panic!("{other}"),
    }
}

fn created_in_log(ledger: &Ledger) -> usize {
    let all = ledger.history(&HistoryQuery::default()).unwrap();
    all.iter()
        .filter(|stored| matches!(stored.envelope.event, Event::TokenCreated { .. }))
        .count()
}

fn open(ledgers: &[&Ledger]) {
    for ledger in ledgers {
        assert_eq!(ledger.health().closed, None);
    }
}

#[test]
fn a_keyed_creation_sent_to_a_second_replica_answers_the_token_the_first_made() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let (a, b) = (replica(&database, true), replica(&database, true));
    let (company, admin) = given_a_company(&a);
    let by = Actor::Teammate(admin);
    let key = IdempotencyKey::new(b"create-1", b"POST /v1/tokens {...}");
    let created = a
        .create_token_once(by, new_tags_token(company), key)
        .unwrap();
    // b need not have applied it: its look asks the log.
    let again = b
        .create_token_once(by, new_tags_token(company), key)
        .unwrap();
    assert!(again.receipt.replayed);
    assert_eq!(again.token, created.token);
    assert_eq!(again.secret.expose(), created.secret.expose());
    assert_eq!(created_in_log(&b), 1);
    open(&[&a, &b]);
}

#[test]
fn the_same_keyed_creation_sent_to_two_replicas_at_once_makes_one_token() {
    race(true);
}

#[test]
fn without_a_sealing_key_too() {
    race(false);
}

/// Rounds of one keyed creation sent to two replicas at once,
/// beside an unkeyed command on each.
fn race(sealed: bool) {
    let Some(database) = Database::fresh() else {
        return;
    };
    let (a, b) = (replica(&database, sealed), replica(&database, sealed));
    let (company, admin) = given_a_company(&a);
    all_at(&[&a, &b], a.head().position);
    let by = Actor::Teammate(admin);
    let rounds = ROUNDS;
    let mut others = 0;
    for round in 0..rounds {
        let key = IdempotencyKey::new(&[round], b"POST /v1/tokens {...}");
        let barrier = Arc::new(Barrier::new(4));
        let create = |ledger: &Arc<Ledger>| {
            let (ledger, barrier) = (Arc::clone(ledger), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                created_once(&ledger, by, company, key)
            })
        };
        // Beside them, unkeyed commands, which may share a group with a
        // keyed one that meets the other replica's events: they are
        // decided again, not failed.
        let unkeyed = |ledger: &Arc<Ledger>| {
            let (ledger, barrier) = (Arc::clone(ledger), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let teammate = fresh::teammate_id().unwrap();
                let command = Command::AddTeammate {
                    company,
                    teammate,
                    name: name("Someone"),
                    role: Role::Member,
                };
                ledger.execute(by, command).unwrap();
            })
        };
        let threads = [create(&a), create(&b)];
        let side = [unkeyed(&a), unkeyed(&b)];
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for thread in side {
            thread.join().unwrap();
            others += 1;
        }
        assert_eq!(answers[0].0, answers[1].0, "round {round}");
        if sealed {
            assert_eq!(answers[0].1, answers[1].1, "round {round}");
        } else {
            assert_eq!(answers.iter().filter(|(_, s)| s.is_some()).count(), 1);
        }
        open(&[&a, &b]);
    }
    let head = a.head().position;
    all_at(&[&a, &b], head);
    assert_eq!(created_in_log(&a), usize::from(rounds));
    assert_eq!(others, 2 * usize::from(rounds));
    for ledger in [&a, &b] {
        let tokens = ledger.with_state(|state| state.tokens_of(company).count());
        assert_eq!(tokens, usize::from(rounds));
    }
    open(&[&a, &b]);
    assert!(a.verify().is_ok());
}

/// Rounds of the race between replicas: most meet the other's events
/// under their key in a few of them.
const ROUNDS: u8 = 60;

/// A keyed command that records the same events wherever it is decided
/// (a private-access setting), sent to two replicas at once beside
/// unkeyed commands: the one that meets the other's events under its key,
/// perhaps after other events, applies nothing of its own, and both
/// states end as a replica that replays the log makes it.
#[test]
fn keyed_commands_that_record_the_same_events_on_two_replicas_leave_their_states_as_the_log() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let (a, b) = (replica(&database, false), replica(&database, false));
    let (company, admin) = given_a_company(&a);
    let owner = fresh::teammate_id().unwrap();
    let by = Actor::Teammate(admin);
    a.execute(
        by,
        Command::AddTeammate {
            company,
            teammate: owner,
            name: name("Owen"),
            role: Role::Member,
        },
    )
    .unwrap();
    all_at(&[&a, &b], a.head().position);
    for round in 0..ROUNDS {
        let key = IdempotencyKey::new(&[round], b"PUT /v1/teammates/owner/private-api-access");
        let setting = Command::SetPrivateApiAccess {
            teammate: owner,
            allowed: round % 2 == 0,
        };
        let barrier = Arc::new(Barrier::new(4));
        let mut threads = Vec::new();
        for ledger in [&a, &b] {
            let (keyed, wait, setting) =
                (Arc::clone(ledger), Arc::clone(&barrier), setting.clone());
            threads.push(std::thread::spawn(move || {
                wait.wait();
                keyed
                    .execute_once(Actor::Teammate(owner), setting, key)
                    .unwrap();
            }));
            let (unkeyed, wait) = (Arc::clone(ledger), Arc::clone(&barrier));
            threads.push(std::thread::spawn(move || {
                wait.wait();
                let add = Command::AddTeammate {
                    company,
                    teammate: fresh::teammate_id().unwrap(),
                    name: name("Someone"),
                    role: Role::Member,
                };
                unkeyed.execute(by, add).unwrap();
            }));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        open(&[&a, &b]);
    }
    let c = replica(&database, false);
    let head = a.head().position;
    all_at(&[&a, &b, &c], head);
    let state = |ledger: &Ledger| ledger.with_state(|state| encode_checkpoint(state).unwrap());
    // Compared whole, printed not: a state is kilobytes.
    assert!(state(&a) == state(&c), "a's state is not the log's");
    assert!(state(&b) == state(&c), "b's state is not the log's");
    // The company, its admin and the owner; a setting and two additions a
    // round.
    assert_eq!(head, 3 + 3 * u64::from(ROUNDS));
}
