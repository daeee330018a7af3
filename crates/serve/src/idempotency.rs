//! Idempotency keys: a command sent again with the same `Idempotency-Key`
//! is answered with the reply the first one got, and is not run twice, so
//! a client that lost the reply to a token's creation can retry without
//! making a second token.
//!
//! Two layers. In this process, replies are kept in memory (the reply to
//! a create holds its secret: wiped when dropped), at most [`MAX_KEPT`] of
//! them, for [`KEPT_FOR`]: a retry gets the very reply, secret included,
//! and the same key with another request is a 422. A reply of the 5xx
//! class is not kept: the command may be retried. Below that, every
//! command carries the key and a fingerprint of its request down to the
//! ledger (`tokenledger_authz::IdempotencyKey`), which gives its events
//! ids derived from the two and looks for them before deciding it: so a
//! retry after a restart, or sent to another replica sharing the log, is
//! answered from the log (the same status and body, ids read from the
//! recorded events), not run again. Such a reply cannot hold a token's
//! secret unless the server has the sealing key to reveal it again
//! (recorded as a reveal); without one it is a 409 naming the token. The
//! ledger cannot tell the same key sent with another request after a
//! restart: the fingerprint is part of the derivation, so that request
//! runs as a new command.
//!
//! The command runs on a task of its own, not in the request, so it is
//! finished and its reply kept even when the client goes away or the
//! request times out.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use parking_lot::Mutex;
use tokenledger_authz::IdempotencyKey;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::error::ApiError;

/// The header naming a command's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a reply that repeats an earlier one.
pub const REPLAYED: &str = "idempotent-replayed";
/// How many replies are kept.
pub const MAX_KEPT: usize = 10_000;
/// How long a reply is kept.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// The longest key taken.
const MAX_KEY_LEN: usize = 255;

/// A reply, as sent.
#[derive(Clone)]
struct Reply {
    status: StatusCode,
    body: Arc<Zeroizing<Vec<u8>>>,
    /// Answered from the log: the command was recorded before.
    replayed: bool,
}

/// A command's reply: its status, its body, and whether the ledger
/// answered it from the log, having recorded it before under its key.
pub(crate) struct Replied {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
    pub(crate) replayed: bool,
}

struct Slot {
    /// Which entry of [`Kept::order`] is this slot's: a key forgotten and
    /// taken again has a new slot, which the old entry must not remove.
    entry: u64,
    fingerprint: [u8; 32],
    reply: watch::Receiver<Option<Reply>>,
}

/// The replies kept, by key.
#[derive(Default)]
pub(crate) struct Idempotency {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    slots: HashMap<String, Slot>,
    /// The slots in the order they were taken: key, entry, when.
    order: VecDeque<(String, u64, Instant)>,
    next_entry: u64,
}

impl Kept {
    /// Forgets the oldest slots past `most` or older than `kept_for`.
    fn forget_old(&mut self, now: Instant, most: usize, kept_for: Duration) {
        while let Some((key, entry, at)) = self.order.front() {
            if self.order.len() < most && now.duration_since(*at) < kept_for {
                break;
            }
            self.forget(&key.clone(), *entry);
            self.order.pop_front();
        }
    }

    /// Takes a slot for `key`.
    fn take(
        &mut self,
        key: &str,
        fingerprint: [u8; 32],
        reply: watch::Receiver<Option<Reply>>,
        now: Instant,
    ) -> u64 {
        let entry = self.next_entry;
        self.next_entry += 1;
        self.slots.insert(
            key.to_owned(),
            Slot {
                entry,
                fingerprint,
                reply,
            },
        );
        self.order.push_back((key.to_owned(), entry, now));
        entry
    }

    /// Forgets `key`'s slot if it is still the one taken as `entry`.
    fn forget(&mut self, key: &str, entry: u64) {
        if self.slots.get(key).is_some_and(|slot| slot.entry == entry) {
            self.slots.remove(key);
        }
    }
}

/// A command's reply as JSON, or its error's envelope; `replayed` if the
/// ledger answered it from the log.
pub(crate) fn json_reply<T: serde::Serialize>(
    outcome: Result<T, ApiError>,
    replayed: bool,
) -> Replied {
    let (status, body) = match outcome.and_then(|value| {
        serde_json::to_vec(&value)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }) {
        Ok(body) => (StatusCode::OK, body),
        Err(error) => {
            let status = error.status();
            let body = serde_json::to_vec(&error.envelope()).unwrap_or_default();
            (status, body)
        }
    };
    Replied {
        status,
        body,
        replayed,
    }
}

