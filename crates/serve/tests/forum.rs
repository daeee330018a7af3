//! The forum thread's 403 over HTTP, with its explanation, through
//! `/v1/check` and through AuthZEN; then the allow once Bob turns access
//! on, asked with the change's position as a consistency token.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use common::{ADMIN_KEY, CHECK_KEY, Running, forum, forum_check};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forum_thread_is_refused_then_allowed() {
    let server = Running::start().await;
    let forum = forum(&server).await;
    let answer = server.check(forum_check(&forum)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let decision = answer.json();
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["status"], 403);
    assert_eq!(decision["rule"], "owner_allows_private_access");
    assert_eq!(decision["rule_number"], 7);
    assert_eq!(decision["needed_scope"], "conversations:read");
    assert_eq!(decision["token"], forum.token.as_str());
    assert_eq!(
        decision["error"],
        json!({"_error": {"status": 403, "title": "Forbidden",
            "message": "This agent is not allowed to read the \"conversation\" with ID: \"cnv_1\""}})
    );
    let explanation = decision["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("\"Allow access to my individual resources via the API\" is off"),
        "{explanation}"
    );
    assert!(explanation.contains("Bob"), "{explanation}");
    assert_eq!(decision["position"], forum.position);

    // The same question by token id, and by method and path.
    let mut by_id = forum_check(&forum);
    by_id.as_object_mut().unwrap().remove("secret");
    by_id["token"] = json!(forum.token);
    by_id.as_object_mut().unwrap().remove("scope");
    by_id["endpoint"] = json!("GET /conversations/cnv_1");
    let answer = server.check(by_id).await.json();
    assert_eq!(answer["rule"], "owner_allows_private_access", "{answer}");

    // AuthZEN, by secret.
    let evaluation = json!({
        "subject": {"type": "token", "properties": {"secret": forum.secret}},
        "action": {"name": "conversations:read"},
        "resource": {"type": "conversation", "id": "cnv_1",
                     "properties": {"namespace": "private", "owner": forum.bob}},
    });
    let answer = server
        .api
        .send(
            "POST",
            "/access/v1/evaluation",
            Some(CHECK_KEY),
            &[],
            Some(&evaluation),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let refused = answer.json();
    assert_eq!(refused["decision"], false);
    assert_eq!(refused["context"]["status"], 403);
    assert_eq!(refused["context"]["rule"], "owner_allows_private_access");
    assert_eq!(refused["context"]["needed_scope"], "conversations:read");
    assert_eq!(refused["context"]["error"], decision["error"]);
    assert!(
        refused["context"]["explanation"]
            .as_str()
            .unwrap()
            .contains("Bob")
    );

    // Bob turns access on; the next question waits for that position.
    let on = server
        .admin(
            "PUT",
            &format!("/v1/teammates/{}/private-api-access", forum.bob),
            json!({"allowed": true, "actor": forum.bob}),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.text());
    let position = on.json()["position"].as_u64().unwrap();
    let mut fresh = forum_check(&forum);
    fresh["at_least_position"] = json!(position);
    let allowed = server.check(fresh).await.json();
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert_eq!(allowed["status"], 200);
    assert!(allowed["position"].as_u64().unwrap() >= position);
    assert!(allowed["explanation"].is_null());

    // A position the log has not reached is waited for, then refused:
    // 422, since no receipt of this log has named it yet.
    let mut future = forum_check(&forum);
    future["at_least_position"] = json!(position + 1000);
    let limits = tokenledger_serve::Limits::default();
    let started = std::time::Instant::now();
    let beyond = server.check(future).await;
    assert_eq!(beyond.status, 422, "{}", beyond.text());
    assert!(beyond.text().contains("past the end of the log"));
    assert!(started.elapsed() >= limits.consistency_timeout);

    // A batch: the defaults completed by each item, execute_all and deny_on_first_deny.
    let batch = json!({
        "subject": {"type": "token", "id": forum.token},
        "resource": {"type": "conversation", "id": "cnv_1",
                     "properties": {"namespace": "private", "owner": forum.bob}},
        "evaluations": [
            {"action": {"name": "conversations:write"}},
            {"action": {"name": "conversations:read"}},
            {"action": {"name": "GET /conversations/cnv_1"}},
        ],
    });
    let all = server
        .api
        .send(
            "POST",
            "/access/v1/evaluations",
            Some(CHECK_KEY),
            &[],
            Some(&batch),
        )
        .await
        .unwrap()
        .json();
    let decisions: Vec<bool> = all["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect();
    assert_eq!(decisions, [false, true, true], "{all}");
    let mut first_deny = batch.clone();
    first_deny["options"] = json!({"evaluations_semantic": "deny_on_first_deny"});
    let stopped = server
        .api
        .send(
            "POST",
            "/access/v1/evaluations",
            Some(CHECK_KEY),
            &[],
            Some(&first_deny),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(
        stopped["evaluations"].as_array().unwrap().len(),
        1,
        "{stopped}"
    );

    // The discovery document names the two endpoints on the host used.
    let discovery = server
        .get("/.well-known/authzen-configuration", CHECK_KEY)
        .await
        .json();
    let base = format!("http://{}", server.api.addr);
    assert_eq!(discovery["policy_decision_point"], base.as_str());
    assert_eq!(
        discovery["access_evaluation_endpoint"],
        format!("{base}/access/v1/evaluation")
    );
    assert_eq!(
        discovery["access_evaluations_endpoint"],
        format!("{base}/access/v1/evaluations")
    );
    let _ = ADMIN_KEY;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_questions_name_the_field() {
    let server = Running::start().await;
    let forum = forum(&server).await;
    let cases = [
        (json!({"bogus": 1}), "bogus"),
        (
            json!({"secret": forum.secret, "scope": "conversations:read", "resource": "cnv_1",
                "location": {"private": forum.bob}, "extra": true}),
            "extra",
        ),
        (
            json!({"secret": forum.secret, "scope": "conversations:reed", "resource": "cnv_1",
                "location": {"private": forum.bob}}),
            "`scope`",
        ),
        (
            json!({"secret": forum.secret, "scope": "conversations:read", "resource": "cnv_1",
                "location": {"private": "tim_1"}}),
            "`location.private`",
        ),
        (
            json!({"secret": forum.secret, "token": forum.token, "scope": "conversations:read",
                "resource": "cnv_1", "location": {"private": forum.bob}}),
            "`secret`",
        ),
        (
            json!({"secret": forum.secret, "endpoint": "GET /nowhere", "resource": "cnv_1",
                "location": {"private": forum.bob}}),
            "`endpoint`",
        ),
    ];
    for (body, named) in cases {
        let answer = server.check(body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.text());
        let message = answer.json()["_error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(named), "{body}: {message}");
    }
    let evaluation = json!({
        "subject": {"type": "user", "id": forum.token},
        "action": {"name": "conversations:read"},
        "resource": {"type": "conversation", "id": "cnv_1",
                     "properties": {"namespace": "private", "owner": forum.bob}},
    });
    let answer = server
        .api
        .send(
            "POST",
            "/access/v1/evaluation",
            Some(CHECK_KEY),
            &[],
            Some(&evaluation),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert!(answer.text().contains("subject.type"), "{}", answer.text());
    let batch = json!({"evaluations": [{"subject": {"type": "token", "id": forum.token}}]});
    let answer = server
        .api
        .send(
            "POST",
            "/access/v1/evaluations",
            Some(CHECK_KEY),
            &[],
            Some(&batch),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert!(
        answer.text().contains("evaluations[0].action"),
        "{}",
        answer.text()
    );
}
