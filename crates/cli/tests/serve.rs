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
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{CREATE_ACME, add_ada, binary, finish, json_ok, write_key};
use serde_json::json;

const CHECK: &str = "check-key-of-the-serve-test-0123";
const ADMIN: &str = "admin-key-of-the-serve-test-0123";

#[test]
fn sigterm_during_load_loses_nothing_and_answers_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut command = binary();
        command.arg("--data").arg(&data_arg).args(args);
        finish(command, None)
    };
    let company = json_ok(&CREATE_ACME, run)["company"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada = json_ok(&add_ada(&company), run)["teammate"]
        .as_str()
        .unwrap()
        .to_owned();
    let (check, admin) = (dir.path().join("check.key"), dir.path().join("admin.key"));
    write_key(&check, CHECK);
    write_key(&admin, ADMIN);

    let mut child = binary()
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--check-key-file"])
        .arg(&check)
        .arg("--admin-key-file")
        .arg(&admin)
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
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        assert_eq!(status.code(), Some(0), "serve ended with {status}: {rest}");
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

    let verified = json_ok(&["verify"], run);
    assert_eq!(verified["intact"], true, "{verified}");
    let listed = json_ok(&["token", "list", "--company", &company], run);
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
