//! Several ledgers on one PostgreSQL database, as several processes would
//! be: each follows what the others append, decides locally, and a
//! command that meets another's append is decided again.

#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::Arc;
use std::time::Duration;

mod common;

use common::replicas::given_a_company;
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_postgres::testing::Database;

fn scope() -> TokenScope {
    TokenScope {
        features: [Feature::Resources].into(),
        namespaces: Namespaces {
            global: true,
            ..Namespaces::none()
        },
        grants: ["tags:read".parse().unwrap()].into_iter().collect(),
    }
}

fn request(company: CompanyId) -> Request {
    Request {
        requirement: Requirement::Scope("tags:read".parse().unwrap()),
        resource: "tag_1".parse().unwrap(),
        location: Location::Global(company),
        at: Timestamp::from_micros(u64::MAX / 2),
    }
}

fn open(database: &Database) -> Arc<Ledger> {
    Ledger::open_postgres(&database.url, None, LedgerOptions::default()).unwrap()
}

#[test]
fn a_write_through_one_ledger_is_seen_by_another_once_it_has_applied_the_receipt() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let a = open(&database);
    let b = open(&database);
    let (company, admin) = given_a_company(&a);
    let created = a
        .create_token(
            Actor::Teammate(admin),
            NewToken {
                company,
                name: Name::new("Plugin").unwrap(),
                kind: TokenKind::ApiToken,
                scope: scope(),
                expires_at: None,
            },
        )
        .unwrap();
    // The receipt's position is the consistency token.
    b.wait_for_position(created.receipt.position(), Duration::from_secs(5))
        .unwrap();
    let on_b = b.authorizer();
    let handle = on_b.authenticate(created.secret.expose()).unwrap();
    assert!(on_b.authorize(handle, &request(company)).is_allowed());
    // Deleted through b: once a has applied it, a refuses the token.
    let deleted = b
        .execute(
            Actor::Teammate(admin),
            Command::DeleteToken {
                token: created.token,
            },
        )
        .unwrap();
    a.wait_for_position(deleted.position(), Duration::from_secs(5))
        .unwrap();
    let on_a = a.authorizer();
    assert!(
        !on_a
            .check(created.secret.expose(), &request(company))
            .is_allowed()
    );
    assert!(!on_b.authorize(handle, &request(company)).is_allowed());
    assert_eq!(a.verify().unwrap(), b.verify().unwrap());
}

#[test]
fn commands_racing_through_several_ledgers_are_each_decided_against_the_others() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let ledgers = [open(&database), open(&database), open(&database)];
    let (company, admin) = given_a_company(&ledgers[0]);
    for ledger in &ledgers {
        ledger.wait_for_position(2, Duration::from_secs(5)).unwrap();
    }
    // Each ledger creates tokens while the others do: every command meets
    // the others' appends, catches up and is decided again.
    let tokens: Vec<TokenId> = std::thread::scope(|threads| {
        let running: Vec<_> = ledgers
            .iter()
            .map(|ledger| {
                threads.spawn(move || {
                    (0..15)
                        .map(|_| {
                            ledger
                                .create_token(
                                    Actor::Teammate(admin),
                                    NewToken {
                                        company,
                                        name: Name::new("Plugin").unwrap(),
                                        kind: TokenKind::ApiToken,
                                        scope: scope(),
                                        expires_at: None,
                                    },
                                )
                                .unwrap()
                                .token
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        running
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(tokens.len(), 45);
    let head = ledgers[0].head().position;
    assert_eq!(head, 2 + 45);
    let states: Vec<Vec<u8>> = ledgers
        .iter()
        .map(|ledger| {
            ledger
                .wait_for_position(head, Duration::from_secs(5))
                .unwrap();
            ledger.with_state(|state| encode_checkpoint(state).unwrap())
        })
        .collect();
    assert!(states.iter().all(|s| *s == states[0]));
    assert_eq!(ledgers[1].verify().unwrap().records, head);
}

#[test]
fn a_ledger_opened_later_replays_the_database_and_then_follows() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let first = open(&database);
    let (company, admin) = given_a_company(&first);
    let later = open(&database);
    assert_eq!(later.applied_position(), 2);
    first
        .execute(
            Actor::Teammate(admin),
            Command::CreateWorkspace {
                company,
                workspace: fresh::workspace_id().unwrap(),
                name: Name::new("Support").unwrap(),
            },
        )
        .unwrap();
    // Not asked to wait: the follower applies it of its own accord.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while later.applied_position() < 3 {
        assert!(std::time::Instant::now() < deadline, "not followed");
        std::thread::sleep(Duration::from_millis(10));
    }
}
