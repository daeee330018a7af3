//! The reference model: a plain restatement of docs/RULES.md's rules over
//! vectors and booleans, with "for all teammates" applied eagerly to each
//! teammate rather than resolved by log position as the real state does;
//! and [`run`], which drives a sequence of operations through the model and
//! through the real `decide`, `apply` and decision, and reports the first
//! disagreement. The model proptest (`tests/model.rs`) and the
//! `command_sequence` fuzz target both use it.

#![allow(
    missing_docs,
    reason = "the operations' fields are indices into the small world the constants size: c a company, t a teammate, w a workspace, k a token"
)]

use std::collections::BTreeSet;

use tokenledger_authz::{
    Command, Ledger, LedgerOptions, Location, Request, State, decide, decide_request,
};
use tokenledger_events::*;

pub const COMPANIES: usize = 3;
pub const TEAMMATES: usize = 8;
pub const WORKSPACES: usize = 4;
pub const TOKENS: usize = 4;

/// The scopes requests and tokens draw from: a few kinds, including one
/// OAuth grants may not have, and a permission only messages have.
pub const SCOPES: [&str; 6] = [
    "conversations:read",
    "conversations:write",
    "messages:send",
    "tags:read",
    "knowledge_bases:read",
    "teammates:read",
];

#[derive(Debug, Clone)]
pub enum Op {
    CreateCompany { c: usize },
    AddTeammate { c: usize, t: usize, admin: bool },
    ChangeRole { t: usize, admin: bool },
    Deactivate { t: usize },
    CreateWorkspace { c: usize, w: usize },
    DeleteWorkspace { w: usize },
    CreateToken(TokenSpec),
    Reveal { k: usize },
    Delete { k: usize },
    SetPref { t: usize, on: bool },
    SetAll { c: usize, on: bool },
    Tick { seconds: u64 },
    Check(Check),
}

#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub c: usize,
    pub k: usize,
    pub oauth: bool,
    pub resources: bool,
    pub provisioning: bool,
    pub triggers: bool,
    pub global: bool,
    /// 0: none, 1: all, 2: the workspaces in `workspaces`.
    pub shared: u8,
    pub workspaces: BTreeSet<usize>,
    pub private: bool,
    pub scopes: BTreeSet<usize>,
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Presented {
    Token(usize),
    Garbage,
    UnknownSecret,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub presented: Presented,
    /// An index into SCOPES, or `None` for the application-trigger feature.
    pub scope: Option<usize>,
    /// 0: global of a company, 1: a shared workspace, 2: a teammate's private resources.
    pub namespace: u8,
    /// Which company, workspace or teammate: when `own_company` is set and
    /// the token exists, the `at`-th of those in the token's company.
    pub at: usize,
    pub own_company: bool,
}

/// Who issues a command: usually the admin of the company it concerns, so
/// that sequences get past the permission checks and reach deep states;
/// otherwise anyone (0 is the system, 1..=TEAMMATES a teammate, then a token).
#[derive(Debug, Clone, Copy)]
pub enum Who {
    NaturalAdmin,
    Anyone(usize),
}

// ---------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone)]
struct MTeammate {
    company: usize,
    admin: bool,
    active: bool,
    private_access: bool,
}

#[derive(Debug, Clone)]
struct MWorkspace {
    company: usize,
    deleted: bool,
}

#[derive(Debug, Clone)]
struct MToken {
    company: usize,
    spec: TokenSpec,
    expires_at: Option<u64>,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    companies: [bool; COMPANIES],
    teammates: [Option<MTeammate>; TEAMMATES],
    workspaces: [Option<MWorkspace>; WORKSPACES],
    tokens: [Option<MToken>; TOKENS],
}

/// The model's answer to a request: allowed, or the number of the rule that refused it.
pub type Verdict = Result<(), u8>;

/// A replica's refusal for want of a live lease (503), which the model
/// cannot foresee: fail closed at any time, but never the rule's own
/// verdict, which shares a rule's number with it (rule 2's).
pub const UNAVAILABLE: u8 = u8::MAX;

