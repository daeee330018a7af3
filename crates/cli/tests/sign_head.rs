//! `sign-head` adopts a key only for a log that never had one, unless the
//! operator gives a head kept elsewhere: a log kept with the key whose
//! signed head was removed may have been rewritten behind it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;
use std::process::{Command, Output};

use tokenledger_authz::{CheckpointKey, Ledger, LedgerOptions, fresh};
use tokenledger_events::{Actor, Name};

fn tokenledger(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .env_remove("TOKENLEDGER_DATA")
        .env_remove("TOKENLEDGER_SEALING_KEY_FILE")
        .env_remove("TOKENLEDGER_CHECKPOINT_KEY_FILE")
        .env_remove("TOKENLEDGER_KNOWN_HEAD")
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn sign_head_refuses_a_keyed_log_that_lost_its_signed_head_unless_given_the_known_head() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("checkpoint.key");
    std::fs::write(&key_file, "44".repeat(32)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let head = {
        let ledger = Ledger::open_with(
            &data,
            LedgerOptions {
                checkpoint_key: Some(CheckpointKey::from_bytes([0x44; 32])),
                ..LedgerOptions::default()
            },
        )
        .unwrap();
        ledger
            .execute(
                Actor::System,
                tokenledger_authz::Command::CreateCompany {
                    company: fresh::company_id().unwrap(),
                    name: Name::new("Acme").unwrap(),
                },
            )
            .unwrap();
        ledger.checkpoint().unwrap();
        ledger.head()
    };
    std::fs::remove_file(data.join("signed-head")).unwrap();
    let key = key_file.to_str().unwrap();

    // Opening says what to do: compare with a head kept elsewhere.
    let verify = tokenledger(&data, &["--checkpoint-key-file", key, "verify"]);
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    assert!(
        stderr(&verify).contains("suspect") && stderr(&verify).contains("--known-head"),
        "{}",
        stderr(&verify)
    );
    // sign-head alone refuses, a failed check, and signs nothing.
    let blind = tokenledger(&data, &["--checkpoint-key-file", key, "sign-head"]);
    assert_eq!(blind.status.code(), Some(1), "{}", stderr(&blind));
    assert!(
        stderr(&blind).contains("kept with this checkpoint key before"),
        "{}",
        stderr(&blind)
    );
    assert!(!data.join("signed-head").exists());
    // With the head kept elsewhere, it signs.
    let known = head.to_string();
    let signed = tokenledger(
        &data,
        &[
            "--checkpoint-key-file",
            key,
            "--known-head",
            &known,
            "sign-head",
        ],
    );
    assert_eq!(signed.status.code(), Some(0), "{}", stderr(&signed));
    let verify = tokenledger(&data, &["--checkpoint-key-file", key, "verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}
