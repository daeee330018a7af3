//! Idempotency keys across a restart: a command retried with its key
//! after the server restarted on the same data directory is answered from
//! the log, with the same status, body and ids, marked replayed, and runs
//! nothing again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use common::{ADMIN_KEY, Answer, Running, forum};
use serde_json::{Value, json};

async fn keyed(server: &Running, path: &str, key: &str, body: &Value) -> Answer {
    server
        .api
        .send(
            "POST",
            path,
            Some(ADMIN_KEY),
            &[("idempotency-key", key)],
            Some(body),
        )
        .await
        .unwrap()
}

async fn tokens_of(server: &Running, company: &str) -> usize {
    let listed = server
        .get(&format!("/v1/companies/{company}/tokens"), ADMIN_KEY)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    listed.json().as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_retried_after_a_restart_answers_the_same_id_and_runs_nothing() {
    let server = Running::start().await;
    let body = json!({"name": "Acme"});
    let first = keyed(&server, "/v1/companies", "company-1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let head = server.ledger.head();
    let server = server.restart().await;
    let again = keyed(&server, "/v1/companies", "company-1", &body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The id the handler drew for the retry is not the answer: the
    // company first made is.
    assert_eq!(again.json(), first.json());
    assert_eq!(server.ledger.head(), head, "nothing recorded");
    // Remembered in this process from now on, as before.
    let third = keyed(&server, "/v1/companies", "company-1", &body).await;
    assert_eq!(third.json(), first.json());
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_again_after_a_restart_without_a_sealing_key_is_a_conflict_naming_it() {
    let server = Running::start().await;
    let forum = forum(&server).await;
    let body = json!({"company": forum.company, "name": "Report", "actor": forum.ada,
                      "global": true, "features": ["resources"], "scopes": ["tags:read"]});
    let first = keyed(&server, "/v1/tokens", "report-1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let token = first.json()["token"].as_str().unwrap().to_owned();
    let position = first.json()["position"].as_u64().unwrap();
    let head = server.ledger.head();
    let server = server.restart().await;
    let again = keyed(&server, "/v1/tokens", "report-1", &body).await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let message = again.json()["_error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains(&token), "{message}");
    assert!(
        message.contains(&format!("position {position}")),
        "{message}"
    );
    assert!(message.contains("not kept in plain text"), "{message}");
    assert!(
        !again.text().contains("tlk_"),
        "no secret: {}",
        again.text()
    );
    assert_eq!(server.ledger.head(), head, "nothing recorded");
    assert_eq!(tokens_of(&server, &forum.company).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_again_after_a_restart_with_a_sealing_key_is_its_first_reply_and_a_reveal()
{
    let server = Running::start_sealed().await;
    let forum = forum(&server).await;
    let body = json!({"company": forum.company, "name": "Report", "actor": forum.ada,
                      "global": true, "features": ["resources"], "scopes": ["tags:read"]});
    let first = keyed(&server, "/v1/tokens", "report-1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let token = first.json()["token"].as_str().unwrap().to_owned();
    let head = server.ledger.head();
    let server = server.restart().await;
    let again = keyed(&server, "/v1/tokens", "report-1", &body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(tokens_of(&server, &forum.company).await, 2);
    // Shown again: a reveal, recorded, and nothing else.
    let history = server
        .get(&format!("/v1/history?token={token}"), ADMIN_KEY)
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
    let page = history.json();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["TokenCreated", "TokenRevealed"], "{page}");
    assert_eq!(server.ledger.head().position, head.position + 1);
}
