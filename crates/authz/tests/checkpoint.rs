//! Checkpoints of the state: opening from the newest one plus the tail of
//! the log gives exactly the state a full replay gives, a damaged, partial
//! or foreign checkpoint is skipped with a warning, never trusted, and
//! without a checkpoint key none is written or loaded unless the embedder
//! opts in.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::{Path, PathBuf};

mod common;

use common::ledger::{a_company, add_teammate, create_tags_token, name};
use tokenledger_authz::*;
use tokenledger_events::*;

/// Checkpoints every `every` events, signed with a checkpoint key.
fn options(every: u64) -> LedgerOptions {
    LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([3; 32])),
        checkpoint_every: every,
        checkpoint_key: Some(CheckpointKey::from_bytes([7; 32])),
        ..LedgerOptions::default()
    }
}

/// Checkpoints every `every` events, unsigned, by the embedder's choice.
fn unsigned(every: u64) -> LedgerOptions {
    LedgerOptions {
        checkpoint_key: None,
        trust_unsigned_checkpoints: true,
        ..options(every)
    }
}

/// No checkpoint key and no opt-in: the default.
fn keyless(every: u64) -> LedgerOptions {
    LedgerOptions {
        checkpoint_key: None,
        ..options(every)
    }
}

/// A history of a little over 60 events touching every kind of state:
/// teammates with roles and preferences, deactivations, workspaces, sealed
/// and expiring tokens, reveals and deletions.
fn history(ledger: &Ledger) {
    let (company, admin) = a_company(ledger);
    let by = Actor::Teammate(admin);
    let mut workspaces = Vec::new();
    for i in 0..6 {
        let role = if i % 3 == 0 {
            Role::Admin
        } else {
            Role::Member
        };
        let teammate = add_teammate(ledger, by, company, "Mate", role);
        ledger
            .execute(
                by,
                Command::SetPrivateApiAccess {
                    teammate,
                    allowed: i % 2 == 0,
                },
            )
            .unwrap();
        if i == 4 {
            ledger
                .execute(by, Command::DeactivateTeammate { teammate })
                .unwrap();
        }
        let workspace = fresh::workspace_id().unwrap();
        ledger
            .execute(
                by,
                Command::CreateWorkspace {
                    company,
                    workspace,
                    name: name("Team"),
                },
            )
            .unwrap();
        workspaces.push(workspace);
    }
    ledger
        .execute(
            by,
            Command::DeleteWorkspace {
                workspace: workspaces[0],
            },
        )
        .unwrap();
    let far = Timestamp::from_micros(
        Timestamp::from_system_time(std::time::SystemTime::now()).as_micros() + 3_600_000_000,
    );
    for i in 0..12 {
        let shared = match i % 3 {
            0 => SharedNamespace::None,
            1 => SharedNamespace::All,
            _ => SharedNamespace::Workspaces(workspaces[1..3].iter().copied().collect()),
        };
        let created = ledger
            .create_token(
                by,
                NewToken {
                    company,
                    name: name("Integration"),
                    kind: TokenKind::ApiToken,
                    scope: TokenScope {
                        features: [Feature::Resources].into(),
                        namespaces: Namespaces {
                            global: i % 3 == 0 || i % 2 == 0,
                            shared,
                            private: i % 4 == 0,
                        },
                        grants: ["conversations:read", "tags:write"]
                            .iter()
                            .take(1 + i % 2)
                            .map(|s| s.parse().unwrap())
                            .collect(),
                    },
                    expires_at: (i % 5 == 0).then_some(far),
                },
            )
            .unwrap();
        if i % 3 == 0 {
            ledger.reveal(by, created.token).unwrap();
        }
        if i % 4 == 1 {
            ledger
                .execute(
                    by,
                    Command::DeleteToken {
                        token: created.token,
                    },
                )
                .unwrap();
        }
    }
    ledger
        .execute(
            by,
            Command::SetPrivateApiAccessForAll {
                company,
                allowed: true,
            },
        )
        .unwrap();
}

fn state_bytes(ledger: &Ledger) -> Vec<u8> {
    ledger.with_state(|state| encode_checkpoint(state).unwrap())
}

