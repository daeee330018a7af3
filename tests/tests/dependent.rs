//! A project outside this workspace that depends on `tokenledger-authz` by
//! path builds the patched sled (`vendor/sled`, package `tokenledger-sled`),
//! not stock sled 0.34.7 from crates.io: a `[patch]` in the root manifest
//! would reach only this workspace, since dependents do not inherit it.
//!
//! The dependent is made in a temporary directory, with this workspace's
//! `Cargo.lock` so that it resolves to the same versions, and `cargo tree`
//! (offline: nothing is fetched or built) lists what it would build.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::Path;
use std::process::Command;

#[test]
fn a_dependent_by_path_builds_the_patched_sled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let authz = root.join("crates/authz");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"dependent\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\ntokenledger-authz = {{ path = {:?} }}\n\n[workspace]\n",
            authz.display().to_string()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "//! A dependent.\n").unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo tree failed: {stderr}");
    let tree = String::from_utf8(output.stdout).unwrap();
    let sleds: Vec<&str> = tree
        .lines()
        .filter(|line| {
            line.split(' ')
                .next()
                .is_some_and(|name| name.ends_with("sled"))
        })
        .collect();
    let vendored = root.join("vendor/sled");
    assert!(!sleds.is_empty(), "no sled in the tree:\n{tree}");
    for line in sleds {
        assert!(
            line.starts_with("tokenledger-sled v0.34.7")
                && line.contains(&vendored.display().to_string()),
            "a dependent builds another sled: `{line}`\n{tree}"
        );
    }
}
