//! `http_load`: the front_api example's service over loopback, with and
//! without the layer, under a load generator on the same machine: wrk
//! (`apt-get install wrk`; 2 threads, 16 connections kept alive, in a
//! process of its own) when it is installed, else a hyper client with 32
//! connections in the same process. Prints the requests per second each
//! serves (and wrk's 99th percentile), in alternating rounds, and the
//! ratio of the medians.
//!
//! `cargo bench -p tokenledger-benches --bench http_load`; set
//! `HTTP_LOAD_SECONDS` (default 5) for the length of each round, and
//! `HTTP_LOAD_CLIENT=hyper` to use the in-process client with wrk
//! installed.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod front;
mod wrk;

use front::{ALLOWED, Front, request};

const CONNECTIONS: usize = 32;
const WRK_THREADS: usize = 2;
const WRK_CONNECTIONS: usize = 16;
const ROUNDS: usize = 3;

async fn serve(service: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

/// Requests per second served at `addr` over `seconds`, all answered 200.
async fn load(addr: SocketAddr, bearer: &str, seconds: Duration) -> f64 {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS)
        .build_http::<Body>();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let uri = format!("http://{addr}{ALLOWED}");
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, done, stop) = (client.clone(), done.clone(), stop.clone());
        let (uri, bearer) = (uri.clone(), bearer.to_owned());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut asked = request(ALLOWED, &bearer);
                *asked.uri_mut() = uri.parse().expect("a uri");
                let response = client.request(asked).await.expect("an answer");
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("a body");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(seconds).await;
    let served = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client task");
    }
    served as f64 / elapsed.as_secs_f64()
}

/// Requests per second and the 99th percentile served at `addr` over
/// `seconds`, by wrk.
async fn load_wrk(addr: SocketAddr, bearer: &str, seconds: Duration) -> (f64, Duration) {
    let load = wrk::Load {
        method: "GET",
        path: ALLOWED.to_owned(),
        headers: vec![("Authorization", bearer.to_owned())],
        body: Vec::new(),
    };
    let measured = tokio::task::spawn_blocking(move || {
        wrk::run(addr, &load, seconds, WRK_THREADS, WRK_CONNECTIONS)
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
    let seconds = std::env::var("HTTP_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs);
    let seconds = if benching {
        seconds
    } else {
        Duration::from_millis(100)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let front = Front::new(&runtime);
    let use_wrk =
        benching && std::env::var("HTTP_LOAD_CLIENT").as_deref() != Ok("hyper") && wrk::available();
    runtime.block_on(async {
        let floor = serve(front.floor.clone()).await;
        let layered = serve(front.layered.clone()).await;
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 1..=if benching { ROUNDS } else { 1 } {
            if use_wrk {
                let (floor_rate, floor_p99) = load_wrk(floor, &front.bearer, seconds).await;
                let (layer_rate, layer_p99) = load_wrk(layered, &front.bearer, seconds).await;
                println!(
                    "http_load round {round}: without the layer {floor_rate:.0} req/s (p99 {floor_p99:.2?}), with it {layer_rate:.0} req/s (p99 {layer_p99:.2?}), {:.1}%",
                    100.0 * layer_rate / floor_rate
                );
                without.push(floor_rate);
                with.push(layer_rate);
            } else {
                without.push(load(floor, &front.bearer, seconds).await);
                with.push(load(layered, &front.bearer, seconds).await);
            }
        }
        let median = |figures: &mut Vec<f64>| {
            figures.sort_by(f64::total_cmp);
            figures.get(figures.len() / 2).copied().unwrap_or(0.0)
        };
        let (without, with) = (median(&mut without), median(&mut with));
        let client = if use_wrk {
            format!("wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}")
        } else {
            format!("an in-process client, {CONNECTIONS} connections")
        };
        println!(
            "http_load: {client}, median of rounds: without the layer {without:.0} req/s, with it {with:.0} req/s ({:.1}%)",
            100.0 * with / without
        );
    });
}
