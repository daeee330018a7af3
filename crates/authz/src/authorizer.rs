//! The hot path: a cheap, cloneable, `Send + Sync` handle that answers
//! "may this token do this to that resource?" without taking a lock.

use tokenledger_events::TokenId;
use tokenledger_projection::{Readers, TokenHandle};

use crate::decision::{self, Decision, Reason, Refusal, Request, Rule};

/// Answers authorization questions against the ledger's published state.
/// Clone it freely and share it between threads.
///
/// A decision never waits for a writer, sees one consistent state, and
/// carries that state's log position. Once a command that deletes a token
/// has returned, no decision on any thread allows that token.
#[derive(Clone)]
pub struct Authorizer {
    readers: Readers,
}

impl Authorizer {
    pub(crate) fn new(readers: Readers) -> Authorizer {
        Authorizer { readers }
    }

    /// Rules 1 and 2 (as far as the secret goes): the token the secret names.
    pub fn authenticate(&self, secret: &str) -> Result<TokenHandle, Refusal> {
        self.readers.read(
            |state| decision::authenticate(state, secret),
            || Err(closed()),
        )
    }

    /// Rules 2 to 8 for a token already authenticated: by the handle
    /// [`Authorizer::authenticate`] gave, or by a bare [`TokenId`].
    pub fn authorize(&self, token: impl Into<TokenHandle>, request: &Request) -> Decision {
        let handle = token.into();
        self.readers.read(
            |state| decision::authorize(state, handle, request),
            || refused(Some(handle.id())),
        )
    }

    /// Rules 1 to 8: authenticates the secret and authorizes the request,
    /// against one state.
    pub fn check(&self, secret: &str, request: &Request) -> Decision {
        self.readers.read(
            |state| decision::decide_request(state, secret, request),
            || refused(None),
        )
    }
}

fn closed() -> Refusal {
    Refusal {
        rule: Rule::TokenLive,
        reason: Reason::LedgerClosed,
        needed: None,
    }
}

fn refused(token: Option<TokenId>) -> Decision {
    Decision {
        position: 0,
        token,
        refusal: Some(closed()),
    }
}
