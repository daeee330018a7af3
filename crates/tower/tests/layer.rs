//! The layer in process, through tower: what it does when the locator
//! fails, when the sink cannot keep up, and when a handler is reached
//! without it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokenledger_tower::{
    DecisionRecord, DecisionSink, LedgerLayer, LocateError, Located, Locator, Overflow, SinkError,
    Target,
};
use tower::{Layer, ServiceExt};

mod common;

use common::{Kept, Tags, answer, fixture, get_tag, inner};

/// A sink that has fallen behind and takes nothing.
struct Full_;

impl DecisionSink for Full_ {
    fn record(&self, _: DecisionRecord) -> Result<(), SinkError> {
        Err(SinkError::Full)
    }
}

#[tokio::test]
async fn a_failing_locator_is_a_503_never_an_allow() {
    let fixture = fixture();
    let calls = Arc::new(AtomicU64::new(0));
    let layer = LedgerLayer::builder(
        fixture.ledger.authorizer(),
        Tags {
            company: fixture.company,
            down: true,
        },
    )
    .build();
    let (status, body) = answer(layer.layer(inner(calls.clone())), get_tag(&fixture.secret)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        r#"{"_error":{"status":503,"title":"Service Unavailable","message":"The service is unavailable"}}"#
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_sink_that_cannot_keep_up_refuses_or_drops_as_configured() {
    let fixture = fixture();
    let tags = || Tags {
        company: fixture.company,
        down: false,
    };
    let calls = Arc::new(AtomicU64::new(0));

    let refusing = LedgerLayer::builder(fixture.ledger.authorizer(), tags())
        .sink(Full_, Overflow::Refuse)
        .build();
    let (status, _) = answer(
        refusing.layer(inner(calls.clone())),
        get_tag(&fixture.secret),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::Relaxed), 0, "allowed unrecorded");
    assert_eq!(refusing.dropped_records(), 1);

    let dropping = LedgerLayer::builder(fixture.ledger.authorizer(), tags())
        .sink(Full_, Overflow::CountAndDrop)
        .build();
    let (status, body) = answer(
        dropping.layer(inner(calls.clone())),
        get_tag(&fixture.secret),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "served"));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(dropping.dropped_records(), 1);
}

#[tokio::test]
async fn an_allowed_request_carries_the_decision_to_the_service() {
    let fixture = fixture();
    let layer = LedgerLayer::builder(
        fixture.ledger.authorizer(),
        Tags {
            company: fixture.company,
            down: false,
        },
    )
    .build();
    let seen = Arc::new(Mutex::new(None));
    let service = layer.layer(tower::service_fn({
        let seen = seen.clone();
        move |request: Request<()>| {
            *seen.lock().unwrap() = request
                .extensions()
                .get::<tokenledger_tower::Authorized>()
                .cloned();
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
        }
    }));
    let request = Request::get("/tags/tag_1")
        .header(
            "authorization",
            format!("Bearer {}", fixture.secret.expose()),
        )
        .header("x-request-id", "req-42")
        .body(())
        .unwrap();
    let (status, _) = answer(service, request).await;
    assert_eq!(status, StatusCode::OK);
    let authorized = seen.lock().unwrap().take().unwrap();
    assert_eq!(authorized.company, fixture.company);
    assert_eq!(authorized.position, fixture.ledger.head().position);
    // The layer's own id, not the client's.
    assert!(!authorized.request_id.is_empty());
    assert_ne!(authorized.request_id, "req-42");
    assert_eq!(authorized.endpoint.operation, "get-tag");
    assert_eq!(authorized.resource.as_str(), "tag_1");
}

