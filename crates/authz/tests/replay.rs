//! A ledger reopened from its log decides exactly as the live one did: the
//! same answers, for the same reasons, at the same log positions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::BTreeSet;

use tokenledger_authz::*;
use tokenledger_events::*;

/// A small deterministic generator, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SCOPES: [&str; 4] = [
    "conversations:read",
    "messages:send",
    "tags:read",
    "contacts:write",
];

#[test]
fn a_reopened_ledger_decides_as_the_live_one_did() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let ledger = Ledger::open(dir.path()).unwrap();
    let company = fresh::company_id().unwrap();
    let admin = fresh::teammate_id().unwrap();
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
    let mut mates = vec![admin];
    let mut workspaces = Vec::new();
    let mut tokens: Vec<(TokenId, Secret)> = Vec::new();
    let by = Actor::Teammate(admin);
    for _ in 0..150 {
        // Refused commands are part of a history too: they record nothing.
        let _ = match rng.below(6) {
            0 => {
                let teammate = fresh::teammate_id().unwrap();
                mates.push(teammate);
                ledger.execute(
                    by,
                    Command::AddTeammate {
                        company,
                        teammate,
                        name: Name::new("Mate").unwrap(),
                        role: Role::Member,
                    },
                )
            }
            1 => {
                let workspace = fresh::workspace_id().unwrap();
                workspaces.push(workspace);
                ledger.execute(
                    by,
                    Command::CreateWorkspace {
                        company,
                        workspace,
                        name: Name::new("Team").unwrap(),
                    },
                )
            }
            2 => {
                let named: BTreeSet<WorkspaceId> = workspaces
                    .iter()
                    .filter(|_| rng.below(2) == 0)
                    .copied()
                    .collect();
                let shared = match rng.below(3) {
                    0 => SharedNamespace::None,
                    1 => SharedNamespace::All,
                    _ if named.is_empty() => SharedNamespace::All,
                    _ => SharedNamespace::Workspaces(named),
                };
                let created = ledger.create_token(
                    by,
                    NewToken {
                        company,
                        name: Name::new("Integration").unwrap(),
                        kind: TokenKind::ApiToken,
                        scope: TokenScope {
                            features: [Feature::Resources].into(),
                            namespaces: Namespaces {
                                global: rng.below(2) == 0,
                                shared,
                                private: rng.below(2) == 0,
                            },
                            grants: [SCOPES[rng.below(4)].parse().unwrap()]
                                .into_iter()
                                .collect(),
                        },
                        expires_at: None,
                    },
                );
                created.map(|c| {
                    tokens.push((c.token, c.secret));
                    c.receipt
                })
            }
            3 if !tokens.is_empty() => {
                let token = tokens[rng.below(tokens.len())].0;
                ledger.execute(by, Command::DeleteToken { token })
            }
            4 => {
                let teammate = mates[rng.below(mates.len())];
                ledger.execute(
                    by,
                    Command::SetPrivateApiAccess {
                        teammate,
                        allowed: rng.below(2) == 0,
                    },
                )
            }
            5 => ledger.execute(
                by,
                Command::SetPrivateApiAccessForAll {
                    company,
                    allowed: rng.below(2) == 0,
                },
            ),
            _ if !workspaces.is_empty() => {
                let workspace = workspaces[rng.below(workspaces.len())];
                ledger.execute(by, Command::DeleteWorkspace { workspace })
            }
            _ => continue,
        };
    }
    let mut requests = Vec::new();
    for _ in 0..2000 {
        let location = match rng.below(3) {
            0 => Location::Global(company),
            1 if !workspaces.is_empty() => {
                Location::Shared(workspaces[rng.below(workspaces.len())])
            }
            _ => Location::Private(mates[rng.below(mates.len())]),
        };
        let (_, secret) = &tokens[rng.below(tokens.len())];
        let request = Request {
            requirement: Requirement::Scope(SCOPES[rng.below(4)].parse().unwrap()),
            resource: "cnv_1".parse().unwrap(),
            location,
            at: Timestamp::from_system_time(std::time::SystemTime::now()),
        };
        requests.push((secret.clone(), request));
    }
    let live: Vec<Decision> = {
        let authorizer = ledger.authorizer();
        requests
            .iter()
            .map(|(secret, request)| authorizer.check(secret.expose(), request))
            .collect()
    };
    let allowed = live.iter().filter(|d| d.is_allowed()).count();
    assert!(
        allowed > 50 && allowed < 1950,
        "{allowed} of 2000 allowed: the history is too one-sided"
    );
    let head = ledger.head();
    drop(ledger);

    let reopened = Ledger::open(dir.path()).unwrap();
    assert_eq!(reopened.head(), head);
    let authorizer = reopened.authorizer();
    for ((secret, request), before) in requests.iter().zip(&live) {
        assert_eq!(&authorizer.check(secret.expose(), request), before);
    }
}
