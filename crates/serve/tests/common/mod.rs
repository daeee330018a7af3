//! A server over a fresh ledger on a loopback port, and the forum thread's
//! world made through its admin endpoints.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test harness fails loudly at the first surprise; each test file uses part of it"
)]

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokenledger_authz::{Ledger, LedgerOptions, SealingKey};
use tokenledger_serve::{Limits, Server, ServiceKeys};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use client::{Answer, Api};

pub const CHECK_KEY: &str = "check-key-for-the-tests-0123456789";
pub const ADMIN_KEY: &str = "admin-key-for-the-tests-0123456789";

/// A server running in this process.
pub struct Running {
    pub api: Api,
    pub ledger: Arc<Ledger>,
    pub dir: tempfile::TempDir,
    limits: Limits,
    options: LedgerOptions,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<bool>>,
}

impl Running {
    pub async fn start() -> Running {
        Running::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> Running {
        Running::start_full(limits, LedgerOptions::default()).await
    }

    /// With a sealing key, so that secrets can be revealed.
    pub async fn start_sealed() -> Running {
        let options = LedgerOptions {
            sealing_key: Some(SealingKey::from_bytes([7; 32])),
            ..LedgerOptions::default()
        };
        Running::start_full(Limits::default(), options).await
    }

    pub async fn start_full(limits: Limits, options: LedgerOptions) -> Running {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Running::start_in(dir, limits, options).await
    }

    /// Stops the server, closes its ledger, and starts both again on the
    /// same data directory, on another port: what the process knew in
    /// memory is gone.
    pub async fn restart(mut self) -> Running {
        assert!(self.stop().await, "the server stopped with work in flight");
        let Running {
            ledger,
            dir,
            limits,
            options,
            ..
        } = self;
        // The last handle closes the log; tasks the server ran may hold
        // one for a moment after it stopped.
        let mut ledger = ledger;
        for _ in 0..1000 {
            match Arc::try_unwrap(ledger) {
                Ok(closed) => {
                    drop(closed);
                    return Running::start_in(dir, limits, options).await;
                }
                Err(shared) => {
                    ledger = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        panic!("the ledger is still held 10 s after the server stopped");
    }

    async fn start_in(dir: tempfile::TempDir, limits: Limits, options: LedgerOptions) -> Running {
        let ledger = Arc::new(
            Ledger::open_with(&dir.path().join("data"), options.clone()).expect("a ledger"),
        );
        Running::serve(ledger, dir, limits, options).await
    }

    /// Serves `ledger`, opened already (on PostgreSQL, say); `dir` and
    /// `options` are what a restart would open it with again.
    pub async fn serve(
        ledger: Arc<Ledger>,
        dir: tempfile::TempDir,
        limits: Limits,
        options: LedgerOptions,
    ) -> Running {
        let keys = ServiceKeys::new(CHECK_KEY.as_bytes(), ADMIN_KEY.as_bytes()).expect("keys");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let server = Server::bind(addr, Arc::clone(&ledger), keys, limits, None)
            .await
            .expect("bound");
        let api = Api::new(server.local_addr().expect("its address"));
        let (stop, stopped) = oneshot::channel();
        let served = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            api,
            ledger,
            dir,
            limits,
            options,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops accepting, waits for what is in flight; whether all finished.
    pub async fn stop(&mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.served.take() {
            Some(served) => served.await.unwrap_or(false),
            None => true,
        }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Value) -> Answer {
        self.api
            .send(method, path, Some(ADMIN_KEY), &[], Some(&body))
            .await
            .expect("an answer")
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.api
            .send("GET", path, Some(key), &[], None)
            .await
            .expect("an answer")
    }

    pub async fn check(&self, body: Value) -> Answer {
        self.api
            .send("POST", "/v1/check", Some(CHECK_KEY), &[], Some(&body))
            .await
            .expect("an answer")
    }
}

/// The forum thread's world: Acme, Ada (admin) and Bob (member, whose
/// private API access is off, as it starts), and a plugin's token with the
/// private namespace and `conversations:read`.
pub struct Forum {
    pub company: String,
    pub ada: String,
    pub bob: String,
    pub token: String,
    pub secret: String,
    pub position: u64,
}

pub fn id(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["id"].as_str().expect("an id").to_owned()
}

pub async fn forum(server: &Running) -> Forum {
    let company = id(&server
        .admin("POST", "/v1/companies", json!({"name": "Acme"}))
        .await);
    let ada = id(&server
        .admin(
            "POST",
            "/v1/teammates",
            json!({"company": company, "name": "Ada", "admin": true, "actor": "system"}),
        )
        .await);
    let bob = id(&server
        .admin(
            "POST",
            "/v1/teammates",
            json!({"company": company, "name": "Bob", "actor": "system"}),
        )
        .await);
    let created = server
        .admin(
            "POST",
            "/v1/tokens",
            json!({"company": company, "name": "Forum plugin", "actor": ada,
                   "features": ["resources"], "private": true, "scopes": ["conversations:read"]}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let created = created.json();
    Forum {
        company,
        ada,
        bob,
        token: created["token"].as_str().expect("a token").to_owned(),
        secret: created["secret"].as_str().expect("a secret").to_owned(),
        position: created["position"].as_u64().expect("a position"),
    }
}

/// The forum thread's question: the plugin reads a conversation in Bob's
/// private inbox.
pub fn forum_check(forum: &Forum) -> Value {
    json!({"secret": forum.secret, "scope": "conversations:read", "resource": "cnv_1",
           "location": {"private": forum.bob}})
}
