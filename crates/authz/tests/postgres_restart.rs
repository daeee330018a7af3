//! PostgreSQL stopped as by a crash (`pg_ctl -m immediate`) and started
//! again while a replica appends and another follows, on a throwaway
//! cluster of the test's own: each command fails cleanly or succeeds,
//! nothing acknowledged is lost, both replicas reconnect and catch up, and
//! the chain verifies.

#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_postgres::testing::Cluster;

fn open(url: &str) -> Arc<Ledger> {
    Ledger::open_postgres(url, None, LedgerOptions::default()).unwrap()
}

fn new_company(ledger: &Ledger) -> Result<Receipt, LedgerError> {
    ledger.execute(
        Actor::System,
        Command::CreateCompany {
            company: fresh::company_id().unwrap(),
            name: Name::new("Acme").unwrap(),
        },
    )
}

/// Commands through `ledger` until `stop` (or 60 s): the receipts of
/// those that succeeded, and the errors of those that failed.
fn appending(ledger: &Ledger, stop: &AtomicBool) -> (Vec<Receipt>, Vec<String>) {
    let (mut recorded, mut failed) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(60) {
        match new_company(ledger) {
            Ok(receipt) => recorded.push(receipt),
            Err(error) => {
                failed.push(error.to_string());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    (recorded, failed)
}

#[test]
fn appends_through_a_postgres_restart_fail_cleanly_or_hold_and_the_replicas_catch_up() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let writer = open(&cluster.url);
    let follower = open(&cluster.url);
    new_company(&writer).unwrap();

    let stop = AtomicBool::new(false);
    let (recorded, failed, again) = std::thread::scope(|scope| {
        let appends = scope.spawn(|| appending(&writer, &stop));
        std::thread::sleep(Duration::from_millis(400));
        cluster.stop();
        std::thread::sleep(Duration::from_millis(300));
        cluster.start_again();
        // Until the writer has recorded again since the restart.
        let restarted = Instant::now();
        let before = writer.head().position;
        let again = loop {
            if writer.head().position >= before + 5 {
                break true;
            }
            if restarted.elapsed() > Duration::from_secs(30) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stop.store(true, Ordering::Release);
        let (recorded, failed) = appends.join().unwrap();
        (recorded, failed, again)
    });
    // Those that met the server stopped failed cleanly, or waited it out
    // and succeeded: none left the ledger closed.
    let mut kinds = failed.clone();
    kinds.dedup();
    assert!(
        again,
        "the writer did not record again after the restart: {kinds:?}"
    );

    // Every acknowledged event is where its receipt says, in each.
    let last = recorded.iter().map(Receipt::position).max().unwrap();
    follower
        .wait_for_position(last, Duration::from_secs(30))
        .expect("the follower catches up after the restart");
    let fresh = open(&cluster.url);
    for ledger in [&writer, &follower, &fresh] {
        let held = ledger.history(&HistoryQuery::default()).unwrap();
        for receipt in &recorded {
            for event in &receipt.events {
                let at = held.iter().find(|h| h.envelope.position == event.position);
                assert_eq!(
                    at.map(|h| &h.envelope),
                    Some(event),
                    "an acknowledged event is not at its position"
                );
            }
        }
    }
    let verified = fresh
        .verify()
        .expect("the chain verifies after the restart");
    assert_eq!(verified.records, fresh.head().position);
    // And those that failed left nothing: each command records one event,
    // the first company's and the acknowledged ones are all there is.
    assert_eq!(
        fresh.head().position,
        1 + recorded.len() as u64,
        "a command reported failed ({} of them: {kinds:?}) was recorded",
        failed.len()
    );
}
