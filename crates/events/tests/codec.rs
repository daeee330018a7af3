//! The codec: golden bytes for every event type, so an accidental format
//! change fails here; and damaged input is an error, never a panic.
//!
//! After a deliberate format change (a new schema version and its
//! migration), regenerate the files with `TOKENLEDGER_BLESS=1 cargo test`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;
use tokenledger_events::*;

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// One envelope per event type, every field set to a fixed value.
fn samples() -> Vec<Envelope> {
    let company = CompanyId::from_u128(0x0c0c);
    let teammate = TeammateId::from_u128(0x7e7e);
    let workspace = WorkspaceId::from_u128(0x7171);
    let token = TokenId::from_u128(0x70c0);
    let events = vec![
        Event::CompanyCreated {
            company,
            name: name("Acme"),
        },
        Event::TeammateAdded {
            teammate,
            name: name("Ada Lovelace"),
            role: Role::Admin,
        },
        Event::TeammateRoleChanged {
            teammate,
            role: Role::Member,
        },
        Event::TeammateDeactivated { teammate },
        Event::WorkspaceCreated {
            workspace,
            name: name("Support"),
        },
        Event::WorkspaceDeleted { workspace },
        Event::TokenCreated {
            token,
            name: name("Zapier sync, conversations only"),
            kind: TokenKind::ApiToken,
            scope: TokenScope {
                features: BTreeSet::from([Feature::Resources, Feature::AppTriggers]),
                namespaces: Namespaces {
                    global: true,
                    shared: SharedNamespace::Workspaces(BTreeSet::from([workspace])),
                    private: true,
                },
                grants: ["conversations:read", "messages:send", "events:*:read"]
                    .iter()
                    .map(|s| s.parse::<Scope>().unwrap())
                    .collect(),
            },
            secret_digest: Secret::from_random([0x42; 32]).digest(),
            sealed_secret: Some(SealedSecret::try_from(vec![1, 2, 3, 4]).unwrap()),
            expires_at: Some(Timestamp::from_micros(1_800_000_000_000_000)),
        },
        Event::TokenRevealed { token },
        Event::TokenDeleted { token },
        Event::PrivateApiAccessChanged {
            teammate,
            allowed: true,
        },
        Event::PrivateApiAccessSetForAll { allowed: false },
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Envelope {
            position: i as u64 + 1,
            event_id: EventId::from_u128(0xe000 + i as u128),
            recorded_at: Timestamp::from_micros(1_763_800_000_000_000 + i as u64),
            actor: if i == 0 {
                Actor::System
            } else {
                Actor::Teammate(teammate)
            },
            company,
            event,
        })
        .collect()
}

fn golden_path(envelope: &Envelope) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{}.hex", envelope.event.type_name()))
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(32) {
        for byte in line {
            out.push_str(&format!("{byte:02x}"));
        }
        out.push('\n');
    }
    out
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn every_event_type_has_a_sample() {
    let types: BTreeSet<_> = samples().iter().map(|e| e.event.type_name()).collect();
    assert_eq!(types.len(), 11, "add a sample for the new event type");
}

#[test]
fn golden_bytes_are_unchanged() {
    let bless = std::env::var_os("TOKENLEDGER_BLESS").is_some();
    for envelope in samples() {
        let path = golden_path(&envelope);
        let bytes = encode_envelope(&envelope).unwrap();
        if bless {
            std::fs::write(&path, to_hex(&bytes)).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with TOKENLEDGER_BLESS=1", path.display()));
        let golden = from_hex(&golden);
        assert_eq!(
            to_hex(&bytes),
            to_hex(&golden),
            "the encoding of {} changed",
            envelope.event.type_name()
        );
        assert_eq!(decode_envelope(&golden).unwrap(), envelope);
    }
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    for envelope in samples() {
        let bytes = encode_envelope(&envelope).unwrap();
        for len in 0..bytes.len() {
            assert!(decode_envelope(&bytes[..len]).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_envelope(&longer),
            Err(CodecError::TrailingBytes { extra: 1 })
        );
    }
}

#[test]
fn an_unknown_format_or_schema_version_is_named() {
    let envelope = &samples()[0];
    let mut bytes = encode_envelope(envelope).unwrap();
    bytes[0] = 9;
    assert_eq!(
        decode_envelope(&bytes),
        Err(CodecError::UnknownFormat { found: 9 })
    );
    // The schema version sits after the format byte, position (8), event
    // id (16), time (8), actor (4 + 16 for a teammate, 4 for the system)
    // and company (16).
    let mut bytes = encode_envelope(envelope).unwrap();
    let at = 1 + 8 + 16 + 8 + 4 + 16;
    bytes[at..at + 2].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(
        decode_envelope(&bytes),
        Err(CodecError::SchemaVersion {
            event_type: "CompanyCreated",
            found: 7,
            supported: 1
        })
    );
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let huge = vec![1u8; MAX_RECORD_BYTES + 1];
    assert_eq!(
        decode_envelope(&huge),
        Err(CodecError::TooLarge {
            len: MAX_RECORD_BYTES + 1
        })
    );
}

#[test]
fn a_name_that_breaks_the_rules_does_not_decode() {
    // A record whose name was written by something other than this crate,
    // with a terminal escape in it.
    let envelope = &samples()[0];
    let bytes = encode_envelope(envelope).unwrap();
    let text = b"Acme";
    let at = bytes.windows(4).position(|w| w == text).unwrap();
    let mut evil = bytes.clone();
    evil[at] = 0x1b;
    assert!(matches!(
        decode_envelope(&evil),
        Err(CodecError::Malformed { .. })
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_envelope(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic_and_never_decode_to_the_original(
        index in any::<prop::sample::Index>(),
        sample in 0usize..11,
        flip in 1u8..=255,
    ) {
        let envelope = &samples()[sample];
        let mut bytes = encode_envelope(envelope).unwrap();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(decoded) = decode_envelope(&bytes) {
            prop_assert_ne!(&decoded, envelope);
        }
    }
}
