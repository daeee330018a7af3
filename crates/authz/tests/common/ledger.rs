//! Given a ledger: a company, its admin and a token that reads tags, made
//! through the `Ledger` facade as an embedder makes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokenledger_authz::{
    Command, CreatedToken, Ledger, LedgerOptions, Location, NewToken, Options, Request, SealingKey,
    fresh,
};
use tokenledger_events::*;
use tokenledger_store::{FaultInjector, FaultPoint};

/// Options with a sealing key whose log fails at `point` while the
/// returned flag is set.
pub fn failing_at(point: FaultPoint) -> (LedgerOptions, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let faults: FaultInjector = {
        let armed = Arc::clone(&armed);
        Arc::new(move |at| {
            if at == point && armed.load(Ordering::SeqCst) {
                Err(std::io::Error::other("injected: no space left on device"))
            } else {
                Ok(())
            }
        })
    };
    let options = LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([5; 32])),
        log: Options {
            faults: Some(faults),
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    (options, armed)
}

pub fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// Adds `who` with `role` to `company`, as `by`; returns the new teammate.
pub fn add_teammate(
    ledger: &Ledger,
    by: Actor,
    company: CompanyId,
    who: &str,
    role: Role,
) -> TeammateId {
    let teammate = fresh::teammate_id().unwrap();
    ledger
        .execute(
            by,
            Command::AddTeammate {
                company,
                teammate,
                name: name(who),
                role,
            },
        )
        .unwrap();
    teammate
}

/// Acme, created with the id `company`, and Ada, an admin of it; returns
/// Ada.
pub fn company_in(ledger: &Ledger, company: CompanyId) -> TeammateId {
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: name("Acme"),
            },
        )
        .unwrap();
    add_teammate(ledger, Actor::System, company, "Ada", Role::Admin)
}

/// A new company and its admin.
pub fn a_company(ledger: &Ledger) -> (CompanyId, TeammateId) {
    let company = fresh::company_id().unwrap();
    (company, company_in(ledger, company))
}

/// Reads tags, in the global namespace only.
pub fn tags_scope() -> TokenScope {
    TokenScope {
        features: [Feature::Resources].into(),
        namespaces: Namespaces {
            global: true,
            ..Namespaces::none()
        },
        grants: ["tags:read".parse().unwrap()].into_iter().collect(),
    }
}

/// "Tag sync", an API token of `company` with [`tags_scope`].
pub fn new_tags_token(company: CompanyId) -> NewToken {
    NewToken {
        company,
        name: name("Tag sync"),
        kind: TokenKind::ApiToken,
        scope: tags_scope(),
        expires_at: None,
    }
}

/// `admin` creates a token of `company` that reads tags.
pub fn create_tags_token(ledger: &Ledger, admin: TeammateId, company: CompanyId) -> CreatedToken {
    ledger
        .create_token(Actor::Teammate(admin), new_tags_token(company))
        .unwrap()
}

/// A request, now, to read `tag_1` in `company`'s global namespace.
pub fn read_tag(company: CompanyId) -> Request {
    Request {
        requirement: Requirement::Scope("tags:read".parse().unwrap()),
        resource: "tag_1".parse().unwrap(),
        location: Location::Global(company),
        at: Timestamp::from_system_time(std::time::SystemTime::now()),
    }
}
