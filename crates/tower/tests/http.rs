//! End to end: the example service on a loopback socket, asked by a real
//! HTTP client. Front's 401 and 403 bodies byte for byte, the forum case,
//! consistency tokens, refusals that never reach a handler, a delete
//! refused at once, and decision records that replay.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokenledger_authz::{Command, Ledger, Location, Request, authorize, fresh};
use tokenledger_events::{Actor, Requirement, Timestamp, TokenId};
use tokenledger_tower::{DecisionSink, JsonLinesSink};

#[path = "../examples/front_api/app.rs"]
mod app;
#[path = "../examples/front_api/client.rs"]
mod client;

use app::{Forum, Inboxes};
use client::Api;

const UNAUTHENTICATED: &str =
    r#"{"_error":{"status":401,"title":"Unauthenticated","message":"Invalid token"}}"#;
const FORUM_403: &str = r#"{"_error":{"status":403,"title":"Forbidden","message":"This agent is not allowed to read the \"conversation\" with ID: \"cnv_forum\""}}"#;

struct Served {
    _dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    inboxes: Arc<Inboxes>,
    forum: Forum,
    api: Api,
    bearer: String,
}

impl Served {
    async fn get(&self, path: &str) -> client::Answer {
        self.send("GET", path, &[]).await
    }

    async fn send(&self, method: &str, path: &str, extra: &[(&str, &str)]) -> client::Answer {
        let mut headers = vec![("authorization", self.bearer.as_str())];
        headers.extend_from_slice(extra);
        self.api.send(method, path, &headers).await.unwrap()
    }

    fn admin(&self, command: Command) -> u64 {
        self.ledger
            .execute(Actor::Teammate(self.forum.admin), command)
            .unwrap()
            .position()
    }
}

