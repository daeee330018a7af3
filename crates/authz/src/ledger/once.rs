//! Commands run once per idempotency key, across restarts and processes.
//!
//! A keyed command's events get ids derived from its key
//! ([`IdempotencyKey::event_id`]), so the log recognises them. Before
//! deciding a keyed command, the writer looks for its first id in the log
//! ([`EventLog::position_of`](tokenledger_store::EventLog::position_of)):
//! found, the command is not decided again, and is answered with the
//! events recorded then, as a replayed receipt. Two commands with one key
//! in one group: the second waits for the next group, where it finds the
//! first recorded.
//!
//! On a log shared with other processes, one of them may record the same
//! key between this process's look and its append. The log then takes the
//! append for a retry: it writes nothing and answers the original
//! positions (every id of the group recorded), or refuses a partial retry
//! (the group held other commands too). Either way nothing of the group
//! was written, so its events are discarded from the writer copy and each
//! of its commands gets a conflict, which `submit_again_on_conflict`
//! catches: it catches up and submits again, and the look finds the key.
//! The original positions need not be contiguous (the other process may
//! have recorded the keys in separate groups); a write under the head
//! lands at exactly the positions after it, so any other answer is a
//! retry's. Only a group whose every command placed in it is keyed can be
//! answered so by a race: a random id no other process holds, so a group
//! with one whose ids the log answers as all found closes the ledger.
//! Where one process owns the log (sled), the look is made with the
//! writer's desk held and nothing else appends, so this cannot happen; if
//! the log answered so anyway, the ledger closes, as for any append not
//! given back as made.

use tokenledger_events::{Actor, CompanyId, Envelope, Event, TokenId};
use tokenledger_projection::Projection;
use tokenledger_store::{AppendError, Damage, Expectation, Problem};

use super::{CreatedToken, Ledger, LedgerError, NewToken, Receipt};
use crate::command::{Command, CommandError};
use crate::idempotency::IdempotencyKey;

impl Ledger {
    /// As [`Ledger::execute`], once per `key`: if a command with this key
    /// was recorded (by this process, before a restart, or by another
    /// process sharing the log), `command` is not decided, and the receipt
    /// holds the events recorded then, with [`Receipt::replayed`] set. The
    /// key must be made with a fingerprint of the whole request
    /// ([`IdempotencyKey`]): the same key with another fingerprint runs
    /// as a new command. A key that names an event another actor caused,
    /// or another command than this one, is refused
    /// ([`LedgerError::KeyReused`]).
    ///
    /// A command that draws ids of its own (a company's, say) is decided
    /// with them only the first time: on a replay, read the ids from the
    /// receipt's events, never from the command.
    pub fn execute_once(
        &self,
        actor: Actor,
        command: Command,
        key: IdempotencyKey,
    ) -> Result<Receipt, LedgerError> {
        self.execute_keyed(actor, command, Some(key))
    }

    /// As [`Ledger::create_token`], once per `key` (see
    /// [`Ledger::execute_once`]). A creation sent again finds the token
    /// the first made, and answers its id, never the one drawn for this
    /// call (whose secret is dropped unseen): with a sealing key, its
    /// secret, unsealed from the creation and shown through
    /// [`Ledger::reveal`], so the history records who saw it again; without
    /// one, or if the token has since been deleted or has expired (so the
    /// reveal is refused), [`LedgerError::SecretShownOnce`], naming the
    /// token: not a refusal about a token the client may never have
    /// learned of. The receipt is the creation's, replayed.
    pub fn create_token_once(
        &self,
        actor: Actor,
        new: NewToken,
        key: IdempotencyKey,
    ) -> Result<CreatedToken, LedgerError> {
        let company = new.company;
        let (token, secret, command) = self.token_to_create(new)?;
        let receipt = self.execute_once(actor, command, key)?;
        if !receipt.replayed {
            return Ok(CreatedToken {
                token,
                secret,
                receipt,
            });
        }
        drop(secret);
        let position = receipt.position();
        let token = created_token(&receipt.events, company).ok_or(LedgerError::KeyReused {
            position: receipt.events.first().map_or(position, |e| e.position),
        })?;
        match self.reveal(actor, token) {
            Ok(secret) => Ok(CreatedToken {
                token,
                secret,
                receipt,
            }),
            Err(
                LedgerError::SecretNotKept(_)
                | LedgerError::Refused(
                    CommandError::TokenDeleted { .. } | CommandError::TokenExpired { .. },
                ),
            ) => Err(LedgerError::SecretShownOnce { token, position }),
            Err(error) => Err(error),
        }
    }

