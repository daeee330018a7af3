//! What the layer waits for and when it decides: consistency tokens held
//! to a bound, the decision's time taken after a wait, and a ledger that
//! closes while the locator is asked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{Request, StatusCode};
use tokenledger_authz::{Command, Ledger, Location};
use tokenledger_events::{Actor, CompanyId, Secret, Timestamp};
use tokenledger_tower::{LedgerLayer, LocateError, Located, Locator, Overflow, Target};
use tower::Layer;

mod common;

use common::{Fixture, Kept, Tags, answer, fixture, fixture_expiring, inner};

fn get_tag_after(secret: &Secret, position: u64) -> Request<()> {
    Request::get("/tags/tag_1")
        .header("authorization", format!("Bearer {}", secret.expose()))
        .header("x-tokenledger-consistency", position.to_string())
        .body(())
        .unwrap()
}

/// Moves the log's head on by one.
fn a_change(fixture: &Fixture) -> u64 {
    fixture
        .ledger
        .execute(
            Actor::Teammate(fixture.admin),
            Command::SetPrivateApiAccess {
                teammate: fixture.admin,
                allowed: true,
            },
        )
        .unwrap()
        .position()
}

/// With one request waiting and room for one, the next that would wait is
/// refused at once; once the first is done, a request waits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_their_consistency_tokens_are_bounded() {
    let fixture = Arc::new(fixture());
    let kept = Kept::default();
    let layer = LedgerLayer::builder(
        fixture.ledger.authorizer(),
        Tags {
            company: fixture.company,
            down: false,
        },
    )
    .sink(kept.clone(), Overflow::Refuse)
    .consistency_timeout(Duration::from_millis(600))
    .max_waiting(1)
    .build();
    let service = layer.layer(inner(Arc::new(AtomicU64::new(0))));
    let head = fixture.ledger.head().position;

    let first = tokio::spawn(answer(
        service.clone(),
        get_tag_after(&fixture.secret, head + 100),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, _) = answer(service.clone(), get_tag_after(&fixture.secret, head + 100)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(300), "it waited");
    assert_eq!(
        kept.0.lock().unwrap().pop().unwrap().reason,
        "too_many_waiting"
    );
    // A token the state has reached takes no room.
    let (status, _) = answer(service.clone(), get_tag_after(&fixture.secret, head)).await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(first.await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        kept.0.lock().unwrap().pop().unwrap().reason,
        "not_yet_applied"
    );
    // Its room is free again: the next waits, and is answered once the
    // ledger reaches its position.
    let next = tokio::spawn(answer(service, get_tag_after(&fixture.secret, head + 1)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a_change(&fixture), head + 1);
    assert_eq!(next.await.unwrap().0, StatusCode::OK);
}

/// The decision is made when the wait ends: a token that expired while its
/// request waited is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_its_request_waits_is_refused() {
    let expires = SystemTime::now() + Duration::from_millis(300);
    let fixture = Arc::new(fixture_expiring(Some(Timestamp::from_system_time(expires))));
    let layer = LedgerLayer::builder(
        fixture.ledger.authorizer(),
        Tags {
            company: fixture.company,
            down: false,
        },
    )
    .consistency_timeout(Duration::from_secs(5))
    .build();
    let service = layer.layer(inner(Arc::new(AtomicU64::new(0))));
    let wanted = fixture.ledger.head().position + 1;
    let waiting = tokio::spawn(answer(service, get_tag_after(&fixture.secret, wanted)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a_change(&fixture), wanted);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// Tags, but asking drops the ledger: the decision after it finds the
/// ledger closed.
struct Closing {
    ledger: Mutex<Option<Ledger>>,
    company: CompanyId,
}

impl Locator for Closing {
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
        drop(self.ledger.lock().unwrap().take());
        let found = target.first_parameter().map(|id| Located {
            resource: id.parse().unwrap(),
            location: Location::Global(self.company),
        });
        async move { Ok(found) }
    }
}

/// A ledger that closes while the locator is asked decides at no position:
/// neither the answer nor the record claims one.
#[tokio::test]
async fn a_ledger_closed_while_locating_decides_at_no_position() {
    let Fixture {
        dir: _dir,
        ledger,
        company,
        secret,
        ..
    } = fixture();
    let kept = Kept::default();
    let layer = LedgerLayer::builder(
        ledger.authorizer(),
        Closing {
            ledger: Mutex::new(Some(ledger)),
            company,
        },
    )
    .sink(kept.clone(), Overflow::Refuse)
    .build();
    let calls = Arc::new(AtomicU64::new(0));
    let request = Request::get("/tags/tag_1")
        .header("authorization", format!("Bearer {}", secret.expose()))
        .body(())
        .unwrap();
    let response = tower::ServiceExt::oneshot(layer.layer(inner(calls)), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("x-tokenledger-position").is_none());
    let record = kept.0.lock().unwrap().pop().unwrap();
    assert_eq!(record.reason, "ledger_closed");
    assert_eq!(record.position, None);
}

/// Tags, found after `delay` spent in the call itself (a blocking client)
/// or in the future (an async query).
struct Slow {
    company: CompanyId,
    delay: Duration,
    blocking: bool,
}

impl Locator for Slow {
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
        if self.blocking {
            std::thread::sleep(self.delay);
        }
        let found = target.first_parameter().map(|id| Located {
            resource: id.parse().unwrap(),
            location: Location::Global(self.company),
        });
        let wait = (!self.blocking).then_some(self.delay);
        async move {
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            Ok(found)
        }
    }
}

/// The decision is made when the locator has answered, however it took
/// its time: a token that expired meanwhile is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_the_locator_looks_is_refused() {
    for blocking in [false, true] {
        let expires = SystemTime::now() + Duration::from_millis(300);
        let fixture = fixture_expiring(Some(Timestamp::from_system_time(expires)));
        let locator = Slow {
            company: fixture.company,
            delay: Duration::from_millis(600),
            blocking,
        };
        let layer = LedgerLayer::builder(fixture.ledger.authorizer(), locator).build();
        let calls = Arc::new(AtomicU64::new(0));
        let (status, body) = answer(
            layer.layer(inner(calls.clone())),
            common::get_tag(&fixture.secret),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "blocking: {blocking}: {body}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
