//! Questions an investigator asks: why was this refused, what could this
//! token reach over a period, and which tokens could do this at a time.
//!
//! Every answer is computed by the same rules that decide live requests,
//! run against the state rebuilt from the log, so an investigation cannot
//! disagree with what the service decided.

use std::collections::BTreeMap;

use tokenledger_events::{
    Actor, CompanyId, Name, Permission, Requirement, ResourceId, Scope, Timestamp, TokenId,
};
use tokenledger_projection::{Provenance, State};
use tokenledger_store::{StoredEvent, Stream};

use crate::decision::{self, Location, Reason, Refusal, Request};
use crate::history::{describe_event, scan};
use crate::ledger::{Ledger, LedgerError, Missing};

/// A refusal explained: the rule, why, what was needed, and the event
/// behind the state that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The explanation for people, with names beside ids.
    pub text: String,
    /// The event behind the refusal, when there is one: the deletion, the
    /// token's creation (its scope has not changed since), or the change
    /// that left the owner's preference off.
    pub event: Option<StoredEvent>,
}

/// Who someone is, for people: a teammate's name beside their id.
pub fn who(state: &State, actor: Actor) -> String {
    match actor {
        Actor::Teammate(id) => match state.teammate(id) {
            Some(mate) => format!("{} ({id})", mate.name),
            None => id.to_string(),
        },
        Actor::System | Actor::Token(_) => actor.to_string(),
    }
}

/// A location for people, with the workspace's or owner's name.
pub fn location_label(state: &State, location: Location) -> String {
    match location {
        Location::Global(company) => match state.company(company) {
            Some(c) => format!("global ({})", c.name),
            None => "global".to_owned(),
        },
        Location::Shared(id) => match state.workspace(id) {
            Some(w) => format!("shared: {} ({id})", w.name),
            None => format!("shared: {id}"),
        },
        Location::Private(id) => match state.teammate(id) {
            Some(t) => format!("private: {} ({id})", t.name),
            None => format!("private: {id}"),
        },
    }
}

impl Ledger {
    /// Explains `refusal`, naming people from `state` (the state it was
    /// made against, or any later one: names do not change).
    pub fn explain(&self, state: &State, refusal: &Refusal) -> Result<Explanation, LedgerError> {
        self.while_open(|| {
            let event = match refusal.reason.provenance() {
                Some(Provenance { position, .. }) => self
                    .log
                    .read(position, 1)
                    .map_err(LedgerError::Damaged)?
                    .into_iter()
                    .next(),
                None => None,
            };
            let mut text = format!(
                "{}: rule {} ({}) failed: ",
                refusal.status(),
                refusal.rule.number(),
                refusal.rule
            );
            // With the event found, the reason is said without its provenance,
            // which the event then tells with names.
            match (&event, refusal.reason) {
                (Some(_), Reason::PrivateAccessOff { owner, .. }) => text.push_str(&format!(
                    "{}'s \"Allow access to my individual resources via the API\" is off",
                    who(state, Actor::Teammate(owner))
                )),
                (Some(_), Reason::OwnerDeactivated { owner, .. }) => text.push_str(&format!(
                    "{} was deactivated, which removes API access to their individual resources",
                    who(state, Actor::Teammate(owner))
                )),
                (Some(_), Reason::TokenDeleted { .. }) => text.push_str("the token was deleted"),
                (Some(_), Reason::WorkspaceDeleted { .. }) => {
                    text.push_str("the resource's workspace was deleted");
                }
                (Some(_), Reason::MissingFeature { feature, .. }) => text.push_str(&format!(
                    "the token does not have the `{feature}` feature, and has not since its creation"
                )),
                (Some(_), Reason::MissingPermission { .. }) => text.push_str(
                    "the token does not have this permission, and has not since its creation",
                ),
                (Some(_), Reason::NotForOAuth { .. }) => text.push_str(
                    "the token is an OAuth grant, and OAuth grants reach shared resources only, whatever the scope its creation recorded",
                ),
                (Some(_), Reason::NamespaceNotCovered { .. }) => text.push_str(
                    "the token's namespaces do not cover where the resource lives, and have not since its creation",
                ),
                (_, reason) => text.push_str(&reason.to_string()),
            }
            if let Some(needed) = refusal.needed {
                text.push_str(&format!("; needed: {needed}"));
            }
            if let Some(event) = &event {
                let envelope = &event.envelope;
                text.push_str(&format!(
                    ". Behind it: {} {} at {}, log position {}",
                    who(state, envelope.actor),
                    describe_event(&envelope.event),
                    envelope.recorded_at,
                    envelope.position
                ));
            }
            Ok(Explanation { text, event })
        })
    }

