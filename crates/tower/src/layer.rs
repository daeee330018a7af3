//! The layer and its service: bearer, consistency, catalog, locator,
//! decision, record; then the inner service, or Front's answer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response};
use tokenledger_authz::{Authorizer, Location, Reason, Refusal, Rule};
use tokenledger_events::{
    CompanyId, Endpoint, EndpointError, Method, Requirement, ResourceId, Secret, Timestamp,
    TokenId, resolve_endpoint,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::headers::{Once, Read};
use crate::locate::{Locator, Target};
use crate::record::{DecisionRecord, DecisionSink, Overflow, SinkError, Verdict};
use crate::rejection::Rejection;

/// Request header: a log position the decision must not be older than (a
/// consistency token, as SpiceDB's ZedToken). The layer waits until the
/// ledger has applied it, up to its timeout, and refuses (503) after.
pub const CONSISTENCY_HEADER: HeaderName = HeaderName::from_static("x-tokenledger-consistency");
/// Response header of a refusal: the log position the decision was made at.
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("x-tokenledger-position");
/// Response header of a refusal: the scope the endpoint needs, as GitHub's
/// `X-Accepted-GitHub-Permissions` says which permissions would have worked.
pub const ACCEPTED_SCOPE_HEADER: HeaderName =
    HeaderName::from_static("x-tokenledger-accepted-scope");
/// The request id: the one the layer made, in its record and on refusals.
/// The client's own, when it sends a usable one, is kept beside it
/// ([`DecisionRecord::client_request_id`]): a client that could pick the
/// record's id could give its requests the ids of others'.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// How long a request waits for its consistency token by default.
pub const DEFAULT_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many requests may wait for their consistency tokens at once by
/// default; more are refused (503) at once.
pub const DEFAULT_MAX_WAITING: usize = 1024;

/// What the layer decided for an allowed request, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authorized {
    /// The request's id, as its decision record has it: one the layer made.
    pub request_id: String,
    /// The token the bearer's secret named.
    pub token: TokenId,
    /// The token's company.
    pub company: CompanyId,
    /// The log position the request was allowed at.
    pub position: u64,
    /// The catalog's operation.
    pub endpoint: &'static Endpoint,
    /// The resource, as the locator found it.
    pub resource: ResourceId,
    /// Where it lives.
    pub location: Location,
}

struct Shared<L> {
    authorizer: Authorizer,
    locator: L,
    sink: Option<Box<dyn DecisionSink>>,
    overflow: Overflow,
    dropped: AtomicU64,
    unguarded: Vec<(http::Method, String)>,
    consistency_timeout: Duration,
    /// Requests waiting for their consistency tokens, and how many may.
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Request ids the layer makes: the process's start and id, then a
    /// count, so two processes' ids do not meet.
    id_prefix: String,
    next_id: AtomicU64,
}

/// Sets up a [`LedgerLayer`].
pub struct LedgerLayerBuilder<L> {
    shared: Shared<L>,
}

impl<L: Locator> LedgerLayerBuilder<L> {
    /// Writes every decision to `sink`; `overflow` says what happens when the
    /// sink cannot take one. Without a sink, nothing is recorded.
    pub fn sink(mut self, sink: impl DecisionSink, overflow: Overflow) -> Self {
        self.shared.sink = Some(Box::new(sink));
        self.shared.overflow = overflow;
        self
    }

    /// Passes `method` `path` (exactly) to the service without a decision
    /// or a record: a health check, say. Every other request must be an
    /// operation of the catalog.
    pub fn unguarded(mut self, method: http::Method, path: &str) -> Self {
        self.shared.unguarded.push((method, path.to_owned()));
        self
    }

    /// How long a request waits for its consistency token
    /// ([`DEFAULT_CONSISTENCY_TIMEOUT`] unless set).
    pub fn consistency_timeout(mut self, timeout: Duration) -> Self {
        self.shared.consistency_timeout = timeout;
        self
    }

    /// How many requests may wait for their consistency tokens at once
    /// ([`DEFAULT_MAX_WAITING`] unless set); more are refused (503) at
    /// once. Anyone can send a well-formed secret with a position the log
    /// has not reached, so without a bound, waiting requests would pile up.
    pub fn max_waiting(mut self, max: usize) -> Self {
        self.shared.max_waiting = max;
        self
    }

    /// The layer.
    pub fn build(self) -> LedgerLayer<L> {
        LedgerLayer {
            shared: Arc::new(self.shared),
        }
    }
}

