//! Commands run once per idempotency key: a keyed command sent again,
//! after the ledger closed and reopened, is answered from the log and not
//! decided again; a token's creation sent again answers the token first
//! made.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::ledger::{a_company, name, new_tags_token};
use tokenledger_authz::*;
use tokenledger_events::*;

fn with_sealing_key() -> LedgerOptions {
    LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([9; 32])),
        ..LedgerOptions::default()
    }
}

fn reopen(ledger: Ledger, dir: &Path, options: LedgerOptions) -> Ledger {
    drop(ledger);
    Ledger::open_with(dir, options).unwrap()
}

fn add(company: CompanyId, who: &str) -> Command {
    Command::AddTeammate {
        company,
        teammate: fresh::teammate_id().unwrap(),
        name: name(who),
        role: Role::Member,
    }
}

fn tokens(ledger: &Ledger, company: CompanyId) -> usize {
    ledger.with_state(|state| state.tokens_of(company).count())
}

#[test]
fn a_keyed_command_sent_again_after_a_reopen_is_answered_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, admin) = a_company(&ledger);
    let by = Actor::Teammate(admin);
    let key = IdempotencyKey::new(b"add-bob", b"POST /v1/teammates {bob}");
    let first = ledger.execute_once(by, add(company, "Bob"), key).unwrap();
    assert!(!first.replayed);
    assert_eq!(first.events[0].event_id, key.event_id(0));
    let head = ledger.head();
    let ledger = reopen(ledger, dir.path(), LedgerOptions::default());
    // A new teammate id is drawn for the retry, as a service would: the
    // answer names the one first added.
    let again = ledger.execute_once(by, add(company, "Bob"), key).unwrap();
    assert!(again.replayed);
    assert_eq!(again.events, first.events);
    assert_eq!(again.position(), first.position());
    assert_eq!(ledger.head(), head, "nothing new in the log");
    // The same key with another request runs as a new command.
    let other = IdempotencyKey::new(b"add-bob", b"POST /v1/teammates {bobby}");
    let new = ledger.execute_once(by, add(company, "Bob"), other).unwrap();
    assert!(!new.replayed);
    assert_eq!(new.position(), head.position + 1);
    // And an unkeyed command as ever.
    let plain = ledger.execute(by, add(company, "Cy")).unwrap();
    assert!(!plain.replayed);
}

#[test]
fn a_key_that_names_another_actors_events_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, admin) = a_company(&ledger);
    let key = IdempotencyKey::new(b"k", b"no actor in this fingerprint");
    let first = ledger
        .execute_once(Actor::Teammate(admin), add(company, "Bob"), key)
        .unwrap();
    let head = ledger.head();
    let refused = ledger
        .execute_once(Actor::System, add(company, "Bob"), key)
        .unwrap_err();
    assert!(
        matches!(refused, LedgerError::KeyReused { position } if position == first.position()),
        "{refused}"
    );
    assert_eq!(ledger.head(), head);
}

#[test]
fn a_key_that_names_another_commands_events_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, admin) = a_company(&ledger);
    let by = Actor::Teammate(admin);
    // A fingerprint that leaves the request's body out.
    let key = IdempotencyKey::new(b"k", b"POST /v1/teammates");
    let first = ledger.execute_once(by, add(company, "Bob"), key).unwrap();
    let head = ledger.head();
    for other in [
        add(company, "Cy"),
        Command::AddTeammate {
            company,
            teammate: fresh::teammate_id().unwrap(),
            name: name("Bob"),
            role: Role::Admin,
        },
        Command::CreateWorkspace {
            company,
            workspace: fresh::workspace_id().unwrap(),
            name: name("Bob"),
        },
    ] {
        let refused = ledger.execute_once(by, other, key).unwrap_err();
        assert!(
            matches!(refused, LedgerError::KeyReused { position } if position == first.position()),
            "{refused}"
        );
    }
    assert_eq!(ledger.head(), head);
    // The command itself, sent again, is still answered from the log.
    let again = ledger.execute_once(by, add(company, "Bob"), key).unwrap();
    assert!(again.replayed);
    assert_eq!(again.events, first.events);
}

