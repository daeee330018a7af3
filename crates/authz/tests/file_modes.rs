//! Everything a ledger writes in its data directory is its owner's alone,
//! whatever the umask of the process that embeds it: the log holds every
//! token's digest and sealed secret and the whole history.
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

mod common;

use common::ledger::{a_company, create_tags_token};
use rustix::fs::Mode;
use tokenledger_authz::{
    CheckpointKey, Ledger, LedgerError, LedgerOptions, OpenError, Options, SealingKey,
};

/// Every directory and file under `dir` (and `dir` itself), with its mode.
fn modes(dir: &Path) -> Vec<(String, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        found.push((
            path.display().to_string(),
            metadata.is_dir(),
            metadata.permissions().mode() & 0o777,
        ));
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    found
}

fn options() -> LedgerOptions {
    LedgerOptions {
        sealing_key: Some(SealingKey::from_bytes([7; 32])),
        checkpoint_key: Some(CheckpointKey::from_bytes([9; 32])),
        ..LedgerOptions::default()
    }
}

#[test]
fn the_data_directory_is_0700_and_every_file_in_it_0600_whatever_the_umask() {
    // What most processes run with: files 0644, directories 0755.
    rustix::process::umask(Mode::WGRP | Mode::WOTH);
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("nested").join("data");
    {
        let ledger = Ledger::open_with(&data, options()).unwrap();
        let (company, admin) = a_company(&ledger);
        create_tags_token(&ledger, admin, company);
        ledger.checkpoint().unwrap();
    }
    // Reopened (sled writes a snapshot), compacted (sled's files made
    // anew) and reopened again.
    drop(Ledger::open_with(&data, options()).unwrap());
    Ledger::compact(&data, options()).unwrap();
    drop(Ledger::open_with(&data, options()).unwrap());

    let found = modes(&data);
    assert!(
        found
            .iter()
            .any(|(path, _, _)| path.contains("checkpoints/state-")),
        "{found:?}"
    );
    let loose: Vec<_> = found
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .collect();
    assert!(loose.is_empty(), "not private: {loose:?}");
    // The parent the ledger created on the way is private too.
    let nested = std::fs::metadata(parent.path().join("nested")).unwrap();
    assert_eq!(nested.permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_reader_can_refuse_a_directory_that_holds_no_ledger_and_create_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let reading = || LedgerOptions {
        log: Options {
            must_exist: true,
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    let missing = parent.path().join("typo");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for dir in [&missing, &empty] {
        match Ledger::open_with(dir, reading()) {
            Err(LedgerError::Open(OpenError::NoLog { path, .. })) => assert_eq!(&path, dir),
            other => panic!("{dir:?}: {:?}", other.err()),
        }
        assert!(Ledger::compact(dir, reading()).is_err());
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // A ledger, even one without events, is opened.
    drop(Ledger::open(&empty).unwrap());
    drop(Ledger::open_with(&empty, reading()).unwrap());
}