#[tokio::test]
async fn a_handler_reached_without_the_layer_answers_500() {
    let calls = Arc::new(AtomicU64::new(0));
    let router = axum::Router::new().route(
        "/tags/{tag_id}",
        axum::routing::get({
            let calls = calls.clone();
            move |_: tokenledger_tower::Authorized| async move {
                calls.fetch_add(1, Ordering::Relaxed);
                "served"
            }
        }),
    );
    let response = router
        .oneshot(
            Request::get("/tags/tag_1")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

/// The id is one the layer made, whatever the client sent, and never one
/// given before; with a sink or without, the service (an allow) or the
/// answer's header (a refusal) and the record carry the same one. The
/// client's own id is kept beside it in the record.
#[tokio::test]
async fn a_request_id_is_the_same_in_the_record_the_extensions_and_the_answer() {
    let fixture = fixture();
    for with_sink in [false, true] {
        let kept = Kept::default();
        let builder = LedgerLayer::builder(
            fixture.ledger.authorizer(),
            Tags {
                company: fixture.company,
                down: false,
            },
        );
        let layer = if with_sink {
            builder.sink(kept.clone(), Overflow::Refuse).build()
        } else {
            builder.build()
        };
        let seen = Arc::new(Mutex::new(None));
        let service = layer.layer(tower::service_fn({
            let seen = seen.clone();
            move |request: Request<()>| {
                *seen.lock().unwrap() = request
                    .extensions()
                    .get::<tokenledger_tower::Authorized>()
                    .map(|authorized| authorized.request_id.clone());
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
            }
        }));
        let mut ids = std::collections::HashSet::new();
        let bearers = [
            format!("Bearer {}", fixture.secret.expose()),
            "Bearer not-a-secret".to_owned(),
        ];
        for (bearer, given) in bearers
            .iter()
            .flat_map(|bearer| [(bearer, None), (bearer, Some("req-7"))])
        {
            let mut request = Request::get("/tags/tag_1").header("authorization", bearer);
            if let Some(given) = given {
                request = request.header("x-request-id", given);
            }
            let response = service
                .clone()
                .oneshot(request.body(()).unwrap())
                .await
                .unwrap();
            let id = match seen.lock().unwrap().take() {
                Some(id) => {
                    assert_eq!(response.status(), StatusCode::OK);
                    assert!(response.headers().get("x-request-id").is_none());
                    id
                }
                None => {
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
                    response.headers()["x-request-id"]
                        .to_str()
                        .unwrap()
                        .to_owned()
                }
            };
            assert!(!id.is_empty());
            assert_ne!(Some(id.as_str()), given);
            assert!(ids.insert(id.clone()), "{id} was given twice");
            if with_sink {
                let record = kept.0.lock().unwrap().pop().unwrap();
                assert_eq!(record.request_id, id);
                assert_eq!(record.client_request_id.as_deref(), given);
            }
        }
        assert_eq!(kept.0.lock().unwrap().len(), 0);
    }
}

/// `Tags`, but its answer waits for a timer, as a query to the service's
/// database waits for its socket: it is ready only once the runtime wakes
/// the task that polled it (a yield would be ready on any next poll, woken
/// or not). A decision polled with another waker than the task's is never
/// finished, and the test below never ends.
struct SlowTags(Tags);

impl Locator for SlowTags {
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
        let found = self.0.locate(target);
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            found.await
        }
    }
}

/// A locator that is not ready when the service is called: the decision
/// finishes when the response future is polled, an allow still reaches the
/// service (with the decision) and a refusal still does not.
#[tokio::test]
async fn a_locator_that_waits_is_waited_for() {
    let fixture = fixture();
    let layer = LedgerLayer::builder(
        fixture.ledger.authorizer(),
        SlowTags(Tags {
            company: fixture.company,
            down: false,
        }),
    )
    .build();
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(None));
    let service = layer.layer(tower::service_fn({
        let (calls, seen) = (calls.clone(), seen.clone());
        move |request: Request<()>| {
            calls.fetch_add(1, Ordering::Relaxed);
            *seen.lock().unwrap() = request
                .extensions()
                .get::<tokenledger_tower::Authorized>()
                .cloned();
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"served")))) }
        }
    }));
    let (status, body) = answer(service.clone(), get_tag(&fixture.secret)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "served"));
    let authorized = seen.lock().unwrap().take().unwrap();
    assert_eq!(authorized.resource.as_str(), "tag_1");
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    // The token may read tags, not delete them.
    let delete = Request::delete("/tags/tag_1")
        .header(
            "authorization",
            format!("Bearer {}", fixture.secret.expose()),
        )
        .body(())
        .unwrap();
    let (status, body) = answer(service, delete).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        r#"{"_error":{"status":403,"title":"Forbidden","message":"This agent is not allowed to delete the \"tag\" with ID: \"tag_1\""}}"#
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "a refusal reached the service"
    );
}
