//! `serve/healthz` and `serve/check`: `tokenledger serve`'s routes over
//! loopback, under a load generator on the same machine, 16 connections
//! kept alive: wrk (`apt-get install wrk`, 2 threads, in a process of its
//! own, as cedar-agent's figures in issue 31 were measured) when it is
//! installed, else a hyper client in the same process. `serve/healthz` is
//! the HTTP stack's own floor; `serve/check` a check by secret, allowed,
//! with `SERVE_TOKENS` tokens in the ledger (default 10,000). Prints
//! requests per second and the 99th percentile latency of each, in
//! alternating rounds.
//!
//! `cargo bench -p tokenledger-benches --bench serve`; set `SERVE_SECONDS`
//! (default 5) for the length of each round, and `SERVE_CLIENT=hyper` to
//! use the in-process client with wrk installed.

#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokenledger_authz::Ledger;
use tokenledger_benches::{company_and_admin, tags_token};
use tokenledger_events::{Actor, CompanyId};
use tokenledger_serve::{Limits, Server, ServiceKeys};

mod wrk;

const CONNECTIONS: usize = 16;
const WRK_THREADS: usize = 2;
const ROUNDS: usize = 3;
const CHECK_KEY: &str = "bench-check-key-0123456789";
const ADMIN_KEY: &str = "bench-admin-key-0123456789";

/// A ledger with `tokens` tokens of one company; the secret of the last.
fn ledger(dir: &std::path::Path, tokens: usize) -> (Arc<Ledger>, CompanyId, String) {
    let ledger = Arc::new(Ledger::open(dir).expect("a ledger"));
    let (company, admin) = company_and_admin(&ledger);
    let new = || tags_token(company);
    // Eight callers at once share the log's syncs.
    let threads = 8;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let ledger = &ledger;
            scope.spawn(move || {
                for _ in 0..tokens.saturating_sub(1) / threads {
                    ledger
                        .create_token(Actor::Teammate(admin), new())
                        .expect("a token");
                }
            });
        }
    });
    let last = ledger
        .create_token(Actor::Teammate(admin), new())
        .expect("a token");
    (ledger, company, last.secret.expose().to_owned())
}

/// Requests per second and the 99th percentile latency of `request` sent
/// to `addr` over `seconds` by 16 connections; every answer must be 200.
async fn load(
    addr: SocketAddr,
    request: Arc<dyn Fn() -> Request<Full<Bytes>> + Send + Sync>,
    seconds: Duration,
    check: &'static str,
) -> (f64, Duration) {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS)
        .build_http::<Full<Bytes>>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, stop, request) = (client.clone(), stop.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut asked = request();
                let uri = format!("http://{addr}{}", asked.uri().path());
                *asked.uri_mut() = uri.parse().expect("a uri");
                let started = Instant::now();
                let response = client.request(asked).await.expect("an answer");
                assert_eq!(response.status(), 200);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("a body")
                    .to_bytes();
                latencies.push(started.elapsed());
                assert!(body.windows(check.len()).any(|w| w == check.as_bytes()));
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a client task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    (latencies.len() as f64 / elapsed.as_secs_f64(), p99)
}