    /// What `token` could reach between `since` and `until`: for each
    /// namespace and permission, the intervals in which a request would
    /// have been allowed, and the events that changed it.
    pub fn timeline(
        &self,
        token: TokenId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Timeline, LedgerError> {
        self.while_open(|| {
            let company = self
                .with_state(|state| state.token(token).map(|t| t.company()))
                .ok_or(LedgerError::NotFound(Missing::Token(token)))?;
            let end = self.position_at(until)?;
            let mut state = State::new();
            let mut tracker = Tracker::default();
            let mut expiry_seen = false;
            // Reach depends on the token's company only (rule 3).
            scan(
                &*self.log,
                Some(Stream::Company(company)),
                1,
                end,
                |event| {
                    state.apply(&event.envelope);
                    let at = event.envelope.recorded_at;
                    let expires_at = state.token(token).and_then(|t| t.expires_at());
                    if let Some(expiry) = expires_at.filter(|x| *x <= at && !expiry_seen) {
                        expiry_seen = true;
                        tracker.update(expiry, BTreeMap::new(), Change::expiry(expiry));
                    }
                    tracker.update(at, reach(&state, token, company, at), Change::of(event));
                },
            )?;
            if !expiry_seen
                && let Some(expiry) = state
                    .token(token)
                    .and_then(|t| t.expires_at())
                    .filter(|x| *x <= until)
            {
                tracker.update(expiry, BTreeMap::new(), Change::expiry(expiry));
            }
            Ok(tracker.finish(&state, token, since, until))
        })
    }

    /// The tokens that could use `scope` on `location` at time `at`, judged
    /// by the rules against the state as it stood then.
    pub fn who_can(
        &self,
        scope: Scope,
        location: Location,
        at: Timestamp,
    ) -> Result<WhoCan, LedgerError> {
        self.while_open(|| {
            let position = self.position_at(at)?;
            // A location's company never changes, and only its tokens can be
            // allowed there (rule 3): its history is enough.
            let company = self
                .with_state(|now| location_company(now, location))
                .ok_or(LedgerError::NotFound(Missing::Location { location, at }))?;
            let state = self.company_state_at(company, position)?;
            if location_company(&state, location).is_none() {
                return Err(LedgerError::NotFound(Missing::Location { location, at }));
            }
            let request = Request {
                requirement: Requirement::Scope(scope),
                resource: ResourceId::any(),
                location,
                at,
            };
            let mut tokens: Vec<Allowed> = state
                .tokens_of(company)
                .filter(|(id, _)| decision::authorize(&state, *id, &request).is_allowed())
                .map(|(id, token)| Allowed {
                    token: id,
                    name: token.name().clone(),
                    created: token.created(),
                })
                .collect();
            tokens.sort_by_key(|allowed| allowed.created.position);
            Ok(WhoCan {
                position,
                tokens,
                location: location_label(&state, location),
            })
        })
    }
}

fn location_company(state: &State, location: Location) -> Option<CompanyId> {
    match location {
        Location::Global(company) => state.company(company).map(|_| company),
        Location::Shared(id) => state.workspace(id).map(|w| w.company),
        Location::Private(id) => state.teammate(id).map(|t| t.company),
    }
}

/// The answer to "who can": the tokens allowed, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCan {
    /// The log position of the state the answer was made against.
    pub position: u64,
    /// The location, for people.
    pub location: String,
    /// The tokens that could.
    pub tokens: Vec<Allowed>,
}

/// A token that could.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The token.
    pub token: TokenId,
    /// Its name.
    pub name: Name,
    /// Its creation.
    pub created: Provenance,
}

/// What a token could reach over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The token.
    pub token: TokenId,
    /// The period's start.
    pub since: Timestamp,
    /// The period's end.
    pub until: Timestamp,
    /// One row per namespace and permission reachable at some time in the
    /// period: global first, then workspaces, then teammates' private
    /// resources, each with read, write, delete, send in that order.
    pub rows: Vec<Reach>,
    /// The moments in the period when what the token could reach changed.
    pub changes: Vec<Change>,
}

/// A namespace and permission, and when the token could use it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Where.
    pub location: Location,
    /// The location for people, with its name.
    pub label: String,
    /// Which permission.
    pub permission: Permission,
    /// When, oldest first, within the period.
    pub intervals: Vec<Interval>,
}

/// A half-open interval of time `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Its start.
    pub from: Timestamp,
    /// Its end.
    pub to: Timestamp,
    /// Whether it was still going on at the end of the period.
    pub open: bool,
}

/// A moment when what a token could reach changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// When.
    pub at: Timestamp,
    /// The event's position; `None` for the token's expiry, which no event
    /// records.
    pub position: Option<u64>,
    /// Who caused it; `None` for the token's expiry.
    pub actor: Option<Actor>,
    /// What happened.
    pub what: String,
}