/// The setup every sequence starts from, so that random operations meet a
/// populated world: each company with its first admin (teammate c is the
/// admin of company c) and a workspace (workspace c belongs to company c).
/// Teammates and workspaces beyond those are left for the operations.
fn setup() -> Vec<(Who, Op)> {
    let mut ops = Vec::new();
    for c in 0..COMPANIES {
        ops.push((Who::Anyone(0), Op::CreateCompany { c }));
        ops.push((
            Who::Anyone(0),
            Op::AddTeammate {
                c,
                t: c,
                admin: true,
            },
        ));
        ops.push((Who::Anyone(0), Op::CreateWorkspace { c, w: c }));
    }
    ops
}

impl Model {
    /// The company an operation concerns, as far as the model knows it.
    fn company_of(&self, op: &Op) -> Option<usize> {
        match op {
            Op::CreateCompany { c }
            | Op::AddTeammate { c, .. }
            | Op::CreateWorkspace { c, .. }
            | Op::SetAll { c, .. } => Some(*c),
            Op::CreateToken(spec) => Some(spec.c),
            Op::ChangeRole { t, .. } | Op::Deactivate { t } | Op::SetPref { t, .. } => {
                self.teammates[*t].as_ref().map(|m| m.company)
            }
            Op::DeleteWorkspace { w } => self.workspaces[*w].as_ref().map(|x| x.company),
            Op::Reveal { k } | Op::Delete { k } => self.tokens[*k].as_ref().map(|x| x.company),
            Op::Tick { .. } | Op::Check(_) => None,
        }
    }

    /// The actor index for `who`: the natural admin is the first active
    /// admin of the company the operation concerns, the system when none.
    fn actor_for(&self, who: Who, op: &Op) -> usize {
        match who {
            Who::Anyone(a) => a,
            Who::NaturalAdmin => self
                .company_of(op)
                .and_then(|c| {
                    (0..TEAMMATES).find(|t| {
                        self.active_teammate(*t)
                            .is_some_and(|m| m.admin && m.company == c)
                    })
                })
                .map_or(0, |t| t + 1),
        }
    }

    /// The check with its token slot resolved to a token that was created
    /// (live, deleted or expired), when there is one: checks of slots never
    /// filled would all end at rule 2.
    fn resolve(&self, check: &Check) -> Check {
        let created: Vec<usize> = (0..TOKENS).filter(|k| self.tokens[*k].is_some()).collect();
        let mut resolved = check.clone();
        if let Presented::Token(k) = check.presented
            && !created.is_empty()
        {
            resolved.presented = Presented::Token(created[k % created.len()]);
        }
        resolved
    }

    /// Where a check looks: (namespace, index of company, workspace or teammate).
    fn location_for(&self, check: &Check) -> (u8, usize) {
        let token_company = match check.presented {
            Presented::Token(k) if check.own_company => self.tokens[k].as_ref().map(|t| t.company),
            _ => None,
        };
        let pick = |candidates: Vec<usize>, fallback: usize| {
            if candidates.is_empty() {
                fallback
            } else {
                candidates[check.at % candidates.len()]
            }
        };
        let index = match (check.namespace, token_company) {
            (0, Some(c)) => c,
            (0, None) => check.at % COMPANIES,
            (1, Some(c)) => pick(
                (0..WORKSPACES)
                    .filter(|w| self.workspaces[*w].as_ref().is_some_and(|x| x.company == c))
                    .collect(),
                check.at % WORKSPACES,
            ),
            (1, None) => check.at % WORKSPACES,
            (_, Some(c)) => pick(
                (0..TEAMMATES)
                    .filter(|t| self.teammates[*t].as_ref().is_some_and(|m| m.company == c))
                    .collect(),
                check.at,
            ),
            (_, None) => check.at,
        };
        (check.namespace, index)
    }

    fn active_teammate(&self, t: usize) -> Option<&MTeammate> {
        self.teammates[t].as_ref().filter(|m| m.active)
    }

    fn admin_of(&self, actor: usize, company: usize) -> bool {
        (1..=TEAMMATES).contains(&actor)
            && self
                .active_teammate(actor - 1)
                .is_some_and(|m| m.admin && m.company == company)
    }

    fn system_or_admin_of(&self, actor: usize, company: usize) -> bool {
        actor == 0 || self.admin_of(actor, company)
    }

    fn active_admins(&self, company: usize) -> usize {
        self.teammates
            .iter()
            .flatten()
            .filter(|m| m.company == company && m.admin && m.active)
            .count()
    }