/// The state a full replay gives, with checkpoints off.
fn replayed(dir: &Path) -> Vec<u8> {
    let ledger = Ledger::open_with(dir, options(0)).unwrap();
    state_bytes(&ledger)
}

fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn opening_from_a_checkpoint_gives_the_state_a_full_replay_gives() {
    let dir = tempfile::tempdir().unwrap();
    let live = {
        let ledger = Ledger::open_with(dir.path(), options(10)).unwrap();
        history(&ledger);
        assert!(ledger.warnings().is_empty(), "{:?}", ledger.warnings());
        state_bytes(&ledger)
    };
    let files = checkpoint_files(dir.path());
    assert_eq!(files.len(), 3, "the newest three are kept: {files:?}");

    assert_eq!(replayed(dir.path()), live);
    let reopened = Ledger::open_with(dir.path(), options(10)).unwrap();
    assert!(reopened.warnings().is_empty(), "{:?}", reopened.warnings());
    assert_eq!(state_bytes(&reopened), live);
    // A checkpoint round-trips byte for byte.
    let state = decode_checkpoint(&live).unwrap();
    assert_eq!(encode_checkpoint(&state).unwrap(), live);

    // As of any position, starting from a checkpoint or not, the same.
    let head = reopened.head().position;
    for position in [1, 9, 10, 11, 25, 40, head - 1, head] {
        let from_checkpoint = encode_checkpoint(&reopened.state_at(position).unwrap()).unwrap();
        let mut plain = State::new();
        for event in reopened
            .history(&HistoryQuery {
                to_position: Some(position),
                ..HistoryQuery::default()
            })
            .unwrap()
        {
            plain.apply(&event.envelope);
        }
        assert_eq!(
            from_checkpoint,
            encode_checkpoint(&plain).unwrap(),
            "as of {position}"
        );
    }
}

#[test]
fn a_damaged_partial_or_foreign_checkpoint_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let live = {
        let ledger = Ledger::open_with(dir.path(), options(10)).unwrap();
        history(&ledger);
        state_bytes(&ledger)
    };
    let files = checkpoint_files(dir.path());
    let newest = files.last().unwrap().clone();

    // A flipped byte in the newest: skipped, the one before it used.
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let ledger = Ledger::open_with(dir.path(), options(0)).unwrap();
    let warnings = ledger.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("skipped") && warnings[0].contains("digest"),
        "{warnings:?}"
    );
    assert_eq!(state_bytes(&ledger), live);
    drop(ledger);

    // Cut short, as a crash without the rename could not leave it but a
    // full disk or a copy might: skipped too.
    let second = files[files.len() - 2].clone();
    let whole = std::fs::read(&second).unwrap();
    std::fs::write(&second, &whole[..whole.len() / 3]).unwrap();
    // A half-written file from a crash during a write is never listed.
    std::fs::write(
        dir.path()
            .join("checkpoints/state-00000000000000000099.ckpt.partial"),
        b"half",
    )
    .unwrap();
    let ledger = Ledger::open_with(dir.path(), options(0)).unwrap();
    let warnings = ledger.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[1].contains("its length"), "{warnings:?}");
    assert_eq!(state_bytes(&ledger), live);
    drop(ledger);

    // Every checkpoint damaged: the log is replayed whole.
    let oldest = files[0].clone();
    std::fs::write(&oldest, b"not a checkpoint").unwrap();
    let ledger = Ledger::open_with(dir.path(), options(0)).unwrap();
    let warnings = ledger.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[2].contains("shorter than its header"),
        "{warnings:?}"
    );
    assert_eq!(state_bytes(&ledger), live);
    drop(ledger);

    // A checkpoint from another ledger, at a position this log has: its
    // hash there differs, so it is not trusted.
    let other = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open_with(other.path(), options(10)).unwrap();
        history(&ledger);
    }
    for file in checkpoint_files(dir.path()) {
        std::fs::remove_file(file).unwrap();
    }
    let foreign = checkpoint_files(other.path()).pop().unwrap();
    std::fs::copy(
        &foreign,
        dir.path()
            .join("checkpoints")
            .join(foreign.file_name().unwrap()),
    )
    .unwrap();
    let ledger = Ledger::open_with(dir.path(), options(0)).unwrap();
    let warnings = ledger.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("does not match the log")),
        "{warnings:?}"
    );
    assert_eq!(state_bytes(&ledger), live);
}

