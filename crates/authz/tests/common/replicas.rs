//! Several ledgers on one PostgreSQL database, as several replicas would
//! be, and the access each round of a test removes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_postgres::testing::Database;

/// A replica with a lease of `lease`.
pub fn replica(database: &Database, lease: Duration) -> Arc<Ledger> {
    let options = LedgerOptions {
        replica_lease: lease,
        ..LedgerOptions::default()
    };
    Ledger::open_postgres(&database.url, None, options).unwrap()
}

/// A company with an admin, made through `ledger`.
pub fn given_a_company(ledger: &Ledger) -> (CompanyId, TeammateId) {
    let (company, admin) = (fresh::company_id().unwrap(), fresh::teammate_id().unwrap());
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: Name::new("Acme").unwrap(),
            },
        )
        .unwrap();
    ledger
        .execute(
            Actor::System,
            Command::AddTeammate {
                company,
                teammate: admin,
                name: Name::new("Ada").unwrap(),
                role: Role::Admin,
            },
        )
        .unwrap();
    (company, admin)
}

/// Each way a command removes access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    DeleteToken,
    PrivateAccessOff,
    PrivateAccessOffForAll,
    DeactivateOwner,
    DeleteWorkspace,
}

pub const REMOVALS: [Removal; 5] = [
    Removal::DeleteToken,
    Removal::PrivateAccessOff,
    Removal::PrivateAccessOffForAll,
    Removal::DeactivateOwner,
    Removal::DeleteWorkspace,
];

/// A token that reaches an owner's private resources and a workspace's,
/// both allowed now.
pub struct Target {
    pub admin: TeammateId,
    pub company: CompanyId,
    pub owner: TeammateId,
    pub workspace: WorkspaceId,
    pub token: TokenId,
    pub secret: Secret,
}

impl Target {
    /// Made through `ledger`.
    pub fn given(ledger: &Ledger, company: CompanyId, admin: TeammateId) -> Target {
        let owner = fresh::teammate_id().unwrap();
        let workspace = fresh::workspace_id().unwrap();
        let by = Actor::Teammate(admin);
        let run = |command| ledger.execute(by, command).unwrap();
        run(Command::AddTeammate {
            company,
            teammate: owner,
            name: Name::new("Owen").unwrap(),
            role: Role::Member,
        });
        run(Command::SetPrivateApiAccess {
            teammate: owner,
            allowed: true,
        });
        run(Command::CreateWorkspace {
            company,
            workspace,
            name: Name::new("Support").unwrap(),
        });
        let created = ledger
            .create_token(
                by,
                NewToken {
                    company,
                    name: Name::new("Plugin").unwrap(),
                    kind: TokenKind::ApiToken,
                    scope: TokenScope {
                        features: [Feature::Resources].into(),
                        namespaces: Namespaces {
                            global: true,
                            shared: SharedNamespace::All,
                            private: true,
                        },
                        grants: ["conversations:read".parse().unwrap()]
                            .into_iter()
                            .collect(),
                    },
                    expires_at: None,
                },
            )
            .unwrap();
        Target {
            admin,
            company,
            owner,
            workspace,
            token: created.token,
            secret: created.secret,
        }
    }

    /// The request `removal` refuses.
    pub fn request(&self, removal: Removal) -> Request {
        let location = match removal {
            Removal::DeleteToken => Location::Global(self.company),
            Removal::DeleteWorkspace => Location::Shared(self.workspace),
            Removal::PrivateAccessOff
            | Removal::PrivateAccessOffForAll
            | Removal::DeactivateOwner => Location::Private(self.owner),
        };
        Request {
            requirement: Requirement::Scope("conversations:read".parse().unwrap()),
            resource: "cnv_1".parse().unwrap(),
            location,
            at: Timestamp::from_micros(u64::MAX / 2),
        }
    }

    /// The command that removes it.
    pub fn removal(&self, removal: Removal) -> Command {
        match removal {
            Removal::DeleteToken => Command::DeleteToken { token: self.token },
            Removal::PrivateAccessOff => Command::SetPrivateApiAccess {
                teammate: self.owner,
                allowed: false,
            },
            Removal::PrivateAccessOffForAll => Command::SetPrivateApiAccessForAll {
                company: self.company,
                allowed: false,
            },
            Removal::DeactivateOwner => Command::DeactivateTeammate {
                teammate: self.owner,
            },
            Removal::DeleteWorkspace => Command::DeleteWorkspace {
                workspace: self.workspace,
            },
        }
    }
}

/// Waits until every ledger has applied `position` and holds its lease.
pub fn all_at(ledgers: &[&Ledger], position: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for ledger in ledgers {
        ledger
            .wait_for_position(position, Duration::from_secs(10))
            .unwrap();
        while !ledger.health().ready {
            assert!(
                Instant::now() < deadline,
                "never ready: {:?}",
                ledger.health()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
