//! The bounds on a request: a connection that sends nothing is closed
//! after the idle timeout, and a request that takes longer than the
//! request timeout is answered 503 in Front's envelope.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Running, forum, forum_check};
use serde_json::json;
use tokenledger_serve::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn short() -> Limits {
    Limits {
        idle_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(400),
        consistency_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed() {
    let server = Running::start_with(short()).await;
    for after_a_request in [false, true] {
        let mut stream = tokio::net::TcpStream::connect(server.api.addr)
            .await
            .unwrap();
        let started = Instant::now();
        let mut buffer = vec![0; 4096];
        if after_a_request {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
        }
        // Nothing more is sent: the server closes the connection.
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "an idle connection (after a request: {after_a_request}) stayed open"
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_is_answered_503() {
    let server = Running::start_with(short()).await;
    let forum = forum(&server).await;
    let mut waiting = forum_check(&forum);
    waiting["at_least_position"] = json!(forum.position + 100);
    let started = Instant::now();
    let answer = server.check(waiting).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        answer.text().contains("took longer than 400 ms"),
        "{}",
        answer.text()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