impl Idempotency {
    /// Runs `command` once per idempotency key (when the request has one)
    /// and answers with its reply. `fingerprint` names the request: the
    /// same key with another request is a 422. `command` is handed the
    /// key for the ledger, made of the two, to run its command once with.
    pub(crate) async fn run<C, F>(
        self: &Arc<Self>,
        headers: &HeaderMap,
        fingerprint: [u8; 32],
        command: C,
    ) -> Response
    where
        C: FnOnce(Option<IdempotencyKey>) -> F,
        F: Future<Output = Replied> + Send + 'static,
    {
        let key = match key(headers) {
            Ok(key) => key,
            Err(error) => return error.into_response(),
        };
        let once = key
            .as_ref()
            .map(|key| IdempotencyKey::new(key.as_bytes(), &fingerprint));
        let command = command(once);
        let (sender, receiver) = watch::channel(None);
        let mut replayed = false;
        let mut taken = None;
        let mut reply = match &key {
            None => receiver,
            Some(key) => {
                let mut kept = self.kept.lock();
                let now = Instant::now();
                kept.forget_old(now, MAX_KEPT, KEPT_FOR);
                match kept.slots.get(key) {
                    Some(slot) if slot.fingerprint != fingerprint => {
                        return ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "`Idempotency-Key`: this key was used for another request; use a new key for a new request",
                        )
                        .into_response();
                    }
                    Some(slot) => {
                        replayed = true;
                        slot.reply.clone()
                    }
                    None => {
                        taken = Some(kept.take(key, fingerprint, receiver.clone(), now));
                        receiver
                    }
                }
            }
        };
        if !replayed {
            let this = Arc::clone(self);
            let key = key.clone();
            tokio::spawn(async move {
                let replied = command.await;
                if replied.status.is_server_error()
                    && let (Some(key), Some(entry)) = (key, taken)
                {
                    this.kept.lock().forget(&key, entry);
                }
                let _ = sender.send(Some(Reply {
                    status: replied.status,
                    body: Arc::new(Zeroizing::new(replied.body)),
                    replayed: replied.replayed,
                }));
            });
        }
        let done = reply.wait_for(Option::is_some).await.map(|r| r.clone());
        match done {
            Ok(Some(reply)) => {
                let mut response =
                    (reply.status, Bytes::copy_from_slice(&reply.body)).into_response();
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                // A failure repeated to a caller that waited on the same
                // key is no replay of a recorded command.
                if (replayed || reply.replayed) && !reply.status.is_server_error() {
                    headers.insert(REPLAYED, HeaderValue::from_static("true"));
                }
                response
            }
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the command stopped without a reply; retry it with the same Idempotency-Key",
            )
            .into_response(),
        }
    }
}

fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let (first, second) = (values.next(), values.next());
    let bad = |why| ApiError::new(StatusCode::BAD_REQUEST, format!("`Idempotency-Key`: {why}"));
    match (first, second) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(bad("give it once")),
        (Some(value), None) => {
            let bytes = value.as_bytes();
            if bytes.is_empty()
                || bytes.len() > MAX_KEY_LEN
                || !bytes.iter().all(u8::is_ascii_graphic)
            {
                return Err(bad("1 to 255 visible ASCII characters"));
            }
            Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokenledger_authz::{AppendError, Expectation, LedgerError};

    use super::*;

    /// The status of the reply to a command sent with the key `retry-1`,
    /// which answers `outcome` if it runs; `runs` counts its runs.
    async fn send(
        idempotency: &Arc<Idempotency>,
        runs: &Arc<AtomicUsize>,
        outcome: Result<u8, LedgerError>,
    ) -> StatusCode {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("retry-1"));
        let runs = Arc::clone(runs);
        let command = move |_| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            json_reply(outcome.map_err(ApiError::from), false)
        };
        idempotency.run(&headers, [1; 32], command).await.status()
    }

    #[tokio::test]
    async fn an_append_that_wrote_nothing_is_a_503_and_its_retry_runs_the_command() {
        let idempotency = Arc::new(Idempotency::default());
        let runs = Arc::new(AtomicUsize::new(0));
        // Another replica appended first, and the command gave up.
        let conflict = LedgerError::Append(AppendError::Conflict {
            expected: Expectation::Head(3),
            found: 4,
        });
        let status = send(&idempotency, &runs, Err(conflict)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(send(&idempotency, &runs, Ok(1)).await, StatusCode::OK);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A reply that holds is kept.
        assert_eq!(send(&idempotency, &runs, Ok(2)).await, StatusCode::OK);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// A key whose command failed is taken again by its retry: the first
    /// slot's place in the order, once it comes to be forgotten, must not
    /// take the retry's slot with it, nor count as a slot kept.
    #[test]
    fn a_slot_forgotten_after_a_failure_leaves_its_retry_kept() {
        let mut kept = Kept::default();
        let now = Instant::now();
        let (_sender, receiver) = watch::channel(None);
        let first = kept.take("k", [1; 32], receiver.clone(), now);
        kept.forget("k", first);
        let retry = kept.take("k", [1; 32], receiver.clone(), now);
        kept.take("other", [2; 32], receiver, now);
        // Room for two: the failed slot's entry is the one to go.
        kept.forget_old(now, 3, KEPT_FOR);
        assert_eq!(kept.slots.get("k").map(|slot| slot.entry), Some(retry));
        assert!(kept.slots.contains_key("other"));
        // A stale entry forgets nothing that is not its own.
        kept.forget("k", first);
        assert!(kept.slots.contains_key("k"));
    }
}
