//! The state the command rules and the decision read, and the total,
//! I/O-free `apply` that folds one event into it.

use crate::hash::RandomKeyMap;
use crate::tokens::{NewToken, Token, TokenHandle, Tokens};
use tokenledger_events::{
    Actor, CompanyId, Envelope, Event, Name, Role, SecretDigest, TeammateId, Timestamp, TokenId,
    WorkspaceId,
};

/// The event that put something in its current state: who, when, and where
/// in the log. Every explanation of a refusal points at one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    /// The event's position in the log.
    pub position: u64,
    /// When it was recorded.
    pub at: Timestamp,
    /// Who caused it.
    pub actor: Actor,
}

impl Provenance {
    fn of(envelope: &Envelope) -> Provenance {
        Provenance {
            position: envelope.position,
            at: envelope.recorded_at,
            actor: envelope.actor,
        }
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "by {} at {}, log position {}",
            self.actor, self.at, self.position
        )
    }
}

/// A setting and the event that last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// The event that set it.
    pub set: Provenance,
}

/// A company (tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    /// Its name.
    pub name: Name,
    /// When and by whom it was created.
    pub created: Provenance,
    /// How many of its teammates are active admins.
    ///
    /// INVARIANT (admin-count): kept by `apply` on every role change,
    /// addition and deactivation; `decide` relies on it to refuse removing
    /// the last active admin.
    pub active_admins: u32,
    /// Its teammates, in the order they were added.
    pub members: Vec<TeammateId>,
}

/// A teammate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teammate {
    /// Their company.
    pub company: CompanyId,
    /// Their name.
    pub name: Name,
    /// Their role, and the event that gave it.
    pub role: Setting<Role>,
    /// When they were deactivated, if they were.
    pub deactivated: Option<Provenance>,
    /// Whether tokens may reach their private resources, and the event
    /// that decided it: their own (or an admin's) change, or the company's
    /// "for all" setting, whichever came later. It starts off, set by the
    /// event that added them.
    pub private_access: Setting<bool>,
}

impl Teammate {
    /// Whether they are an admin who has not been deactivated.
    pub fn is_active_admin(&self) -> bool {
        self.deactivated.is_none() && self.role.value == Role::Admin
    }
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Its company.
    pub company: CompanyId,
    /// Its name.
    pub name: Name,
    /// When and by whom it was created.
    pub created: Provenance,
    /// When and by whom it was deleted, if it was.
    pub deleted: Option<Provenance>,
}

/// Everything the rules read, folded from the log.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub(crate) position: u64,
    pub(crate) companies: RandomKeyMap<CompanyId, Company>,
    pub(crate) teammates: RandomKeyMap<TeammateId, Teammate>,
    pub(crate) workspaces: RandomKeyMap<WorkspaceId, Workspace>,
    pub(crate) tokens: Tokens,
    /// Set only on the state a dropped projection leaves for its readers.
    closed: bool,
}

impl State {
    /// The empty state, before the first event.
    pub fn new() -> State {
        State::default()
    }

    /// The empty state readers see once the projection has been dropped.
    pub(crate) fn closed() -> State {
        State {
            closed: true,
            ..State::default()
        }
    }

    /// Whether this is the state of a dropped projection.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The position of the last event applied (0 before any).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The state, marked as answering for log position `position`: for a
    /// state rebuilt from some of the log's events (one company's), the
    /// position up to which they were read. Never moves it backwards.
    pub fn as_of(mut self, position: u64) -> State {
        self.position = self.position.max(position);
        self
    }

    /// A company by id.
    pub fn company(&self, id: CompanyId) -> Option<&Company> {
        self.companies.get(&id)
    }

    /// A teammate by id.
    pub fn teammate(&self, id: TeammateId) -> Option<&Teammate> {
        self.teammates.get(&id)
    }

    /// A workspace by id.
    pub fn workspace(&self, id: WorkspaceId) -> Option<&Workspace> {
        self.workspaces.get(&id)
    }