impl Change {
    fn of(event: &StoredEvent) -> Change {
        let envelope = &event.envelope;
        Change {
            at: envelope.recorded_at,
            position: Some(envelope.position),
            actor: Some(envelope.actor),
            what: describe_event(&envelope.event),
        }
    }

    fn expiry(at: Timestamp) -> Change {
        Change {
            at,
            position: None,
            actor: None,
            what: "the token expired".to_owned(),
        }
    }
}

/// A row's key, in the order rows are shown.
type RowKey = (u8, u128, Permission);

fn row_key(location: Location, permission: Permission) -> RowKey {
    match location {
        Location::Global(id) => (0, id.as_u128(), permission),
        Location::Shared(id) => (1, id.as_u128(), permission),
        Location::Private(id) => (2, id.as_u128(), permission),
    }
}

/// What `token` can reach at `at`: every namespace of its company and
/// every permission, asked of the rules with a scope the token holds.
/// Rule 5 is the only rule that reads the resource kind, so one granted
/// scope per permission answers for all of them.
fn reach(
    state: &State,
    token: TokenId,
    company: CompanyId,
    at: Timestamp,
) -> BTreeMap<RowKey, Location> {
    let mut reachable = BTreeMap::new();
    let Some(found) = state.token(token) else {
        return reachable;
    };
    let scopes: Vec<Scope> = Permission::ALL
        .into_iter()
        .filter_map(|p| {
            found
                .compiled()
                .grants()
                .iter()
                .find(|s| s.permission() == p)
        })
        .collect();
    let members = state
        .company(company)
        .map(|c| c.members.as_slice())
        .unwrap_or_default();
    let locations = std::iter::once(Location::Global(company))
        .chain(
            state
                .workspaces_of(company)
                .map(|(id, _)| Location::Shared(id)),
        )
        .chain(members.iter().map(|id| Location::Private(*id)));
    for location in locations {
        for scope in &scopes {
            let request = Request {
                requirement: Requirement::Scope(*scope),
                resource: ResourceId::any(),
                location,
                at,
            };
            if decision::authorize(state, token, &request).is_allowed() {
                reachable.insert(row_key(location, scope.permission()), location);
            }
        }
    }
    reachable
}

/// Opens and closes intervals as what the token can reach changes.
#[derive(Default)]
struct Tracker {
    open: BTreeMap<RowKey, (Location, Timestamp)>,
    closed: BTreeMap<RowKey, (Location, Vec<Interval>)>,
    changes: Vec<Change>,
}

impl Tracker {
    fn update(&mut self, at: Timestamp, now: BTreeMap<RowKey, Location>, change: Change) {
        let ended: Vec<RowKey> = self
            .open
            .keys()
            .filter(|key| !now.contains_key(key))
            .copied()
            .collect();
        let mut changed = !ended.is_empty();
        for key in ended {
            if let Some((location, from)) = self.open.remove(&key) {
                self.close(key, location, from, at, false);
            }
        }
        for (key, location) in now {
            if let std::collections::btree_map::Entry::Vacant(entry) = self.open.entry(key) {
                entry.insert((location, at));
                changed = true;
            }
        }
        if changed {
            self.changes.push(change);
        }
    }

    fn close(
        &mut self,
        key: RowKey,
        location: Location,
        from: Timestamp,
        to: Timestamp,
        open: bool,
    ) {
        self.closed
            .entry(key)
            .or_insert_with(|| (location, Vec::new()))
            .1
            .push(Interval { from, to, open });
    }

    fn finish(
        mut self,
        state: &State,
        token: TokenId,
        since: Timestamp,
        until: Timestamp,
    ) -> Timeline {
        for (key, (location, from)) in std::mem::take(&mut self.open) {
            self.close(key, location, from, until, true);
        }
        let rows = self
            .closed
            .into_iter()
            .filter_map(|((_, _, permission), (location, intervals))| {
                let intervals: Vec<Interval> = intervals
                    .into_iter()
                    .filter(|i| i.from < until && i.to > since)
                    .map(|i| Interval {
                        from: i.from.max(since),
                        to: i.to.min(until),
                        open: i.open,
                    })
                    .collect();
                (!intervals.is_empty()).then(|| Reach {
                    location,
                    label: location_label(state, location),
                    permission,
                    intervals,
                })
            })
            .collect();
        let changes = self
            .changes
            .into_iter()
            .filter(|c| c.at >= since && c.at <= until)
            .collect();
        Timeline {
            token,
            since,
            until,
            rows,
            changes,
        }
    }
}
