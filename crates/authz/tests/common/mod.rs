//! A small world for given/when/then tests: commands run through `decide`
//! and `apply` with contiguous positions and a clock that moves forward;
//! [`ledger`] gives a company, its admin and a token through the `Ledger`
//! facade instead.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod ledger;
#[cfg(feature = "postgres")]
pub mod replicas;

use std::collections::BTreeSet;

use tokenledger_authz::{
    Command, CommandError, Decision, Location, Request, State, decide, decide_request,
};
use tokenledger_events::*;

pub struct World {
    pub state: State,
    pub now: Timestamp,
    pub log: Vec<Envelope>,
    next_id: u128,
}

impl World {
    pub fn new() -> World {
        World {
            state: State::new(),
            now: Timestamp::from_micros(1_700_000_000_000_000),
            log: Vec::new(),
            next_id: 1,
        }
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    pub fn tick(&mut self, micros: u64) {
        self.now = Timestamp::from_micros(self.now.as_micros() + micros);
    }

    /// When: `actor` issues `command`. Appends and applies what it causes.
    pub fn run(&mut self, actor: Actor, command: Command) -> Result<Vec<Event>, CommandError> {
        self.tick(1_000_000);
        let decided = decide(&self.state, actor, self.now, &command)?;
        for event in &decided.events {
            let envelope = Envelope {
                position: self.log.len() as u64 + 1,
                event_id: EventId::from_u128(self.log.len() as u128 + 1),
                recorded_at: self.now,
                actor,
                company: decided.company,
                event: event.clone(),
            };
            self.state.apply(&envelope);
            self.log.push(envelope);
        }
        Ok(decided.events)
    }

    /// Then: the command is refused, and nothing is recorded.
    pub fn refused(&mut self, actor: Actor, command: Command) -> CommandError {
        let before = self.log.len();
        let error = self
            .run(actor, command)
            .expect_err("the command should be refused");
        assert_eq!(self.log.len(), before, "a refused command recorded events");
        error
    }

    pub fn ok(&mut self, actor: Actor, command: Command) -> Vec<Event> {
        self.run(actor, command)
            .unwrap_or_else(|e| panic!("refused: {e}"))
    }

    pub fn company(&mut self) -> CompanyId {
        let company = CompanyId::from_u128(self.id());
        self.ok(
            Actor::System,
            Command::CreateCompany {
                company,
                name: Name::new("Acme").unwrap(),
            },
        );
        company
    }

    pub fn teammate(&mut self, company: CompanyId, role: Role) -> TeammateId {
        let teammate = TeammateId::from_u128(self.id());
        self.ok(
            Actor::System,
            Command::AddTeammate {
                company,
                teammate,
                name: Name::new("Someone").unwrap(),
                role,
            },
        );
        teammate
    }

    pub fn workspace(&mut self, company: CompanyId) -> WorkspaceId {
        let workspace = WorkspaceId::from_u128(self.id());
        self.ok(
            Actor::System,
            Command::CreateWorkspace {
                company,
                workspace,
                name: Name::new("Support").unwrap(),
            },
        );
        workspace
    }

    /// A token-creation command with a fresh id and secret.
    pub fn create_token_command(
        &mut self,
        company: CompanyId,
        scope: TokenScope,
    ) -> (Command, TokenId, Secret) {
        let token = TokenId::from_u128(self.id());
        let mut random = [0u8; 32];
        random[..16].copy_from_slice(&token.as_u128().to_be_bytes());
        let secret = Secret::from_random(random);
        let command = Command::CreateToken {
            company,
            token,
            name: Name::new("Zapier sync").unwrap(),
            kind: TokenKind::ApiToken,
            scope,
            secret_digest: secret.digest(),
            sealed_secret: None,
            expires_at: None,
        };
        (command, token, secret)
    }

    pub fn token(
        &mut self,
        admin: TeammateId,
        company: CompanyId,
        scope: TokenScope,
    ) -> (TokenId, Secret) {
        let (command, token, secret) = self.create_token_command(company, scope);
        self.ok(Actor::Teammate(admin), command);
        (token, secret)
    }

    pub fn check(
        &self,
        secret: &Secret,
        scope: &str,
        resource: &str,
        location: Location,
    ) -> Decision {
        decide_request(
            &self.state,
            secret.expose(),
            &self.request(scope, resource, location),
        )
    }

    pub fn request(&self, scope: &str, resource: &str, location: Location) -> Request {
        Request {
            requirement: Requirement::Scope(scope.parse().unwrap()),
            resource: resource.parse().unwrap(),
            location,
            at: self.now,
        }
    }
}

pub fn scope(namespaces: Namespaces, scopes: &[&str]) -> TokenScope {
    TokenScope {
        features: BTreeSet::from([Feature::Resources]),
        namespaces,
        grants: scopes.iter().map(|s| s.parse::<Scope>().unwrap()).collect(),
    }
}

pub fn private() -> Namespaces {
    Namespaces {
        private: true,
        ..Namespaces::none()
    }
}

pub fn global() -> Namespaces {
    Namespaces {
        global: true,
        ..Namespaces::none()
    }
}

pub fn shared(workspaces: &[WorkspaceId]) -> Namespaces {
    Namespaces {
        shared: SharedNamespace::Workspaces(workspaces.iter().copied().collect()),
        ..Namespaces::none()
    }
}

pub fn everywhere() -> Namespaces {
    Namespaces {
        global: true,
        shared: SharedNamespace::All,
        private: true,
    }
}
