//! For tests (feature `testing`): a PostgreSQL server, and a fresh
//! database for each test; or a throwaway cluster ([`Cluster`]) for a test
//! that stops or restarts the server.
//!
//! The server is `$TOKENLEDGER_TEST_POSTGRES` when set, else the local one
//! at 127.0.0.1:5432 as user `postgres`. Without one, the tests skip with
//! a loud message, except in CI (`$CI`, or
//! `TOKENLEDGER_REQUIRE_POSTGRES=1`, which `.ci/run` sets), where they
//! fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod cluster;

use std::sync::atomic::{AtomicU64, Ordering};

use postgres::{Client, NoTls};

pub use cluster::Cluster;

const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of a server to test against, if there is one.
pub fn server() -> Option<String> {
    let url = std::env::var("TOKENLEDGER_TEST_POSTGRES").unwrap_or_else(|_| LOCAL.to_owned());
    match Client::connect(&url, NoTls) {
        Ok(_) => Some(url),
        Err(error) => {
            if required() {
                panic!("no PostgreSQL server for the tests ({error}); CI never skips them");
            }
            eprintln!(
                "\n*** SKIPPED: no PostgreSQL server for the tests ({error}). Set \
                 $TOKENLEDGER_TEST_POSTGRES, or run one at 127.0.0.1:5432 (user postgres, \
                 trust auth). ***\n"
            );
            None
        }
    }
}

/// Whether the tests must not skip: in CI (`$CI`, or
/// `TOKENLEDGER_REQUIRE_POSTGRES=1`).
fn required() -> bool {
    std::env::var_os("CI").is_some()
        || std::env::var("TOKENLEDGER_REQUIRE_POSTGRES").as_deref() == Ok("1")
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map_or(0, |scheme| scheme + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// A database of its own, dropped (with its connections) when this is.
pub struct Database {
    server: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl Database {
    /// A new database on the test server, or `None` (said loudly) when
    /// there is none and the tests may skip.
    pub fn fresh() -> Option<Database> {
        Some(Database::create(&server()?))
    }

    /// A new database on `server`.
    pub fn create(server: &str) -> Database {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "tokenledger_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin = Client::connect(server, NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Database {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        }
    }

    /// A plain connection to it, to act behind the log's back.
    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.server, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
