//! Tidy checks over the whole workspace, run by `cargo test` so that CI
//! enforces them: every Rust file opens with a `//!` line saying what it is
//! for, and no test is skipped or debugging left behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // vendor/ holds other projects' crates, as their authors wrote them.
            if name != "target" && name != "vendor" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_is_tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    // Spelled in pieces so this file does not trip its own check.
    let forbidden = [
        ["#[", "ignore"].concat(),
        ["dbg", "!("].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{}: does not start with a `//!` line",
                file.display()
            ));
        }
        for pattern in &forbidden {
            if text.contains(pattern.as_str()) {
                problems.push(format!("{}: contains `{pattern}`", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
