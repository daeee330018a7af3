//! The command rules: who may do what, as a pure function from the current
//! state and a command to the events it causes.

use std::fmt;

use tokenledger_events::{
    Actor, CompanyId, Event, Name, Role, SealedSecret, SecretDigest, SharedNamespace, TeammateId,
    Timestamp, TokenId, TokenKind, TokenScope, TokenScopeError, WorkspaceId,
};

use tokenledger_projection::{Provenance, State, Token};

/// A request to change something. New things carry their ids, drawn at
/// random by the caller (see [`crate::fresh`]), so `decide` stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a company (the system actor only).
    CreateCompany {
        /// The new company's id.
        company: CompanyId,
        /// Its name.
        name: Name,
    },
    /// Add a teammate to a company.
    AddTeammate {
        /// The company.
        company: CompanyId,
        /// The new teammate's id.
        teammate: TeammateId,
        /// Their name.
        name: Name,
        /// Their role.
        role: Role,
    },
    /// Make a teammate an admin or a member.
    ChangeRole {
        /// The teammate.
        teammate: TeammateId,
        /// The new role.
        role: Role,
    },
    /// Deactivate a teammate, for good.
    DeactivateTeammate {
        /// The teammate.
        teammate: TeammateId,
    },
    /// Create a workspace.
    CreateWorkspace {
        /// The company.
        company: CompanyId,
        /// The new workspace's id.
        workspace: WorkspaceId,
        /// Its name.
        name: Name,
    },
    /// Delete a workspace.
    DeleteWorkspace {
        /// The workspace.
        workspace: WorkspaceId,
    },
    /// Create a token (an active admin of the company only).
    CreateToken {
        /// The company.
        company: CompanyId,
        /// The new token's id.
        token: TokenId,
        /// Its descriptive name.
        name: Name,
        /// API token or OAuth grant.
        kind: TokenKind,
        /// What it may do.
        scope: TokenScope,
        /// The digest of the secret the caller generated.
        secret_digest: SecretDigest,
        /// The secret sealed under the service's key, if it has one.
        sealed_secret: Option<SealedSecret>,
        /// When it stops working, if ever.
        expires_at: Option<Timestamp>,
    },
    /// Record that a token's secret is being shown again to an admin.
    RevealToken {
        /// The token.
        token: TokenId,
    },
    /// Delete a token, immediately and for good.
    DeleteToken {
        /// The token.
        token: TokenId,
    },
    /// Turn a teammate's private API access on or off.
    SetPrivateApiAccess {
        /// The teammate whose preference it is.
        teammate: TeammateId,
        /// On or off.
        allowed: bool,
    },
    /// Turn every teammate's private API access on or off at once.
    SetPrivateApiAccessForAll {
        /// The company.
        company: CompanyId,
        /// On or off.
        allowed: bool,
    },
}

impl Command {
    /// What the command does, for messages (`create tokens`).
    pub const fn action(&self) -> &'static str {
        match self {
            Command::CreateCompany { .. } => "create companies",
            Command::AddTeammate { .. } => "add teammates",
            Command::ChangeRole { .. } => "change roles",
            Command::DeactivateTeammate { .. } => "deactivate teammates",
            Command::CreateWorkspace { .. } => "create workspaces",
            Command::DeleteWorkspace { .. } => "delete workspaces",
            Command::CreateToken { .. } => "create tokens",
            Command::RevealToken { .. } => "reveal tokens",
            Command::DeleteToken { .. } => "delete tokens",
            Command::SetPrivateApiAccess { .. } => "change this teammate's private API access",
            Command::SetPrivateApiAccessForAll { .. } => {
                "change every teammate's private API access"
            }
        }
    }
}

/// The events a command causes, all for one company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The company the events belong to.
    pub company: CompanyId,
    /// The events, in order.
    pub events: Vec<Event>,
}

