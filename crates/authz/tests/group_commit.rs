//! Commands from many callers: decided one at a time, in the order they
//! reach the writer, each against the state its predecessors left, and
//! appended together when they arrive together; a group whose append fails
//! leaves nothing of itself applied, or closes the ledger.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::{self, ScopedJoinHandle};
use std::time::Duration;

mod common;

use common::ledger::{a_company, failing_at, name, tags_scope};
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::{
    AppendError, EventLog, Expectation, FaultPoint, NewEvent, Options, SledLog,
};

/// Runs `commands` from one thread each, started in order while the
/// writer is held, so that they wait for it together and are served as
/// one group, in that order, once it is let go. Returns their outcomes.
fn as_one_group(
    ledger: &Ledger,
    commands: Vec<(Actor, Command)>,
) -> Vec<Result<Receipt, LedgerError>> {
    let (held, release) = (mpsc::channel(), mpsc::channel::<()>());
    let (held_tx, held_rx) = held;
    let (release_tx, release_rx) = release;
    thread::scope(|scope| {
        // Holds the writer: reading the state through the ledger does.
        let holder = scope.spawn(move || {
            ledger.with_state(|_| {
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        });
        held_rx.recv().unwrap();
        let callers: Vec<ScopedJoinHandle<'_, _>> = commands
            .into_iter()
            .map(|(actor, command)| {
                let caller = scope.spawn(move || ledger.execute(actor, command));
                // Each sends its request before the next starts.
                thread::sleep(Duration::from_millis(30));
                caller
            })
            .collect();
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

fn create_company(company: CompanyId) -> (Actor, Command) {
    (
        Actor::System,
        Command::CreateCompany {
            company,
            name: name("Acme"),
        },
    )
}

fn add_admin(company: CompanyId, teammate: TeammateId) -> (Actor, Command) {
    (
        Actor::System,
        Command::AddTeammate {
            company,
            teammate,
            name: name("Ada"),
            role: Role::Admin,
        },
    )
}

#[test]
fn a_command_is_decided_against_the_events_of_those_before_it_in_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let company = fresh::company_id().unwrap();
    let (ada, bea) = (fresh::teammate_id().unwrap(), fresh::teammate_id().unwrap());
    let outcomes = as_one_group(
        &ledger,
        vec![
            add_admin(company, ada),
            create_company(company),
            add_admin(company, bea),
            create_company(company),
        ],
    );
    // Before the company: refused. After it, in the same group: added.
    assert!(
        matches!(outcomes[0], Err(LedgerError::Refused(_))),
        "{:?}",
        outcomes[0]
    );
    let created = outcomes[1].as_ref().unwrap();
    let added = outcomes[2].as_ref().unwrap();
    assert!(
        matches!(
            outcomes[3],
            Err(LedgerError::Refused(CommandError::AlreadyExists { id: TakenId::Company(id) })) if id == company
        ),
        "{:?}",
        outcomes[3]
    );
    assert_eq!((created.position(), added.position()), (1, 2));
    // One append: one time for both.
    assert_eq!(created.events[0].recorded_at, added.events[0].recorded_at);
    assert!(ledger.with_state(|s| s.teammate(bea).is_some() && s.teammate(ada).is_none()));
    let authorizer_sees = ledger.with_state(State::position);
    assert_eq!(authorizer_sees, 2);

    // What the group left is what the log holds.
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert!(ledger.with_state(|s| s.teammate(bea).is_some() && s.teammate(ada).is_none()));
    assert_eq!(ledger.head().position, 2);
}

#[test]
fn a_group_that_could_not_be_written_leaves_nothing_of_itself_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Commit);
    let ledger = Ledger::open_with(dir.path(), options.clone()).unwrap();
    let (company, _) = a_company(&ledger);
    let head = ledger.head().position;
    let (other, teammate) = (fresh::company_id().unwrap(), fresh::teammate_id().unwrap());

    armed.store(true, Ordering::SeqCst);
    let outcomes = as_one_group(
        &ledger,
        vec![create_company(other), add_admin(other, teammate)],
    );
    armed.store(false, Ordering::SeqCst);
    // Each command of the group gets the error; nothing was written.
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(LedgerError::Append(AppendError::Io(_)))),
            "{outcome:?}"
        );
    }
    assert_eq!(ledger.head().position, head);
    // The cause is there to match, through `source`.
    let error = outcomes[0].as_ref().unwrap_err();
    let cause = std::error::Error::source(error).unwrap();
    assert!(matches!(
        cause.downcast_ref::<AppendError>(),
        Some(AppendError::Io(_))
    ));
    // The first command's events, applied to decide the second, are gone.
    assert!(ledger.with_state(|s| s.company(other).is_none() && s.teammate(teammate).is_none()));
    assert_eq!(ledger.with_state(State::position), head);

    // The next commands are decided against what the log holds.
    ledger
        .execute(create_company(other).0, create_company(other).1)
        .unwrap();
    let (actor, command) = add_admin(other, teammate);
    assert_eq!(ledger.execute(actor, command).unwrap().position(), head + 2);
    assert!(ledger.with_state(|s| s.company(company).is_some()));
    drop(ledger);
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    assert_eq!(ledger.head().position, head + 2);
    assert!(ledger.with_state(|s| s.teammate(teammate).is_some()));
}

