//! The `tokenledger` binary against someone who shares the machine: its
//! files are private and never written through a link, keys stay out of
//! the data directory, secrets stay off the command line and out of its
//! messages, the process cannot be read by others of its user, and a
//! mistyped data directory is refused rather than answered as an empty log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{CREATE_ACME, Run, add_ada, binary, create_plugin, finish, json_ok, write_key};
use serde_json::Value;

/// Runs `args` on the data directory `data`.
fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = binary();
    command.arg("--data").arg(data).args(args);
    finish(command, stdin)
}

/// Runs `args` with `--json`; they must succeed, silently on stderr.
fn ok(data: &Path, args: &[&str]) -> Value {
    json_ok(args, |all| run(data, all, None))
}

/// A company, its admin, and a token; their ids and the token's secret.
struct World {
    company: String,
    admin: String,
    token: String,
    secret: String,
}

fn world(data: &Path) -> World {
    let company = ok(data, &CREATE_ACME)["company"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = ok(data, &add_ada(&company))["teammate"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = ok(data, &create_plugin(&company, &admin, "conversations:read"));
    World {
        company,
        admin,
        token: created["token"].as_str().unwrap().to_owned(),
        secret: created["secret"].as_str().unwrap().to_owned(),
    }
}

/// The head, as `verify` reports it.
fn head(data: &Path) -> Value {
    ok(data, &["verify"])["head"].clone()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Every path under `dir` (and `dir`) that is not private: directories
/// other than 0700, files other than 0600.
fn not_private(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut loose = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let wanted = if metadata.is_dir() { 0o700 } else { 0o600 };
        if mode(&path) != wanted {
            loose.push((path.clone(), mode(&path)));
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    loose
}

#[test]
fn the_data_directory_exports_and_pages_are_private_whatever_the_umask() {
    // What most shells run with; the binary inherits it.
    rustix::process::umask(rustix::fs::Mode::WGRP | rustix::fs::Mode::WOTH);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("checkpoint.key");
    write_key(&key, [3u8; 32]);
    let World { token, .. } = world(&data);
    let export = dir.path().join("export.jsonl");
    let page = dir.path().join("timeline.html");
    // The log, written without the key, takes it once verified, and from
    // then on keeps a signed head beside it.
    ok(
        &data,
        &["--checkpoint-key-file", key.to_str().unwrap(), "sign-head"],
    );
    ok(
        &data,
        &[
            "--checkpoint-key-file",
            key.to_str().unwrap(),
            "export",
            "--out",
            export.to_str().unwrap(),
        ],
    );
    ok(
        &data,
        &["timeline", &token, "--html", page.to_str().unwrap()],
    );
    ok(&data, &["compact"]);
    ok(&data, &["verify"]);
    assert_eq!(not_private(&data), Vec::new());
    assert_eq!((mode(&export), mode(&page)), (0o600, 0o600));
}

#[test]
fn timeline_html_replaces_a_link_rather_than_writing_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let World { token, .. } = world(&data);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let page = dir.path().join("timeline.html");
    std::os::unix::fs::symlink(&victim, &page).unwrap();
    ok(
        &data,
        &["timeline", &token, "--html", page.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let metadata = std::fs::symlink_metadata(&page).unwrap();
    assert!(metadata.is_file(), "{metadata:?}");
    assert!(std::fs::read_to_string(&page).unwrap().contains("<html"));
    // Run again, the page is replaced whole, and nothing is left beside it.
    ok(
        &data,
        &["timeline", &token, "--html", page.to_str().unwrap()],
    );
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "timeline.html", "victim"]);
}

#[test]
fn the_demo_on_the_current_directory_keeps_its_key_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("here");
    std::fs::create_dir(&here).unwrap();
    let mut command = binary();
    command.current_dir(&here).args(["--data", ".", "demo"]);
    let run = finish(command, None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!here.join(".sealing-key").exists());
    assert!(dir.path().join("here.sealing-key").is_file());
    assert_eq!(mode(&dir.path().join("here.sealing-key")), 0o600);
    assert_eq!(head(&here)["position"], 12);
}

#[test]
fn a_key_file_inside_the_data_directory_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    world(&data);
    let before = head(&data);
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(&data, dir.path().join("link")).unwrap();
    let inside = data.join("a.key");
    write_key(&inside, [4u8; 32]);
    let in_the_directory = inside.to_str().unwrap().to_owned();
    // The same file by a relative path, through `..` and through a link.
    let relative = format!("{}/../data/a.key", data.display());
    let linked = dir.path().join("link/a.key").to_str().unwrap().to_owned();
    for flag in ["--sealing-key-file", "--checkpoint-key-file"] {
        for key in [&in_the_directory, &relative, &linked] {
            let run = run(
                &data,
                &[flag, key, "company", "create", "--name", "X"],
                None,
            );
            assert_eq!(run.code, 2, "{flag} {key}: {}", run.stderr);
            assert!(
                run.stderr.contains("inside the data directory"),
                "{}",
                run.stderr
            );
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        }
        // Nor for a ledger about to be created: nothing is created.
        let new = dir.path().join("new");
        let mut command = binary();
        command
            .current_dir(dir.path())
            .args(["--data", "new", flag, "new/../new/k", "company", "create"])
            .args(["--name", "X"]);
        let run = finish(command, None);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(!new.exists());
    }
    assert_eq!(head(&data), before);
}

#[test]
fn a_key_file_others_can_read_is_warned_about_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("sealing.key");
    write_key(&key, "22".repeat(32));
    let key_arg = key.to_str().unwrap();
    let args = [
        "--sealing-key-file",
        key_arg,
        "company",
        "create",
        "--name",
        "A",
    ];
    let private = run(&data, &args, None);
    assert_eq!((private.code, private.stderr.as_str()), (0, ""));
    for loose in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(loose)).unwrap();
        let shared = run(&data, &args, None);
        assert_eq!(shared.code, 0, "{}", shared.stderr);
        assert_eq!(shared.stderr.lines().count(), 1, "{}", shared.stderr);
        assert!(
            shared.stderr.starts_with("tokenledger: warning: ")
                && shared.stderr.contains(key_arg)
                && shared.stderr.contains("chmod 600"),
            "{}",
            shared.stderr
        );
    }
}