/// What wrk measures of `load` at `addr` over `seconds`, once one request
/// sent in process is seen answered 200 with `check` in its body.
async fn load_wrk(
    addr: SocketAddr,
    request: Arc<dyn Fn() -> Request<Full<Bytes>> + Send + Sync>,
    load: wrk::Load,
    seconds: Duration,
    check: &'static str,
) -> (f64, Duration) {
    self::load(addr, request, Duration::from_millis(10), check).await;
    let measured = tokio::task::spawn_blocking(move || {
        wrk::run(addr, &load, seconds, WRK_THREADS, CONNECTIONS)
    })
    .await
    .expect("wrk's thread")
    .expect("wrk measured");
    (measured.per_second, measured.p99)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then this only checks that it runs.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (seconds, tokens) = if benching {
        (
            Duration::from_secs(env("SERVE_SECONDS", 5)),
            env("SERVE_TOKENS", 10_000) as usize,
        )
    } else {
        (Duration::from_millis(100), 10)
    };
    let dir = tempfile::tempdir().expect("a directory");
    let made = Instant::now();
    let (ledger, company, secret) = ledger(dir.path(), tokens);
    eprintln!(
        "serve: {tokens} tokens made in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let keys = ServiceKeys::new(CHECK_KEY.as_bytes(), ADMIN_KEY.as_bytes()).expect("keys");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let server = Server::bind(addr, ledger, keys, Limits::default(), None).await.expect("bound");
        let addr = server.local_addr().expect("its address");
        tokio::spawn(server.run(std::future::pending()));
        let healthz: Arc<dyn Fn() -> Request<Full<Bytes>> + Send + Sync> = Arc::new(|| {
            Request::get("/healthz").body(Full::new(Bytes::new())).expect("a request")
        });
        let body = Bytes::from(
            serde_json::to_vec(&json!({"secret": secret, "scope": "tags:read", "resource": "tag_1",
                                       "location": {"global": company.to_string()}}))
            .expect("a body"),
        );
        let wrk_body = body.to_vec();
        let check: Arc<dyn Fn() -> Request<Full<Bytes>> + Send + Sync> = Arc::new(move || {
            Request::post("/v1/check")
                .header("authorization", format!("Bearer {CHECK_KEY}"))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .expect("a request")
        });
        let use_wrk = benching
            && std::env::var("SERVE_CLIENT").as_deref() != Ok("hyper")
            && wrk::available();
        let healthz_load = || wrk::Load {
            method: "GET",
            path: "/healthz".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let check_load = || wrk::Load {
            method: "POST",
            path: "/v1/check".to_owned(),
            headers: vec![
                ("Authorization", format!("Bearer {CHECK_KEY}")),
                ("Content-Type", "application/json".to_owned()),
            ],
            body: wrk_body.clone(),
        };
        let (mut floor, mut checks) = (Vec::new(), Vec::new());
        for round in 1..=if benching { ROUNDS } else { 1 } {
            let (healthz_rate, check_rate) = if use_wrk {
                (
                    load_wrk(addr, healthz.clone(), healthz_load(), seconds, "ok").await,
                    load_wrk(addr, check.clone(), check_load(), seconds, "\"allowed\":true").await,
                )
            } else {
                (
                    load(addr, healthz.clone(), seconds, "ok").await,
                    load(addr, check.clone(), seconds, "\"allowed\":true").await,
                )
            };
            if benching {
                eprintln!(
                    "serve round {round}: healthz {:.0} req/s, check {:.0} req/s ({:.1}%)",
                    healthz_rate.0,
                    check_rate.0,
                    100.0 * check_rate.0 / healthz_rate.0
                );
            }
            floor.push(healthz_rate);
            checks.push(check_rate);
        }
        let client = if use_wrk {
            format!("wrk -t{WRK_THREADS} -c{CONNECTIONS}")
        } else {
            format!("an in-process client, {CONNECTIONS} connections")
        };
        let median = |figures: &mut Vec<(f64, Duration)>| {
            figures.sort_by(|a, b| a.0.total_cmp(&b.0));
            figures[figures.len() / 2]
        };
        let (floor, check) = (median(&mut floor), median(&mut checks));
        println!(
            "serve/healthz: {client}, {:.0} req/s, p99 {:.2} ms",
            floor.0,
            floor.1.as_secs_f64() * 1e3
        );
        println!(
            "serve/check: {client}, {tokens} tokens, {:.0} req/s ({:.1}% of the floor), p99 {:.2} ms",
            check.0,
            100.0 * check.0 / floor.0,
            check.1.as_secs_f64() * 1e3
        );
    });
}
