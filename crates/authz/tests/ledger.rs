//! The Ledger facade: durable commands, replay, immediate revocation,
//! reveal, races between conflicting commands, and secrets kept out of the
//! data directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

mod common;

use common::ledger::{
    a_company, add_teammate, create_tags_token, failing_at, new_tags_token, read_tag,
};
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::FaultPoint;

struct Given {
    ledger: Ledger,
    company: CompanyId,
    admin: TeammateId,
    member: TeammateId,
}

fn given_a_company(dir: &Path, options: LedgerOptions) -> Given {
    let ledger = Ledger::open_with(dir, options).unwrap();
    let (company, admin) = a_company(&ledger);
    let member = add_teammate(&ledger, Actor::System, company, "Someone", Role::Member);
    Given {
        ledger,
        company,
        admin,
        member,
    }
}

fn tags_token(g: &Given) -> CreatedToken {
    create_tags_token(&g.ledger, g.admin, g.company)
}

#[test]
fn commands_are_durable_and_replayed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (company, secret, position) = {
        let g = given_a_company(dir.path(), LedgerOptions::default());
        let created = tags_token(&g);
        let decision = g
            .ledger
            .authorizer()
            .check(created.secret.expose(), &read_tag(g.company));
        assert!(decision.is_allowed(), "{:?}", decision.refusal);
        assert_eq!(decision.position, created.receipt.position());
        (g.company, created.secret, created.receipt.position())
    };
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.head().position, position);
    let decision = ledger
        .authorizer()
        .check(secret.expose(), &read_tag(company));
    assert!(decision.is_allowed());
    assert_eq!(decision.position, position);
}

#[test]
fn a_refused_command_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = given_a_company(dir.path(), LedgerOptions::default());
    let before = g.ledger.head();
    let error = g
        .ledger
        .execute(
            Actor::Teammate(g.member),
            Command::DeactivateTeammate { teammate: g.admin },
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::Refused(CommandError::NotPermitted { .. })
        ),
        "{error}"
    );
    assert_eq!(g.ledger.head(), before);
}

#[test]
fn a_delete_is_immediate_on_every_thread() {
    let dir = tempfile::tempdir().unwrap();
    let g = given_a_company(dir.path(), LedgerOptions::default());
    let created = tags_token(&g);
    let authorizer = g.ledger.authorizer();
    let deleted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicU64::new(0));
    let allowed_before = Arc::new(AtomicU64::new(0));
    let request = read_tag(g.company);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let authorizer = authorizer.clone();
            let secret = created.secret.expose().to_owned();
            let (deleted, stop, stale, allowed_before) = (
                Arc::clone(&deleted),
                Arc::clone(&stop),
                Arc::clone(&stale),
                Arc::clone(&allowed_before),
            );
            let request = request.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // Read the flag before deciding: an allow that started
                    // after the delete returned is stale.
                    let after_delete = deleted.load(Ordering::SeqCst);
                    let decision = authorizer.check(&secret, &request);
                    if decision.is_allowed() {
                        if after_delete {
                            stale.fetch_add(1, Ordering::SeqCst);
                        } else {
                            allowed_before.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    while allowed_before.load(Ordering::SeqCst) < 1000 {
        std::thread::yield_now();
    }
    g.ledger
        .execute(
            Actor::Teammate(g.admin),
            Command::DeleteToken {
                token: created.token,
            },
        )
        .unwrap();
    deleted.store(true, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "allows after the delete returned"
    );
    let decision = authorizer.check(created.secret.expose(), &request);
    assert_eq!(decision.refusal.unwrap().rule, Rule::TokenLive);

    drop(g);
    let ledger = Ledger::open(dir.path()).unwrap();
    let decision = ledger.authorizer().check(created.secret.expose(), &request);
    assert_eq!(
        decision.refusal.unwrap().rule,
        Rule::TokenLive,
        "refused after restart too"
    );
}

#[test]
fn conflicting_commands_racing_cannot_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let g = given_a_company(dir.path(), LedgerOptions::default());
    let second_admin = fresh::teammate_id().unwrap();
    g.ledger
        .execute(
            Actor::System,
            Command::AddTeammate {
                company: g.company,
                teammate: second_admin,
                name: Name::new("Grace").unwrap(),
                role: Role::Admin,
            },
        )
        .unwrap();
    // Each admin demotes the other at once: both would leave the company
    // without an admin, so exactly one may succeed.
    let ledger = &g.ledger;
    let results: Vec<_> = std::thread::scope(|scope| {
        [(g.admin, second_admin), (second_admin, g.admin)]
            .map(|(by, whom)| {
                scope.spawn(move || {
                    ledger.execute(
                        Actor::Teammate(by),
                        Command::ChangeRole {
                            teammate: whom,
                            role: Role::Member,
                        },
                    )
                })
            })
            .map(|thread| thread.join().unwrap())
            .into_iter()
            .collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let admins = g
        .ledger
        .with_state(|state| state.company(g.company).unwrap().active_admins);
    assert_eq!(admins, 1);
}

#[test]
fn a_sealed_secret_is_revealed_after_the_reveal_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let options = LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([7; 32])),
        ..LedgerOptions::default()
    };
    let g = given_a_company(dir.path(), options);
    let created = tags_token(&g);
    let before = g.ledger.head().position;
    let revealed = g
        .ledger
        .reveal(Actor::Teammate(g.admin), created.token)
        .unwrap();
    assert_eq!(revealed, created.secret);
    assert_eq!(g.ledger.head().position, before + 1);
    let reveals = g.ledger.reveals(created.token).unwrap();
    assert_eq!(reveals.len(), 1);
    assert_eq!(reveals[0].actor, Actor::Teammate(g.admin));

    let error = g
        .ledger
        .reveal(Actor::Teammate(g.member), created.token)
        .unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::Refused(CommandError::NotPermitted { .. })
        ),
        "{error}"
    );
    assert_eq!(g.ledger.head().position, before + 1);
}