async fn serve(sink: Option<Arc<dyn DecisionSink>>, consistency_timeout: Duration) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    let inboxes = Arc::new(Inboxes::default());
    let forum = Forum::seed(&ledger, &inboxes).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let service = app::service(&ledger, inboxes.clone(), sink, consistency_timeout);
    tokio::spawn(async move { axum::serve(listener, service).await });
    let bearer = format!("Bearer {}", forum.secret.expose());
    Served {
        _dir: dir,
        ledger,
        inboxes,
        forum,
        api: Api::new(addr),
        bearer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_401_for_a_missing_malformed_or_unknown_bearer() {
    let served = serve(None, Duration::from_secs(2)).await;
    let unknown = format!("Bearer {}", fresh::secret().unwrap().expose());
    let basic = format!("Basic {}", served.forum.secret.expose());
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[("authorization", "Bearer")],
        &[("authorization", "Bearer not-a-secret")],
        &[("authorization", basic.as_str())],
        &[("authorization", unknown.as_str())],
        // Two headers: which one a proxy would read is not known.
        &[
            ("authorization", served.bearer.as_str()),
            ("authorization", served.bearer.as_str()),
        ],
    ];
    for headers in cases {
        let answer = served
            .api
            .send("GET", "/conversations/cnv_support", headers)
            .await
            .unwrap();
        assert_eq!(answer.status, 401, "{headers:?}");
        assert_eq!(answer.body, UNAUTHENTICATED, "{headers:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
    assert_eq!(served.inboxes.handled(), 0);
    // The same request with the one bearer is served.
    assert_eq!(served.get("/conversations/cnv_support").await.status, 200);
    assert_eq!(served.inboxes.handled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forum_thread_403_then_allowed_once_the_preference_is_on() {
    let served = serve(None, Duration::from_secs(2)).await;
    let head = served.ledger.head().position;
    let refused = served.get("/conversations/cnv_forum").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, FORUM_403);
    assert_eq!(
        refused.header("x-tokenledger-position"),
        Some(head.to_string().as_str())
    );
    assert_eq!(
        refused.header("x-tokenledger-accepted-scope"),
        Some("conversations:read")
    );
    assert!(refused.header("x-request-id").is_some());
    // The nested list needs the read scope of what it returns.
    let messages = served.get("/conversations/cnv_forum/messages").await;
    assert_eq!(messages.status, 403);
    assert_eq!(
        messages.header("x-tokenledger-accepted-scope"),
        Some("messages:read")
    );
    assert_eq!(served.inboxes.handled(), 0, "a refusal reached a handler");

    let shared = served.get("/conversations/cnv_support").await;
    assert_eq!(shared.status, 200);
    assert_eq!(served.inboxes.handled(), 1);

    served.admin(Command::SetPrivateApiAccess {
        teammate: served.forum.bob,
        allowed: true,
    });
    let allowed = served.get("/conversations/cnv_forum").await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let body: Value = serde_json::from_str(&allowed.body).unwrap();
    // The handler reads what the layer decided through the extractor.
    assert_eq!(body["decided_at"], head + 1);
    assert_eq!(body["company"], served.forum.company.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_catalog_or_locator_does_not_know_never_reaches_a_handler() {
    let served = serve(None, Duration::from_secs(2)).await;
    for (method, path, status) in [
        // A route the service has, but not an operation of the catalog.
        ("GET", "/health/x", 404),
        ("POST", "/conversations/cnv_support/messages/x", 404),
        ("HEAD", "/conversations/cnv_support", 404),
        // In the catalog, not served by this API: the locator knows nothing.
        ("GET", "/tags/tag_1", 404),
        ("GET", "/conversations/cnv_missing", 404),
        ("GET", "/conversations/..", 400),
        ("GET", "/conversations/cnv%2e%2e", 400),
    ] {
        let answer = served.send(method, path, &[]).await;
        assert_eq!(answer.status, status, "{method} {path}");
        if method != "HEAD" {
            let body: Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(body["_error"]["status"], status);
        }
    }
    assert_eq!(served.inboxes.handled(), 0);
    // Marked not guarded: served without a bearer.
    let health = served.api.send("GET", "/health", &[]).await.unwrap();
    assert_eq!((health.status.as_u16(), health.body.as_str()), (200, "ok"));
}

/// An escaped id names, to the layer, the very conversation the handler is
/// given (axum's `Path` decodes escapes): the forum's conversation spelt
/// with an escape is refused as itself, and the shared one served as
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaped_id_is_decided_as_the_handler_reads_it() {
    let served = serve(None, Duration::from_secs(2)).await;
    let refused = served.get("/conversations/cnv_%66orum").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, FORUM_403);
    assert_eq!(served.inboxes.handled(), 0);
    let shared = served.get("/conversations/cnv_%73upport").await;
    assert_eq!(shared.status, 200, "{}", shared.body);
    let body: Value = serde_json::from_str(&shared.body).unwrap();
    assert_eq!(body["id"], "cnv_support");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_token_waits_for_its_position() {
    let served = Arc::new(serve(None, Duration::from_secs(5)).await);
    let wanted = served.ledger.head().position + 1;
    let token = wanted.to_string();
    let asking = {
        let served = served.clone();
        tokio::spawn(async move {
            served
                .send(
                    "GET",
                    "/conversations/cnv_forum",
                    &[("x-tokenledger-consistency", token.as_str())],
                )
                .await
        })
    };
    // Decided now, the request would be refused: Bob's access is off.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changed = served.admin(Command::SetPrivateApiAccess {
        teammate: served.forum.bob,
        allowed: true,
    });
    assert_eq!(changed, wanted);
    let changed_at = Instant::now();
    let answer = asking.await.unwrap();
    // Woken by the publish, not by the end of its 5 s wait.
    assert!(
        changed_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        changed_at.elapsed()
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(body["decided_at"].as_u64().unwrap() >= wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_token_the_ledger_does_not_reach_is_a_503() {
    let served = serve(None, Duration::from_millis(100)).await;
    let ahead = (served.ledger.head().position + 10).to_string();
    let started = Instant::now();
    let answer = served
        .send(
            "GET",
            "/conversations/cnv_support",
            &[("x-tokenledger-consistency", ahead.as_str())],
        )
        .await;
    assert_eq!(answer.status, 503);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let malformed = served
        .send(
            "GET",
            "/conversations/cnv_support",
            &[("x-tokenledger-consistency", "-1")],
        )
        .await;
    assert_eq!(malformed.status, 400);
    // A malformed secret is refused at once: had it waited, it would have
    // been this 503.
    let garbage = served
        .api
        .send(
            "GET",
            "/conversations/cnv_support",
            &[
                ("authorization", "Bearer not-a-secret"),
                ("x-tokenledger-consistency", ahead.as_str()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(garbage.status, 401);
    assert_eq!(served.inboxes.handled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_token_is_refused_by_the_very_next_request() {
    let served = serve(None, Duration::from_secs(2)).await;
    assert_eq!(served.get("/conversations/cnv_support").await.status, 200);
    served.admin(Command::DeleteToken {
        token: served.forum.plugin,
    });
    let refused = served.get("/conversations/cnv_support").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body, UNAUTHENTICATED);
    // A deleted token learns nothing of what exists: 401, not 404.
    let missing = served.get("/conversations/cnv_missing").await;
    assert_eq!(missing.status, 401);
    assert_eq!(served.inboxes.handled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_records_are_written_and_replay_to_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    let sink = Arc::new(JsonLinesSink::open(&path, 1024).unwrap());
    let served = serve(Some(sink.clone()), Duration::from_secs(2)).await;
    served.get("/conversations/cnv_forum").await;
    served.get("/conversations/cnv_support").await;
    served.get("/conversations/cnv_missing").await;
    served
        .api
        .send("GET", "/conversations/cnv_support", &[])
        .await
        .unwrap();
    served.admin(Command::SetPrivateApiAccess {
        teammate: served.forum.bob,
        allowed: true,
    });
    served.get("/conversations/cnv_forum").await;
    served.send("DELETE", "/conversations/cnv_forum", &[]).await;
    served.admin(Command::DeleteToken {
        token: served.forum.plugin,
    });
    served.get("/conversations/cnv_support").await;
    sink.sync().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(served.forum.secret.expose()),
        "a record holds the secret"
    );
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "owner_allows_private_access",
            "allow",
            "not_found",
            "missing_bearer",
            "allow",
            "allow",
            "token_live",
        ]
    );
    let mut replayed = 0;
    for record in &records {
        let Some(request) = replayable(record) else {
            continue;
        };
        let (token, position, request) = request;
        let state = served.ledger.state_at(position).unwrap();
        let decision = authorize(&state, token, &request);
        assert_eq!(decision.position, position);
        assert_eq!(
            if decision.is_allowed() {
                "allowed"
            } else {
                "refused"
            },
            record["verdict"],
            "{record}"
        );
        assert_eq!(
            decision.refusal.map(|r| r.rule.as_str()),
            record["rule"].as_str(),
            "{record}"
        );
        replayed += 1;
    }
    // Every record that reached a decision on a located resource.
    assert_eq!(replayed, 4);
}

/// The token, position and request a record carries, if it reached the
/// decision on a located resource.
fn replayable(record: &Value) -> Option<(TokenId, u64, Request)> {
    let location = &record["location"];
    let location = if let Some(t) = location["private"].as_str() {
        Location::Private(t.parse().unwrap())
    } else if let Some(w) = location["shared"].as_str() {
        Location::Shared(w.parse().unwrap())
    } else {
        Location::Global(location["global"].as_str()?.parse().unwrap())
    };
    let requirement = match record["requirement"].as_str()? {
        "-" => Requirement::LiveToken,
        scope => Requirement::Scope(scope.parse().unwrap()),
    };
    Some((
        record["token"].as_str()?.parse().unwrap(),
        record["position"].as_u64()?,
        Request {
            requirement,
            resource: record["resource"].as_str()?.parse().unwrap(),
            location,
            at: Timestamp::from_micros(record["at_micros"].as_u64().unwrap()),
        },
    ))
}
