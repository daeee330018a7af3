//! An import is its owner's alone, whatever the umask: the directories it
//! creates above the data directory, the copy it writes beside it, and
//! every file in either.
//!
//! A test binary of its own: the umask is the whole process's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::Mode;
use tokenledger_authz::{Command, Ledger, LedgerOptions, fresh};
use tokenledger_events::{Actor, Name, Role};

/// Every directory and file under `dir` (and `dir` itself) whose mode is
/// not `0700` for a directory or `0600` for a file.
fn loose(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        if mode != if metadata.is_dir() { 0o700 } else { 0o600 } {
            found.push((path.display().to_string(), mode));
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[test]
fn an_import_creates_its_parents_and_its_copy_0700_and_their_files_0600_whatever_the_umask() {
    // What most processes run with: files 0644, directories 0755.
    rustix::process::umask(Mode::WGRP | Mode::WOTH);
    let root = tempfile::tempdir().unwrap();
    let export = root.path().join("export.jsonl");
    {
        let ledger = Ledger::open(&root.path().join("source")).unwrap();
        let company = fresh::company_id().unwrap();
        ledger
            .execute(
                Actor::System,
                Command::CreateCompany {
                    company,
                    name: Name::new("Acme").unwrap(),
                },
            )
            .unwrap();
        ledger
            .execute(
                Actor::System,
                Command::AddTeammate {
                    company,
                    teammate: fresh::teammate_id().unwrap(),
                    name: Name::new("Ada").unwrap(),
                    role: Role::Admin,
                },
            )
            .unwrap();
        let mut out = std::fs::File::create(&export).unwrap();
        ledger.export(&mut out, &export, &mut |_, _| {}).unwrap();
    }

    let above = root.path().join("imports");
    let parent = above.join("nested");
    let data = parent.join("data");
    let mut copies = Vec::new();
    Ledger::import(
        &data,
        &export,
        None,
        LedgerOptions::default(),
        &mut |_, _| {
            // The copy beside the data directory, while it is being written.
            for entry in std::fs::read_dir(&parent).unwrap() {
                let path = entry.unwrap().path();
                if path.to_string_lossy().contains(".importing-") {
                    copies.push(loose(&path));
                }
            }
        },
    )
    .unwrap();

    assert!(!copies.is_empty(), "no copy was seen while importing");
    for found in copies {
        assert!(found.is_empty(), "not private: {found:?}");
    }
    for dir in [&above, &parent] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let found = loose(&data);
    assert!(found.is_empty(), "not private: {found:?}");
}
