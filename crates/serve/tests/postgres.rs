//! The service over a ledger whose log is in PostgreSQL: the log's reads
//! there are queries through a blocking client, which must never run on
//! a runtime worker (the client starts a runtime of its own, and tokio
//! refuses one inside another).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::sync::Arc;

use common::{ADMIN_KEY, Running};
use tokenledger_authz::{Ledger, LedgerOptions};
use tokenledger_postgres::testing::Database;
use tokenledger_serve::Limits;

#[test]
fn readiness_and_the_export_answer_on_postgresql() {
    let Some(database) = Database::fresh() else {
        return;
    };
    // Opened, and dropped at the end, outside the runtime: both talk to
    // the database.
    let ledger = Ledger::open_postgres(&database.url, None, LedgerOptions::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Running::serve(
            Arc::clone(&ledger),
            dir,
            Limits::default(),
            LedgerOptions::default(),
        )
        .await;
        let company = server
            .admin("POST", "/v1/companies", serde_json::json!({"name": "Acme"}))
            .await;
        assert_eq!(company.status, 200, "{}", company.text());
        let ready = server
            .api
            .send("GET", "/readyz", None, &[], None)
            .await
            .expect("an answer to /readyz");
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert_eq!(ready.json()["head"], 1);
        let export = server
            .api
            .send("GET", "/v1/export", Some(ADMIN_KEY), &[], None)
            .await
            .expect("an answer to /v1/export");
        assert_eq!(export.status, 200, "{}", export.text());
        assert_eq!(export.text().lines().count(), 1, "{}", export.text());
        assert!(server.stop().await);
    });
    drop(runtime);
    drop(ledger);
}
