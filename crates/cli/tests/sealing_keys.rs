//! Sealing keys on the command line: a wrong `--sealing-key-file` is
//! refused before anything is written, and `--old-sealing-key-file`
//! rotates a key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::{Path, PathBuf};

mod common;

use common::{CREATE_ACME, add_ada, binary, create_plugin, write_key};
use serde_json::Value;

struct Dir {
    _dir: tempfile::TempDir,
    data: PathBuf,
    old: PathBuf,
    new: PathBuf,
}

fn dir() -> Dir {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
    write_key(&old, "11".repeat(32));
    write_key(&new, "22".repeat(32));
    Dir {
        data: dir.path().join("data"),
        _dir: dir,
        old,
        new,
    }
}

/// Runs the binary on `data` with these keys; the exit code, the JSON on
/// standard output (or null) and standard error.
fn run(data: &Path, key: &Path, old_keys: &[&Path], args: &[&str]) -> (i32, Value, String) {
    let mut command = binary();
    command
        .arg("--data")
        .arg(data)
        .arg("--sealing-key-file")
        .arg(key)
        .arg("--json");
    for old in old_keys {
        command.arg("--old-sealing-key-file").arg(old);
    }
    let output = command.args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn ok(data: &Path, key: &Path, old_keys: &[&Path], args: &[&str], field: &str) -> String {
    let (code, json, stderr) = run(data, key, old_keys, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    json[field].as_str().unwrap().to_owned()
}

/// A company, its admin, and a token: (admin, token, secret).
fn token(d: &Dir) -> (String, String, String) {
    let company = ok(&d.data, &d.old, &[], &CREATE_ACME, "company");
    let admin = ok(&d.data, &d.old, &[], &add_ada(&company), "teammate");
    let create = create_plugin(&company, &admin, "tags:read");
    let (code, json, stderr) = run(&d.data, &d.old, &[], &create);
    assert_eq!(code, 0, "{stderr}");
    (
        admin,
        json["token"].as_str().unwrap().to_owned(),
        json["secret"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_wrong_sealing_key_file_is_bad_input_and_writes_nothing() {
    let d = dir();
    let (admin, token, _) = token(&d);
    let (code, _, stderr) = run(
        &d.data,
        &d.new,
        &[],
        &["token", "reveal", &token, "--by", &admin],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the sealing key does not fit this log"),
        "{stderr}"
    );
    let (code, json, stderr) = run(&d.data, &d.old, &[], &["token", "show", &token]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json["reveals"],
        Value::Array(Vec::new()),
        "nothing recorded"
    );
}

#[test]
fn an_old_sealing_key_file_reveals_what_it_sealed() {
    let d = dir();
    let (admin, token, secret) = token(&d);
    let reveal = ["token", "reveal", token.as_str(), "--by", admin.as_str()];
    let revealed = ok(&d.data, &d.new, &[&d.old], &reveal, "secret");
    assert_eq!(revealed, secret);
}
