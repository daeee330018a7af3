//! The hot path: a cheap, cloneable, `Send + Sync` handle that answers
//! "may this token do this to that resource?" without taking a lock.

use std::sync::Arc;

use tokenledger_events::{CompanyId, Timestamp, TokenId};
use tokenledger_projection::{Readers, TokenHandle};

use crate::decision::{self, Decision, Reason, Refusal, Request, Rule};
use crate::gate::Gate;

/// Answers authorization questions against the ledger's published state.
/// Clone it freely and share it between threads.
///
/// A decision never waits for a writer, sees one consistent state, and
/// carries that state's log position. Once a command that deletes a token
/// has returned, no decision on any thread allows that token.
///
/// Authenticate once per request (or per connection) and decide with the
/// handle it gives; a handle kept past a delete is refused like the secret.
///
/// On a ledger shared by several processes (PostgreSQL), the same holds
/// across them: a replica whose lease has lapsed, and which may so have
/// missed a delete that returned elsewhere, refuses everything as a closed
/// ledger does ([`Reason::LedgerClosed`], 503) until it holds a lease again
/// and has caught up.
///
/// ```
/// use tokenledger_authz::{fresh, Command, Ledger, Location, NewToken, Request, Rule};
/// use tokenledger_events::*;
///
/// let dir = tempfile::tempdir().unwrap();
/// let ledger = Ledger::open(dir.path()).unwrap();
/// let (company, admin) = (fresh::company_id().unwrap(), fresh::teammate_id().unwrap());
/// ledger.execute(Actor::System, Command::CreateCompany { company, name: Name::new("Acme").unwrap() }).unwrap();
/// ledger.execute(Actor::System, Command::AddTeammate { company, teammate: admin,
///     name: Name::new("Ada").unwrap(), role: Role::Admin }).unwrap();
/// let created = ledger.create_token(Actor::Teammate(admin), NewToken {
///     company, name: Name::new("Plugin").unwrap(), kind: TokenKind::ApiToken,
///     scope: TokenScope {
///         features: [Feature::Resources].into(),
///         namespaces: Namespaces { global: true, ..Namespaces::none() },
///         grants: ["tags:read".parse().unwrap()].into_iter().collect(),
///     },
///     expires_at: None,
/// }).unwrap();
///
/// let authorizer = ledger.authorizer();
/// let handle = authorizer.authenticate(created.secret.expose()).unwrap();
/// let request = Request {
///     requirement: Requirement::Scope("tags:read".parse().unwrap()),
///     resource: "tag_1".parse().unwrap(),
///     location: Location::Global(company),
///     at: Timestamp::from_micros(u64::MAX / 2),
/// };
/// assert!(authorizer.authorize(handle, &request).is_allowed());
///
/// ledger.execute(Actor::Teammate(admin), Command::DeleteToken { token: created.token }).unwrap();
/// let refused = authorizer.authorize(handle, &request).refusal.unwrap();
/// assert_eq!(refused.rule, Rule::TokenLive);
/// ```
#[derive(Clone)]
pub struct Authorizer {
    readers: Readers,
    /// The replica's lease, on a ledger shared with other processes.
    gate: Option<Arc<Gate>>,
    /// The applied position as the ledger publishes it, for waits that
    /// hold no thread.
    #[cfg(feature = "tokio")]
    applied: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Authorizer {
    pub(crate) fn new(readers: Readers, gate: Option<Arc<Gate>>) -> Authorizer {
        Authorizer {
            readers,
            gate,
            #[cfg(feature = "tokio")]
            applied: None,
        }
    }

    /// The same, told of each position the ledger publishes.
    #[cfg(feature = "tokio")]
    pub(crate) fn watching(self, applied: tokio::sync::watch::Receiver<u64>) -> Authorizer {
        Authorizer {
            applied: Some(applied),
            ..self
        }
    }

    /// The lease a decision begins under (0 on a ledger no other process
    /// shares), or `None` when this replica cannot vouch for its state
    /// now: its lease lapsed.
    #[inline]
    fn lease(&self) -> Option<u64> {
        match &self.gate {
            Some(gate) => gate.lease(),
            None => Some(0),
        }
    }

    /// Whether the lease a decision began under still holds.
    #[inline]
    fn holds(&self, lease: u64) -> bool {
        self.gate.as_ref().is_none_or(|gate| gate.still(lease))
    }

    /// Rules 1 and 2 (as far as the secret goes): the token the secret names.
    pub fn authenticate(&self, secret: &str) -> Result<TokenHandle, Refusal> {
        let Some(lease) = self.lease() else {
            return Err(closed());
        };
        let handle = self.readers.read(
            |state| decision::authenticate(state, secret),
            || Err(closed()),
        )?;
        // Checked again, as `vouched` does for a decision.
        if !self.holds(lease) {
            return Err(closed());
        }
        Ok(handle)
    }

    /// Rules 1 and 2 in full, against one state: the token the secret
    /// names and its company, when the token is neither deleted nor expired
    /// at `at`; else the refused decision (at position 0 once the ledger
    /// has closed, as every decision then). A service that must refuse a
    /// dead token before it learns anything else about the request asks
    /// this once, rather than [`Authorizer::authenticate`],
    /// [`Authorizer::company`] and a [`Requirement::LiveToken`] decision.
    ///
    /// [`Requirement::LiveToken`]: tokenledger_events::Requirement::LiveToken
    pub fn authenticate_live(
        &self,
        secret: &str,
        at: Timestamp,
    ) -> Result<(TokenHandle, CompanyId), Decision> {
        let Some(lease) = self.lease() else {
            return Err(refused(None));
        };
        let live = self.readers.read(
            |state| {
                decision::authenticate_live(state, secret, at).map_err(|(token, refusal)| {
                    Decision {
                        position: state.position(),
                        token,
                        refusal: Some(refusal),
                    }
                })
            },
            || Err(refused(None)),
        )?;
        // Checked again, as `vouched` does for a decision.
        if !self.holds(lease) {
            return Err(refused(None));
        }
        Ok(live)
    }

    /// Rules 2 to 8 for a token already authenticated: by the handle
    /// [`Authorizer::authenticate`] gave, or by a bare [`TokenId`].
    pub fn authorize(&self, token: impl Into<TokenHandle>, request: &Request) -> Decision {
        let handle = token.into();
        let Some(lease) = self.lease() else {
            return refused(Some(handle.id()));
        };
        let decision = self.readers.read(
            |state| decision::authorize(state, handle, request),
            || refused(Some(handle.id())),
        );
        self.vouched(decision, lease, Some(handle.id()))
    }

    /// The log position of the state decisions are made against now, or
    /// `None` once the ledger has closed. A service that hands clients the
    /// position of a change (a consistency token) waits until this reaches
    /// it before deciding their next request, so that request never sees the
    /// state before the change.
    pub fn position(&self) -> Option<u64> {
        self.readers.read(|state| Some(state.position()), || None)
    }

    /// Waits until the state decisions are made against has applied
    /// `position` (a consistency token), for at most `timeout`, holding no
    /// thread while it waits; returns [`Authorizer::position`] then: at
    /// least `position` unless the wait timed out, `None` once the ledger
    /// has closed.
    #[cfg(feature = "tokio")]
    pub async fn wait_for_position(
        &self,
        position: u64,
        timeout: std::time::Duration,
    ) -> Option<u64> {
        let reached = |now: Option<u64>| now.is_none_or(|now| now >= position);
        if let Some(applied) = &self.applied
            && !reached(self.position())
        {
            let mut applied = applied.clone();
            // Woken by every publish and by the ledger closing; ended at
            // once if the ledger is gone. The answer is read afresh below.
            let wait = applied.wait_for(|_| reached(self.position()));
            let _ = tokio::time::timeout(timeout, wait).await;
        }
        self.position()
    }

    /// The company a token belongs to, which never changes once it is
    /// created; `None` for a token the state does not know, or once the
    /// ledger has closed. Only what it says is asked: whether the token may
    /// do anything is [`Authorizer::authorize`]'s answer.
    pub fn company(&self, token: impl Into<TokenHandle>) -> Option<CompanyId> {
        let handle = token.into();
        self.readers.read(
            |state| state.token_by_handle(handle).map(|token| token.company()),
            || None,
        )
    }

    /// Rules 1 to 8: authenticates the secret and authorizes the request,
    /// against one state.
    pub fn check(&self, secret: &str, request: &Request) -> Decision {
        let Some(lease) = self.lease() else {
            return refused(None);
        };
        let decision = self.readers.read(
            |state| decision::decide_request(state, secret, request),
            || refused(None),
        );
        self.vouched(decision, lease, None)
    }

    /// `decision`, made under `lease`, unless it allows and that lease has
    /// lapsed since (even if another was taken meanwhile): a thread paused
    /// mid-decision past the lease's end (preempted, or the process
    /// stopped) may have decided on a state that lacks a removal which,
    /// the lease over, returned elsewhere meanwhile.
    #[inline]
    fn vouched(&self, decision: Decision, lease: u64, token: Option<TokenId>) -> Decision {
        if decision.is_allowed() && !self.holds(lease) {
            return refused(token);
        }
        decision
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokenledger_projection::Projection;

    use super::*;

    #[test]
    fn an_allow_decided_as_the_lease_lapsed_is_refused_and_a_refusal_kept() {
        let (_projection, readers) = Projection::new();
        let gate = Arc::new(Gate::shut());
        gate.open_until(Instant::now() + Duration::from_secs(60));
        let authorizer = Authorizer::new(readers, Some(Arc::clone(&gate)));
        let allowed = || Decision {
            position: 3,
            token: None,
            refusal: None,
        };
        let lease = authorizer.lease().unwrap();
        assert!(authorizer.vouched(allowed(), lease, None).is_allowed());
        // The lease lapsed while the decision was being made.
        gate.close();
        let decision = authorizer.vouched(allowed(), lease, None);
        assert_eq!(
            decision.refusal.map(|refusal| refusal.reason),
            Some(Reason::LedgerClosed)
        );
        let refused = refused(None);
        assert_eq!(authorizer.vouched(refused.clone(), lease, None), refused);
        // And a new lease taken before the decision ends does not vouch
        // for it: its state was read under the one that lapsed.
        gate.open_anew(Instant::now() + Duration::from_secs(60));
        assert!(!authorizer.vouched(allowed(), lease, None).is_allowed());
        let now = authorizer.lease().unwrap();
        assert!(authorizer.vouched(allowed(), now, None).is_allowed());
    }

    #[test]
    fn authenticating_on_a_lapsed_lease_is_refused_as_unavailable() {
        let (_projection, readers) = Projection::new();
        let gate = Arc::new(Gate::shut());
        gate.open_until(Instant::now() + Duration::from_secs(60));
        let authorizer = Authorizer::new(readers, Some(Arc::clone(&gate)));
        let reason = |authorizer: &Authorizer| {
            authorizer
                .authenticate_live("tok_secret", Timestamp::EPOCH)
                .err()
                .and_then(|decision| decision.refusal)
                .map(|refusal| refusal.reason)
        };
        assert_ne!(reason(&authorizer), Some(Reason::LedgerClosed));
        gate.close();
        assert_eq!(reason(&authorizer), Some(Reason::LedgerClosed));
    }
}