    fn token_scope_ok(&self, spec: &TokenSpec) -> bool {
        let features = spec.resources || spec.provisioning || spec.triggers;
        let shared_some = spec.shared == 1 || (spec.shared == 2 && !spec.workspaces.is_empty());
        let any_namespace = spec.global || shared_some || spec.private;
        let has_kb = spec
            .scopes
            .iter()
            .any(|s| SCOPES[*s].starts_with("knowledge_bases"));
        let named_ok = spec.shared != 2
            || spec.workspaces.iter().all(|w| {
                self.workspaces[*w]
                    .as_ref()
                    .is_some_and(|x| x.company == spec.c && !x.deleted)
            });
        features
            && !(spec.shared == 2 && spec.workspaces.is_empty())
            && if spec.resources {
                any_namespace && !spec.scopes.is_empty()
            } else {
                spec.scopes.is_empty()
            }
            && !(spec.oauth && (spec.triggers || spec.private || spec.global || has_kb))
            && named_ok
            && spec.expires_in != Some(0)
    }

    /// Applies a command if the rules allow it; returns whether they did.
    fn command(&mut self, actor: usize, op: &Op) -> bool {
        // Tokens issue no commands; a teammate must exist and be active.
        if actor == TEAMMATES + 1 {
            return false;
        }
        if actor >= 1 && self.active_teammate(actor - 1).is_none() {
            return false;
        }
        match op {
            Op::CreateCompany { c } => {
                if actor != 0 || self.companies[*c] {
                    return false;
                }
                self.companies[*c] = true;
            }
            Op::AddTeammate { c, t, admin } => {
                if !self.companies[*c]
                    || !self.system_or_admin_of(actor, *c)
                    || self.teammates[*t].is_some()
                {
                    return false;
                }
                self.teammates[*t] = Some(MTeammate {
                    company: *c,
                    admin: *admin,
                    active: true,
                    private_access: false,
                });
            }
            Op::ChangeRole { t, admin } => {
                let Some(mate) = self.teammates[*t].clone() else {
                    return false;
                };
                if !self.system_or_admin_of(actor, mate.company)
                    || !mate.active
                    || mate.admin == *admin
                    || (mate.admin && self.active_admins(mate.company) < 2)
                {
                    return false;
                }
                self.teammates[*t].as_mut().unwrap().admin = *admin;
            }
            Op::Deactivate { t } => {
                let Some(mate) = self.teammates[*t].clone() else {
                    return false;
                };
                if !self.system_or_admin_of(actor, mate.company)
                    || !mate.active
                    || (mate.admin && self.active_admins(mate.company) < 2)
                {
                    return false;
                }
                self.teammates[*t].as_mut().unwrap().active = false;
            }
            Op::CreateWorkspace { c, w } => {
                if !self.companies[*c]
                    || !self.system_or_admin_of(actor, *c)
                    || self.workspaces[*w].is_some()
                {
                    return false;
                }
                self.workspaces[*w] = Some(MWorkspace {
                    company: *c,
                    deleted: false,
                });
            }
            Op::DeleteWorkspace { w } => {
                let Some(space) = self.workspaces[*w].clone() else {
                    return false;
                };
                if !self.system_or_admin_of(actor, space.company) || space.deleted {
                    return false;
                }
                self.workspaces[*w].as_mut().unwrap().deleted = true;
            }
            Op::CreateToken(spec) => {
                if !self.companies[spec.c]
                    || !self.admin_of(actor, spec.c)
                    || self.tokens[spec.k].is_some()
                    || !self.token_scope_ok(spec)
                {
                    return false;
                }
                self.tokens[spec.k] = Some(MToken {
                    company: spec.c,
                    spec: spec.clone(),
                    expires_at: spec.expires_in.map(|s| self.now + s * 1_000_000),
                    deleted: false,
                });
            }
            Op::Reveal { k } => {
                let Some(token) = &self.tokens[*k] else {
                    return false;
                };
                let expired = token.expires_at.is_some_and(|e| self.now >= e);
                if !self.admin_of(actor, token.company) || token.deleted || expired {
                    return false;
                }
            }
            Op::Delete { k } => {
                let Some(token) = &self.tokens[*k] else {
                    return false;
                };
                if !self.admin_of(actor, token.company) || token.deleted {
                    return false;
                }
                self.tokens[*k].as_mut().unwrap().deleted = true;
            }
            Op::SetPref { t, on } => {
                let Some(mate) = &self.teammates[*t] else {
                    return false;
                };
                let is_self = actor == t + 1;
                if !is_self && !self.system_or_admin_of(actor, mate.company) {
                    return false;
                }
                self.teammates[*t].as_mut().unwrap().private_access = *on;
            }
            Op::SetAll { c, on } => {
                if !self.companies[*c] || !self.system_or_admin_of(actor, *c) {
                    return false;
                }
                for mate in self.teammates.iter_mut().flatten() {
                    if mate.company == *c {
                        mate.private_access = *on;
                    }
                }
            }
            Op::Tick { .. } | Op::Check(_) => unreachable!("not a command"),
        }
        true
    }