/// A tower layer that decides each request with the ledger before the
/// service sees it. A refusal is answered with Front's status and body and
/// the inner service is never called; an allow reaches it with
/// [`Authorized`] in the request's extensions.
pub struct LedgerLayer<L> {
    shared: Arc<Shared<L>>,
}

impl<L> Clone for LedgerLayer<L> {
    fn clone(&self) -> Self {
        LedgerLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<L: Locator> LedgerLayer<L> {
    /// Starts a layer deciding with `authorizer`, asking `locator` where
    /// resources live.
    pub fn builder(authorizer: Authorizer, locator: L) -> LedgerLayerBuilder<L> {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros());
        LedgerLayerBuilder {
            shared: Shared {
                authorizer,
                locator,
                sink: None,
                overflow: Overflow::default(),
                dropped: AtomicU64::new(0),
                unguarded: Vec::new(),
                consistency_timeout: DEFAULT_CONSISTENCY_TIMEOUT,
                waiting: AtomicUsize::new(0),
                max_waiting: DEFAULT_MAX_WAITING,
                id_prefix: format!("{started:x}-{:x}", std::process::id()),
                next_id: AtomicU64::new(1),
            },
        }
    }

    /// How many records the sink did not take (full or failed), whatever
    /// the overflow policy.
    pub fn dropped_records(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<S, L> Layer<S> for LedgerLayer<L> {
    type Service = LedgerService<S, L>;

    fn layer(&self, inner: S) -> LedgerService<S, L> {
        LedgerService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`LedgerLayer`] wraps around another.
pub struct LedgerService<S, L> {
    inner: S,
    shared: Arc<Shared<L>>,
}

impl<S: Clone, L> Clone for LedgerService<S, L> {
    fn clone(&self) -> Self {
        LedgerService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, L, B, ResBody> Service<Request<B>> for LedgerService<S, L>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    L: Locator,
    B: Send + 'static,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.shared.is_unguarded(&request) {
            return ResponseFuture::calling(self.inner.call(request));
        }
        let (parts, body) = request.into_parts();
        let mut decision = Box::pin(Arc::clone(&self.shared).admit(parts, body));
        // Most locators answer from memory, so the decision is usually made
        // here, at its first poll, and the service made ready answers
        // without a clone. A decision that must wait (a locator's query, a
        // consistency token) is polled again by the future returned, with
        // its task's waker, which it registers then: every future uses the
        // waker of its latest poll.
        match decision
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(allowed)) => ResponseFuture::calling(self.inner.call(allowed)),
            Poll::Ready(Err(refused)) => ResponseFuture::answered(refused),
            Poll::Pending => {
                // The clone takes the place of the service made ready, which
                // answers once the request is allowed (tower's usual
                // hand-over).
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                ResponseFuture::deciding(decision, inner)
            }
        }
    }
}

/// A refusal on its way out, with what its headers say.
pub(crate) struct Answer {
    rejection: Rejection,
    position: Option<u64>,
    needed: Option<Requirement>,
    request_id: String,
}

impl Answer {
    pub(crate) fn response<ResBody: From<Bytes>>(self) -> Response<ResBody> {
        let body = self.rejection.body().to_json();
        let mut response = Response::new(ResBody::from(Bytes::from(body)));
        *response.status_mut() = self.rejection.status();
        let headers = response.headers_mut();
        // Room for the four at once, rather than growing on the first.
        headers.reserve(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(position) = self.position {
            headers.insert(POSITION_HEADER, HeaderValue::from(position));
        }
        // From the `String`s themselves (the same check as `from_str`,
        // without a copy).
        if let Some(needed) = self.needed
            && let Ok(value) = HeaderValue::try_from(needed.to_string())
        {
            headers.insert(ACCEPTED_SCOPE_HEADER, value);
        }
        if let Ok(value) = HeaderValue::try_from(self.request_id) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        response
    }
}

impl<L: Locator> Shared<L> {
    fn is_unguarded<B>(&self, request: &Request<B>) -> bool {
        self.unguarded
            .iter()
            .any(|(method, path)| method == request.method() && path == request.uri().path())
    }

    /// Decides `request`: an allowed one comes back with [`Authorized`] in
    /// its extensions, for the inner service; a refused one as the answer.
    /// The request comes in parts: a whole one would be kept beside them,
    /// and the future is boxed.
    async fn admit<B>(self: Arc<Self>, mut parts: Parts, body: B) -> Result<Request<B>, Answer> {
        let authorized = self.decide(&parts).await?;
        parts.extensions.insert(authorized);
        Ok(Request::from_parts(parts, body))
    }

