//! The front_api example's service, set up for the `http` benches: the
//! forum story in a fresh ledger, the service behind the layer, and the
//! floor: the same routes without the layer, each request carrying the
//! decision the layer would have put in its extensions (taken from one
//! request through the layer), so the handler does the same work.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use tokenledger_authz::Ledger;
use tokenledger_tower::{Authorized, LedgerLayer};
use tower::util::MapRequestLayer;
use tower::{Layer, ServiceExt};

#[allow(
    dead_code,
    reason = "the example's module also serves the example and its tests"
)]
#[path = "../crates/tower/examples/front_api/app.rs"]
mod app;

use app::{ConversationLocator, Forum, Inboxes};

/// An allowed request's path: a conversation in the Support workspace.
pub const ALLOWED: &str = "/conversations/cnv_support";
/// A refused one: the forum thread's conversation in Bob's private inbox.
#[allow(dead_code, reason = "`http_load` asks only what is allowed")]
pub const REFUSED: &str = "/conversations/cnv_forum";

/// The service, with and without the layer.
pub struct Front {
    _dir: tempfile::TempDir,
    _ledger: Ledger,
    /// `Authorization: Bearer …` for the plugin's token.
    pub bearer: String,
    /// The routes behind the layer.
    pub layered: Router,
    /// The routes alone, each request given the layer's decision.
    pub floor: Router,
}

/// A GET of `path` with `bearer`.
pub fn request(path: &str, bearer: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", bearer)
        .body(Body::empty())
        .expect("the request is well formed")
}

impl Front {
    /// Sets the story up; `runtime` runs the request that takes the
    /// layer's decision for the floor.
    pub fn new(runtime: &tokio::runtime::Runtime) -> Front {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ledger = Ledger::open(dir.path()).expect("the ledger opens");
        let inboxes = Arc::new(Inboxes::default());
        let forum = Forum::seed(&ledger, &inboxes).expect("the forum story is set up");
        let bearer = format!("Bearer {}", forum.secret.expose());
        let layered = app::service(&ledger, inboxes.clone(), None, Duration::from_secs(1));

        let taken = Arc::new(Mutex::new(None));
        let capture =
            LedgerLayer::builder(ledger.authorizer(), ConversationLocator(inboxes.clone()))
                .build()
                .layer(tower::service_fn({
                    let taken = taken.clone();
                    move |request: Request<Body>| {
                        if let Ok(mut taken) = taken.lock() {
                            *taken = request.extensions().get::<Authorized>().cloned();
                        }
                        async { Ok::<_, Infallible>(axum::response::Response::new(Body::empty())) }
                    }
                }));
        runtime
            .block_on(capture.oneshot(request(ALLOWED, &bearer)))
            .expect("the capture answers");
        let authorized = taken
            .lock()
            .expect("the capture's lock")
            .take()
            .expect("the request was allowed");
        let floor =
            app::routes(inboxes).layer(MapRequestLayer::new(move |mut request: Request<Body>| {
                request.extensions_mut().insert(authorized.clone());
                request
            }));
        Front {
            _dir: dir,
            _ledger: ledger,
            bearer,
            layered,
            floor,
        }
    }
}
