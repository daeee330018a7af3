//! The async face under a multi-threaded runtime: commands sent at once
//! from many tasks never block a runtime worker, are each decided against
//! the state their predecessors left, and a wait for a position holds no
//! thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokenledger_authz::{
    AsyncLedger, Command, CommandError, HistoryQuery, Ledger, LedgerError, fresh,
};
use tokenledger_events::{Actor, CompanyId, Name, Role};

/// Runs `test` on a runtime of two workers, on a thread of its own, and
/// fails if it has not finished within `limit`: a test whose progress
/// needs a free worker hangs, rather than fails, when none is.
fn within(limit: Duration, test: impl FnOnce(tokio::runtime::Runtime) + Send + 'static) {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        test(runtime);
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(limit)
        .expect("the test finished in time: no runtime worker was left blocked");
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn create_company(company: CompanyId) -> Command {
    Command::CreateCompany {
        company,
        name: name("Acme"),
    }
}

#[test]
fn commands_from_many_tasks_leave_the_workers_free_and_are_decided_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    let path = dir.path().to_owned();
    let shared = fresh::company_id().unwrap();
    let live = Arc::clone(&ledger);
    within(Duration::from_secs(20), move |runtime| {
        let ledger = AsyncLedger::new(live);
        // The writer is held by a thread outside the runtime until a task
        // on the runtime lets it go: if the commands waiting for it held
        // the two workers, that task would never run.
        let (held, hold) = (mpsc::channel(), mpsc::channel::<()>());
        let holder = {
            let ledger = Arc::clone(ledger.ledger());
            let (held_tx, release) = (held.0, hold.1);
            std::thread::spawn(move || {
                ledger.with_state(|_| {
                    held_tx.send(()).unwrap();
                    release.recv().unwrap();
                })
            })
        };
        held.1.recv().unwrap();
        let release = hold.0;
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    // The shared company is created once; each task's own
                    // teammate is added only after its own company exists.
                    let contested = ledger.execute(Actor::System, create_company(shared)).await;
                    let company = fresh::company_id().unwrap();
                    let created = ledger
                        .execute(Actor::System, create_company(company))
                        .await
                        .unwrap();
                    let added = ledger
                        .execute(
                            Actor::System,
                            Command::AddTeammate {
                                company,
                                teammate: fresh::teammate_id().unwrap(),
                                name: name("Ada"),
                                role: Role::Admin,
                            },
                        )
                        .await
                        .unwrap();
                    assert!(added.position() > created.position());
                    (contested, vec![created, added])
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            tokio::spawn(async move { release.send(()).unwrap() })
                .await
                .unwrap();
            let mut won = 0;
            let mut receipts = Vec::new();
            for task in tasks {
                let (contested, mine) = task.await.unwrap();
                match contested {
                    Ok(receipt) => {
                        won += 1;
                        receipts.push(receipt);
                    }
                    Err(LedgerError::Refused(CommandError::AlreadyExists { .. })) => {}
                    Err(other) => panic!("{other}"),
                }
                receipts.extend(mine);
            }
            assert_eq!(won, 1);
            let mut positions: Vec<u64> = receipts.iter().map(|r| r.position()).collect();
            positions.sort_unstable();
            assert_eq!(positions, (1..=33).collect::<Vec<u64>>());
            let history = ledger.history(HistoryQuery::default()).await.unwrap();
            for receipt in &receipts {
                let at = usize::try_from(receipt.position() - 1).unwrap();
                assert_eq!(history[at].envelope, receipt.events[0]);
            }
            assert_eq!(ledger.verify().await.unwrap().records, 33);
        });
        holder.join().unwrap();
    });
    // The state the commands left is the one the log replays to.
    let positions = ledger.with_state(|s| s.position());
    drop(ledger);
    let reopened = Ledger::open(&path).unwrap();
    assert_eq!(reopened.with_state(|s| s.position()), positions);
    assert!(reopened.with_state(|s| s.company(shared).is_some()));
}

#[test]
fn a_wait_for_a_position_ends_when_a_command_reaches_it_or_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = AsyncLedger::new(Arc::new(Ledger::open(&dir.path().join("data")).unwrap()));
    let export = dir.path().join("export.jsonl");
    let exported = export.clone();
    within(Duration::from_secs(30), move |runtime| {
        runtime.block_on(async {
            // Nothing reaches position 1 within the timeout: beyond the head.
            let early = ledger.wait_for_position(1, Duration::from_millis(20)).await;
            assert!(
                matches!(
                    early,
                    Err(LedgerError::BeyondHead {
                        position: 1,
                        head: 0
                    })
                ),
                "{early:?}"
            );
            // Waiting on one task while another records: the wait ends.
            let waiter = {
                let ledger = ledger.clone();
                tokio::spawn(
                    async move { ledger.wait_for_position(2, Duration::from_secs(10)).await },
                )
            };
            for _ in 0..2 {
                ledger
                    .execute(Actor::System, create_company(fresh::company_id().unwrap()))
                    .await
                    .unwrap();
            }
            assert_eq!(waiter.await.unwrap().unwrap(), 2);
            // A position already applied answers at once, blocking or not.
            assert_eq!(
                ledger.wait_for_position(1, Duration::ZERO).await.unwrap(),
                2
            );
            assert_eq!(
                ledger
                    .ledger()
                    .wait_for_position(2, Duration::ZERO)
                    .unwrap(),
                2
            );
            // An export runs off the workers too, into a new file only.
            assert_eq!(ledger.export(exported.clone()).await.unwrap(), 2);
            assert!(ledger.export(exported).await.is_err());
        });
    });
    let lines = std::fs::read_to_string(&export).unwrap().lines().count();
    assert_eq!(lines, 2);
}