    /// Decides the request and records the decision; a refusal comes back
    /// as the answer to send.
    async fn decide(&self, parts: &Parts) -> Result<Authorized, Answer> {
        let headers = Read::from(&parts.headers);
        let mut record = DecisionRecord::new(self.request_id(), now());
        // Only a record that goes to a sink needs the client's id.
        if self.sink.is_some() {
            record.client_request_id = client_request_id(headers.request_id);
        }
        let decided = self.decide_recording(parts, &headers, &mut record).await;
        match decided {
            Ok(mut authorized) => {
                authorized.request_id = self.request_id_of(&mut record);
                record.verdict = Verdict::Allowed;
                record.status = 200;
                record.reason = "allow";
                let (position, needed) = (record.position, record.requirement);
                match self.write(record) {
                    Ok(()) => Ok(authorized),
                    Err(error) => Err(Answer {
                        rejection: Rejection::RecordUnavailable(error),
                        position,
                        needed,
                        request_id: authorized.request_id,
                    }),
                }
            }
            Err(rejection) => {
                if let Rejection::Refused { refusal, .. } = &rejection
                    && refusal.reason != Reason::LedgerClosed
                {
                    record.rule = Some(refusal.rule);
                }
                record.status = rejection.status().as_u16();
                record.reason = rejection.reason();
                let refused = Answer {
                    rejection,
                    position: record.position,
                    needed: record.requirement,
                    request_id: self.request_id_of(&mut record),
                };
                // A refusal stands whether or not it could be recorded.
                let _ = self.write(record);
                Err(refused)
            }
        }
    }

    /// The record's request id for the answer: a copy when the record goes
    /// to a sink, else the id itself (the record is dropped unread).
    fn request_id_of(&self, record: &mut DecisionRecord) -> String {
        if self.sink.is_some() {
            record.request_id.clone()
        } else {
            std::mem::take(&mut record.request_id)
        }
    }

    /// The decision, filling `record` in as each step learns something.
    async fn decide_recording(
        &self,
        parts: &Parts,
        headers: &Read<'_>,
        record: &mut DecisionRecord,
    ) -> Result<Authorized, Rejection> {
        let secret = headers.bearer().ok_or(Rejection::MissingBearer)?;
        // A malformed secret is refused whatever the state, so it is not
        // kept waiting: holding requests open costs the caller nothing.
        if let Some(wanted) = headers.consistency()?
            && Secret::digest_of(secret).is_ok()
        {
            self.wait_for(wanted).await?;
            // Decided now, against the state waited for: a token that
            // expired meanwhile is expired.
            record.at = now();
        }
        let authorizer = &self.authorizer;
        // Rules 1 and 2 in full (deleted, expired) before the locator is
        // asked: a token that no longer lives must not learn which
        // resources exist from a 404 where others get a 401.
        let (handle, company) =
            authorizer
                .authenticate_live(secret, record.at)
                .map_err(|refused| {
                    record.token = refused.token;
                    // Every refused decision carries a refusal; if one did
                    // not, the request is refused all the same.
                    let refusal = refused.refusal.unwrap_or(Refusal {
                        rule: Rule::TokenLive,
                        reason: Reason::LedgerClosed,
                        needed: None,
                    });
                    // A closed ledger decided at no position.
                    record.position =
                        (refusal.reason != Reason::LedgerClosed).then_some(refused.position);
                    Rejection::Refused {
                        refusal,
                        request: None,
                    }
                })?;
        record.token = Some(handle.id());
        let method = method(&parts.method)?;
        record.method = Some(method);
        let path = parts.uri.path();
        let endpoint = resolve_endpoint(method, path).map_err(Rejection::Endpoint)?;
        record.operation = Some(endpoint.operation);
        record.requirement = Some(endpoint.requirement);
        let located = self
            .locator
            .locate(Target::new(endpoint, path, company))
            .await
            .map_err(Rejection::Locator)?
            .ok_or(Rejection::NotFound)?;
        // The locator may have taken a while (a query, awaited or not):
        // rules 2 and 8 are checked at the time the decision is made.
        record.at = now();
        // Without a sink the record is dropped unread: no copy for it.
        if self.sink.is_some() {
            record.resource = Some(located.resource.clone());
        }
        record.location = Some(located.location);
        let request = tokenledger_authz::Request {
            requirement: endpoint.requirement,
            resource: located.resource,
            location: located.location,
            at: record.at,
        };
        let decision = authorizer.authorize(handle, &request);
        if let Some(refusal) = decision.refusal {
            // A ledger that closed (or a lease that lapsed) while the
            // locator was asked decided at no position.
            record.position = (refusal.reason != Reason::LedgerClosed).then_some(decision.position);
            return Err(Rejection::Refused {
                refusal,
                request: Some(Box::new(request)),
            });
        }
        record.position = Some(decision.position);
        Ok(Authorized {
            // Filled in by `decide`, which knows whether the record needs it.
            request_id: String::new(),
            token: handle.id(),
            company,
            position: decision.position,
            endpoint,
            resource: request.resource,
            location: request.location,
        })
    }

