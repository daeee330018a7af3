//! `--data postgres://...`: the same commands on a database, the migration
//! path from a data directory (export, import, the same head), damage in
//! the database found, and connection errors that name the server and
//! never the password.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::path::Path;

use common::{CREATE_ACME, Run, add_ada, binary, create_plugin, finish, json_ok};
use tokenledger_postgres::testing::Database;

fn run_on(data: &str, args: &[&str]) -> Run {
    let mut command = binary();
    command.arg("--data").arg(data).args(args);
    finish(command, None)
}

fn on<'a>(data: &'a str) -> impl Fn(&[&str]) -> Run + 'a {
    move |args| run_on(data, args)
}

/// Acme, Ada and a token, made through `data`.
fn given_a_ledger(data: &str) {
    let company = json_ok(&CREATE_ACME, on(data))["company"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = json_ok(&add_ada(&company), on(data))["teammate"]
        .as_str()
        .unwrap()
        .to_owned();
    json_ok(&create_plugin(&company, &admin, "tags:read"), on(data));
}

#[test]
fn a_directory_exported_imports_into_postgres_and_verifies_to_the_same_head() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    given_a_ledger(data);
    let export = dir.path().join("export.jsonl");
    let exported = run_on(data, &["export", "--out", export.to_str().unwrap()]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let imported = json_ok(&["import", export.to_str().unwrap()], on(&database.url));
    let on_disk = json_ok(&["verify"], on(data));
    let in_database = json_ok(&["verify"], on(&database.url));
    assert_eq!(on_disk["head"], in_database["head"]);
    assert_eq!(imported["head"], in_database["head"]);
    // The same answers on both.
    let history = |data: &str| json_ok(&["history"], on(data));
    assert_eq!(history(data), history(&database.url));
    // And a second import into the same database is refused.
    let again = run_on(&database.url, &["import", export.to_str().unwrap()]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already holds"), "{}", again.stderr);
    // Back again, into a new directory.
    let back = dir.path().join("back.jsonl");
    let exported = run_on(&database.url, &["export", "--out", back.to_str().unwrap()]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    assert_eq!(
        std::fs::read(&export).unwrap(),
        std::fs::read(Path::new(&back)).unwrap()
    );
}

#[test]
fn commands_run_on_a_database_and_bytes_changed_there_are_found() {
    let Some(database) = Database::fresh() else {
        return;
    };
    given_a_ledger(&database.url);
    let verified = json_ok(&["verify"], on(&database.url));
    assert_eq!(verified["records"], 3);
    database
        .client()
        .execute(
            "UPDATE tokenledger_events
             SET record = set_byte(record, 100, get_byte(record, 100) # 1)
             WHERE position = 2",
            &[],
        )
        .unwrap();
    let damaged = run_on(&database.url, &["verify", "--json"]);
    assert_eq!(damaged.code, 1, "{}", damaged.stderr);
    assert_eq!(damaged.json()["position"], 2);
}

#[test]
fn a_refused_connection_names_the_server_and_never_the_password() {
    let run = run_on(
        "postgres://someone:sekrit-pw@127.0.0.1:1/ledger",
        &["verify"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
    assert!(!run.stderr.contains("sekrit"), "{}", run.stderr);
    assert!(!run.stdout.contains("sekrit"), "{}", run.stdout);
}

#[test]
fn processes_writing_to_one_database_at_once_lose_nothing() {
    let Some(database) = Database::fresh() else {
        return;
    };
    let company = json_ok(&CREATE_ACME, on(&database.url))["company"]
        .as_str()
        .unwrap()
        .to_owned();
    // Three processes at a time, each adding a teammate: each appends
    // expecting the head it replayed, and decides again when another won.
    let mut children = Vec::new();
    for round in 0..4 {
        for n in 0..3 {
            let mut command = binary();
            let name = format!("Teammate {round}-{n}");
            command.args([
                "--data",
                &database.url,
                "teammate",
                "add",
                "--company",
                &company,
                "--name",
                &name,
                "--by",
                "system",
            ]);
            command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            children.push(command.spawn().unwrap());
        }
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let verified = json_ok(&["verify"], on(&database.url));
    assert_eq!(verified["records"], 1 + 12);
}