/// An id a command would create that is taken already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakenId {
    /// A company's.
    Company(CompanyId),
    /// A teammate's.
    Teammate(TeammateId),
    /// A workspace's.
    Workspace(WorkspaceId),
    /// A token's.
    Token(TokenId),
}

impl fmt::Display for TakenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakenId::Company(id) => fmt::Display::fmt(id, f),
            TakenId::Teammate(id) => fmt::Display::fmt(id, f),
            TakenId::Workspace(id) => fmt::Display::fmt(id, f),
            TakenId::Token(id) => fmt::Display::fmt(id, f),
        }
    }
}

/// Why a command was refused. Nothing is recorded for a refused command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The actor may not do this.
    NotPermitted {
        /// Who tried.
        actor: Actor,
        /// What they tried (`create tokens`).
        action: &'static str,
        /// Who may.
        rule: &'static str,
    },
    /// The acting teammate does not exist.
    UnknownActor {
        /// The id given.
        actor: TeammateId,
    },
    /// The acting teammate has been deactivated.
    ActorDeactivated {
        /// Who.
        actor: TeammateId,
        /// When and by whom.
        deactivated: Provenance,
    },
    /// No such company.
    UnknownCompany(CompanyId),
    /// No such teammate.
    UnknownTeammate(TeammateId),
    /// No such workspace.
    UnknownWorkspace(WorkspaceId),
    /// No such token.
    UnknownToken(TokenId),
    /// A new id is already taken (a retry, or a collision).
    AlreadyExists {
        /// The id.
        id: TakenId,
    },
    /// The secret's digest belongs to another token already.
    DuplicateSecret,
    /// The teammate has been deactivated and cannot be changed.
    TeammateDeactivated(TeammateId),
    /// The teammate already has that role.
    RoleUnchanged {
        /// The teammate.
        teammate: TeammateId,
        /// The role they have.
        role: Role,
    },
    /// The change would leave the company without an active admin.
    LastAdmin(TeammateId),
    /// The workspace has been deleted.
    WorkspaceDeleted(WorkspaceId),
    /// A workspace named in a token's scope is not one of the company's live workspaces.
    WorkspaceNotInCompany(WorkspaceId),
    /// The token's scope breaks a rule of its kind.
    InvalidScope(TokenScopeError),
    /// The expiry is not in the future.
    ExpiryNotInFuture {
        /// The expiry asked for.
        expires_at: Timestamp,
        /// The time of the command.
        now: Timestamp,
    },
    /// The expiry is later than any time tokenledger can print as RFC 3339.
    ExpiryTooLate {
        /// The expiry asked for.
        expires_at: Timestamp,
    },
    /// The token was deleted; deletion is final.
    TokenDeleted {
        /// The token.
        token: TokenId,
        /// When and by whom.
        deleted: Provenance,
    },
    /// The token has expired and cannot be revealed.
    TokenExpired {
        /// The token.
        token: TokenId,
        /// When it expired.
        expired_at: Timestamp,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NotPermitted {
                actor,
                action,
                rule,
            } => write!(f, "{actor} may not {action}: {rule}"),
            CommandError::UnknownActor { actor } => write!(f, "no teammate `{actor}` exists"),
            CommandError::ActorDeactivated { actor, deactivated } => write!(
                f,
                "{actor} was deactivated ({deactivated}) and can no longer act"
            ),
            CommandError::UnknownCompany(id) => write!(f, "no company `{id}` exists"),
            CommandError::UnknownTeammate(id) => write!(f, "no teammate `{id}` exists"),
            CommandError::UnknownWorkspace(id) => write!(f, "no workspace `{id}` exists"),
            CommandError::UnknownToken(id) => write!(f, "no token `{id}` exists"),
            CommandError::AlreadyExists { id } => write!(f, "`{id}` exists already"),
            CommandError::DuplicateSecret => {
                f.write_str("another token has the same secret; generate a new one")
            }
            CommandError::TeammateDeactivated(id) => write!(f, "teammate `{id}` is deactivated"),
            CommandError::RoleUnchanged { teammate, role } => {
                write!(f, "teammate `{teammate}` is already {role}")
            }
            CommandError::LastAdmin(id) => write!(
                f,
                "`{id}` is the company's last active admin; make another teammate admin first"
            ),
            CommandError::WorkspaceDeleted(id) => write!(f, "workspace `{id}` was deleted"),
            CommandError::WorkspaceNotInCompany(id) => write!(
                f,
                "workspace `{id}` is not a live workspace of the token's company"
            ),
            CommandError::InvalidScope(error) => fmt::Display::fmt(error, f),
            CommandError::ExpiryNotInFuture { expires_at, now } => write!(
                f,
                "the expiry {expires_at} is not after the time of the request, {now}"
            ),
            CommandError::ExpiryTooLate { expires_at } => write!(
                f,
                "the expiry {expires_at} is after {}, the latest a token may have; a token without an expiry never expires",
                Timestamp::MAX_RFC3339
            ),
            CommandError::TokenDeleted { token, deleted } => write!(
                f,
                "token `{token}` was deleted ({deleted}); deletion is final"
            ),
            CommandError::TokenExpired { token, expired_at } => {
                write!(f, "token `{token}` expired at {expired_at}")
            }
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::InvalidScope(error) => Some(error),
            _ => None,
        }
    }
}