    /// The event a command keyed by `key` recorded, as a replayed receipt,
    /// if the log holds it: at the position of the first derived id.
    /// Refused unless it is what `command`, by `actor`, records.
    pub(super) fn recorded_before(
        &self,
        actor: Actor,
        command: &Command,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, LedgerError> {
        let Some(first) = self
            .log
            .position_of(key.event_id(0))
            .map_err(LedgerError::Damaged)?
        else {
            return Ok(None);
        };
        // Every command records one event (`decide`): the one at `first`,
        // and no second under the key after it. One read of both.
        let read = self.log.read(first, 2).map_err(LedgerError::Damaged)?;
        let (recorded, next) = match read.as_slice() {
            [recorded, rest @ ..] if recorded.envelope.position == first => {
                (&recorded.envelope, rest.first())
            }
            _ => {
                return Err(LedgerError::Damaged(Damage {
                    position: first,
                    problem: Problem::Missing,
                }));
            }
        };
        // A key made with a fingerprint that leaves part of the request
        // out could name another command's events: a replay answers only
        // for what this command would have recorded.
        let same = recorded.event_id == key.event_id(0)
            && next.is_none_or(|next| next.envelope.event_id != key.event_id(1))
            && recorded.actor == actor
            && records(command, recorded);
        if !same {
            return Err(LedgerError::KeyReused { position: first });
        }
        let events = vec![recorded.clone()];
        Ok(Some(Receipt {
            events,
            replayed: true,
        }))
    }

    /// `receipt`, once the state readers see has applied it, as a command's
    /// own receipt is: a replayed one may name events another process
    /// recorded, which this one's follower has not applied yet. Caught up
    /// to the receipt's own position, not to the head as last read, which
    /// a failed read of it on PostgreSQL leaves behind.
    pub(super) fn applied_through(&self, receipt: Receipt) -> Result<Receipt, LedgerError> {
        self.catch_up_through(receipt.position())?;
        Ok(receipt)
    }

    /// A keyed group that met another process's events under its keys:
    /// nothing of it was written. Its events leave the writer copy, and
    /// its commands get a conflict, so that they catch up and are
    /// submitted again.
    pub(super) fn lost_race(&self, projection: &mut Projection, seen: u64) -> LedgerError {
        projection.discard();
        self.applied.recording(0);
        LedgerError::Append(AppendError::Conflict {
            expected: Expectation::Head(seen),
            found: self.log.head().position,
        })
    }
}

/// The token whose creation in `company` `events` record, if they do.
fn created_token(events: &[Envelope], company: CompanyId) -> Option<TokenId> {
    match events {
        [created] if created.company == company => match created.event {
            Event::TokenCreated { token, .. } => Some(token),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `recorded` is the event `command` records, but for the ids a
/// command that creates something draws afresh each time it is sent (a
/// company's, a teammate's, a workspace's, a token's, and a token's
/// secret): each command records exactly one event (`decide`).
fn records(command: &Command, recorded: &Envelope) -> bool {
    let company = recorded.company;
    match (command, &recorded.event) {
        (Command::CreateCompany { name, .. }, Event::CompanyCreated { name: was, .. }) => {
            name == was
        }
        (
            Command::AddTeammate {
                company: c,
                name,
                role,
                ..
            },
            Event::TeammateAdded {
                name: was,
                role: role_was,
                ..
            },
        ) => *c == company && name == was && role == role_was,
        (
            Command::ChangeRole { teammate, role },
            Event::TeammateRoleChanged {
                teammate: was,
                role: role_was,
            },
        ) => teammate == was && role == role_was,
        (
            Command::DeactivateTeammate { teammate },
            Event::TeammateDeactivated { teammate: was },
        ) => teammate == was,
        (
            Command::CreateWorkspace {
                company: c, name, ..
            },
            Event::WorkspaceCreated { name: was, .. },
        ) => *c == company && name == was,
        (Command::DeleteWorkspace { workspace }, Event::WorkspaceDeleted { workspace: was }) => {
            workspace == was
        }
        (
            Command::CreateToken {
                company: c,
                name,
                kind,
                scope,
                expires_at,
                ..
            },
            Event::TokenCreated {
                name: name_was,
                kind: kind_was,
                scope: scope_was,
                expires_at: expires_was,
                ..
            },
        ) => {
            *c == company
                && name == name_was
                && kind == kind_was
                && scope == scope_was
                && expires_at == expires_was
        }
        (Command::RevealToken { token }, Event::TokenRevealed { token: was })
        | (Command::DeleteToken { token }, Event::TokenDeleted { token: was }) => token == was,
        (
            Command::SetPrivateApiAccess { teammate, allowed },
            Event::PrivateApiAccessChanged {
                teammate: was,
                allowed: allowed_was,
            },
        ) => teammate == was && allowed == allowed_was,
        (
            Command::SetPrivateApiAccessForAll {
                company: c,
                allowed,
            },
            Event::PrivateApiAccessSetForAll { allowed: was },
        ) => *c == company && allowed == was,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use tokenledger_events::{
        EventId, Name, Namespaces, Role, Secret, TeammateId, Timestamp, TokenKind, TokenScope,
        WorkspaceId,
    };

    use super::*;

    fn envelope(company: u128, event: Event) -> Envelope {
        Envelope {
            position: 1,
            event_id: EventId::from_u128(1),
            recorded_at: Timestamp::EPOCH,
            actor: Actor::System,
            company: CompanyId::from_u128(company),
            event,
        }
    }

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    fn token_command(company: u128, token: u128, name_: &str, expires: Option<u64>) -> Command {
        Command::CreateToken {
            company: CompanyId::from_u128(company),
            token: TokenId::from_u128(token),
            name: name(name_),
            kind: TokenKind::ApiToken,
            scope: TokenScope {
                features: Default::default(),
                namespaces: Namespaces::none(),
                grants: Default::default(),
            },
            secret_digest: Secret::from_random([token as u8; 32]).digest(),
            sealed_secret: None,
            expires_at: expires.map(Timestamp::from_micros),
        }
    }

    /// Each command against the event it records, and the same command
    /// with one recorded value changed: the first answers for it, the
    /// second does not; ids drawn afresh (and the secret) do not count.
    #[test]
    fn a_recorded_event_answers_only_for_the_command_that_records_it() {
        let t = TeammateId::from_u128;
        let w = WorkspaceId::from_u128;
        let token = TokenId::from_u128;
        let company = |id| CompanyId::from_u128(id);
        let created = |c| {
            let Command::CreateToken {
                token,
                name,
                kind,
                scope,
                secret_digest,
                sealed_secret,
                expires_at,
                ..
            } = token_command(c, 9, "Plugin", Some(5))
            else {
                unreachable!()
            };
            Event::TokenCreated {
                token,
                name,
                kind,
                scope,
                secret_digest,
                sealed_secret,
                expires_at,
            }
        };
        let cases: Vec<(Event, Command, Vec<Command>)> = vec![
            (
                Event::CompanyCreated {
                    company: company(1),
                    name: name("Acme"),
                },
                Command::CreateCompany {
                    company: company(2),
                    name: name("Acme"),
                },
                vec![Command::CreateCompany {
                    company: company(1),
                    name: name("Other"),
                }],
            ),
            (
                Event::TeammateAdded {
                    teammate: t(1),
                    name: name("Ada"),
                    role: Role::Admin,
                },
                Command::AddTeammate {
                    company: company(1),
                    teammate: t(2),
                    name: name("Ada"),
                    role: Role::Admin,
                },
                vec![
                    Command::AddTeammate {
                        company: company(3),
                        teammate: t(1),
                        name: name("Ada"),
                        role: Role::Admin,
                    },
                    Command::AddTeammate {
                        company: company(1),
                        teammate: t(1),
                        name: name("Bob"),
                        role: Role::Admin,
                    },
                    Command::AddTeammate {
                        company: company(1),
                        teammate: t(1),
                        name: name("Ada"),
                        role: Role::Member,
                    },
                ],
            ),
            (
                Event::TeammateRoleChanged {
                    teammate: t(1),
                    role: Role::Admin,
                },
                Command::ChangeRole {
                    teammate: t(1),
                    role: Role::Admin,
                },
                vec![
                    Command::ChangeRole {
                        teammate: t(2),
                        role: Role::Admin,
                    },
                    Command::ChangeRole {
                        teammate: t(1),
                        role: Role::Member,
                    },
                ],
            ),
            (
                Event::TeammateDeactivated { teammate: t(1) },
                Command::DeactivateTeammate { teammate: t(1) },
                vec![Command::DeactivateTeammate { teammate: t(2) }],
            ),
            (
                Event::WorkspaceCreated {
                    workspace: w(1),
                    name: name("Support"),
                },
                Command::CreateWorkspace {
                    company: company(1),
                    workspace: w(2),
                    name: name("Support"),
                },
                vec![
                    Command::CreateWorkspace {
                        company: company(3),
                        workspace: w(1),
                        name: name("Support"),
                    },
                    Command::CreateWorkspace {
                        company: company(1),
                        workspace: w(1),
                        name: name("Sales"),
                    },
                ],
            ),
            (
                Event::WorkspaceDeleted { workspace: w(1) },
                Command::DeleteWorkspace { workspace: w(1) },
                vec![Command::DeleteWorkspace { workspace: w(2) }],
            ),
            (
                created(1),
                token_command(1, 7, "Plugin", Some(5)),
                vec![
                    token_command(3, 9, "Plugin", Some(5)),
                    token_command(1, 9, "Other", Some(5)),
                    token_command(1, 9, "Plugin", None),
                    {
                        let mut oauth = token_command(1, 9, "Plugin", Some(5));
                        if let Command::CreateToken { kind, .. } = &mut oauth {
                            *kind = TokenKind::OAuthGrant;
                        }
                        oauth
                    },
                    {
                        let mut wider = token_command(1, 9, "Plugin", Some(5));
                        if let Command::CreateToken { scope, .. } = &mut wider {
                            scope.namespaces.global = true;
                        }
                        wider
                    },
                ],
            ),
            (
                Event::TokenRevealed { token: token(1) },
                Command::RevealToken { token: token(1) },
                vec![
                    Command::RevealToken { token: token(2) },
                    Command::DeleteToken { token: token(1) },
                ],
            ),
            (
                Event::TokenDeleted { token: token(1) },
                Command::DeleteToken { token: token(1) },
                vec![
                    Command::DeleteToken { token: token(2) },
                    Command::RevealToken { token: token(1) },
                ],
            ),
            (
                Event::PrivateApiAccessChanged {
                    teammate: t(1),
                    allowed: false,
                },
                Command::SetPrivateApiAccess {
                    teammate: t(1),
                    allowed: false,
                },
                vec![
                    Command::SetPrivateApiAccess {
                        teammate: t(2),
                        allowed: false,
                    },
                    Command::SetPrivateApiAccess {
                        teammate: t(1),
                        allowed: true,
                    },
                ],
            ),
            (
                Event::PrivateApiAccessSetForAll { allowed: true },
                Command::SetPrivateApiAccessForAll {
                    company: company(1),
                    allowed: true,
                },
                vec![
                    Command::SetPrivateApiAccessForAll {
                        company: company(3),
                        allowed: true,
                    },
                    Command::SetPrivateApiAccessForAll {
                        company: company(1),
                        allowed: false,
                    },
                ],
            ),
        ];
        for (event, same, others) in cases {
            let recorded = envelope(1, event);
            assert!(records(&same, &recorded), "{same:?} for {recorded:?}");
            for other in others {
                assert!(!records(&other, &recorded), "{other:?} for {recorded:?}");
            }
        }
    }
}
