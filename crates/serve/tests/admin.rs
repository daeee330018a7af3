//! The admin endpoints end to end: every command, an idempotent retry, bad
//! input that writes nothing, and the investigations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use bytes::Bytes;
use common::{ADMIN_KEY, CHECK_KEY, Running, forum, id};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_a_retried_create() {
    let server = Running::start().await;
    let forum = forum(&server).await;
    let ok = |answer: &common::Answer| {
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    };
    let workspace = id(&server
        .admin(
            "POST",
            "/v1/workspaces",
            json!({"company": forum.company, "name": "Support", "actor": forum.ada}),
        )
        .await);
    ok(&server
        .admin(
            "PUT",
            &format!("/v1/teammates/{}/role", forum.bob),
            json!({"role": "admin", "actor": forum.ada}),
        )
        .await);
    ok(&server
        .admin(
            "PUT",
            &format!("/v1/companies/{}/private-api-access", forum.company),
            json!({"allowed": true, "actor": forum.ada}),
        )
        .await);

    // A create retried with its idempotency key: one token, the same reply.
    let body = json!({"company": forum.company, "name": "Report", "actor": forum.ada,
                      "features": ["resources"], "shared": [workspace], "scopes": ["tags:read"]});
    let key = [("idempotency-key", "create-report-1")];
    let first = server
        .api
        .send("POST", "/v1/tokens", Some(ADMIN_KEY), &key, Some(&body))
        .await
        .unwrap();
    let again = server
        .api
        .send("POST", "/v1/tokens", Some(ADMIN_KEY), &key, Some(&body))
        .await
        .unwrap();
    assert_eq!(ok(&first), ok(&again));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let report = first.json()["token"].as_str().unwrap().to_owned();
    let tokens = ok(&server
        .get(
            &format!("/v1/companies/{}/tokens", forum.company),
            ADMIN_KEY,
        )
        .await);
    assert_eq!(tokens.as_array().unwrap().len(), 2, "{tokens}");
    // The same key with another request is refused, and writes nothing.
    let head = server.ledger.head().position;
    let mut other = body.clone();
    other["name"] = json!("Another");
    let reused = server
        .api
        .send("POST", "/v1/tokens", Some(ADMIN_KEY), &key, Some(&other))
        .await
        .unwrap();
    assert_eq!(reused.status, 422, "{}", reused.text());
    assert_eq!(server.ledger.head().position, head);

    let shown = ok(&server.get(&format!("/v1/tokens/{report}"), ADMIN_KEY).await);
    assert_eq!(shown["name"], "Report");
    // This server has no sealing key: a reveal is a conflict, recorded nowhere.
    let reveal = server
        .admin(
            "POST",
            &format!("/v1/tokens/{report}/reveal"),
            json!({"actor": forum.ada}),
        )
        .await;
    assert_eq!(reveal.status, 409, "{}", reveal.text());
    let deleted = server
        .api
        .send(
            "DELETE",
            &format!("/v1/tokens/{report}?actor={}", forum.ada),
            Some(ADMIN_KEY),
            &[],
            None,
        )
        .await
        .unwrap();
    ok(&deleted);
    let again = server
        .api
        .send(
            "DELETE",
            &format!("/v1/tokens/{report}?actor={}", forum.ada),
            Some(ADMIN_KEY),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.text());
    ok(&server
        .admin(
            "POST",
            &format!("/v1/teammates/{}/deactivate", forum.bob),
            json!({"actor": forum.ada}),
        )
        .await);
    // A member may not create tokens: refused by the rules.
    let carl = id(&server
        .admin(
            "POST",
            "/v1/teammates",
            json!({"company": forum.company, "name": "Carl", "actor": forum.ada}),
        )
        .await);
    let mut by_member = body.clone();
    by_member["actor"] = json!(carl);
    let refused = server.admin("POST", "/v1/tokens", by_member).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_writes_nothing() {
    let server = Running::start().await;
    let forum = forum(&server).await;
    let head = server.ledger.head().position;
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "POST",
            "/v1/companies".into(),
            json!({"name": "Acme", "extra": 1}),
            400,
            "extra",
        ),
        ("POST", "/v1/companies".into(), json!({}), 400, "name"),
        (
            "POST",
            "/v1/teammates".into(),
            json!({"company": "cmp_nope", "name": "X", "actor": "system"}),
            400,
            "`company`",
        ),
        (
            "POST",
            "/v1/teammates".into(),
            json!({"company": forum.company, "name": "X", "actor": "nobody"}),
            400,
            "`actor`",
        ),
        (
            "POST",
            "/v1/tokens".into(),
            json!({"company": forum.company, "name": "X", "actor": forum.ada, "scopes": ["nope"]}),
            400,
            "`scopes[0]`",
        ),
        (
            "POST",
            "/v1/tokens".into(),
            json!({"company": forum.company, "name": "X", "actor": forum.ada, "features": ["resources"], "expires_at": "2001-01-01T00:00:00Z", "global": true, "scopes": ["tags:read"]}),
            422,
            "expir",
        ),
        (
            "PUT",
            format!("/v1/teammates/{}/role", forum.bob),
            json!({"role": "boss", "actor": forum.ada}),
            400,
            "`role`",
        ),
        (
            "POST",
            "/v1/workspaces".into(),
            json!({"company": "cmp_00000000000000000000000000000000", "name": "W", "actor": forum.ada}),
            422,
            "cmp_",
        ),
    ];
    for (method, path, body, status, named) in cases {
        let answer = server.admin(method, &path, body.clone()).await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{path} {body}: {}",
            answer.text()
        );
        let message = answer.json()["_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(named), "{path} {body}: {message}");
    }
    let malformed = server
        .api
        .send_bytes(
            "POST",
            "/v1/companies",
            Some(ADMIN_KEY),
            &[],
            Bytes::from_static(b"{\"name\": "),
        )
        .await
        .unwrap();
    assert_eq!(malformed.status, 400);
    let unlabelled = server
        .api
        .send("POST", "/v1/companies", Some(ADMIN_KEY), &[], None)
        .await
        .unwrap();
    assert_eq!(unlabelled.status, 400, "{}", unlabelled.text());
    let huge = Bytes::from(format!("{{\"name\": \"{}\"}}", "a".repeat(100 * 1024)));
    let too_large = server
        .api
        .send_bytes("POST", "/v1/companies", Some(ADMIN_KEY), &[], huge)
        .await
        .unwrap();
    assert_eq!(too_large.status, 413, "{}", too_large.text());
    assert_eq!(too_large.json()["_error"]["status"], 413);
    let nowhere = server.get("/v1/nowhere", CHECK_KEY).await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.json()["_error"]["status"], 404);
    assert_eq!(server.ledger.head().position, head, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn investigations() {
    let server = Running::start().await;
    let forum = forum(&server).await;
    let head = server.ledger.head().position;
    // History, three events a page, followed by its cursor.
    let mut positions = Vec::new();
    let mut path = "/v1/history?limit=3".to_owned();
    loop {
        let page = server.get(&path, ADMIN_KEY).await.json();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 3);
        positions.extend(events.iter().map(|e| e["position"].as_u64().unwrap()));
        match page["next_cursor"].as_u64() {
            Some(cursor) => path = format!("/v1/history?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    // A filtered history, paged too.
    let page = server
        .get(
            &format!("/v1/history?token={}&limit=1", forum.token),
            ADMIN_KEY,
        )
        .await
        .json();
    assert_eq!(page["events"][0]["type"], "TokenCreated", "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    assert_eq!(
        server.get("/v1/history?limit=0", ADMIN_KEY).await.status,
        400
    );
    assert_eq!(
        server.get("/v1/history?bogus=1", ADMIN_KEY).await.status,
        400
    );

    let timeline = server
        .get(&format!("/v1/tokens/{}/timeline", forum.token), ADMIN_KEY)
        .await;
    assert_eq!(timeline.status, 200, "{}", timeline.text());
    assert_eq!(timeline.json()["token"], forum.token.as_str());
    let page = server
        .get(
            &format!("/v1/tokens/{}/timeline.html", forum.token),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains("<svg"), "{}", page.text());

    let who = server
        .get(
            &format!("/v1/who-can?scope=conversations:read&private={}", forum.bob),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(
        who.json()["tokens"].as_array().unwrap().len(),
        0,
        "Bob's access is off"
    );

    let verified = server.get("/v1/verify", ADMIN_KEY).await.json();
    assert_eq!(verified["intact"], true);
    assert_eq!(verified["records"], head);

    let export = server.get("/v1/export", ADMIN_KEY).await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = export
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, head);
    assert_eq!(lines[0]["position"], 1);
    // The export is the CLI's: an import takes it.
    let file = server.dir.path().join("export.jsonl");
    std::fs::write(&file, export.text()).unwrap();
    let imported = tokenledger_authz::Ledger::import(
        &server.dir.path().join("imported"),
        &file,
        None,
        tokenledger_authz::LedgerOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(imported.records, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_is_recorded_once_per_idempotency_key() {
    let server = Running::start_sealed().await;
    let forum = forum(&server).await;
    let path = format!("/v1/tokens/{}/reveal", forum.token);
    let body = json!({"actor": forum.ada});
    let key = [("idempotency-key", "reveal-1")];
    let first = server
        .api
        .send("POST", &path, Some(ADMIN_KEY), &key, Some(&body))
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["secret"], forum.secret.as_str());
    let again = server
        .api
        .send("POST", &path, Some(ADMIN_KEY), &key, Some(&body))
        .await
        .unwrap();
    assert_eq!(again.json(), first.json());
    let shown = server
        .get(&format!("/v1/tokens/{}", forum.token), ADMIN_KEY)
        .await
        .json();
    assert_eq!(shown["reveals"].as_array().unwrap().len(), 1, "{shown}");
    // The decisions made so far are counted in /metrics.
    server.check(common::forum_check(&forum)).await;
    let metrics = server.get("/metrics", CHECK_KEY).await.text();
    assert!(
        metrics.contains(
            "tokenledger_decisions_total{verdict=\"refuse\",rule=\"owner_allows_private_access\"}"
        ),
        "{metrics}"
    );
}
