//! Replicas' leases on their own (`lease.rs`): what a removal waits for,
//! what ends a lease, and that a lagging holder cannot hold a removal up
//! for longer than about a lease.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::time::{Duration, Instant};

use tokenledger_postgres::{Grant, MIN_LEASE, MIN_MARGIN, Options, PgLog, SCHEMA_VERSION};

use common::Database;

const LEASE: Duration = Duration::from_millis(500);

fn open(database: &Database) -> PgLog {
    let options = Options {
        poll_interval: Duration::from_millis(20),
        ..Options::default()
    };
    PgLog::open(&database.url, options).unwrap()
}

fn held(grant: Grant) -> Instant {
    match grant {
        Grant::Until(until) => until,
        other => panic!("not held: {other:?}"),
    }
}

#[test]
fn a_removal_waits_until_every_live_lease_has_applied_its_position() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let (a, b, c) = (open(&database), open(&database), open(&database));
    let (on_a, on_b, on_c) = (
        a.lease(LEASE).unwrap(),
        b.lease(LEASE).unwrap(),
        c.lease(LEASE).unwrap(),
    );
    for lease in [&on_a, &on_b, &on_c] {
        let sent = Instant::now();
        let until = held(lease.join(0).unwrap().0);
        // Measured from before the statement was sent, less the margin.
        assert!(until >= sent + LEASE - lease.margin());
        assert!(until < Instant::now() + LEASE - lease.margin());
    }
    // Nobody has applied 5: the wait goes on while b and c are behind,
    // and ends once both have said they applied it.
    std::thread::scope(|threads| {
        let waiting = threads.spawn(|| {
            let start = Instant::now();
            on_a.await_applied(5).unwrap();
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(30));
        on_b.report(5).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiting.is_finished(), "returned with c behind");
        on_c.report(7).unwrap();
        let waited = waiting.join().unwrap();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < LEASE, "{waited:?}");
    });
    // Its own lease is not waited for.
    on_b.report(7).unwrap();
    assert_eq!(on_a.await_applied(7).unwrap(), 0);
}

#[test]
fn an_expired_lease_is_ended_by_the_removal_and_must_be_taken_again() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let (a, b) = (open(&database), open(&database));
    let (on_a, on_b) = (a.lease(LEASE).unwrap(), b.lease(LEASE).unwrap());
    held(on_a.join(0).unwrap().0);
    held(on_b.join(0).unwrap().0);
    // b stops renewing (paused): a removal waits for its lease to end,
    // not for ever: a tenth of a lease, its mark, and a lease and a
    // margin after it.
    let start = Instant::now();
    on_a.await_applied(3).unwrap();
    let waited = start.elapsed();
    assert!(waited >= LEASE + on_a.margin(), "{waited:?}");
    assert!(waited < LEASE * 2, "{waited:?}");
    let rows = database
        .client()
        .query("SELECT 1 FROM tokenledger_leases", &[])
        .unwrap();
    assert_eq!(rows.len(), 1, "the expired lease is ended");
    // b comes back: its lease is gone, and renewing it says so.
    assert_eq!(on_b.renew(0).unwrap(), Grant::Lapsed);
    held(on_b.join(3).unwrap().0);
    held(on_b.renew(3).unwrap());
}

