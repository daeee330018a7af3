//! Replica processes paused past their lease (SIGSTOP) or killed (kill -9)
//! while a token is deleted through another replica: the delete waits for
//! the lease to end and no longer; the paused one, resumed, refuses the
//! token from its first decision; the others go on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::replica::{LEASE, Process};
use tokenledger_authz::{Ledger, LedgerOptions};
use tokenledger_events::Timestamp;
use tokenledger_postgres::testing::Database;
use tokenledger_tests::model::*;

/// A replica process of these tests, when run as one; else nothing.
#[test]
fn replica_process() {
    if let Some((url, _)) = common::replica::asked() {
        common::replica::serve(&url, &[]);
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// A replica in this process, with the model's company 0, its admin
/// (teammate 0) and token 0, which reads tags in the company's global
/// namespace; returns it and the head.
fn given_token_0(database: &Database) -> (Arc<Ledger>, u64) {
    let options = LedgerOptions {
        replica_lease: LEASE,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_postgres(&database.url, None, options).unwrap();
    let token = TokenSpec {
        c: 0,
        k: 0,
        oauth: false,
        resources: true,
        provisioning: false,
        triggers: false,
        global: true,
        shared: 0,
        workspaces: BTreeSet::new(),
        private: false,
        scopes: [3].into(),
        expires_in: None,
    };
    let mut head = 0;
    for (by, op) in [
        (0, Op::CreateCompany { c: 0 }),
        (
            0,
            Op::AddTeammate {
                c: 0,
                t: 0,
                admin: true,
            },
        ),
        (1, Op::CreateToken(token)),
    ] {
        head = ledger
            .execute(actor(by), command(&op, now()))
            .unwrap()
            .position();
    }
    (ledger, head)
}

/// Token 0 reading tags in company 0, asked of `replica` once it has
/// applied `wait`: the rule that refused (0: allowed), and the status.
fn token_0_on(replica: &mut Process, wait: u64) -> (u8, u16) {
    let answer = replica.ask(&format!("check t0 3 0 0 {} {wait}", now().as_micros()));
    let words: Vec<&str> = answer.split(' ').collect();
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

/// Allowed.
const ALLOWED: (u8, u16) = (0, 200);
/// Refused for the delete itself: rule 2, the token is not live.
const DELETED: (u8, u16) = (2, 401);
/// Refused as unavailable: the lease lapsed (`Reason::LedgerClosed`).
const UNAVAILABLE: (u8, u16) = (2, 503);

fn delete_token_0(ledger: &Ledger) -> (u64, Duration) {
    let start = Instant::now();
    let position = ledger
        .execute(actor(1), command(&Op::Delete { k: 0 }, now()))
        .unwrap()
        .position();
    (position, start.elapsed())
}

#[test]
fn a_replica_stopped_past_its_lease_refuses_from_its_first_decision_once_resumed() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let (ledger, head) = given_token_0(&database);
    let mut stopped = Process::start("replica_process", &database.url, 0);
    assert_eq!(token_0_on(&mut stopped, head), ALLOWED, "allowed before");
    stopped.signal("STOP");
    let (deleted, waited) = delete_token_0(&ledger);
    stopped.signal("CONT");
    // Its first decision, before anything else it does once resumed: its
    // lease ended while it was stopped, so it refuses as unavailable; not
    // for the delete, which it could only give having caught up already.
    assert_eq!(
        token_0_on(&mut stopped, 0),
        UNAVAILABLE,
        "not refused as unavailable"
    );
    assert!(waited >= LEASE / 4, "the delete did not wait ({waited:?})");
    assert!(waited < LEASE * 2, "the delete waited {waited:?}");
    // Caught up again: refused for the delete itself.
    assert_eq!(token_0_on(&mut stopped, deleted), DELETED);
    eprintln!("the delete waited {waited:?} for a stopped replica");
}

#[test]
fn a_replica_killed_holds_a_delete_up_for_its_lease_at_most_and_the_others_go_on() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let (ledger, head) = given_token_0(&database);
    let mut killed = Process::start("replica_process", &database.url, 0);
    let mut other = Process::start("replica_process", &database.url, 0);
    for replica in [&mut killed, &mut other] {
        assert_eq!(token_0_on(replica, head), ALLOWED, "allowed before");
    }
    killed.signal("KILL");
    let (deleted, waited) = delete_token_0(&ledger);
    assert!(waited < LEASE * 2, "the delete waited {waited:?}");
    // The other replica applied it before the delete returned.
    assert_eq!(token_0_on(&mut other, 0), DELETED);
    assert_eq!(token_0_on(&mut other, deleted), DELETED);
    // The killed replica's lease is gone: the next delete does not wait.
    let leases = database
        .client()
        .query("SELECT 1 FROM tokenledger_leases", &[])
        .unwrap()
        .len();
    assert_eq!(leases, 2, "this process's and the other's");
    assert_eq!(ledger.verify().unwrap().records, deleted);
    eprintln!("the delete waited {waited:?} for a killed replica");
}
