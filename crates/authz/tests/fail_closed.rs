//! A command whose append the log acknowledged but could not confirm, or
//! whose outcome is unknown, fails closed: it returns an error, readers
//! refuse everything (503) and later commands are refused until the ledger
//! is reopened, and reopening shows what the log really holds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;
use std::sync::atomic::Ordering;

mod common;

use common::ledger::{a_company, create_tags_token, failing_at, read_tag};
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::{AppendError, FaultPoint};

struct Given {
    ledger: Ledger,
    company: CompanyId,
    admin: TeammateId,
    token: CreatedToken,
}

/// Given a company, its admin, and a live token that may read tags.
fn given_a_token(dir: &Path, options: LedgerOptions) -> Given {
    let ledger = Ledger::open_with(dir, options).unwrap();
    let (company, admin) = a_company(&ledger);
    let token = create_tags_token(&ledger, admin, company);
    Given {
        ledger,
        company,
        admin,
        token,
    }
}

/// The decisions on the token by every way in: its handle, its secret,
/// its id, and a handle authenticated now, on `authorizer`.
fn decisions(authorizer: &Authorizer, g: &Given, handle: TokenHandle) -> Vec<Decision> {
    let request = read_tag(g.company);
    let secret = g.token.secret.expose();
    let mut decisions = vec![
        authorizer.authorize(handle, &request),
        authorizer.check(secret, &request),
        authorizer.authorize(g.token.token, &request),
    ];
    match authorizer.authenticate(secret) {
        Ok(again) => decisions.push(authorizer.authorize(again, &request)),
        Err(refusal) => decisions.push(Decision {
            position: 0,
            token: None,
            refusal: Some(refusal),
        }),
    }
    decisions
}

/// Every decision refused as by a closed ledger: 503, `LedgerClosed`.
fn assert_closed(decisions: &[Decision]) {
    for decision in decisions {
        assert_eq!(decision.status(), 503, "{decision:?}");
        let refusal = decision.refusal.as_ref().unwrap();
        assert_eq!(refusal.reason, Reason::LedgerClosed, "{decision:?}");
    }
}

fn delete(g: &Given) -> Result<Receipt, LedgerError> {
    g.ledger.execute(
        Actor::Teammate(g.admin),
        Command::DeleteToken {
            token: g.token.token,
        },
    )
}

/// Later commands, and checkpoints, are refused with an error that says
/// why and what to do.
fn assert_commands_refused(g: &Given) {
    let later = g
        .ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company: fresh::company_id().unwrap(),
                name: Name::new("Later").unwrap(),
            },
        )
        .unwrap_err();
    assert!(matches!(later, LedgerError::Closed(_)), "{later}");
    assert!(
        later.to_string().contains("until it is reopened"),
        "{later}"
    );
    let reveal = g
        .ledger
        .reveal(Actor::Teammate(g.admin), g.token.token)
        .unwrap_err();
    assert!(matches!(reveal, LedgerError::Closed(_)), "{reveal}");
    assert!(matches!(g.ledger.checkpoint(), Err(LedgerError::Closed(_))));
}

#[test]
fn a_delete_acknowledged_but_not_taken_into_sled_fails_closed_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Insert);
    let g = given_a_token(dir.path(), options);
    let authorizer = g.ledger.authorizer();
    let handle = authorizer.authenticate(g.token.secret.expose()).unwrap();
    let before = decisions(&authorizer, &g, handle);
    assert!(before.iter().all(Decision::is_allowed), "{before:?}");
    let head = g.ledger.head().position;

    // The journal takes the delete and the append is acknowledged; sled
    // then fails to take it, and the log cannot give it back.
    armed.store(true, Ordering::SeqCst);
    let error = delete(&g).unwrap_err();
    let LedgerError::Unconfirmed {
        appended,
        read_back,
    } = &error
    else {
        panic!("not an unconfirmed append: {error}");
    };
    assert_eq!(appended.len(), 1, "{error}");
    assert_eq!(appended[0].0, head + 1, "{error}");
    assert!(read_back.is_empty(), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("position {}", head + 1)),
        "{error}"
    );
    armed.store(false, Ordering::SeqCst);

    // Not one allow, by any way in, on the authorizer held before or one
    // taken now; the state read through the ledger is closed too.
    let after = decisions(&authorizer, &g, handle);
    assert_eq!(after.iter().filter(|d| d.is_allowed()).count(), 0);
    assert_closed(&after);
    assert_closed(&decisions(&g.ledger.authorizer(), &g, handle));
    assert!(
        g.ledger
            .with_state(|state| state.token(g.token.token).is_none())
    );
    assert_commands_refused(&g);

    // The journal held the delete: reopened, the ledger has it applied.
    let (company, token, secret) = (g.company, g.token.token, g.token.secret);
    drop(g.ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.head().position, head + 1);
    let last = ledger.history(&HistoryQuery::default()).unwrap();
    assert!(matches!(
        last.last().unwrap().envelope.event,
        Event::TokenDeleted { token: deleted } if deleted == token
    ));
    let authorizer = ledger.authorizer();
    let refused = [
        authorizer.check(secret.expose(), &read_tag(company)),
        authorizer.authorize(handle, &read_tag(company)),
        authorizer.authorize(token, &read_tag(company)),
    ];
    for decision in refused {
        let refusal = decision.refusal.unwrap();
        assert_eq!(refusal.rule, Rule::TokenLive, "{refusal:?}");
        assert_ne!(refusal.reason, Reason::LedgerClosed, "{refusal:?}");
    }
    // A handle authenticated now is refused as the token is deleted.
    let again = authorizer.authenticate(secret.expose()).unwrap();
    assert!(!authorizer.authorize(again, &read_tag(company)).is_allowed());
}

#[test]
fn a_delete_whose_append_outcome_is_unknown_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Sync);
    let g = given_a_token(dir.path(), options);
    let authorizer = g.ledger.authorizer();
    let handle = authorizer.authenticate(g.token.secret.expose()).unwrap();
    assert!(
        decisions(&authorizer, &g, handle)
            .iter()
            .all(Decision::is_allowed)
    );

    // Written to the journal, not synced: it may or may not survive.
    armed.store(true, Ordering::SeqCst);
    let error = delete(&g).unwrap_err();
    assert!(
        matches!(error, LedgerError::Append(AppendError::Poisoned(_))),
        "{error}"
    );
    armed.store(false, Ordering::SeqCst);
    assert_closed(&decisions(&authorizer, &g, handle));
    assert_commands_refused(&g);
}

#[test]
fn a_reveal_whose_recording_cannot_be_read_back_returns_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Insert);
    let g = given_a_token(dir.path(), options);
    armed.store(true, Ordering::SeqCst);
    let error = g
        .ledger
        .reveal(Actor::Teammate(g.admin), g.token.token)
        .unwrap_err();
    assert!(matches!(error, LedgerError::Unconfirmed { .. }), "{error}");
    assert!(!error.to_string().contains(g.token.secret.expose()));
    armed.store(false, Ordering::SeqCst);
    assert_commands_refused(&g);
}
