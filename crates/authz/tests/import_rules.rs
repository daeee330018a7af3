//! An import replays the rules, checks the head it is told to expect, and
//! writes nothing unless it finishes: crafted exports (records edited and
//! hashed again, here written through the store, which checks no rules)
//! are refused with their line, and the data directory is never made.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;

use common::global;
use common::ledger::name;
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::{EventLog, Expectation, FaultPoint, NewEvent, Options, SledLog};

fn id() -> u128 {
    fresh::event_id().unwrap().as_u128()
}

/// Two companies, each with an admin, a member and a workspace, and an API
/// token in Beta: a history the rules accept, written by the store.
struct Two {
    acme: CompanyId,
    ada: TeammateId,
    bob: TeammateId,
    support: WorkspaceId,
    beta: CompanyId,
    bea: TeammateId,
    beta_token: TokenId,
}

fn scope(namespaces: Namespaces) -> TokenScope {
    TokenScope {
        features: BTreeSet::from([Feature::Resources]),
        namespaces,
        grants: ["conversations:read".parse().unwrap()]
            .into_iter()
            .collect(),
    }
}

fn token_created(token: TokenId, kind: TokenKind, namespaces: Namespaces) -> Event {
    Event::TokenCreated {
        token,
        name: name("Sync"),
        kind,
        scope: scope(namespaces),
        secret_digest: fresh::secret().unwrap().digest(),
        sealed_secret: None,
        expires_at: None,
    }
}

fn two() -> (Two, Vec<NewEvent>) {
    let two = Two {
        acme: CompanyId::from_u128(id()),
        ada: TeammateId::from_u128(id()),
        bob: TeammateId::from_u128(id()),
        support: WorkspaceId::from_u128(id()),
        beta: CompanyId::from_u128(id()),
        bea: TeammateId::from_u128(id()),
        beta_token: TokenId::from_u128(id()),
    };
    let system = Actor::System;
    let events = vec![
        new(
            system,
            two.acme,
            Event::CompanyCreated {
                company: two.acme,
                name: name("Acme"),
            },
        ),
        new(
            system,
            two.acme,
            Event::TeammateAdded {
                teammate: two.ada,
                name: name("Ada"),
                role: Role::Admin,
            },
        ),
        new(
            system,
            two.acme,
            Event::TeammateAdded {
                teammate: two.bob,
                name: name("Bob"),
                role: Role::Member,
            },
        ),
        new(
            system,
            two.acme,
            Event::WorkspaceCreated {
                workspace: two.support,
                name: name("Support"),
            },
        ),
        new(
            system,
            two.beta,
            Event::CompanyCreated {
                company: two.beta,
                name: name("Beta"),
            },
        ),
        new(
            system,
            two.beta,
            Event::TeammateAdded {
                teammate: two.bea,
                name: name("Bea"),
                role: Role::Admin,
            },
        ),
        new(
            Actor::Teammate(two.bea),
            two.beta,
            token_created(two.beta_token, TokenKind::ApiToken, global()),
        ),
    ];
    (two, events)
}

fn new(actor: Actor, company: CompanyId, event: Event) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id()),
        actor,
        company,
        event,
    }
}

/// Writes `events` into a log through the store, as someone who edits an
/// export and hashes its records again would, and exports it to a file.
fn export(dir: &Path, events: Vec<NewEvent>) -> PathBuf {
    let forged = dir.join("forged");
    let log = SledLog::open(&forged, Options::default()).unwrap();
    for chunk in events.chunks(5_000) {
        log.append(chunk.to_vec(), Expectation::Any).unwrap();
    }
    drop(log);
    let ledger = Ledger::open(&forged).unwrap();
    let path = dir.join(format!("export-{:x}.jsonl", id()));
    let mut file = std::fs::File::create(&path).unwrap();
    ledger.export(&mut file, &path, &mut |_, _| {}).unwrap();
    path
}

fn import(dir: &Path, file: &Path, expect: Option<Head>) -> Result<Verified, TransferError> {
    Ledger::import(dir, file, expect, LedgerOptions::default(), &mut |_, _| {})
}

/// Imports `events` (the two companies' history, then these) and expects
/// the refusal of line `line`, with nothing written.
fn refused(extra: impl FnOnce(&Two) -> Vec<NewEvent>, line: u64, says: &str) {
    let (two, mut events) = two();
    events.extend(extra(&two));
    let dir = tempfile::tempdir().unwrap();
    let file = export(dir.path(), events);
    let data = dir.path().join("data");
    let error = import(&data, &file, None).unwrap_err();
    let TransferError::Line { line: at, problem } = &error else {
        panic!("not a line error: {error}");
    };
    assert_eq!(*at, line, "{error}");
    assert!(problem.contains(says), "{error}");
    assert!(!data.exists(), "a refused import made the data directory");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        left.len(),
        2,
        "only the forged log and its export: {left:?}"
    );
}