#[test]
fn a_refusal_decided_after_a_predecessor_not_yet_recorded_waits_for_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Commit);
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    let other = fresh::company_id().unwrap();

    // Recorded: the second is refused for the first's company.
    let outcomes = as_one_group(&ledger, vec![create_company(other), create_company(other)]);
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(LedgerError::Refused(_))),
        "{:?}",
        outcomes[1]
    );

    // Not recorded: the company the refusal saw never existed, so the
    // second caller is not told it does; it gets the group's error.
    let another = fresh::company_id().unwrap();
    armed.store(true, Ordering::SeqCst);
    let outcomes = as_one_group(
        &ledger,
        vec![create_company(another), create_company(another)],
    );
    armed.store(false, Ordering::SeqCst);
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(LedgerError::Append(AppendError::Io(_)))),
            "{outcome:?}"
        );
    }
    assert!(ledger.with_state(|s| s.company(another).is_none()));
}

#[test]
fn a_command_the_log_cannot_encode_fails_alone_and_not_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, admin) = a_company(&ledger);
    drop(ledger);
    // Enough workspaces that a token naming them all makes a record
    // longer than the log takes; appended straight to the log, at once.
    let workspaces: Vec<WorkspaceId> = (0..5_000).map(|_| fresh::workspace_id().unwrap()).collect();
    let log = SledLog::open(dir.path(), Options::default()).unwrap();
    let created = workspaces.iter().map(|&workspace| NewEvent {
        event_id: fresh::event_id().unwrap(),
        actor: Actor::Teammate(admin),
        company,
        event: Event::WorkspaceCreated {
            workspace,
            name: name("Team"),
        },
    });
    log.append(created.collect(), Expectation::Any).unwrap();
    drop(log);

    let ledger = Ledger::open(dir.path()).unwrap();
    let mut scope = tags_scope();
    scope.namespaces.shared = SharedNamespace::Workspaces(workspaces.into_iter().collect());
    let too_long = Command::CreateToken {
        company,
        token: fresh::token_id().unwrap(),
        name: name("Everywhere"),
        kind: TokenKind::ApiToken,
        scope,
        secret_digest: fresh::secret().unwrap().digest(),
        sealed_secret: None,
        expires_at: None,
    };
    let other = fresh::company_id().unwrap();
    let outcomes = as_one_group(
        &ledger,
        vec![(Actor::Teammate(admin), too_long), create_company(other)],
    );
    assert!(
        matches!(
            outcomes[0],
            Err(LedgerError::Append(AppendError::Encode(_)))
        ),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
    assert!(ledger.with_state(|s| s.company(other).is_some()));
}

#[test]
fn a_group_whose_outcome_is_unknown_closes_the_ledger_for_each_of_its_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Sync);
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    let (company, _) = a_company(&ledger);
    let commands = (0..3)
        .map(|_| create_company(fresh::company_id().unwrap()))
        .collect();
    armed.store(true, Ordering::SeqCst);
    let outcomes = as_one_group(&ledger, commands);
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(LedgerError::Append(AppendError::Poisoned(_)))),
            "{outcome:?}"
        );
    }
    // Readers refuse everything: the state they read holds nothing.
    assert!(ledger.with_state(|s| s.company(company).is_none()));
    let later = ledger
        .execute(
            Actor::System,
            create_company(fresh::company_id().unwrap()).1,
        )
        .unwrap_err();
    assert!(matches!(later, LedgerError::Closed(_)), "{later}");
}

#[test]
fn many_callers_at_once_each_get_their_own_events_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    // Every caller tries to create the same company, then its own: the
    // shared one is created once, whoever comes first.
    let shared = fresh::company_id().unwrap();
    let receipts: Vec<Vec<Receipt>> = thread::scope(|scope| {
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let ledger = &ledger;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    if let Ok(receipt) =
                        ledger.execute(create_company(shared).0, create_company(shared).1)
                    {
                        mine.push(receipt);
                    }
                    for _ in 0..20 {
                        let (actor, command) = create_company(fresh::company_id().unwrap());
                        mine.push(ledger.execute(actor, command).unwrap());
                    }
                    mine
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut positions: Vec<u64> = receipts.iter().flatten().map(Receipt::position).collect();
    positions.sort_unstable();
    // 8 × 20 companies of their own and one shared, at every position once.
    assert_eq!(positions, (1..=161).collect::<Vec<u64>>());
    for receipt in receipts.iter().flatten() {
        assert_eq!(receipt.events.len(), 1);
    }
    let history = ledger.history(&HistoryQuery::default()).unwrap();
    for receipt in receipts.iter().flatten() {
        let stored = &history[(receipt.position() - 1) as usize];
        assert_eq!(stored.envelope, receipt.events[0]);
    }
}
