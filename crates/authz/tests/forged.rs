//! A log edited by someone who can write the data directory: one record
//! changed and its own hash recomputed, so that it reads whole on its own.
//! Replays check every link from where they start, so the ledger refuses
//! it rather than serve the forged token; with a checkpoint key, even a
//! forged last record, which no link follows, is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;

mod common;

use common::ledger::{a_company, create_tags_token};
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::{CheckpointError as SignedHeadError, Problem};

/// Rewrites the record at `position` through sled, as an attacker could:
/// `edit` changes its event, and the record is sealed again after the same
/// predecessor, with its own hash recomputed (the layouts of
/// `crates/store/src/page.rs` and `crates/store/src/record.rs`).
fn rewrite_record(dir: &Path, position: u64, edit: impl FnOnce(&mut Envelope)) {
    let db = sled::open(dir.join("sled")).unwrap();
    let events = db.open_tree("events").unwrap();
    let mut key = vec![b'L'];
    key.extend_from_slice(&position.to_be_bytes());
    let (key, page) = events.range(key..).next().unwrap().unwrap();
    let last = u64::from_be_bytes(key[1..].try_into().unwrap());
    let count = u16::from_be_bytes([page[1], page[2]]);
    let mut records = Vec::new();
    let mut rest = &page[3..];
    for _ in 0..count {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        records.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    let record = &mut records[(position - (last + 1 - u64::from(count))) as usize];
    let (previous, flags) = (record[1..33].to_vec(), record[65]);
    let mut envelope = decode_envelope(&record[66..]).unwrap();
    edit(&mut envelope);
    let envelope = encode_envelope(&envelope).unwrap();
    let mut hasher = blake3::Hasher::new();
    hasher
        .update(b"tokenledger record v2")
        .update(&previous)
        .update(&[flags])
        .update(&envelope);
    let mut sealed = vec![2];
    sealed.extend_from_slice(&previous);
    sealed.extend_from_slice(hasher.finalize().as_bytes());
    sealed.push(flags);
    sealed.extend_from_slice(&envelope);
    *record = sealed;
    let mut page = vec![b'P'];
    page.extend_from_slice(&count.to_be_bytes());
    for record in &records {
        page.extend_from_slice(&(record.len() as u32).to_be_bytes());
        page.extend_from_slice(record);
    }
    events.insert(&key, page).unwrap();
    db.flush().unwrap();
}

/// A company, its admin and a token that reads tags; then, unless the
/// token is to be the last record, one more event after it. Returns the
/// token's id and position.
fn given_a_token(ledger: &Ledger, last: bool) -> (TokenId, u64) {
    let (company, admin) = a_company(ledger);
    let created = create_tags_token(ledger, admin, company);
    if !last {
        ledger
            .execute(
                Actor::Teammate(admin),
                Command::CreateWorkspace {
                    company,
                    workspace: fresh::workspace_id().unwrap(),
                    name: Name::new("Support").unwrap(),
                },
            )
            .unwrap();
    }
    (created.token, created.receipt.position())
}

/// The forgery: the token now answers to a secret the attacker holds, and
/// reads every conversation.
fn forge(dir: &Path, position: u64, secret: &Secret) {
    rewrite_record(dir, position, |envelope| {
        let Event::TokenCreated {
            scope,
            secret_digest,
            ..
        } = &mut envelope.event
        else {
            panic!("not a token's creation: {:?}", envelope.event);
        };
        *secret_digest = secret.digest();
        scope.grants.insert("conversations:read".parse().unwrap());
    });
}

fn chain_broken_at(error: LedgerError) -> u64 {
    match error {
        LedgerError::Damaged(Damage {
            position,
            problem: Problem::ChainBroken { .. },
        }) => position,
        other => panic!("refused for another reason: {other}"),
    }
}

#[test]
fn a_token_edited_in_the_log_with_its_hash_recomputed_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (_, position) = given_a_token(&ledger, false);
    drop(ledger);
    let stolen = fresh::secret().unwrap();
    forge(dir.path(), position, &stolen);
    // Without checkpoints, opening replays from genesis.
    let _ = std::fs::remove_dir_all(dir.path().join("checkpoints"));

    let error = Ledger::open(dir.path())
        .err()
        .expect("the forged log opened");
    // The forged record reads whole; the next one's link gives it away.
    assert!(
        error.to_string().contains(&format!(
            "log position {}: the chain is broken",
            position + 1
        )),
        "{error}"
    );
    assert_eq!(chain_broken_at(error), position + 1);
}