#[test]
fn a_secret_anywhere_in_an_argument_is_refused_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let World {
        company,
        admin,
        secret,
        ..
    } = world(&data);
    let before = head(&data);
    // What would identify the secret: its body, in any case.
    let body = &secret[4..];
    let bearer = format!("Bearer {secret}");
    let trailing = format!("{secret} ");
    let assigned = format!("--resource={secret}");
    let typo = format!("{}8", &secret[..secret.len() - 1]);
    let upper = secret.to_uppercase();
    let in_a_path = format!("GET /conversations/{secret}");
    let dash = format!("tlk-{body}");
    let encoded = format!("TLK%5F{}", body.to_uppercase());
    let encoded_lower = format!("tlk%5f{body}");
    let dot = format!("tlk.{body}");
    let check = [
        "check",
        "--scope",
        "conversations:read",
        "--global",
        "--company",
        &company,
    ];
    let mut cases: Vec<Vec<&str>> = vec![
        // Accepted as a name before.
        vec!["company", "create", "--name", &bearer],
        vec!["company", "create", "--name", &trailing],
        // Invalid values, which clap and the parsers quote.
        vec!["token", "show", &bearer],
        vec!["token", "show", &typo],
        vec!["teammate", "add", "--company", &trailing, "--name", "X"],
        vec!["pref", "set", &admin, "--private-api-access", &bearer],
        vec!["history", "--since", &upper],
        vec!["--json", &assigned],
        // A mistyped or encoded `_`.
        vec!["history", "--token", &dash],
        vec!["history", "--token", &encoded],
        vec!["token", "show", &encoded_lower],
        vec!["history", "--since", &dot],
    ];
    for resource in [&bearer, &trailing, &typo, &upper] {
        let mut args = check.to_vec();
        args.extend(["--resource", resource.as_str()]);
        cases.push(args);
    }
    cases.push(vec![
        "check",
        "--endpoint",
        &in_a_path,
        "--resource",
        "cnv_1",
        "--global",
        "--company",
        &company,
    ]);
    for args in &cases {
        let run = run(&data, args, Some(&secret));
        assert_eq!(run.code, 2, "{args:?}: {} / {}", run.stdout, run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        let lower = run.stderr.to_lowercase();
        assert!(!lower.contains(&body[..20]), "{args:?}: {}", run.stderr);
        assert!(!run.stdout.to_lowercase().contains(&body[..20]));
    }
    assert_eq!(head(&data), before);
}