const ADMINS: &str = "only an active admin of the same company may";
const ADMINS_OR_SYSTEM: &str = "only the system or an active admin of the same company may";
const SYSTEM_ONLY: &str = "only the system may";
const OWNER_OR_ADMIN: &str =
    "only the teammate, an active admin of the same company, or the system may";

fn not_permitted(actor: Actor, command: &Command, rule: &'static str) -> CommandError {
    CommandError::NotPermitted {
        actor,
        action: command.action(),
        rule,
    }
}

/// Who is acting, once checked: the system, or an active teammate.
enum Acting {
    System,
    Teammate {
        id: TeammateId,
        company: CompanyId,
        admin: bool,
    },
}

fn acting(state: &State, actor: Actor, command: &Command) -> Result<Acting, CommandError> {
    match actor {
        Actor::System => Ok(Acting::System),
        Actor::Token(_) => Err(not_permitted(
            actor,
            command,
            "tokens cannot issue administrative commands",
        )),
        Actor::Teammate(id) => {
            let mate = state
                .teammate(id)
                .ok_or(CommandError::UnknownActor { actor: id })?;
            if let Some(deactivated) = mate.deactivated {
                return Err(CommandError::ActorDeactivated {
                    actor: id,
                    deactivated,
                });
            }
            Ok(Acting::Teammate {
                id,
                company: mate.company,
                admin: mate.role.value == Role::Admin,
            })
        }
    }
}

/// Requires an active admin of `company`, or the system when `system_may`.
fn require_admin(
    acting: &Acting,
    actor: Actor,
    company: CompanyId,
    command: &Command,
    system_may: bool,
) -> Result<(), CommandError> {
    let rule = if system_may { ADMINS_OR_SYSTEM } else { ADMINS };
    match acting {
        Acting::System if system_may => Ok(()),
        Acting::Teammate {
            company: own,
            admin: true,
            ..
        } if *own == company => Ok(()),
        _ => Err(not_permitted(actor, command, rule)),
    }
}

/// The company exists, and the actor may administer it.
fn administer(
    state: &State,
    acting: &Acting,
    actor: Actor,
    company: CompanyId,
    command: &Command,
    system_may: bool,
) -> Result<(), CommandError> {
    state
        .company(company)
        .ok_or(CommandError::UnknownCompany(company))?;
    require_admin(acting, actor, company, command, system_may)
}