#[test]
fn a_history_the_rules_accept_imports_whole() {
    let (two, events) = two();
    let count = events.len() as u64;
    let dir = tempfile::tempdir().unwrap();
    let file = export(dir.path(), events);
    let data = dir.path().join("data");
    let verified = import(&data, &file, None).unwrap();
    assert_eq!(verified.records, count);
    let ledger = Ledger::open(&data).unwrap();
    assert_eq!(ledger.head(), verified.head);
    assert!(ledger.with_state(|s| s.token(two.beta_token).is_some()));
}

#[test]
fn a_token_created_by_another_companys_admin_is_refused() {
    // Ada, Acme's admin, creates a token filed under Beta.
    refused(
        |two| {
            vec![new(
                Actor::Teammate(two.ada),
                two.beta,
                token_created(TokenId::from_u128(id()), TokenKind::ApiToken, global()),
            )]
        },
        8,
        "may not create tokens",
    );
    // A member creates a token in their own company.
    refused(
        |two| {
            vec![new(
                Actor::Teammate(two.bob),
                two.acme,
                token_created(TokenId::from_u128(id()), TokenKind::ApiToken, global()),
            )]
        },
        8,
        "may not create tokens",
    );
}

#[test]
fn an_oauth_grant_with_the_global_or_private_namespace_is_refused() {
    for namespaces in [
        global(),
        Namespaces {
            private: true,
            shared: SharedNamespace::All,
            ..Namespaces::none()
        },
    ] {
        refused(
            |two| {
                vec![new(
                    Actor::Teammate(two.ada),
                    two.acme,
                    token_created(TokenId::from_u128(id()), TokenKind::OAuthGrant, namespaces),
                )]
            },
            8,
            "an OAuth grant cannot have",
        );
    }
}

#[test]
fn an_event_filed_under_one_company_that_changes_another_is_refused() {
    // Beta's token deleted by Beta's admin, filed under Acme.
    refused(
        |two| {
            vec![new(
                Actor::Teammate(two.bea),
                two.acme,
                Event::TokenDeleted {
                    token: two.beta_token,
                },
            )]
        },
        8,
        "filed under company",
    );
    // Acme's member allowed private access by the system, filed under Beta.
    refused(
        |two| {
            vec![new(
                Actor::System,
                two.beta,
                Event::PrivateApiAccessChanged {
                    teammate: two.bob,
                    allowed: true,
                },
            )]
        },
        8,
        "filed under company",
    );
    // Acme's workspace deleted by the system, filed under Beta.
    refused(
        |two| {
            vec![new(
                Actor::System,
                two.beta,
                Event::WorkspaceDeleted {
                    workspace: two.support,
                },
            )]
        },
        8,
        "filed under company",
    );
    // A company created, filed under another.
    refused(
        |two| {
            let company = CompanyId::from_u128(id());
            vec![new(
                Actor::System,
                two.beta,
                Event::CompanyCreated {
                    company,
                    name: name("Gamma"),
                },
            )]
        },
        8,
        "filed under company",
    );
}

#[test]
fn any_other_event_the_rules_would_refuse_is_refused_with_its_line() {
    // A token acting; Bob made admin by Bob; Ada demoted, the last admin.
    refused(
        |two| {
            vec![new(
                Actor::Token(two.beta_token),
                two.beta,
                Event::TokenDeleted {
                    token: two.beta_token,
                },
            )]
        },
        8,
        "tokens cannot issue administrative commands",
    );
    refused(
        |two| {
            vec![new(
                Actor::Teammate(two.bob),
                two.acme,
                Event::TeammateRoleChanged {
                    teammate: two.bob,
                    role: Role::Admin,
                },
            )]
        },
        8,
        "may not change roles",
    );
    refused(
        |two| {
            vec![new(
                Actor::Teammate(two.ada),
                two.acme,
                Event::TeammateRoleChanged {
                    teammate: two.ada,
                    role: Role::Member,
                },
            )]
        },
        8,
        "last active admin",
    );
    // A token created already expired, at the time the record says.
    refused(
        |two| {
            let mut event = token_created(TokenId::from_u128(id()), TokenKind::ApiToken, global());
            if let Event::TokenCreated { expires_at, .. } = &mut event {
                *expires_at = Some(Timestamp::from_micros(1));
            }
            vec![new(Actor::Teammate(two.ada), two.acme, event)]
        },
        8,
        "is not after the time of the request",
    );
    // A reveal of a token that does not exist.
    refused(
        |two| {
            vec![new(
                Actor::System,
                two.acme,
                Event::TokenRevealed {
                    token: TokenId::from_u128(id()),
                },
            )]
        },
        8,
        "no token",
    );
}

