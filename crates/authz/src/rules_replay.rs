//! Replaying a log's events through the command rules, as an import does.
//!
//! The hash chain is unkeyed: anyone can edit an export's records and
//! hash them again, and the chain still verifies. What the chain cannot
//! say is whether a live ledger could have written those events, so an
//! import asks the rules. Each event is turned back into the command that
//! causes it (every command causes exactly one event, see [`decide`]), that
//! command is decided against the state the events before it built, with
//! the event's recorded actor and time, and the decision must be exactly
//! the recorded event, filed under the recorded company. Anything else is
//! refused: an event the rules would have refused (a token created by
//! another company's admin, an OAuth grant with the global namespace), and
//! an event filed under one company that is about another company's
//! token, teammate or workspace (the log files an event in the streams
//! of its envelope's company, so a mismatch would put it in the wrong
//! company's history). The event's id and position come from its
//! envelope: `decide` does not draw them.
//!
//! The rules are checked at the event's recorded time, while a live
//! command was decided a moment before the store stamped it. An event
//! whose check depends on the time, such as a token created to expire
//! within microseconds of its creation, can be refused here although a
//! live ledger recorded it; that fails closed, and no real expiry is that
//! short.

use std::fmt;

use tokenledger_events::{CompanyId, Envelope, Event};
use tokenledger_projection::State;

use crate::command::{Command, CommandError, decide};

/// Why an event is not one the rules would have recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleBroken {
    /// The rules refuse the command the event records.
    Refused(CommandError),
    /// The command the event records belongs to another company than the
    /// one it is filed under.
    OtherCompany {
        /// The company in the envelope.
        filed: CompanyId,
        /// The company the rules give.
        decided: CompanyId,
    },
    /// The rules would have recorded other events for that command.
    Different,
}

impl fmt::Display for RuleBroken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleBroken::Refused(error) => write!(
                f,
                "the rules would have refused this event at its recorded time: {error}"
            ),
            RuleBroken::OtherCompany { filed, decided } => write!(
                f,
                "the event is filed under company `{filed}` but changes company `{decided}`"
            ),
            RuleBroken::Different => {
                f.write_str("the rules would have recorded something else for this command")
            }
        }
    }
}

/// The state a log's events build, each checked against the rules before
/// it is applied.
#[derive(Default)]
pub(crate) struct RulesReplay {
    state: State,
}

impl RulesReplay {
    /// Checks `envelope` against the state so far and, if the rules would
    /// have recorded it, applies it. A refused event is not applied.
    pub(crate) fn check(&mut self, envelope: &Envelope) -> Result<(), RuleBroken> {
        let command = command_of(envelope);
        let decided = decide(&self.state, envelope.actor, envelope.recorded_at, &command)
            .map_err(RuleBroken::Refused)?;
        if decided.company != envelope.company {
            return Err(RuleBroken::OtherCompany {
                filed: envelope.company,
                decided: decided.company,
            });
        }
        // Each command's event copies the command's fields today, so this
        // holds whenever `decide` accepts; it is checked so that a rule that
        // changes what a command records cannot let the recorded event by.
        if decided.events.as_slice() != std::slice::from_ref(&envelope.event) {
            return Err(RuleBroken::Different);
        }
        self.state.apply(envelope);
        Ok(())
    }
}

/// The command whose decision records `envelope`'s event. The company a
/// creation names is the envelope's: `decide` then checks that the actor
/// may act in it.
fn command_of(envelope: &Envelope) -> Command {
    let company = envelope.company;
    match envelope.event.clone() {
        Event::CompanyCreated { company, name } => Command::CreateCompany { company, name },
        Event::TeammateAdded {
            teammate,
            name,
            role,
        } => Command::AddTeammate {
            company,
            teammate,
            name,
            role,
        },
        Event::TeammateRoleChanged { teammate, role } => Command::ChangeRole { teammate, role },
        Event::TeammateDeactivated { teammate } => Command::DeactivateTeammate { teammate },
        Event::WorkspaceCreated { workspace, name } => Command::CreateWorkspace {
            company,
            workspace,
            name,
        },
        Event::WorkspaceDeleted { workspace } => Command::DeleteWorkspace { workspace },
        Event::TokenCreated {
            token,
            name,
            kind,
            scope,
            secret_digest,
            sealed_secret,
            expires_at,
        } => Command::CreateToken {
            company,
            token,
            name,
            kind,
            scope,
            secret_digest,
            sealed_secret,
            expires_at,
        },
        Event::TokenRevealed { token } => Command::RevealToken { token },
        Event::TokenDeleted { token } => Command::DeleteToken { token },
        Event::PrivateApiAccessChanged { teammate, allowed } => {
            Command::SetPrivateApiAccess { teammate, allowed }
        }
        Event::PrivateApiAccessSetForAll { allowed } => {
            Command::SetPrivateApiAccessForAll { company, allowed }
        }
    }
}
