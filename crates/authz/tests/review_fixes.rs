//! Holes a review of issue 27's fixes found: a wrong sealing key accepted
//! behind an unsealed token, and a closed ledger still answering
//! investigations and exports from a log that may lack a delete.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use tokenledger_authz::*;
use tokenledger_events::*;

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
