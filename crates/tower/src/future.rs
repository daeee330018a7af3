//! The future [`crate::LedgerService`] answers with: the decision (when it
//! could not be made at once), then the inner service's answer or the
//! layer's refusal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::layer::Answer;

/// The decision under way: the request back, to pass on, or the answer.
/// Boxed because the embedder's locator returns a future that cannot be
/// named; the inner service's future is kept out of the box, so that the
/// box stays small.
type Deciding<B> = Pin<Box<dyn Future<Output = Result<Request<B>, Answer>> + Send>>;

pin_project! {
    /// The response future of [`crate::LedgerService`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // The service made ready, which answers the request once allowed.
        Deciding {
            decision: Deciding<B>,
            inner: S,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        // Refused when called; `None` once answered.
        Answered {
            answer: Option<Answer>,
        },
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn deciding(decision: Deciding<B>, inner: S) -> Self {
        ResponseFuture {
            state: State::Deciding { decision, inner },
        }
    }

    /// A refusal decided when the service was called.
    pub(crate) fn answered(answer: Answer) -> Self {
        ResponseFuture {
            state: State::Answered {
                answer: Some(answer),
            },
        }
    }

    /// A request passed on: not guarded, or allowed when the service was
    /// called.
    pub(crate) fn calling(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { future },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProjection::Deciding { decision, inner } => {
                    let future = match ready!(decision.as_mut().poll(cx)) {
                        Ok(allowed) => inner.call(allowed),
                        Err(refused) => return Poll::Ready(Ok(refused.response())),
                    };
                    state.set(State::Calling { future });
                }
                StateProjection::Calling { future } => return future.poll(cx),
                // Polled again after its answer: it has none left to give.
                StateProjection::Answered { answer } => {
                    return match answer.take() {
                        Some(refused) => Poll::Ready(Ok(refused.response())),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}