#[test]
fn an_expected_head_is_checked_before_anything_is_written() {
    let (_, events) = two();
    let dir = tempfile::tempdir().unwrap();
    let file = export(dir.path(), events);
    let source = Ledger::open(&dir.path().join("forged")).unwrap();
    let head = source.head();
    drop(source);

    let data = dir.path().join("wrong");
    for expected in [
        Head {
            position: head.position,
            hash: [0; 32],
        },
        Head {
            position: head.position - 1,
            hash: head.hash,
        },
    ] {
        let error = import(&data, &file, Some(expected)).unwrap_err();
        assert!(
            matches!(error, TransferError::UnexpectedHead { found, .. } if found == head),
            "{error}"
        );
        assert!(!data.exists());
    }

    let data = dir.path().join("right");
    assert_eq!(import(&data, &file, Some(head)).unwrap().head, head);
}

#[test]
fn only_a_new_or_empty_data_directory_is_imported_into() {
    let (_, events) = two();
    let dir = tempfile::tempdir().unwrap();
    let file = export(dir.path(), events);

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    import(&empty, &file, None).unwrap();
    // Now it holds a ledger: refused, and left as it was.
    let head = Ledger::open(&empty).unwrap().head();
    let error = import(&empty, &file, None).unwrap_err();
    assert!(matches!(error, TransferError::NotEmpty { .. }), "{error}");
    assert_eq!(Ledger::open(&empty).unwrap().head(), head);

    // An empty ledger is not an empty directory either.
    let opened = dir.path().join("opened");
    drop(Ledger::open(&opened).unwrap());
    let error = import(&opened, &file, None).unwrap_err();
    assert!(matches!(error, TransferError::NotEmpty { .. }), "{error}");
}

/// Many reveals of Beta's token by its admin: more lines than one chunk.
fn long_history() -> Vec<NewEvent> {
    let (two, mut events) = two();
    for _ in 0..2_500 {
        events.push(new(
            Actor::Teammate(two.bea),
            two.beta,
            Event::TokenRevealed {
                token: two.beta_token,
            },
        ));
    }
    events
}

#[test]
fn a_file_that_changes_during_the_import_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = export(dir.path(), long_history());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let prefix_len = |count: usize| lines[..count].iter().map(|l| l.len() + 1).sum::<usize>();

    // Cut short once the first chunk is appended: the second reading ends
    // early, at a head the first reading did not.
    let data = dir.path().join("cut");
    let cut = prefix_len(2_000) as u64;
    let mut once = Some(());
    let error = Ledger::import(&data, &file, None, LedgerOptions::default(), &mut |_, _| {
        if once.take().is_some() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(cut)
                .unwrap();
        }
    })
    .unwrap_err();
    assert!(matches!(error, TransferError::Changed { .. }), "{error}");
    assert!(!data.exists());

    // A line edited in place once the first chunk is appended.
    std::fs::write(&file, &text).unwrap();
    let data = dir.path().join("edited");
    let at = prefix_len(2_100) + 20;
    let mut once = Some(());
    let error = Ledger::import(&data, &file, None, LedgerOptions::default(), &mut |_, _| {
        if once.take().is_some() {
            let mut handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            std::io::Seek::seek(&mut handle, std::io::SeekFrom::Start(at as u64)).unwrap();
            handle.write_all(b"X").unwrap();
        }
    })
    .unwrap_err();
    assert!(
        matches!(error, TransferError::Line { line: 2101, .. }),
        "{error}"
    );
    assert!(!data.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no copy is left behind: {left:?}");
}

#[test]
fn an_append_that_fails_half_way_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = export(dir.path(), long_history());
    let data = dir.path().join("data");
    let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = commits.clone();
    let mut options = LedgerOptions::default();
    options.log.faults = Some(Arc::new(move |point| {
        let seen = counted.fetch_add(
            u64::from(point == FaultPoint::Commit),
            std::sync::atomic::Ordering::SeqCst,
        );
        if point == FaultPoint::Commit && seen >= 1 {
            return Err(std::io::Error::other("the disk is full"));
        }
        Ok(())
    }));
    let error = Ledger::import(&data, &file, None, options, &mut |_, _| {}).unwrap_err();
    assert!(matches!(error, TransferError::Ledger(_)), "{error}");
    assert!(commits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert!(!data.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no copy is left behind: {left:?}");
}
