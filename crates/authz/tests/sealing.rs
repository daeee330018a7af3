//! Sealing keys: a wrong key is refused at open, keys rotate, and a sealed
//! secret reveals only for the token, company and digest it was sealed for.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;

mod common;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use common::ledger::{company_in, create_tags_token, tags_scope};
use tokenledger_authz::*;
use tokenledger_events::*;

fn key(byte: u8) -> SealingKey {
    SealingKey::from_bytes([byte; 32])
}

fn with_keys(current: Option<u8>, old: &[u8]) -> LedgerOptions {
    LedgerOptions {
        sealing_key: current.map(key),
        old_sealing_keys: old.iter().copied().map(key).collect(),
        ..LedgerOptions::default()
    }
}

/// Records a token with exactly this digest and sealed secret, as an
/// edited log or an embedder passing its own command could.
fn record_token(
    ledger: &Ledger,
    admin: TeammateId,
    company: CompanyId,
    token: TokenId,
    digest: SecretDigest,
    sealed: SealedSecret,
) {
    ledger
        .execute(
            Actor::Teammate(admin),
            Command::CreateToken {
                company,
                token,
                name: Name::new("Copied").unwrap(),
                kind: TokenKind::ApiToken,
                scope: tags_scope(),
                secret_digest: digest,
                sealed_secret: Some(sealed),
                expires_at: None,
            },
        )
        .unwrap();
}

fn sealed_secret_of(created: &CreatedToken) -> SealedSecret {
    match &created.receipt.events[0].event {
        Event::TokenCreated {
            sealed_secret: Some(sealed),
            ..
        } => sealed.clone(),
        other => panic!("{other:?}"),
    }
}

/// Seals as the first layout did (1 ‖ nonce ‖ ciphertext, the token id
/// alone as associated data), which logs written before keys had ids hold.
fn seal_v1(key_bytes: [u8; 32], token: TokenId, secret: &Secret) -> SealedSecret {
    let nonce = [3u8; 24];
    let mut aad = b"tokenledger sealed secret v1".to_vec();
    aad.extend_from_slice(&token.as_u128().to_be_bytes());
    let ciphertext = XChaCha20Poly1305::new(&key_bytes.into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.expose().as_bytes(),
                aad: &aad,
            },
        )
        .unwrap();
    let mut sealed = vec![1];
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    SealedSecret::try_from(sealed).unwrap()
}

fn open_error(dir: &Path, options: LedgerOptions) -> LedgerError {
    match Ledger::open_with(dir, options) {
        Ok(_) => panic!("the ledger opened"),
        Err(error) => error,
    }
}

#[test]
fn a_wrong_sealing_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let company = fresh::company_id().unwrap();
    let created = {
        let ledger = Ledger::open_with(dir.path(), with_keys(Some(1), &[])).unwrap();
        let admin = company_in(&ledger, company);
        create_tags_token(&ledger, admin, company)
    };
    let error = open_error(dir.path(), with_keys(Some(2), &[]));
    assert_eq!(
        error.to_string(),
        format!(
            "the sealing key does not fit this log: the newest sealed secret (token `{}`) was sealed with key `{}`, and the keys given are `{}`; give the key it was sealed with, or give that key as an old sealing key beside a new one to rotate",
            created.token,
            key(1).id(),
            key(2).id()
        )
    );
    assert!(matches!(
        error,
        LedgerError::Sealing(SealingError::WrongKey {
            sealed_with: Some(id),
            ..
        }) if id == key(1).id()
    ));
    // Without a key nothing is sealed, so there is nothing to check.
    Ledger::open_with(dir.path(), LedgerOptions::default()).unwrap();
    let ledger = Ledger::open_with(dir.path(), with_keys(Some(1), &[])).unwrap();
    assert_eq!(ledger.head().position, 3);
}