    /// Waits, without holding a runtime worker, until the ledger has
    /// applied `wanted`, woken by its publishes. Only requests that carry a
    /// token ahead of the state wait at all, and no more than
    /// `max_waiting` of them at once.
    async fn wait_for(&self, wanted: u64) -> Result<(), Rejection> {
        let applied = self.authorizer.position();
        if applied.is_some_and(|applied| applied >= wanted) {
            return Ok(());
        }
        let Some(_slot) = Slot::take(&self.waiting, self.max_waiting) else {
            return Err(Rejection::TooManyWaiting);
        };
        // Boxed: only requests that wait pay for the wait's state, which
        // would otherwise grow every request's decision (an allocation
        // past glibc's small sizes costs a consolidation of its free lists).
        let applied = Box::pin(
            self.authorizer
                .wait_for_position(wanted, self.consistency_timeout),
        )
        .await;
        match applied {
            Some(applied) if applied >= wanted => Ok(()),
            _ => Err(Rejection::NotYetApplied { wanted, applied }),
        }
    }

    fn write(&self, record: DecisionRecord) -> Result<(), SinkError> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        match sink.record(record) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                match self.overflow {
                    Overflow::CountAndDrop => Ok(()),
                    Overflow::Refuse => Err(error),
                }
            }
        }
    }

    /// A request id of the layer's own.
    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Written by hand: `format!` cost a tenth of the layer's time.
        let mut id = String::with_capacity(self.id_prefix.len() + 17);
        id.push_str(&self.id_prefix);
        id.push('-');
        push_hex(&mut id, n);
        id
    }
}

/// One of the waits [`Shared::wait_for`] allows at once, given back on drop.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(waiting: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < max).then_some(now + 1)
            })
            .ok()
            .map(|_| Slot(waiting))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The time a decision is made at.
fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// The client's `x-request-id` when there is exactly one, of 1 to 128
/// visible ASCII characters.
fn client_request_id(given: Once<'_>) -> Option<String> {
    let Once::One(value) = given else {
        return None;
    };
    let bytes = value.as_bytes();
    ((1..=128).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic))
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// Appends `n` in lower-case hexadecimal, without leading zeros.
fn push_hex(to: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        let nibble = (n >> (shift * 4)) & 0xf;
        to.push(char::from_digit(nibble as u32, 16).unwrap_or('0'));
    }
}

/// The Core API's methods, matched exactly: HTTP methods are case-sensitive.
fn method(method: &http::Method) -> Result<Method, Rejection> {
    Ok(match *method {
        http::Method::GET => Method::Get,
        http::Method::POST => Method::Post,
        http::Method::PATCH => Method::Patch,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        _ => {
            return Err(Rejection::Endpoint(EndpointError::UnknownMethod {
                found: method.as_str().chars().take(32).collect(),
            }));
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use std::future::Future;
    use std::sync::Arc;

    use tokenledger_authz::Ledger;

    use super::{LedgerLayer, push_hex};
    use crate::locate::{LocateError, Located, Locator, Target};

    /// Finds nothing, at once.
    struct Nowhere;

    impl Locator for Nowhere {
        fn locate(
            &self,
            _: Target<'_>,
        ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
            std::future::ready(Ok(None))
        }
    }

    /// Every guarded request allocates its decision's future. glibc's
    /// malloc serves up to 1,008 bytes from its small bins; a larger
    /// request first consolidates its fast bins, which cost 90 ns a request
    /// in `http/layer_*` when the consistency wait's state was kept in the
    /// future (1,248 bytes; 880 with the wait boxed).
    #[test]
    fn a_decision_s_future_stays_a_small_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let layer = LedgerLayer::builder(ledger.authorizer(), Nowhere).build();
        let (parts, body) = http::Request::new(()).into_parts();
        let decision = Arc::clone(&layer.shared).admit(parts, body);
        let size = std::mem::size_of_val(&decision);
        assert!(size <= 1008 - 64, "{size} bytes");
    }

    #[test]
    fn hexadecimal_is_written_as_format_writes_it() {
        for n in [0, 1, 0xf, 0x10, 0xabc, 1 << 63, u64::MAX] {
            let mut written = String::new();
            push_hex(&mut written, n);
            assert_eq!(written, format!("{n:x}"));
        }
    }
}