#[test]
fn without_a_sealing_key_a_secret_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = given_a_company(dir.path(), LedgerOptions::default());
    let created = tags_token(&g);
    let before = g.ledger.head();
    let error = g
        .ledger
        .reveal(Actor::Teammate(g.admin), created.token)
        .unwrap_err();
    assert!(matches!(error, LedgerError::SecretNotKept(_)), "{error}");
    assert!(
        error.to_string().contains("shown once, at creation"),
        "{error}"
    );
    assert_eq!(g.ledger.head(), before, "no reveal is recorded");
}

#[test]
fn if_the_reveal_cannot_be_recorded_no_secret_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (options, failing) = failing_at(FaultPoint::Commit);
    let g = given_a_company(dir.path(), options);
    let created = tags_token(&g);
    failing.store(true, Ordering::SeqCst);
    let error = g
        .ledger
        .reveal(Actor::Teammate(g.admin), created.token)
        .unwrap_err();
    assert!(matches!(error, LedgerError::Append(_)), "{error}");
    failing.store(false, Ordering::SeqCst);
    let reveals = g.ledger.reveals(created.token).unwrap().len();
    assert_eq!(reveals, 0);
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            bytes.extend(all_bytes(&path));
        } else {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

/// The secret alphabet's bytes, as `tokenledger_events::secret` writes them.
fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let (mut buffer, mut bits, mut out) = (0u64, 0, Vec::new());
    for c in text.bytes() {
        let value = alphabet.iter().position(|a| *a == c).unwrap() as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[test]
fn no_secret_is_written_to_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let options = LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([9; 32])),
        ..LedgerOptions::default()
    };
    let secrets: Vec<Secret> = {
        let g = given_a_company(dir.path(), options);
        (0..5).map(|_| tags_token(&g).secret).collect()
    };
    let stored = all_bytes(dir.path());
    for secret in secrets {
        let text = secret.expose();
        let body = &text[SECRET_PREFIX.len()..];
        let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
        let random = base32_decode(body);
        let raw: [u8; 32] = random[..32].try_into().unwrap();
        assert_eq!(
            Secret::from_random(raw).expose(),
            text,
            "the decoding is wrong"
        );
        let mut needles = vec![
            text.as_bytes().to_vec(),
            body.as_bytes().to_vec(),
            hex.into_bytes(),
            random[..32].to_vec(),
        ];
        // Base64 of the text, from each of the three alignments it could
        // have inside a longer base64 string; the last, partial, character dropped.
        for skip in 0..3 {
            let encoded = base64(&text.as_bytes()[skip..]);
            needles.push(encoded.as_bytes()[..encoded.len() - 4].to_vec());
        }
        for needle in &needles {
            assert!(
                !stored.windows(needle.len()).any(|w| w == needle.as_slice()),
                "a secret is stored in plain text, hex, base64 or raw"
            );
        }
    }
}

#[test]
fn a_closed_ledger_allows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = given_a_company(dir.path(), LedgerOptions::default());
    let created = tags_token(&g);
    let authorizer = g.ledger.authorizer();
    assert!(
        authorizer
            .check(created.secret.expose(), &read_tag(g.company))
            .is_allowed()
    );
    let company = g.company;
    drop(g);
    let decision = authorizer.check(created.secret.expose(), &read_tag(company));
    assert_eq!(decision.status(), 503, "{decision:?}");
}

/// Commands are decided at the time their events will carry. Here the
/// ledger's clock went back behind the last record, which the log stamps
/// no later record before: a token whose expiry lies between the clock
/// and that record would be recorded expired, and an import, deciding
/// each event again at its time, would refuse the log.
#[test]
fn a_command_is_decided_at_the_time_its_events_are_recorded_at() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::from_system_time(std::time::SystemTime::now()).as_micros();
    let hour = 3_600_000_000;
    let clock_at = Arc::new(AtomicU64::new(now + hour));
    let options = LedgerOptions {
        log: Options {
            clock: Some({
                let clock_at = Arc::clone(&clock_at);
                Arc::new(move || Timestamp::from_micros(clock_at.load(Ordering::SeqCst)))
            }),
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    let (company, admin) = a_company(&ledger);
    clock_at.store(now, Ordering::SeqCst);
    let expires_at = Timestamp::from_micros(now + hour / 2);
    let created = ledger.create_token(
        Actor::Teammate(admin),
        NewToken {
            expires_at: Some(expires_at),
            ..new_tags_token(company)
        },
    );
    assert!(
        matches!(
            created,
            Err(LedgerError::Refused(CommandError::ExpiryNotInFuture { now: at, .. }))
                if at == Timestamp::from_micros(now + hour)
        ),
        "{created:?}"
    );
}