fn live_token(state: &State, token: TokenId) -> Result<Token<'_>, CommandError> {
    let found = state
        .token(token)
        .ok_or(CommandError::UnknownToken(token))?;
    if let Some(deleted) = found.deleted() {
        return Err(CommandError::TokenDeleted { token, deleted });
    }
    Ok(found)
}

fn one(company: CompanyId, event: Event) -> Result<Decided, CommandError> {
    Ok(Decided {
        company,
        events: vec![event],
    })
}

/// Decides what `command`, issued by `actor` at `now`, causes. Pure: the
/// state is not changed, and a refusal causes nothing.
///
/// The rules (all of them in the repository's `docs/RULES.md`): the system
/// actor bootstraps and administers companies, teammates, workspaces and
/// preferences, but only an accountable admin creates, reveals or deletes
/// tokens; tokens issue no
/// commands; the last active admin can be neither demoted nor deactivated;
/// a deactivated teammate cannot act and stays deactivated.
pub fn decide(
    state: &State,
    actor: Actor,
    now: Timestamp,
    command: &Command,
) -> Result<Decided, CommandError> {
    let who = acting(state, actor, command)?;
    match command {
        Command::CreateCompany { company, name } => {
            if !matches!(who, Acting::System) {
                return Err(not_permitted(actor, command, SYSTEM_ONLY));
            }
            if state.company(*company).is_some() {
                return Err(CommandError::AlreadyExists {
                    id: TakenId::Company(*company),
                });
            }
            one(
                *company,
                Event::CompanyCreated {
                    company: *company,
                    name: name.clone(),
                },
            )
        }
        Command::AddTeammate {
            company,
            teammate,
            name,
            role,
        } => {
            administer(state, &who, actor, *company, command, true)?;
            if state.teammate(*teammate).is_some() {
                return Err(CommandError::AlreadyExists {
                    id: TakenId::Teammate(*teammate),
                });
            }
            one(
                *company,
                Event::TeammateAdded {
                    teammate: *teammate,
                    name: name.clone(),
                    role: *role,
                },
            )
        }
        Command::ChangeRole { teammate, role } => {
            let mate = state
                .teammate(*teammate)
                .ok_or(CommandError::UnknownTeammate(*teammate))?;
            require_admin(&who, actor, mate.company, command, true)?;
            if mate.deactivated.is_some() {
                return Err(CommandError::TeammateDeactivated(*teammate));
            }
            if mate.role.value == *role {
                return Err(CommandError::RoleUnchanged {
                    teammate: *teammate,
                    role: *role,
                });
            }
            if mate.is_active_admin() && last_admin(state, mate.company) {
                return Err(CommandError::LastAdmin(*teammate));
            }
            one(
                mate.company,
                Event::TeammateRoleChanged {
                    teammate: *teammate,
                    role: *role,
                },
            )
        }
        Command::DeactivateTeammate { teammate } => {
            let mate = state
                .teammate(*teammate)
                .ok_or(CommandError::UnknownTeammate(*teammate))?;
            require_admin(&who, actor, mate.company, command, true)?;
            if mate.deactivated.is_some() {
                return Err(CommandError::TeammateDeactivated(*teammate));
            }
            if mate.is_active_admin() && last_admin(state, mate.company) {
                return Err(CommandError::LastAdmin(*teammate));
            }
            one(
                mate.company,
                Event::TeammateDeactivated {
                    teammate: *teammate,
                },
            )
        }
        Command::CreateWorkspace {
            company,
            workspace,
            name,
        } => {
            administer(state, &who, actor, *company, command, true)?;
            if state.workspace(*workspace).is_some() {
                return Err(CommandError::AlreadyExists {
                    id: TakenId::Workspace(*workspace),
                });
            }
            one(
                *company,
                Event::WorkspaceCreated {
                    workspace: *workspace,
                    name: name.clone(),
                },
            )
        }
        Command::DeleteWorkspace { workspace } => {
            let space = state
                .workspace(*workspace)
                .ok_or(CommandError::UnknownWorkspace(*workspace))?;
            require_admin(&who, actor, space.company, command, true)?;
            if space.deleted.is_some() {
                return Err(CommandError::WorkspaceDeleted(*workspace));
            }
            one(
                space.company,
                Event::WorkspaceDeleted {
                    workspace: *workspace,
                },
            )
        }
        Command::CreateToken {
            company,
            token,
            name,
            kind,
            scope,
            secret_digest,
            sealed_secret,
            expires_at,
        } => {
            administer(state, &who, actor, *company, command, false)?;
            if state.token(*token).is_some() {
                return Err(CommandError::AlreadyExists {
                    id: TakenId::Token(*token),
                });
            }
            if state.token_by_digest(secret_digest).is_some() {
                return Err(CommandError::DuplicateSecret);
            }
            scope.validate(*kind).map_err(CommandError::InvalidScope)?;
            if let SharedNamespace::Workspaces(named) = &scope.namespaces.shared {
                for workspace in named {
                    let live = state
                        .workspace(*workspace)
                        .is_some_and(|w| w.company == *company && w.deleted.is_none());
                    if !live {
                        return Err(CommandError::WorkspaceNotInCompany(*workspace));
                    }
                }
            }
            if let Some(expiry) = expires_at {
                if *expiry <= now {
                    return Err(CommandError::ExpiryNotInFuture {
                        expires_at: *expiry,
                        now,
                    });
                }
                // Refused rather than capped: the event records what the
                // admin asked for or nothing, and a replayed import of a
                // crafted record is refused with this reason.
                if *expiry > Timestamp::MAX_RFC3339 {
                    return Err(CommandError::ExpiryTooLate {
                        expires_at: *expiry,
                    });
                }
            }
            one(
                *company,
                Event::TokenCreated {
                    token: *token,
                    name: name.clone(),
                    kind: *kind,
                    scope: scope.clone(),
                    secret_digest: *secret_digest,
                    sealed_secret: sealed_secret.clone(),
                    expires_at: *expires_at,
                },
            )
        }
        Command::RevealToken { token } => {
            let found = state
                .token(*token)
                .ok_or(CommandError::UnknownToken(*token))?;
            require_admin(&who, actor, found.company(), command, false)?;
            let found = live_token(state, *token)?;
            if let Some(expired_at) = found.expired_by(now) {
                return Err(CommandError::TokenExpired {
                    token: *token,
                    expired_at,
                });
            }
            one(found.company(), Event::TokenRevealed { token: *token })
        }
        Command::DeleteToken { token } => {
            let found = state
                .token(*token)
                .ok_or(CommandError::UnknownToken(*token))?;
            require_admin(&who, actor, found.company(), command, false)?;
            // An expired token may still be deleted: it tidies the list, and
            // deletion only ever takes access away.
            let found = live_token(state, *token)?;
            one(found.company(), Event::TokenDeleted { token: *token })
        }
        Command::SetPrivateApiAccess { teammate, allowed } => {
            let mate = state
                .teammate(*teammate)
                .ok_or(CommandError::UnknownTeammate(*teammate))?;
            let is_owner = matches!(who, Acting::Teammate { id, .. } if id == *teammate);
            if !is_owner {
                require_admin(&who, actor, mate.company, command, true)
                    .map_err(|_| not_permitted(actor, command, OWNER_OR_ADMIN))?;
            }
            one(
                mate.company,
                Event::PrivateApiAccessChanged {
                    teammate: *teammate,
                    allowed: *allowed,
                },
            )
        }
        Command::SetPrivateApiAccessForAll { company, allowed } => {
            administer(state, &who, actor, *company, command, true)?;
            one(
                *company,
                Event::PrivateApiAccessSetForAll { allowed: *allowed },
            )
        }
    }
}

fn last_admin(state: &State, company: CompanyId) -> bool {
    state
        .company(company)
        .is_some_and(|owner| owner.active_admins <= 1)
}