#[test]
fn a_holder_that_renews_without_applying_holds_a_removal_up_for_a_lease_at_most() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let (a, b) = (open(&database), open(&database));
    let (on_a, on_b) = (a.lease(LEASE).unwrap(), b.lease(LEASE).unwrap());
    held(on_a.join(0).unwrap().0);
    held(on_b.join(0).unwrap().0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let owing = std::thread::scope(|threads| {
        // b keeps renewing at position 0, as a replica whose follower is
        // stuck while its lease thread runs would.
        let renewing = threads.spawn(|| {
            let mut owing = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match on_b.renew(0).unwrap() {
                    Grant::Owing(owed) => owing = Some(owed),
                    Grant::Until(_) => {}
                    Grant::Lapsed => break,
                }
                std::thread::sleep(LEASE / 8);
            }
            owing
        });
        let start = Instant::now();
        on_a.await_applied(9).unwrap();
        let waited = start.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(waited >= LEASE / 2, "{waited:?}");
        assert!(waited < LEASE * 2, "{waited:?}");
        renewing.join().unwrap()
    });
    assert_eq!(owing, Some(9), "the removal's mark stops the extensions");
    // Once it has applied what it owes, it is granted again.
    let grant = on_b.renew(9).unwrap();
    assert!(
        matches!(grant, Grant::Until(_) | Grant::Lapsed),
        "{grant:?}"
    );
    held(on_b.join(9).unwrap().0);
}

#[test]
fn a_lease_dropped_is_ended_at_once_and_a_bad_length_is_refused() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let (a, b) = (open(&database), open(&database));
    let on_a = a.lease(Duration::from_secs(30)).unwrap();
    let on_b = b.lease(Duration::from_secs(30)).unwrap();
    held(on_a.join(0).unwrap().0);
    held(on_b.join(0).unwrap().0);
    drop(on_b);
    let start = Instant::now();
    on_a.await_applied(1).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    let error = a.lease(Duration::from_millis(1)).err().unwrap();
    assert!(
        error.to_string().contains("1 ms is out of range"),
        "{error}"
    );
    assert!(a.lease(MIN_LEASE - Duration::from_millis(1)).is_err());
    let shortest = a.lease(MIN_LEASE).unwrap();
    assert!(shortest.margin() >= MIN_MARGIN);
    assert!(shortest.margin() < MIN_LEASE / 4);
}

#[test]
fn a_database_at_schema_1_gains_the_leases_table() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    drop(open(&database));
    database
        .client()
        .batch_execute("DROP TABLE tokenledger_leases; UPDATE tokenledger_schema SET version = 1")
        .unwrap();
    let log = open(&database);
    held(log.lease(LEASE).unwrap().join(0).unwrap().0);
    let version: i32 = database
        .client()
        .query_one("SELECT version FROM tokenledger_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 2);
}

#[test]
fn a_lease_that_expired_is_not_renewed_even_if_no_removal_ended_it() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let log = open(&database);
    let lease = log.lease(LEASE).unwrap();
    held(lease.join(0).unwrap().0);
    held(lease.renew(0).unwrap());
    std::thread::sleep(LEASE + LEASE / 4);
    // Its holder stopped allowing before it expired, and a removal may have
    // taken it for ended: it must be taken again, and caught up.
    assert_eq!(lease.renew(0).unwrap(), Grant::Lapsed);
    let (grant, head) = lease.join(0).unwrap();
    held(grant);
    assert_eq!(head, 0);
}

#[test]
fn a_lease_expired_on_the_servers_clock_alone_is_still_waited_out() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let (a, b) = (open(&database), open(&database));
    let (on_a, on_b) = (a.lease(LEASE).unwrap(), b.lease(LEASE).unwrap());
    held(on_a.join(0).unwrap().0);
    let sent = Instant::now();
    let until = held(on_b.join(0).unwrap().0);
    // The server's clock stepped forward an hour (or a failover to a host
    // whose clock is ahead): b's lease looks long expired there, while b
    // still allows on its own monotonic clock.
    database
        .client()
        .batch_execute("UPDATE tokenledger_leases SET expires_at = expires_at - interval '1 hour'")
        .unwrap();
    on_a.await_applied(4).unwrap();
    let returned = Instant::now();
    assert!(
        returned > until,
        "returned {:?} after b's join was sent, while b allows until {:?} after it",
        returned - sent,
        until - sent
    );
    // Waited out, and not extended since the mark: ended, so b must join
    // again (and catch up) before it allows.
    assert_eq!(on_b.renew(4).unwrap(), Grant::Lapsed);
}