/// Whether a process of another user than the binary's (`nobody` when
/// these tests run as root, else this one) can read `/proc/PID/environ`
/// of a process of its own user: it can unless that process is
/// non-dumpable. Waits up to five seconds for it to become unreadable.
#[test]
fn the_process_cannot_be_read_by_others_of_its_user() {
    use std::os::unix::process::CommandExt;
    let root = rustix::process::geteuid().is_root();
    let as_user = |command: &mut Command| {
        if root {
            // nobody: reading another user's process is refused anyway.
            command.uid(65534).gid(65534);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut command = binary();
    command
        .current_dir(dir.path())
        .args([
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
        ])
        .args([
            "--global",
            "--company",
            "cmp_0123456789abcdef0123456789abcdef",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_user(&mut command);
    // It waits for the secret on standard input, holding it open.
    let mut child = command.spawn().unwrap();
    let environ = format!("/proc/{}/environ", child.id());
    let started = Instant::now();
    let mut readable = true;
    while readable && started.elapsed() < Duration::from_secs(5) {
        let mut cat = Command::new("cat");
        cat.arg(&environ)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cat);
        readable = cat.status().unwrap().success();
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!readable, "{environ} stayed readable by its user");
}

/// The commands that only read, or that need what only an existing ledger
/// has: each refuses a directory that holds no ledger, and creates nothing.
#[test]
fn a_missing_or_empty_data_directory_is_refused_by_every_command_but_those_that_start_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("real");
    let world = world(&elsewhere);
    let (c, a, t) = (&world.company[..], &world.admin[..], &world.token[..]);
    let out = dir.path().join("out.jsonl");
    let page = dir.path().join("page.html");
    let namespace = ["--global", "--company", c];
    let commands: Vec<Vec<&str>> = vec![
        vec!["verify"],
        vec!["history"],
        vec!["history", "--token", t],
        vec!["token", "list", "--company", c],
        vec!["token", "show", t],
        vec!["timeline", t],
        vec!["timeline", t, "--html", page.to_str().unwrap()],
        [
            &["who-can", "--scope", "conversations:read"][..],
            &namespace,
        ]
        .concat(),
        [
            &[
                "check",
                "--scope",
                "conversations:read",
                "--resource",
                "cnv_1",
            ][..],
            &namespace,
        ]
        .concat(),
        vec!["export", "--out", out.to_str().unwrap()],
        vec!["compact"],
        // Commands that write, but only to what exists.
        vec!["teammate", "add", "--company", c, "--name", "B", "--by", a],
        vec!["teammate", "role", a, "--member", "--by", a],
        vec!["teammate", "deactivate", a, "--by", a],
        vec![
            "workspace",
            "create",
            "--company",
            c,
            "--name",
            "W",
            "--by",
            a,
        ],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "N",
            "--by",
            a,
            "--feature",
            "resources",
            "--global",
            "--scope",
            "tags:read",
        ],
        vec!["token", "reveal", t, "--by", a],
        vec!["token", "delete", t, "--by", a],
        vec!["pref", "set", a, "--private-api-access", "on", "--by", a],
        vec![
            "pref",
            "set-all",
            "--company",
            c,
            "--private-api-access",
            "on",
            "--by",
            a,
        ],
    ];
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = dir.path().join("typo");
    for data in [&missing, &empty] {
        for args in &commands {
            let run = run(data, args, Some(&world.secret));
            assert_eq!(
                run.code, 2,
                "{data:?} {args:?}: {} / {}",
                run.stdout, run.stderr
            );
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
            assert!(
                run.stderr.contains("no ledger") && run.stderr.contains(data.to_str().unwrap()),
                "{args:?}: {}",
                run.stderr
            );
        }
        // Through the environment too.
        let mut command = binary();
        command.env("TOKENLEDGER_DATA", data).arg("verify");
        assert_eq!(finish(command, None).code, 2);
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert!(!out.exists() && !page.exists());
    // A new ledger is started by creating a company, or by an import.
    ok(&missing, &["company", "create", "--name", "New"]);
    assert_eq!(head(&missing)["position"], 1);
    ok(&elsewhere, &["export", "--out", out.to_str().unwrap()]);
    ok(&empty, &["import", out.to_str().unwrap()]);
    assert_eq!(head(&empty), head(&elsewhere));
}