/// A checkpoint after the forged record: opening starts there, and checks
/// only what follows; a replay from genesis (`state_at`, `history`) finds
/// the break.
#[test]
fn replays_that_start_before_a_checkpoint_check_the_links_too() {
    let dir = tempfile::tempdir().unwrap();
    let options = || LedgerOptions {
        checkpoint_every: 0,
        trust_unsigned_checkpoints: true,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(dir.path(), options()).unwrap();
    let (token, position) = given_a_token(&ledger, false);
    let head = ledger.checkpoint().unwrap();
    drop(ledger);
    forge(dir.path(), position, &fresh::secret().unwrap());

    let ledger = Ledger::open_with(dir.path(), options()).unwrap();
    assert_eq!(ledger.head().position, head);
    assert_eq!(
        chain_broken_at(ledger.state_at(position).unwrap_err()),
        position + 1
    );
    assert_eq!(
        chain_broken_at(ledger.history(&HistoryQuery::default()).unwrap_err()),
        position + 1
    );
    // A range that starts or ends at the forged record checks the link
    // after it too.
    for (from, to) in [(position, head), (1, position), (position, position)] {
        let range = HistoryQuery {
            from_position: Some(from),
            to_position: Some(to),
            ..HistoryQuery::default()
        };
        assert_eq!(
            chain_broken_at(ledger.history(&range).unwrap_err()),
            position + 1,
            "{from}..={to}"
        );
    }
    // Before the forged record, the history reads.
    let before = HistoryQuery {
        to_position: Some(position - 1),
        ..HistoryQuery::default()
    };
    assert_eq!(ledger.history(&before).unwrap().len() as u64, position - 1);
    // A read of one token's events is not a walk of the chain: its
    // records' own hashes are all it checks.
    let by_token = HistoryQuery {
        token: Some(token),
        ..HistoryQuery::default()
    };
    assert_eq!(ledger.history(&by_token).unwrap().len(), 1);
}

/// No link follows the last record: with a checkpoint key its signed head
/// still gives it away.
#[test]
fn a_forged_last_record_is_refused_with_a_checkpoint_key() {
    let dir = tempfile::tempdir().unwrap();
    let options = || LedgerOptions {
        checkpoint_key: Some(CheckpointKey::from_bytes([9; 32])),
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(dir.path(), options()).unwrap();
    let (_, position) = given_a_token(&ledger, true);
    assert_eq!(ledger.head().position, position);
    drop(ledger);
    forge(dir.path(), position, &fresh::secret().unwrap());
    let _ = std::fs::remove_dir_all(dir.path().join("checkpoints"));

    match Ledger::open_with(dir.path(), options()) {
        Err(LedgerError::Open(OpenError::SignedHead {
            error: SignedHeadError::Rewritten { position: at, .. },
            ..
        })) => assert_eq!(at, position),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("the forged log opened"),
    }
}

#[test]
fn an_unsigned_ledger_takes_a_key_only_once_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    given_a_token(&ledger, false);
    let head = ledger.head();
    drop(ledger);
    let key = CheckpointKey::from_bytes([9; 32]);
    let options = || LedgerOptions {
        checkpoint_key: Some(key.clone()),
        ..LedgerOptions::default()
    };
    assert!(matches!(
        Ledger::open_with(dir.path(), options()),
        Err(LedgerError::Open(OpenError::SignedHead {
            error: SignedHeadError::Missing,
            ..
        }))
    ));
    let verified = Ledger::sign_head(dir.path(), &key, LedgerOptions::default()).unwrap();
    assert_eq!(verified.head, head);
    assert_eq!(
        Ledger::open_with(dir.path(), options()).unwrap().head(),
        head
    );
}
