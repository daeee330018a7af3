//! A ledger reopened from its log decides exactly as the live one did: the
//! same answers, for the same reasons, at the same log positions; and the
//! state rebuilt as of a past position or time decides as the live ledger
//! did then.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::BTreeSet;

mod common;

use common::ledger::a_company;
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

/// What a random history made, to ask questions about.
struct Made {
    company: CompanyId,
    mates: Vec<TeammateId>,
    workspaces: Vec<WorkspaceId>,
    tokens: Vec<(TokenId, Secret)>,
}

/// Runs `steps` random commands on `ledger`, calling `after_each` after
/// each one.
fn random_history(
    ledger: &Ledger,
    rng: &mut Rng,
    steps: usize,
    mut after_each: impl FnMut(&Ledger, &mut Rng, &Made),
) -> Made {
    let (company, admin) = a_company(ledger);
    let mut world = Made {
        company,
        mates: vec![admin],
        workspaces: Vec::new(),
        tokens: Vec::new(),
    };
    let by = Actor::Teammate(admin);
    for _ in 0..steps {
        // Refused commands are part of a history too: they record nothing.
        let _ = match rng.below(6) {
            0 => {
                let teammate = fresh::teammate_id().unwrap();
                world.mates.push(teammate);
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
                world.workspaces.push(workspace);
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
                let named: BTreeSet<WorkspaceId> = world
                    .workspaces
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
                    world.tokens.push((c.token, c.secret));
                    c.receipt
                })
            }
            3 if !world.tokens.is_empty() => {
                let token = world.tokens[rng.below(world.tokens.len())].0;
                ledger.execute(by, Command::DeleteToken { token })
            }
            4 => {
                let teammate = world.mates[rng.below(world.mates.len())];
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
            _ if !world.workspaces.is_empty() => {
                let workspace = world.workspaces[rng.below(world.workspaces.len())];
                ledger.execute(by, Command::DeleteWorkspace { workspace })
            }
            _ => continue,
        };
        after_each(ledger, rng, &world);
    }
    world
}

/// A random request by one of the tokens made so far.
fn random_request(rng: &mut Rng, made: &Made) -> (Secret, Request) {
    let location = match rng.below(3) {
        0 => Location::Global(made.company),
        1 if !made.workspaces.is_empty() => {
            Location::Shared(made.workspaces[rng.below(made.workspaces.len())])
        }
        _ => Location::Private(made.mates[rng.below(made.mates.len())]),
    };
    let (_, secret) = &made.tokens[rng.below(made.tokens.len())];
    let request = Request {
        requirement: Requirement::Scope(SCOPES[rng.below(4)].parse().unwrap()),
        resource: "cnv_1".parse().unwrap(),
        location,
        at: Timestamp::from_system_time(std::time::SystemTime::now()),
    };
    (secret.clone(), request)
}

#[test]
fn a_reopened_ledger_decides_as_the_live_one_did() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let ledger = Ledger::open(dir.path()).unwrap();
    let made = random_history(&ledger, &mut rng, 150, |_, _, _| {});
    let requests: Vec<(Secret, Request)> =
        (0..2000).map(|_| random_request(&mut rng, &made)).collect();
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

#[test]
fn decisions_taken_live_are_made_again_as_of_their_position_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xa50f_7135);
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut live = Vec::new();
    let made = random_history(&ledger, &mut rng, 120, |ledger, rng, made| {
        if made.tokens.is_empty() {
            return;
        }
        let authorizer = ledger.authorizer();
        for _ in 0..5 {
            let (secret, request) = random_request(rng, made);
            let decision = authorizer.check(secret.expose(), &request);
            live.push((secret, request, decision));
        }
    });
    let allowed = live.iter().filter(|(_, _, d)| d.is_allowed()).count();
    assert!(
        allowed > 20 && allowed + 20 < live.len(),
        "{allowed} of {} allowed: the history is too one-sided",
        live.len()
    );
    let positions: BTreeSet<u64> = live.iter().map(|(_, _, d)| d.position).collect();
    assert!(positions.len() > 50, "decisions at too few positions");
    for (secret, request, decision) in &live {
        let state = ledger.state_at(decision.position).unwrap();
        assert_eq!(state.position(), decision.position);
        assert_eq!(&decide_request(&state, secret.expose(), request), decision);
        // One company's events are enough for a decision about its tokens.
        let company = ledger
            .company_state_at(made.company, decision.position)
            .unwrap();
        assert_eq!(
            &decide_request(&company, secret.expose(), request),
            decision
        );
        // Nor does the state for a secret: its token's company.
        let for_secret = ledger
            .state_for_secret_at(secret.expose(), decision.position)
            .unwrap();
        assert_eq!(
            &decide_request(&for_secret, secret.expose(), request),
            decision
        );
        // Each decision was taken after its position's command returned
        // and before the next began, so its time finds the same position.
        assert_eq!(ledger.position_at(request.at).unwrap(), decision.position);
    }
}
