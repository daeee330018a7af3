//! Holes a review of issue 27's fixes found: a wrong sealing key accepted
//! behind an unsealed token, and a closed ledger still answering
//! investigations and exports from a log that may lack a delete.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::{FaultInjector, FaultPoint};

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// A company and its admin, created in `ledger`.
fn company_and_admin(ledger: &Ledger) -> (CompanyId, TeammateId) {
    let company = fresh::company_id().unwrap();
    let admin = fresh::teammate_id().unwrap();
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: name("Acme"),
            },
        )
        .unwrap();
    ledger
        .execute(
            Actor::System,
            Command::AddTeammate {
                company,
                teammate: admin,
                name: name("Ada"),
                role: Role::Admin,
            },
        )
        .unwrap();
    (company, admin)
}

/// A token of `company` that may read tags everywhere in it.
fn tag_reader(ledger: &Ledger, company: CompanyId, admin: TeammateId) -> CreatedToken {
    ledger
        .create_token(
            Actor::Teammate(admin),
            NewToken {
                company,
                name: name("Tag sync"),
                kind: TokenKind::ApiToken,
                scope: TokenScope {
                    features: [Feature::Resources].into(),
                    namespaces: Namespaces {
                        global: true,
                        ..Namespaces::none()
                    },
                    grants: ["tags:read".parse().unwrap()].into_iter().collect(),
                },
                expires_at: None,
            },
        )
        .unwrap()
}

fn sealed_with(key: Option<u8>) -> LedgerOptions {
    LedgerOptions {
        sealing_key: key.map(|byte| SealingKey::from_bytes([byte; 32])),
        ..LedgerOptions::default()
    }
}

#[test]
fn a_wrong_sealing_key_is_refused_even_when_the_newest_token_is_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let (company, admin) = {
        let ledger = Ledger::open_with(dir.path(), sealed_with(Some(1))).unwrap();
        let (company, admin) = company_and_admin(&ledger);
        tag_reader(&ledger, company, admin);
        (company, admin)
    };
    // One more token, by a process that had no sealing key.
    {
        let ledger = Ledger::open_with(dir.path(), sealed_with(None)).unwrap();
        tag_reader(&ledger, company, admin);
    }

    let error = Ledger::open_with(dir.path(), sealed_with(Some(2)))
        .err()
        .expect("a wrong sealing key was accepted");
    assert!(
        matches!(error, LedgerError::Sealing(SealingError::WrongKey { .. })),
        "{error}"
    );
    // The right key still opens it, from the log and from a checkpoint.
    let options = LedgerOptions {
        checkpoint_key: Some(CheckpointKey::from_bytes([3; 32])),
        ..sealed_with(Some(1))
    };
    Ledger::sign_head(
        dir.path(),
        &CheckpointKey::from_bytes([3; 32]),
        options.clone(),
    )
    .unwrap();
    {
        let ledger = Ledger::open_with(dir.path(), options.clone()).unwrap();
        ledger.checkpoint().unwrap();
    }
    let from_checkpoint = LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([2; 32])),
        ..options.clone()
    };
    let error = Ledger::open_with(dir.path(), from_checkpoint)
        .err()
        .expect("a wrong sealing key was accepted from a checkpoint");
    assert!(
        matches!(error, LedgerError::Sealing(SealingError::WrongKey { .. })),
        "{error}"
    );
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    assert!(ledger.warnings().is_empty(), "{:?}", ledger.warnings());
}

