//! Who may call the service: no key or an unknown one is a 401, the check
//! key on an admin endpoint a 403, each in Front's envelope; the probes
//! need no key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use common::{ADMIN_KEY, CHECK_KEY, Running};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_decide_who_may_call_what() {
    let server = Running::start().await;
    for probe in ["/healthz", "/readyz"] {
        let answer = server
            .api
            .send("GET", probe, None, &[], None)
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{probe}: {}", answer.text());
    }
    let head = server.ledger.head().position;
    let create = json!({"name": "Acme"});
    for key in [
        None,
        Some("not-a-key-of-this-service"),
        Some(&ADMIN_KEY[1..]),
    ] {
        for (method, path) in [
            ("GET", "/metrics"),
            ("POST", "/v1/companies"),
            ("GET", "/v1/history"),
        ] {
            let answer = server
                .api
                .send(method, path, key, &[], Some(&create))
                .await
                .unwrap();
            assert_eq!(answer.status, 401, "{method} {path} with {key:?}");
            assert_eq!(answer.json()["_error"]["status"], 401);
            assert_eq!(answer.json()["_error"]["title"], "Unauthenticated");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        }
    }
    // Two Authorization headers are refused, even when one is good.
    let two = server
        .api
        .send(
            "GET",
            "/metrics",
            Some(CHECK_KEY),
            &[("authorization", "Bearer nothing-of-ours-0123456789")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(two.status, 401);
    let refused = server
        .api
        .send("POST", "/v1/companies", Some(CHECK_KEY), &[], Some(&create))
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["_error"]["title"], "Forbidden");
    assert_eq!(
        server.ledger.head().position,
        head,
        "a refused caller wrote nothing"
    );
    assert_eq!(server.get("/v1/verify", CHECK_KEY).await.status, 403);
    assert_eq!(server.get("/metrics", CHECK_KEY).await.status, 200);
    assert_eq!(server.get("/metrics", ADMIN_KEY).await.status, 200);
    assert_eq!(server.get("/v1/verify", ADMIN_KEY).await.status, 200);
}

#[test]
fn key_files_hold_one_usable_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let check = write("check", b"check-key-0123456789\n");
    let admin = write("admin", b"admin-key-0123456789");
    let keys = tokenledger_serve::ServiceKeys::from_files(&check, &admin).unwrap();
    assert_eq!(
        keys.role(b"check-key-0123456789"),
        Some(tokenledger_serve::Role::Check)
    );
    assert_eq!(keys.role(b"check-key-0123456789\n"), None);
    for bad in [
        &b"short"[..],
        b"two words in here, not one key",
        b"\xffnon-ascii-0123456789",
    ] {
        let path = write("bad", bad);
        assert!(tokenledger_serve::ServiceKeys::from_files(&path, &admin).is_err());
    }
    assert!(tokenledger_serve::ServiceKeys::from_files(&admin, &admin).is_err());
}
