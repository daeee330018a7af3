//! `tokenledger serve` as a process: SIGTERM while clients create tokens
//! as fast as they can. The server stops accepting, answers every request
//! it took, closes the ledger and exits 0; every token in the log is one a
//! client was answered (none lost), no token was answered twice, and the
//! log verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

#[path = "../../serve/tests/common/client.rs"]
mod client;
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{CREATE_ACME, Run, add_ada, binary, finish, json_ok, write_key};
use serde_json::json;

const CHECK: &str = "check-key-of-the-serve-test-0123";
const ADMIN: &str = "admin-key-of-the-serve-test-0123";

/// A `serve` child, killed when dropped, so that a failed test leaves no
/// server holding the test's output open.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Acme and its admin Ada in the ledger at `data`, and the service's two
/// key files in `dir`.
struct Given {
    company: String,
    ada: String,
    check: PathBuf,
    admin: PathBuf,
}

/// Runs the binary on the ledger at `data`.
fn on(data: &str) -> impl Fn(&[&str]) -> Run + '_ {
    move |args| {
        let mut command = binary();
        command.arg("--data").arg(data).args(args);
        finish(command, None)
    }
}

fn given(data: &str, dir: &Path) -> Given {
    let run = on(data);
    let company = json_ok(&CREATE_ACME, &run)["company"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada = json_ok(&add_ada(&company), &run)["teammate"]
        .as_str()
        .unwrap()
        .to_owned();
    let (check, admin) = (dir.join("check.key"), dir.join("admin.key"));
    write_key(&check, CHECK);
    write_key(&admin, ADMIN);
    Given {
        company,
        ada,
        check,
        admin,
    }
}

/// Starts `tokenledger --data DATA serve` on a loopback port of its choice;
/// the child, its address and the rest of its standard error.
fn start(
    data: &str,
    check: &std::path::Path,
    admin: &std::path::Path,
) -> (Serving, SocketAddr, BufReader<std::process::ChildStderr>) {
    let mut child = binary()
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--check-key-file"])
        .arg(check)
        .arg("--admin-key-file")
        .arg(admin)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (Serving(child), addr, stderr)
}

/// Sends SIGTERM to a server `start` started and waits for it: it must
/// exit 0; returns the rest of its standard error, shown if it does not.
fn stopped(mut child: Serving, mut stderr: BufReader<std::process::ChildStderr>) -> String {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.0.wait().unwrap();
    let mut said = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
    assert_eq!(status.code(), Some(0), "serve ended with {status}: {said}");
    said
}

#[test]
fn sigterm_during_load_loses_nothing_and_answers_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let Given {
        company,
        ada,
        check,
        admin,
    } = given(&data_arg, dir.path());

    let (child, addr, stderr) = start(&data_arg, &check, &admin);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = client::Api::new(addr);
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, other) = runtime.block_on(async {
        let mut clients = Vec::new();
        for client in 0..16 {
            let (api, stop, company, ada) = (api.clone(), Arc::clone(&stop), company.clone(), ada.clone());
            clients.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut other = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("client-{client}-request-{n}");
                    let body = json!({"company": company, "name": format!("T{client}-{n}"), "actor": ada,
                                      "features": ["resources"], "global": true, "scopes": ["tags:read"]});
                    match api.send("POST", "/v1/tokens", Some(ADMIN), &[("idempotency-key", &key)], Some(&body)).await {
                        Ok(answer) if answer.status == 200 => {
                            answered.push(answer.json()["token"].as_str().unwrap().to_owned());
                        }
                        Ok(answer) => other.push(format!("{}: {}", answer.status, answer.text())),
                        // Refused connections once the server stopped accepting.
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                (answered, other)
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rest = tokio::task::spawn_blocking(move || stopped(child, stderr))
            .await
            .unwrap();
        assert!(rest.contains("the ledger is closed"), "{rest}");
        stop.store(true, Ordering::Relaxed);
        let mut answered = Vec::new();
        let mut other = Vec::new();
        for client in clients {
            let (a, o) = client.await.unwrap();
            answered.extend(a);
            other.extend(o);
        }
        (answered, other)
    });
    assert!(other.is_empty(), "answers other than 200: {other:?}");
    assert!(
        answered.len() > 20,
        "the load was too light to mean anything: {}",
        answered.len()
    );
    let unique: BTreeSet<&String> = answered.iter().collect();
    assert_eq!(unique.len(), answered.len(), "a token was answered twice");

    let run = on(&data_arg);
    let verified = json_ok(&["verify"], &run);
    assert_eq!(verified["intact"], true, "{verified}");
    let listed = json_ok(&["token", "list", "--company", &company], &run);
    let in_log: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    let answered: BTreeSet<&str> = answered.iter().map(String::as_str).collect();
    assert_eq!(
        in_log, answered,
        "every token in the log was answered, and every answer is in the log"
    );
    println!(
        "{} tokens created and answered before SIGTERM",
        answered.len()
    );
}

#[test]
fn serve_refuses_unusable_key_files_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let run = on(&data_arg);
    json_ok(&CREATE_ACME, &run);
    let key = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        write_key(&path, contents);
        path.to_str().unwrap().to_owned()
    };
    let (check, admin) = (key("check.key", CHECK), key("admin.key", ADMIN));
    let (short, same) = (key("short.key", "short"), key("same.key", CHECK));
    let inside = data.join("inside.key");
    write_key(&inside, ADMIN);
    let inside = inside.to_str().unwrap().to_owned();
    for (check, admin, says) in [
        (&short, &admin, "fewer than 16 bytes"),
        (&check, &same, "the same"),
        (&check, &inside, "inside the data directory"),
        (&check, &"missing.key".to_owned(), "missing.key"),
    ] {
        let refused = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--check-key-file",
            check,
            "--admin-key-file",
            admin,
        ]);
        assert_eq!(refused.code, 2, "{}", refused.stderr);
        assert!(refused.stderr.contains(says), "{}", refused.stderr);
    }
}