/// Options whose log fails to take groups into sled while the returned
/// flag is set.
fn failing_inserts() -> (LedgerOptions, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let faults: FaultInjector = {
        let armed = Arc::clone(&armed);
        Arc::new(move |at| {
            if at == FaultPoint::Insert && armed.load(Ordering::SeqCst) {
                Err(std::io::Error::other("injected: no space left on device"))
            } else {
                Ok(())
            }
        })
    };
    let options = LedgerOptions {
        log: Options {
            faults: Some(faults),
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    (options, armed)
}

fn assert_closed<T: std::fmt::Debug>(what: &str, result: Result<T, LedgerError>) {
    match result {
        Err(LedgerError::Closed(why)) => assert!(!why.is_empty(), "{what}"),
        other => panic!("{what} answered on a closed ledger: {other:?}"),
    }
}

#[test]
fn a_closed_ledger_answers_no_investigation_and_exports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_inserts();
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    let (company, admin) = company_and_admin(&ledger);
    let token = tag_reader(&ledger, company, admin);
    let head = ledger.head().position;
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let request = Request {
        requirement: Requirement::Scope("tags:read".parse().unwrap()),
        resource: "tag_1".parse().unwrap(),
        location: Location::Global(company),
        at: now,
    };
    // Before: the state at the head allows the token.
    let state = ledger.state_at(head).unwrap();
    assert!(decide_request(&state, token.secret.expose(), &request).is_allowed());
    let refusal = decide_request(
        &state,
        token.secret.expose(),
        &Request {
            requirement: Requirement::Scope("tags:write".parse().unwrap()),
            ..request
        },
    )
    .refusal
    .unwrap();

    // The delete is acknowledged, then sled fails to take it.
    armed.store(true, Ordering::SeqCst);
    let error = ledger
        .execute(
            Actor::Teammate(admin),
            Command::DeleteToken { token: token.token },
        )
        .unwrap_err();
    assert!(matches!(error, LedgerError::Unconfirmed { .. }), "{error}");
    armed.store(false, Ordering::SeqCst);

    // Not the state the log lacks the delete in, nor any answer read
    // from that log.
    assert_closed("state_at", ledger.state_at(head));
    assert_closed("company_state_at", ledger.company_state_at(company, head));
    assert_closed(
        "state_for_secret_at",
        ledger.state_for_secret_at(token.secret.expose(), head),
    );
    assert_closed("history", ledger.history(&HistoryQuery::default()));
    assert_closed("reveals", ledger.reveals(token.token));
    assert_closed("position_at", ledger.position_at(now));
    assert_closed(
        "timeline",
        ledger.timeline(token.token, Timestamp::EPOCH, now),
    );
    assert_closed(
        "who_can",
        ledger.who_can("tags:read".parse().unwrap(), Location::Global(company), now),
    );
    assert_closed("explain", ledger.explain(&state, &refusal));
    let out = dir.path().join("export.jsonl");
    let mut written = Vec::new();
    match ledger.export(&mut written, &out, &mut |_, _| {}) {
        Err(TransferError::Ledger(LedgerError::Closed(_))) => {}
        other => panic!("export answered on a closed ledger: {other:?}"),
    }
    assert!(written.is_empty());
}

fn keyed(byte: u8) -> LedgerOptions {
    LedgerOptions {
        checkpoint_key: Some(CheckpointKey::from_bytes([byte; 32])),
        ..LedgerOptions::default()
    }
}

/// Adopting a key, given a head known to be the log's.
fn knowing(head: Head) -> LedgerOptions {
    let mut options = LedgerOptions::default();
    options.log.known_head = Some(head);
    options
}

#[test]
fn a_log_kept_with_a_key_whose_signed_head_was_removed_is_signed_again_only_against_a_known_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let ledger = Ledger::open_with(dir.path(), keyed(4)).unwrap();
        let (company, admin) = company_and_admin(&ledger);
        ledger.checkpoint().unwrap();
        tag_reader(&ledger, company, admin);
        ledger.head()
    };
    // Removed by someone who rewrote the log behind it, say.
    std::fs::remove_file(dir.path().join("signed-head")).unwrap();
    let key = CheckpointKey::from_bytes([4; 32]);

    let refused = Ledger::sign_head(dir.path(), &key, LedgerOptions::default()).unwrap_err();
    assert!(
        matches!(refused, LedgerError::Open(OpenError::KeyedBefore { .. })),
        "{refused}"
    );
    assert!(refused.to_string().contains("--known-head"), "{refused}");
    assert!(!dir.path().join("signed-head").exists());
    // A known head at 0 names no record: it vouches for nothing.
    let nothing = Ledger::sign_head(dir.path(), &key, knowing(Head::EMPTY)).unwrap_err();
    assert!(
        matches!(nothing, LedgerError::Open(OpenError::KeyedBefore { .. })),
        "{nothing}"
    );
    // Opening says the same: suspect, and what to compare.
    let missing = Ledger::open_with(dir.path(), keyed(4)).err().unwrap();
    let missing = missing.to_string();
    assert!(
        missing.contains("suspect") && missing.contains("--known-head"),
        "{missing}"
    );

    // A head kept elsewhere, which the log holds, vouches for it.
    let verified = Ledger::sign_head(dir.path(), &key, knowing(head)).unwrap();
    assert_eq!(verified.head, head);
    assert_eq!(
        Ledger::open_with(dir.path(), keyed(4)).unwrap().head(),
        head
    );
}

#[test]
fn a_log_never_kept_with_the_key_is_still_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        // Unsigned checkpoints, or another key's, are no sign of this key.
        let ledger = Ledger::open_with(
            dir.path(),
            LedgerOptions {
                trust_unsigned_checkpoints: true,
                ..LedgerOptions::default()
            },
        )
        .unwrap();
        company_and_admin(&ledger);
        ledger.checkpoint().unwrap();
        ledger.head()
    };
    let key = CheckpointKey::from_bytes([4; 32]);
    let verified = Ledger::sign_head(dir.path(), &key, LedgerOptions::default()).unwrap();
    assert_eq!(verified.head, head);
    assert_eq!(
        Ledger::open_with(dir.path(), keyed(4)).unwrap().head(),
        head
    );
}
