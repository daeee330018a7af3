//! Every fuzz target over the corpus kept in `fuzz/corpus`, on the stable
//! toolchain and without libFuzzer, so `cargo test` exercises each target
//! and every regression input a finding left behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;

use tokenledger_tests::fuzz;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn decode_record() {
    replay("decode_record", fuzz::decode_record);
}

#[test]
fn decode_checkpoint() {
    replay("decode_checkpoint", fuzz::decode_checkpoint);
}

#[test]
fn parse_secret() {
    replay("parse_secret", fuzz::parse_secret);
}

#[test]
fn parse_scope_and_endpoint() {
    replay("parse_scope_and_endpoint", fuzz::parse_scope_and_endpoint);
}

#[test]
fn command_sequence() {
    replay("command_sequence", fuzz::command_sequence);
}

/// The targets check something: a wrong record, secret or history fails.
#[test]
fn the_targets_catch_what_they_are_for() {
    // A record whose envelope is fine but whose hash is not is refused
    // without a panic; an envelope that decodes survives re-encoding.
    let record = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_record/record-1"),
    )
    .unwrap();
    assert!(tokenledger_store::ChainCheck::new().check(&record).is_ok());
    let mut damaged = record.clone();
    damaged[40] ^= 1;
    assert!(
        tokenledger_store::ChainCheck::new()
            .check(&damaged)
            .is_err()
    );
    fuzz::decode_record(&damaged);
}

/// The secret seeds stay what their names say, so the corpus keeps
/// reaching the path where a secret parses: a change to the digest or the
/// checksum must regenerate them, as it regenerates the golden files.
#[test]
fn the_secret_seeds_are_what_their_names_say() {
    let seed = |name| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/parse_secret")
                .join(name),
        )
        .unwrap()
    };
    assert!(tokenledger_events::Secret::parse(&seed("well-formed")).is_ok());
    assert_eq!(
        tokenledger_events::Secret::parse(&seed("bad-checksum")).err(),
        Some(tokenledger_events::SecretError::Checksum)
    );
}

/// The checkpoint seeds decode, so the corpus keeps reaching the path past
/// the layout's version: a change to the layout must regenerate them (the
/// layout-3 change did not, and left the target refusing every seed at its
/// version check).
#[test]
fn the_checkpoint_seeds_are_of_this_layout() {
    for name in ["empty", "small"] {
        let seed = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/decode_checkpoint")
                .join(name),
        )
        .unwrap();
        let state = tokenledger_authz::decode_checkpoint(&seed)
            .unwrap_or_else(|e| panic!("the seed `{name}` does not decode: {e}"));
        assert_eq!(state.position() > 0, name == "small");
    }
}

/// Every single-byte change to the small checkpoint seed is refused, or
/// decodes to a state that archives back to what it decoded from: rkyv's
/// validation, then the table's own checks (each index inside its pool,
/// no unknown flag), stand between damaged bytes and a state.
#[test]
fn every_byte_of_the_checkpoint_seed_changed_is_refused_or_round_trips() {
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_checkpoint/small"),
    )
    .unwrap();
    let mut decoded = 0;
    for at in 0..seed.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut damaged = seed.clone();
            damaged[at] ^= mask;
            let outcome = std::panic::catch_unwind(|| fuzz::decode_checkpoint(&damaged));
            assert!(outcome.is_ok(), "byte {at} ^ {mask:#x}");
            decoded += usize::from(tokenledger_authz::decode_checkpoint(&damaged).is_ok());
        }
    }
    // Some changes land in values any byte of which is valid (a time, a
    // position), so the walk reaches the state as well as the refusals.
    assert!(decoded > 0);
}