#[test]
fn a_token_created_again_with_its_key_and_a_sealing_key_shows_the_original_and_records_a_reveal() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), with_sealing_key()).unwrap();
    let (company, admin) = a_company(&ledger);
    let by = Actor::Teammate(admin);
    let key = IdempotencyKey::new(b"create-1", b"POST /v1/tokens {...}");
    let created = ledger
        .create_token_once(by, new_tags_token(company), key)
        .unwrap();
    assert!(!created.receipt.replayed);
    assert!(ledger.reveals(created.token).unwrap().is_empty());
    let ledger = reopen(ledger, dir.path(), with_sealing_key());
    let again = ledger
        .create_token_once(by, new_tags_token(company), key)
        .unwrap();
    assert_eq!(again.token, created.token);
    assert_eq!(again.secret.expose(), created.secret.expose());
    assert!(again.receipt.replayed);
    assert_eq!(again.receipt.events, created.receipt.events);
    assert_eq!(tokens(&ledger, company), 1, "no second token");
    // Shown again: recorded as a reveal, by whom.
    let reveals = ledger.reveals(created.token).unwrap();
    assert_eq!(reveals.len(), 1);
    assert_eq!(reveals[0].actor, by);
    assert_eq!(ledger.head().position, created.receipt.position() + 1);
}

#[test]
fn a_token_created_again_with_its_key_and_no_sealing_key_names_it_and_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, admin) = a_company(&ledger);
    let by = Actor::Teammate(admin);
    let key = IdempotencyKey::new(b"create-1", b"POST /v1/tokens {...}");
    let created = ledger
        .create_token_once(by, new_tags_token(company), key)
        .unwrap();
    let head = ledger.head();
    let ledger = reopen(ledger, dir.path(), LedgerOptions::default());
    let again = ledger
        .create_token_once(by, new_tags_token(company), key)
        .unwrap_err();
    match again {
        LedgerError::SecretShownOnce { token, position } => {
            assert_eq!(token, created.token);
            assert_eq!(position, created.receipt.position());
        }
        other => panic!("{other}"),
    }
    assert_eq!(ledger.head(), head, "nothing recorded");
    assert_eq!(tokens(&ledger, company), 1);
}

#[test]
fn a_token_created_again_with_its_key_after_its_deletion_names_it_and_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), with_sealing_key()).unwrap();
    let (company, admin) = a_company(&ledger);
    let by = Actor::Teammate(admin);
    let key = IdempotencyKey::new(b"create-1", b"POST /v1/tokens {...}");
    let created = ledger
        .create_token_once(by, new_tags_token(company), key)
        .unwrap();
    let delete = Command::DeleteToken {
        token: created.token,
    };
    ledger.execute(by, delete).unwrap();
    let head = ledger.head();
    let again = ledger
        .create_token_once(by, new_tags_token(company), key)
        .unwrap_err();
    match &again {
        LedgerError::SecretShownOnce { token, position } => {
            assert_eq!(*token, created.token);
            assert_eq!(*position, created.receipt.position());
        }
        other => panic!("{other}"),
    }
    let message = again.to_string();
    assert!(
        message.contains("in the reply to that request"),
        "{message}"
    );
    assert!(message.contains("not kept in plain text"), "{message}");
    assert_eq!(ledger.head(), head, "nothing recorded");
}

#[test]
fn the_same_key_sent_at_once_from_many_threads_records_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    let (company, admin) = a_company(&ledger);
    let by = Actor::Teammate(admin);
    for round in 0..20u8 {
        let key = IdempotencyKey::new(&[round], b"POST /v1/tokens {...}");
        let before = ledger.head().position;
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (ledger, barrier) = (Arc::clone(&ledger), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let created = ledger.create_token_once(by, new_tags_token(company), key);
                    match created {
                        Ok(created) => (created.token, created.receipt.position()),
                        Err(LedgerError::SecretShownOnce { token, position }) => (token, position),
                        Err(other) => panic!("{other}"),
                    }
                })
            })
            .collect();
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert_eq!(ledger.head().position, before + 1, "one creation");
    }
    assert_eq!(tokens(&ledger, company), 20);
}