    fn check(&self, check: &Check, (namespace, at): (u8, usize)) -> Verdict {
        let k = match check.presented {
            Presented::Garbage => return Err(1),
            Presented::UnknownSecret => return Err(2),
            Presented::Token(k) => k,
        };
        let Some(token) = &self.tokens[k] else {
            return Err(2);
        };
        if token.deleted || token.expires_at.is_some_and(|e| self.now >= e) {
            return Err(2);
        }
        let owner_company = match namespace {
            0 => Some(at),
            1 => self.workspaces[at].as_ref().map(|w| w.company),
            _ => self.teammates[at].as_ref().map(|m| m.company),
        };
        if owner_company != Some(token.company) {
            return Err(3);
        }
        let spec = &token.spec;
        let Some(scope) = check.scope else {
            return if spec.triggers { Ok(()) } else { Err(4) };
        };
        if !spec.resources {
            return Err(4);
        }
        if !spec.scopes.contains(&scope) {
            return Err(5);
        }
        match namespace {
            0 if !spec.global => return Err(6),
            1 => {
                let w = at;
                if self.workspaces[w].as_ref().is_some_and(|x| x.deleted) {
                    return Err(6);
                }
                let covered =
                    spec.shared == 1 || (spec.shared == 2 && spec.workspaces.contains(&w));
                if !covered {
                    return Err(6);
                }
            }
            2 if !spec.private => return Err(6),
            _ => {}
        }
        if namespace == 2
            && !self.teammates[at]
                .as_ref()
                .is_some_and(|m| m.active && m.private_access)
        {
            return Err(7);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The real thing, driven the same way.

fn company_id(c: usize) -> CompanyId {
    CompanyId::from_u128(0x100 + c as u128)
}
fn teammate_id(t: usize) -> TeammateId {
    TeammateId::from_u128(0x200 + t as u128)
}
fn workspace_id(w: usize) -> WorkspaceId {
    WorkspaceId::from_u128(0x300 + w as u128)
}
fn token_id(k: usize) -> TokenId {
    TokenId::from_u128(0x400 + k as u128)
}
fn secret(k: usize) -> Secret {
    Secret::from_random([k as u8 + 1; 32])
}

/// The actor the model numbers `a`: 0 the system, then the teammates, then
/// a token.
pub fn actor(a: usize) -> Actor {
    match a {
        0 => Actor::System,
        a if a <= TEAMMATES => Actor::Teammate(teammate_id(a - 1)),
        _ => Actor::Token(token_id(0)),
    }
}

fn name() -> Name {
    Name::new("n").unwrap()
}

/// The command `op` stands for, issued at `now`.
pub fn command(op: &Op, now: Timestamp) -> Command {
    match op {
        Op::CreateCompany { c } => Command::CreateCompany {
            company: company_id(*c),
            name: name(),
        },
        Op::AddTeammate { c, t, admin } => Command::AddTeammate {
            company: company_id(*c),
            teammate: teammate_id(*t),
            name: name(),
            role: if *admin { Role::Admin } else { Role::Member },
        },
        Op::ChangeRole { t, admin } => Command::ChangeRole {
            teammate: teammate_id(*t),
            role: if *admin { Role::Admin } else { Role::Member },
        },
        Op::Deactivate { t } => Command::DeactivateTeammate {
            teammate: teammate_id(*t),
        },
        Op::CreateWorkspace { c, w } => Command::CreateWorkspace {
            company: company_id(*c),
            workspace: workspace_id(*w),
            name: name(),
        },
        Op::DeleteWorkspace { w } => Command::DeleteWorkspace {
            workspace: workspace_id(*w),
        },
        Op::CreateToken(spec) => {
            let mut features = BTreeSet::new();
            for (on, feature) in [
                (spec.resources, Feature::Resources),
                (spec.provisioning, Feature::Provisioning),
                (spec.triggers, Feature::AppTriggers),
            ] {
                if on {
                    features.insert(feature);
                }
            }
            let shared = match spec.shared {
                0 => SharedNamespace::None,
                1 => SharedNamespace::All,
                _ => SharedNamespace::Workspaces(
                    spec.workspaces.iter().map(|w| workspace_id(*w)).collect(),
                ),
            };
            Command::CreateToken {
                company: company_id(spec.c),
                token: token_id(spec.k),
                name: name(),
                kind: if spec.oauth {
                    TokenKind::OAuthGrant
                } else {
                    TokenKind::ApiToken
                },
                scope: TokenScope {
                    features,
                    namespaces: Namespaces {
                        global: spec.global,
                        shared,
                        private: spec.private,
                    },
                    grants: spec
                        .scopes
                        .iter()
                        .map(|s| SCOPES[*s].parse::<Scope>().unwrap())
                        .collect(),
                },
                secret_digest: secret(spec.k).digest(),
                sealed_secret: None,
                expires_at: spec
                    .expires_in
                    .map(|s| Timestamp::from_micros(now.as_micros() + s * 1_000_000)),
            }
        }
        Op::Reveal { k } => Command::RevealToken {
            token: token_id(*k),
        },
        Op::Delete { k } => Command::DeleteToken {
            token: token_id(*k),
        },
        Op::SetPref { t, on } => Command::SetPrivateApiAccess {
            teammate: teammate_id(*t),
            allowed: *on,
        },
        Op::SetAll { c, on } => Command::SetPrivateApiAccessForAll {
            company: company_id(*c),
            allowed: *on,
        },
        Op::Tick { .. } | Op::Check(_) => unreachable!("not a command"),
    }
}

/// The secret presented and the request a check makes, at `now`.
pub fn request_for(
    check: &Check,
    (namespace, at): (u8, usize),
    now: Timestamp,
) -> (String, Request) {
    let presented = match check.presented {
        Presented::Token(k) => secret(k).expose().to_owned(),
        Presented::Garbage => "tlk_garbage".to_owned(),
        Presented::UnknownSecret => Secret::from_random([0xee; 32]).expose().to_owned(),
    };
    let location = match namespace {
        0 => Location::Global(company_id(at)),
        1 => Location::Shared(workspace_id(at)),
        _ => Location::Private(teammate_id(at)),
    };
    let requirement = match check.scope {
        Some(s) => Requirement::Scope(SCOPES[s].parse().unwrap()),
        None => Requirement::Feature(Feature::AppTriggers),
    };
    let request = Request {
        requirement,
        resource: "cnv_1".parse().unwrap(),
        location,
        at: now,
    };
    (presented, request)
}

fn real_check(
    state: &State,
    check: &Check,
    (namespace, at): (u8, usize),
    now: Timestamp,
) -> Verdict {
    let (presented, request) = request_for(check, (namespace, at), now);
    let location = request.location;
    let decision = decide_request(state, &presented, &request);
    assert_eq!(decision.position, state.position());
    if decision.is_allowed() {
        // Whatever else the model says: never across companies.
        let token_company = decision
            .token
            .and_then(|token| state.token(token))
            .map(|token| token.company());
        let location_company = match location {
            Location::Global(company) => Some(company),
            Location::Shared(workspace) => state.workspace(workspace).map(|w| w.company),
            Location::Private(teammate) => state.teammate(teammate).map(|t| t.company),
        };
        assert!(
            token_company.is_some() && token_company == location_company,
            "allowed across companies: {token_company:?} reached {location:?}"
        );
    }
    match decision.refusal {
        None => Ok(()),
        Some(refusal) => Err(refusal.rule.number()),
    }
}

/// The operations a sequence runs: the setup every sequence starts from,
/// then `ops`.
pub fn steps(ops: &[(Who, Op)]) -> Vec<(Who, Op)> {
    setup().into_iter().chain(ops.iter().cloned()).collect()
}

/// Several replicas of one ledger, each in a process of its own, as
/// [`run_on_replicas`] drives them.
pub trait Replicas {
    /// How many there are.
    fn count(&self) -> usize;
    /// Executes the command of step `step` of [`steps`] on replica `on`, by
    /// the actor the model numbers `actor`, at `now`, once it has applied
    /// `wait` (a client's consistency token: a command is decided against
    /// the state the replica has applied): the receipt's position, or the
    /// error's text.
    fn execute(
        &mut self,
        on: usize,
        step: usize,
        actor: usize,
        now: Timestamp,
        wait: u64,
    ) -> Result<u64, String>;
    /// Decides `check` at `location` and `now` on replica `on`, once it has
    /// applied `wait` if given: the verdict and the decision's position.
    fn check(
        &mut self,
        on: usize,
        check: &Check,
        location: (u8, usize),
        now: Timestamp,
        wait: Option<u64>,
    ) -> (Verdict, u64);
}

/// What [`run_on_replicas`] checked.
#[derive(Debug, Default)]
pub struct ReplicaCounts {
    /// Commands recorded.
    pub recorded: usize,
    /// Requests decided at once, right after a command returned or at a
    /// check of the sequence.
    pub at_once: usize,
    /// Of those, decided by a replica that had not applied the last
    /// command yet (so the check could have caught a stale allow).
    pub behind: usize,
    /// Requests decided once the replica had applied the last command.
    pub caught_up: usize,
    /// Requests asked at once after a command removed what the model had
    /// allowed them: each a chance to catch a stale allow.
    pub removed: usize,
}

/// How many of the sequence's latest checks the model allowed are asked
/// again, at once, on every replica after each command returns.
const PROBES: usize = 8;

/// Runs one sequence through the model and through several replicas:
/// each command on a replica `pick` chooses, once it has applied the last
/// command (a client's consistency token), and each request on every
/// replica twice. At once: a replica may not have applied what another
/// recorded, so it may refuse what the model allows, but it never allows
/// what the model refuses (a removal returns only once every replica has
/// applied it), and once it has applied the last command it agrees with
/// the model. Then, once it has applied the last command (the position as
/// a consistency token): it agrees with the model. After each command
/// returns, the latest checks the model allowed are asked again at once on
/// every replica, to catch an allow of what it just removed.
pub fn run_on_replicas(
    ops: &[(Who, Op)],
    replicas: &mut dyn Replicas,
    pick: &mut dyn FnMut() -> usize,
    counts: &mut ReplicaCounts,
) -> Result<(), String> {
    let mut model = Model::default();
    let mut head = 0;
    let mut recent: Vec<Check> = Vec::new();
    for (step, (who, op)) in steps(ops).iter().enumerate() {
        let now = Timestamp::from_system_time(std::time::SystemTime::now());
        model.now = now.as_micros();
        match op {
            Op::Tick { .. } => {}
            Op::Check(check) => {
                at_once(&model, replicas, false, check, now, head, counts)
                    .map_err(|why| format!("step {step}: {why}"))?;
                let check = &model.resolve(check);
                let location = model.location_for(check);
                let expected = model.check(check, location);
                for on in 0..replicas.count() {
                    let (waited, position) = replicas.check(on, check, location, now, Some(head));
                    counts.caught_up += 1;
                    if waited != expected {
                        return Err(format!(
                            "step {step}: replica {on} at {position} (head {head}): {check:?} at {location:?}: the model says {expected:?}, the replica {waited:?}"
                        ));
                    }
                }
                // Those allowed are the ones a removal can turn.
                if expected.is_ok() {
                    recent.insert(0, op_check(op));
                    recent.truncate(PROBES);
                }
            }
            op => {
                let who = model.actor_for(*who, op);
                let expected = model.command(who, op);
                let on = pick() % replicas.count();
                let actual = replicas.execute(on, step, who, now, head);
                if actual.is_ok() != expected {
                    return Err(format!(
                        "step {step}: actor {who} {op:?} on replica {on}: the model says {expected}, the replica {actual:?}"
                    ));
                }
                if let Ok(position) = actual {
                    head = head.max(position);
                    counts.recorded += 1;
                    for check in &recent {
                        at_once(&model, replicas, true, check, now, head, counts)
                            .map_err(|why| format!("step {step}, after {op:?}: {why}"))?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn op_check(op: &Op) -> Check {
    match op {
        Op::Check(check) => check.clone(),
        _ => unreachable!("a check"),
    }
}

/// Asks `check` on every replica at once: never an allow the model
/// refuses, and the model's verdict from a replica that has applied `head`.
fn at_once(
    model: &Model,
    replicas: &mut dyn Replicas,
    probe: bool,
    check: &Check,
    now: Timestamp,
    head: u64,
    counts: &mut ReplicaCounts,
) -> Result<(), String> {
    let check = &model.resolve(check);
    let location = model.location_for(check);
    let expected = model.check(check, location);
    for on in 0..replicas.count() {
        let (verdict, position) = replicas.check(on, check, location, now, None);
        counts.at_once += 1;
        if probe && expected.is_err() {
            counts.removed += 1;
        }
        if position < head {
            counts.behind += 1;
        }
        let stale = verdict.is_ok() && expected.is_err();
        let unavailable = verdict == Err(UNAVAILABLE);
        if stale || (position >= head && verdict != expected && !unavailable) {
            return Err(format!(
                "replica {on} at {position} (head {head}), at once: {check:?} at {location:?}: the model says {expected:?}, the replica {verdict:?}"
            ));
        }
    }
    Ok(())
}

/// Runs one sequence through the model and the real code; counts the
/// verdicts (index 0 for allowed, else the rule) so the generator's reach
/// can be checked.
pub fn run(ops: &[(Who, Op)], verdicts: &mut [usize; 8]) -> Result<(), String> {
    let mut model = Model::default();
    let mut state = State::new();
    let mut position = 0u64;
    let mut now = Timestamp::from_micros(1_000_000_000);
    for (step, (who, op)) in setup().iter().chain(ops).enumerate() {
        match op {
            Op::Tick { seconds } => {
                now = Timestamp::from_micros(now.as_micros() + seconds * 1_000_000);
                model.now = now.as_micros();
            }
            Op::Check(check) => {
                let check = &model.resolve(check);
                let location = model.location_for(check);
                let expected = model.check(check, location);
                let actual = real_check(&state, check, location, now);
                if actual != expected {
                    return Err(format!(
                        "step {step}: {check:?} at {location:?}: the model says {expected:?}, the real decision {actual:?}"
                    ));
                }
                verdicts[actual.err().map_or(0, usize::from)] += 1;
            }
            op => {
                model.now = now.as_micros();
                let who = model.actor_for(*who, op);
                let expected = model.command(who, op);
                let actual = decide(&state, actor(who), now, &command(op, now));
                if actual.is_ok() != expected {
                    return Err(format!(
                        "step {step}: actor {who} {op:?}: the model says {expected}, decide says {actual:?}"
                    ));
                }
                if let Ok(decided) = actual {
                    for event in decided.events {
                        position += 1;
                        state.apply(&Envelope {
                            position,
                            event_id: EventId::from_u128(u128::from(position)),
                            recorded_at: now,
                            actor: actor(who),
                            company: decided.company,
                            event,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs one sequence through the model and through a real `Ledger` in a
/// temporary directory: every command executed, made durable and applied
/// as a service would, every request decided against the published state.
/// The ledger takes its time from the system clock, which a test cannot
/// move, so `Tick`s are skipped and the model follows the clock instead.
pub fn run_on_ledger(ops: &[(Who, Op)]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ledger = Ledger::open_with(
        dir.path(),
        LedgerOptions {
            checkpoint_every: 0,
            ..LedgerOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut model = Model::default();
    for (step, (who, op)) in setup().iter().chain(ops).enumerate() {
        let now = Timestamp::from_system_time(std::time::SystemTime::now());
        model.now = now.as_micros();
        match op {
            Op::Tick { .. } => {}
            Op::Check(check) => {
                let check = &model.resolve(check);
                let location = model.location_for(check);
                let expected = model.check(check, location);
                let actual = ledger.with_state(|state| real_check(state, check, location, now));
                if actual != expected {
                    return Err(format!(
                        "step {step}: {check:?} at {location:?}: the model says {expected:?}, the ledger {actual:?}"
                    ));
                }
            }
            op => {
                let who = model.actor_for(*who, op);
                let expected = model.command(who, op);
                let actual = ledger.execute(actor(who), command(op, now));
                if actual.is_ok() != expected {
                    return Err(format!(
                        "step {step}: actor {who} {op:?}: the model says {expected}, the ledger {actual:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}