#[test]
fn a_rotated_key_reveals_what_it_sealed_and_the_new_key_seals_new_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let company = fresh::company_id().unwrap();
    let (admin, first) = {
        let ledger = Ledger::open_with(dir.path(), with_keys(Some(1), &[])).unwrap();
        let admin = company_in(&ledger, company);
        let first = create_tags_token(&ledger, admin, company);
        (admin, first)
    };
    let second = {
        let ledger = Ledger::open_with(dir.path(), with_keys(Some(2), &[1])).unwrap();
        assert_eq!(
            ledger.reveal(Actor::Teammate(admin), first.token).unwrap(),
            first.secret
        );
        let second = create_tags_token(&ledger, admin, company);
        let sealed = sealed_secret_of(&second);
        assert_eq!(sealed.as_bytes()[0], 2, "the layout with a key id");
        let named: String = sealed.as_bytes()[1..9]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(named, key(2).id().to_string(), "sealed with the new key");
        second
    };
    // The old key retired: the new token reveals, the old one names a key
    // the ledger no longer has, and that reveal is not recorded.
    let ledger = Ledger::open_with(dir.path(), with_keys(Some(2), &[])).unwrap();
    assert_eq!(
        ledger.reveal(Actor::Teammate(admin), second.token).unwrap(),
        second.secret
    );
    let before = ledger.head();
    let error = ledger
        .reveal(Actor::Teammate(admin), first.token)
        .unwrap_err();
    assert!(
        matches!(error, LedgerError::Sealing(SealingError::UnknownKey { key: id }) if id == key(1).id()),
        "{error}"
    );
    assert_eq!(ledger.head(), before);
    drop(ledger);
    // The newest sealed secret is the new key's: the old key alone is refused.
    assert!(matches!(
        open_error(dir.path(), with_keys(Some(1), &[])),
        LedgerError::Sealing(SealingError::WrongKey { .. })
    ));
}

#[test]
fn a_sealed_secret_moved_to_another_token_or_company_does_not_open() {
    let company = fresh::company_id().unwrap();
    let source = tempfile::tempdir().unwrap();
    let (token, secret, sealed) = {
        let ledger = Ledger::open_with(source.path(), with_keys(Some(1), &[])).unwrap();
        let admin = company_in(&ledger, company);
        let created = create_tags_token(&ledger, admin, company);
        let sealed = sealed_secret_of(&created);
        (created.token, created.secret, sealed)
    };
    let other_token = fresh::token_id().unwrap();
    let other_company = fresh::company_id().unwrap();
    // Each copy differs from the original in one thing only.
    for (company, token) in [(company, other_token), (other_company, token)] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_with(dir.path(), with_keys(Some(1), &[])).unwrap();
        let admin = company_in(&ledger, company);
        record_token(
            &ledger,
            admin,
            company,
            token,
            secret.digest(),
            sealed.clone(),
        );
        let before = ledger.head();
        let error = ledger.reveal(Actor::Teammate(admin), token).unwrap_err();
        assert!(
            matches!(error, LedgerError::Sealing(SealingError::DoesNotOpen)),
            "{error}"
        );
        assert_eq!(ledger.head(), before, "no reveal is recorded");
        assert!(ledger.reveals(token).unwrap().is_empty());
    }
}

#[test]
fn a_sealed_secret_that_is_not_the_tokens_secret_is_not_revealed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), with_keys(Some(1), &[])).unwrap();
    let company = fresh::company_id().unwrap();
    let admin = company_in(&ledger, company);
    // The first layout binds only the token: its digest can be edited.
    let (token, sealed_secret, recorded_secret) = (
        fresh::token_id().unwrap(),
        fresh::secret().unwrap(),
        fresh::secret().unwrap(),
    );
    let sealed = seal_v1([1; 32], token, &sealed_secret);
    record_token(
        &ledger,
        admin,
        company,
        token,
        recorded_secret.digest(),
        sealed,
    );
    let before = ledger.head();
    let error = ledger.reveal(Actor::Teammate(admin), token).unwrap_err();
    assert!(
        matches!(error, LedgerError::Sealing(SealingError::DigestMismatch)),
        "{error}"
    );
    assert_eq!(ledger.head(), before, "no reveal is recorded");
}

#[test]
fn secrets_sealed_in_the_first_layout_still_reveal_and_check_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let company = fresh::company_id().unwrap();
    let (admin, token, secret) = {
        let ledger = Ledger::open_with(dir.path(), with_keys(Some(1), &[])).unwrap();
        let admin = company_in(&ledger, company);
        let (token, secret) = (fresh::token_id().unwrap(), fresh::secret().unwrap());
        let sealed = seal_v1([1; 32], token, &secret);
        record_token(&ledger, admin, company, token, secret.digest(), sealed);
        (admin, token, secret)
    };
    assert!(matches!(
        open_error(dir.path(), with_keys(Some(2), &[])),
        LedgerError::Sealing(SealingError::WrongKey {
            sealed_with: None,
            ..
        })
    ));
    let ledger = Ledger::open_with(dir.path(), with_keys(Some(2), &[1])).unwrap();
    assert_eq!(
        ledger.reveal(Actor::Teammate(admin), token).unwrap(),
        secret
    );
}
