//! Without `--checkpoint-key-file`, checkpoint files in the data directory
//! are ignored, and the binary says so once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;
use std::process::Output;

mod common;

use common::binary;

fn tokenledger(data: &Path, args: &[&str]) -> Output {
    binary()
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn without_a_checkpoint_key_checkpoint_files_are_ignored_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = tokenledger(&data, &["company", "create", "--name", "Acme"]);
    assert!(created.status.success(), "{created:?}");
    // Left there by someone who can write the directory.
    std::fs::create_dir_all(data.join("checkpoints")).unwrap();
    std::fs::write(
        data.join("checkpoints/state-00000000000000000001.ckpt"),
        b"TLSTATE2 anything at all",
    )
    .unwrap();

    let run = tokenledger(&data, &["verify"]);
    assert!(run.status.success(), "{run:?}");
    let stderr = String::from_utf8(run.stderr).unwrap();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("1 checkpoint file(s)")
            && warnings[0].contains("ignored")
            && warnings[0].contains("checkpoint key"),
        "{stderr}"
    );
}