#[test]
fn checkpoint_bytes_that_are_not_a_state_are_an_error() {
    assert!(decode_checkpoint(&[]).is_err());
    assert!(decode_checkpoint(&[0u8; 64]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), options(0)).unwrap();
    history(&ledger);
    let bytes = state_bytes(&ledger);
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode_checkpoint(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Every single flipped bit is refused or yields some state, never a panic.
    for i in (0..bytes.len()).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x10;
        let _ = decode_checkpoint(&damaged);
    }
}

#[test]
fn with_a_checkpoint_key_an_unsigned_or_forged_checkpoint_is_refused() {
    let keyed = options;
    let dir = tempfile::tempdir().unwrap();
    let live = {
        // Written without the key: unsigned.
        let ledger = Ledger::open_with(dir.path(), unsigned(10)).unwrap();
        history(&ledger);
        state_bytes(&ledger)
    };
    // The log takes the key explicitly, once verified.
    Ledger::sign_head(dir.path(), &CheckpointKey::from_bytes([7; 32]), options(0)).unwrap();
    let ledger = Ledger::open_with(dir.path(), keyed(0)).unwrap();
    let warnings = ledger.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| w.contains("not signed")),
        "{warnings:?}"
    );
    assert_eq!(state_bytes(&ledger), live);
    // Signed now, it is used.
    ledger.checkpoint().unwrap();
    drop(ledger);
    let ledger = Ledger::open_with(dir.path(), keyed(0)).unwrap();
    let newest = checkpoint_files(dir.path()).pop().unwrap();
    assert_eq!(ledger.warnings().len(), 0, "{:?}", ledger.warnings());
    drop(ledger);

    // A forger without the key rewrites the payload and its digest: the
    // digest holds, the MAC does not.
    let mut bytes = std::fs::read(&newest).unwrap();
    let payload = bytes.split_off(128);
    let forged_payload = {
        let mut p = payload.clone();
        let last = p.len() - 1;
        p[last] ^= 1;
        p
    };
    bytes[56..88].copy_from_slice(blake3::hash(&forged_payload).as_bytes());
    bytes.extend_from_slice(&forged_payload);
    std::fs::write(&newest, &bytes).unwrap();
    let ledger = Ledger::open_with(dir.path(), keyed(0)).unwrap();
    let warnings = ledger.warnings();
    assert!(warnings[0].contains("not signed"), "{warnings:?}");
    assert_eq!(state_bytes(&ledger), live);
}

/// Replays longer than one read (10,000 events) read on a second thread
/// while the first applies; they must give what the live ledger has, at
/// the head and at any position on the way.
#[test]
fn a_replay_longer_than_one_read_gives_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let (live, at) = {
        let ledger = Ledger::open_with(dir.path(), options(0)).unwrap();
        history(&ledger);
        let (company, mate) = (fresh::company_id().unwrap(), fresh::teammate_id().unwrap());
        let by = Actor::System;
        let name = name("Zed");
        ledger
            .execute(
                by,
                Command::CreateCompany {
                    company,
                    name: name.clone(),
                },
            )
            .unwrap();
        let role = Role::Member;
        ledger
            .execute(
                by,
                Command::AddTeammate {
                    company,
                    teammate: mate,
                    name,
                    role,
                },
            )
            .unwrap();
        let mut at = Vec::new();
        for i in 0..10_050u64 {
            let command = Command::SetPrivateApiAccess {
                teammate: mate,
                allowed: i % 3 == 0,
            };
            ledger.execute(by, command).unwrap();
            if i % 2_500 == 7 {
                at.push((ledger.head().position, state_bytes(&ledger)));
            }
        }
        history(&ledger);
        (state_bytes(&ledger), at)
    };
    assert_eq!(replayed(dir.path()), live);
    let reopened = Ledger::open_with(dir.path(), options(0)).unwrap();
    for (position, expected) in at {
        let state = reopened.state_at(position).unwrap();
        assert_eq!(
            encode_checkpoint(&state).unwrap(),
            expected,
            "as of {position}"
        );
    }
}