    /// A token by id.
    pub fn token(&self, id: TokenId) -> Option<Token<'_>> {
        self.tokens.get(id)
    }

    /// A token by the handle its secret gave: the same as
    /// [`State::token`] for the handle's id, without the lookup by id.
    pub fn token_by_handle(&self, handle: TokenHandle) -> Option<Token<'_>> {
        self.tokens.by_handle(handle)
    }

    /// The token whose secret has this digest.
    pub fn token_by_digest(&self, digest: &SecretDigest) -> Option<TokenHandle> {
        self.tokens.handle_by_digest(digest)
    }

    /// The token created last, of any company, whose creation recorded a
    /// sealed secret. It walks back from the newest token: for opening,
    /// not for a request.
    pub fn newest_sealed_token(&self) -> Option<Token<'_>> {
        self.tokens.newest_sealed()
    }

    /// The tokens of a company, in the order they were created.
    pub fn tokens_of(&self, company: CompanyId) -> impl Iterator<Item = (TokenId, Token<'_>)> {
        self.tokens.of(company).map(|token| (token.id(), token))
    }

    /// The workspaces of a company, in no particular order.
    pub fn workspaces_of(
        &self,
        company: CompanyId,
    ) -> impl Iterator<Item = (WorkspaceId, &Workspace)> {
        self.workspaces
            .iter()
            .filter(move |(_, workspace)| workspace.company == company)
            .map(|(id, workspace)| (*id, workspace))
    }

    /// Folds one event into the state. Total: it never fails. Events that
    /// name unknown things cannot come from `decide`, and are ignored rather
    /// than trusted, so a damaged history cannot corrupt the state.
    pub fn apply(&mut self, envelope: &Envelope) {
        self.position = envelope.position;
        let by = Provenance::of(envelope);
        let company = envelope.company;
        match &envelope.event {
            Event::CompanyCreated { company, name } => {
                self.companies.entry(*company).or_insert_with(|| Company {
                    name: name.clone(),
                    created: by,
                    active_admins: 0,
                    members: Vec::new(),
                });
            }
            Event::TeammateAdded {
                teammate,
                name,
                role,
            } => {
                if self.teammates.contains_key(teammate) {
                    return;
                }
                let Some(owner) = self.companies.get_mut(&company) else {
                    return;
                };
                if *role == Role::Admin {
                    owner.active_admins += 1;
                }
                owner.members.push(*teammate);
                self.teammates.insert(
                    *teammate,
                    Teammate {
                        company,
                        name: name.clone(),
                        role: Setting {
                            value: *role,
                            set: by,
                        },
                        deactivated: None,
                        private_access: Setting {
                            value: false,
                            set: by,
                        },
                    },
                );
            }
            Event::TeammateRoleChanged { teammate, role } => {
                let Some(mate) = self.teammates.get_mut(teammate) else {
                    return;
                };
                let was_active_admin = mate.is_active_admin();
                mate.role = Setting {
                    value: *role,
                    set: by,
                };
                let is_active_admin = mate.is_active_admin();
                let of = mate.company;
                self.adjust_admins(of, was_active_admin, is_active_admin);
            }
            Event::TeammateDeactivated { teammate } => {
                let Some(mate) = self.teammates.get_mut(teammate) else {
                    return;
                };
                let was_active_admin = mate.is_active_admin();
                mate.deactivated.get_or_insert(by);
                let of = mate.company;
                self.adjust_admins(of, was_active_admin, false);
            }
            Event::WorkspaceCreated { workspace, name } => {
                self.workspaces
                    .entry(*workspace)
                    .or_insert_with(|| Workspace {
                        company,
                        name: name.clone(),
                        created: by,
                        deleted: None,
                    });
            }
            Event::WorkspaceDeleted { workspace } => {
                if let Some(space) = self.workspaces.get_mut(workspace) {
                    space.deleted.get_or_insert(by);
                }
            }
            Event::TokenCreated {
                token,
                name,
                kind,
                scope,
                secret_digest,
                expires_at,
                // The sealed secret stays in the log, where a reveal reads
                // it; the state keeps only that there is one.
                sealed_secret,
            } => {
                // INVARIANT (digest-unique), kept by `Tokens::insert`.
                self.tokens.insert(&NewToken {
                    id: *token,
                    company,
                    name: name.as_str(),
                    kind: *kind,
                    scope,
                    digest: *secret_digest,
                    expires_at: *expires_at,
                    sealed: sealed_secret.is_some(),
                    created: by,
                });
            }
            // A reveal changes nothing a decision or a command reads; the
            // log keeps it (see `Token`).
            Event::TokenRevealed { .. } => {}
            Event::TokenDeleted { token } => {
                self.tokens.delete(*token, by);
            }
            Event::PrivateApiAccessChanged { teammate, allowed } => {
                if let Some(mate) = self.teammates.get_mut(teammate) {
                    mate.private_access = Setting {
                        value: *allowed,
                        set: by,
                    };
                }
            }
            Event::PrivateApiAccessSetForAll { allowed } => {
                let Some(owner) = self.companies.get_mut(&company) else {
                    return;
                };
                let setting = Setting {
                    value: *allowed,
                    set: by,
                };
                // What the event changes is every teammate of the company,
                // so that a decision reads one teammate, not two records.
                for member in &owner.members {
                    if let Some(mate) = self.teammates.get_mut(member) {
                        mate.private_access = setting;
                    }
                }
            }
        }
    }

    fn adjust_admins(&mut self, company: CompanyId, was: bool, is: bool) {
        let Some(owner) = self.companies.get_mut(&company) else {
            return;
        };
        match (was, is) {
            (true, false) => owner.active_admins = owner.active_admins.saturating_sub(1),
            (false, true) => owner.active_admins += 1,
            _ => {}
        }
    }
}
