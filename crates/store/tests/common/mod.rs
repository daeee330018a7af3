//! What the store's tamper tests share: reaching sled behind the log's
//! back, as someone who can write the data directory would, and copying a
//! data directory whole.

#![allow(
    dead_code,
    reason = "each test file includes this module and uses part of it"
)]

use std::path::Path;

pub mod crash;

/// Opens sled in the data directory `dir` directly and hands `act` the
/// log's `events` tree; flushes what it changed and returns what it found.
pub fn through_sled<T>(dir: &Path, act: impl FnOnce(&sled::Tree) -> T) -> T {
    // A log just dropped in this process can hold sled's file lock for a
    // moment while sled's threads finish, as `SledLog::open` also allows.
    let started = std::time::Instant::now();
    let db = loop {
        match sled::open(dir.join("sled")) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_secs(2) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => break opened.unwrap(),
        }
    };
    let events = db.open_tree("events").unwrap();
    let found = act(&events);
    db.flush().unwrap();
    found
}

/// Copies the directory `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The page that holds `position`: its key, the positions of its first and
/// last records, and its bytes (layout byte, record count, records), as
/// `crates/store/src/page.rs` lays them out under `L` ‖ last position.
pub fn page_holding(log: &sled::Tree, position: u64) -> (Vec<u8>, u64, u64, Vec<u8>) {
    let mut key = vec![b'L'];
    key.extend_from_slice(&position.to_be_bytes());
    let (key, value) = log.range(key..).next().unwrap().unwrap();
    let last = u64::from_be_bytes(key[1..].try_into().unwrap());
    let count = u64::from(u16::from_be_bytes([value[1], value[2]]));
    (key.to_vec(), last + 1 - count, last, value.to_vec())
}