#[test]
fn unsigned_checkpoints_are_trusted_only_by_choice() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), keyless(10)).unwrap();
    history(&ledger);
    assert!(ledger.warnings().is_empty(), "{:?}", ledger.warnings());
    assert!(
        !dir.path().join("checkpoints").exists(),
        "none is written without a key"
    );
    let error = ledger.checkpoint().unwrap_err();
    assert!(matches!(error, LedgerError::Checkpoint(_)), "{error}");
    assert!(error.to_string().contains("checkpoint key"), "{error}");
    drop(ledger);

    // Written by the embedder's choice, then opened without it: ignored,
    // with one warning, and the log replayed.
    let live = {
        let ledger = Ledger::open_with(dir.path(), unsigned(10)).unwrap();
        history(&ledger);
        state_bytes(&ledger)
    };
    assert_eq!(checkpoint_files(dir.path()).len(), 3);
    let ledger = Ledger::open_with(dir.path(), keyless(0)).unwrap();
    let warnings = ledger.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("3 checkpoint file(s)") && warnings[0].contains("ignored"),
        "{warnings:?}"
    );
    assert_eq!(state_bytes(&ledger), live);
    drop(ledger);
    let reopened = Ledger::open_with(dir.path(), unsigned(0)).unwrap();
    assert!(reopened.warnings().is_empty(), "{:?}", reopened.warnings());
    assert_eq!(state_bytes(&reopened), live);
}

/// What someone who can write the data directory but holds no key can
/// write: a checkpoint file at the log's head, with the log's hash there,
/// whose state has one more grant on a token.
fn forge_checkpoint(dir: &Path, ledger: &Ledger, token: TokenId) {
    let mut forged = State::new();
    for stored in ledger.history(&HistoryQuery::default()).unwrap() {
        let mut envelope = stored.envelope;
        if let Event::TokenCreated {
            token: created,
            scope,
            ..
        } = &mut envelope.event
            && *created == token
        {
            scope.grants.insert("tags:write".parse().unwrap());
        }
        forged.apply(&envelope);
    }
    let payload = encode_checkpoint(&forged).unwrap();
    let head = ledger.head();
    let mut file = Vec::new();
    file.extend_from_slice(b"TLSTATE2");
    file.extend_from_slice(&head.position.to_be_bytes());
    file.extend_from_slice(&head.hash);
    file.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    file.extend_from_slice(blake3::hash(&payload).as_bytes());
    file.resize(128, 0);
    file.extend_from_slice(&payload);
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::write(
        dir.join(format!("checkpoints/state-{:020}.ckpt", head.position)),
        file,
    )
    .unwrap();
}

#[test]
fn a_forged_unsigned_checkpoint_is_not_loaded_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (company, secret, token) = {
        let ledger = Ledger::open_with(dir.path(), keyless(0)).unwrap();
        let (company, admin) = a_company(&ledger);
        let created = create_tags_token(&ledger, admin, company);
        forge_checkpoint(dir.path(), &ledger, created.token);
        (company, created.secret, created.token)
    };
    let write_tag = Request {
        requirement: Requirement::Scope("tags:write".parse().unwrap()),
        resource: "tag_1".parse().unwrap(),
        location: Location::Global(company),
        at: Timestamp::from_system_time(std::time::SystemTime::now()),
    };

    // The default: the forged file is ignored, said once, and the token
    // keeps the scope it was created with, now and as of the head.
    let ledger = Ledger::open(dir.path()).unwrap();
    let warnings = ledger.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("ignored"), "{warnings:?}");
    let decision = ledger.authorizer().check(secret.expose(), &write_tag);
    assert!(!decision.is_allowed(), "the forged state was loaded");
    let as_of = ledger.state_at(ledger.head().position).unwrap();
    assert!(!decide_request(&as_of, secret.expose(), &write_tag).is_allowed());
    let scope = ledger.with_state(|state| state.token(token).unwrap().scope());
    assert!(!scope.grants.contains("tags:write".parse().unwrap()));
    drop(ledger);

    // The risk the opt-in takes: the same file is served.
    let trusting = Ledger::open_with(dir.path(), unsigned(0)).unwrap();
    assert!(trusting.warnings().is_empty(), "{:?}", trusting.warnings());
    let decision = trusting.authorizer().check(secret.expose(), &write_tag);
    assert!(decision.is_allowed(), "the forgery is well formed");
}