/// Two `serve` processes on one PostgreSQL database: a token made through
/// one is checked through the other with the creation's position as a
/// consistency token, and is allowed at once.
#[test]
fn a_consistency_token_holds_across_two_servers_on_postgres() {
    let Some(database) = tokenledger_postgres::testing::Database::fresh() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Given {
        company,
        ada,
        check,
        admin,
    } = given(&database.url, dir.path());
    let (one, one_addr, one_err) = start(&database.url, &check, &admin);
    let (two, two_addr, two_err) = start(&database.url, &check, &admin);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (one, two) = (client::Api::new(one_addr), client::Api::new(two_addr));
        for round in 0..5 {
            let body = json!({"company": company, "name": format!("T{round}"), "actor": ada,
                              "features": ["resources"], "global": true, "scopes": ["tags:read"]});
            let created = one.send("POST", "/v1/tokens", Some(ADMIN), &[], Some(&body)).await.unwrap();
            assert_eq!(created.status, 200, "{}", created.text());
            let created = created.json();
            let question = json!({"secret": created["secret"], "scope": "tags:read", "resource": "tag_1",
                                  "location": {"global": company},
                                  "at_least_position": created["position"]});
            let answer = two.send("POST", "/v1/check", Some(CHECK), &[], Some(&question)).await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
            let answer = answer.json();
            assert_eq!(answer["allowed"], true, "{answer}");
            assert!(answer["position"].as_u64() >= created["position"].as_u64());
        }
    });
    stopped(one, one_err);
    stopped(two, two_err);
}

/// Two `serve` processes on one PostgreSQL database: a token's creation
/// sent with one `Idempotency-Key` to both, one after the other and at
/// once, makes one token a round; the server that did not make it answers
/// from the log, naming the same token (a 409: neither keeps a sealing
/// key to show its secret again).
#[test]
fn a_keyed_creation_retried_on_another_server_on_postgres_makes_no_second_token() {
    let Some(database) = tokenledger_postgres::testing::Database::fresh() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Given {
        company,
        ada,
        check,
        admin,
    } = given(&database.url, dir.path());
    let (one, one_addr, one_err) = start(&database.url, &check, &admin);
    let (two, two_addr, two_err) = start(&database.url, &check, &admin);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rounds = 10;
    runtime.block_on(async {
        let (one, two) = (client::Api::new(one_addr), client::Api::new(two_addr));
        for round in 0..rounds {
            let body = json!({"company": company, "name": format!("T{round}"), "actor": ada,
                              "features": ["resources"], "global": true, "scopes": ["tags:read"]});
            let key = format!("create-{round}");
            let headers = [("idempotency-key", key.as_str())];
            // Even rounds one after the other, odd ones at once.
            let (a, b) = if round % 2 == 0 {
                let a = one
                    .send("POST", "/v1/tokens", Some(ADMIN), &headers, Some(&body))
                    .await
                    .unwrap();
                let b = two
                    .send("POST", "/v1/tokens", Some(ADMIN), &headers, Some(&body))
                    .await
                    .unwrap();
                (a, b)
            } else {
                let (a, b) = tokio::join!(
                    one.send("POST", "/v1/tokens", Some(ADMIN), &headers, Some(&body)),
                    two.send("POST", "/v1/tokens", Some(ADMIN), &headers, Some(&body)),
                );
                (a.unwrap(), b.unwrap())
            };
            let mut statuses = [a.status, b.status];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 409], "{} / {}", a.text(), b.text());
            let (made, replayed) = if a.status == 200 { (a, b) } else { (b, a) };
            assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
            let token = made.json()["token"].as_str().unwrap().to_owned();
            let message = replayed.json()["_error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains(&token), "{message}");
        }
        let listed = one
            .send(
                "GET",
                &format!("/v1/companies/{company}/tokens"),
                Some(ADMIN),
                &[],
                None,
            )
            .await
            .unwrap();
        assert_eq!(listed.status, 200, "{}", listed.text());
        assert_eq!(listed.json().as_array().unwrap().len(), rounds);
    });
    stopped(one, one_err);
    stopped(two, two_err);
}
