//! Helpers shared by tokenledger's benchmarks: the events they append.
//!
//! Run them with `cargo bench -p tokenledger-benches`; each group measures
//! its baseline in the same run, so ratios are comparable on a noisy machine.

#![allow(
    clippy::indexing_slicing,
    reason = "indices into generated data are in range by construction"
)]

pub mod generate;

use tokenledger_authz::{Command, Ledger, Location, NewToken, Request, TokenHandle, fresh};
use tokenledger_events::{
    Actor, CompanyId, Envelope, Event, EventId, Feature, Method, Name, Namespaces, Requirement,
    Role, Scope, Secret, SharedNamespace, TeammateId, Timestamp, TokenId, TokenKind, TokenScope,
    WorkspaceId, encode_envelope,
};
use tokenledger_store::{EventLog, Expectation, NewEvent, Options, SledLog};

/// A company and its admin, made through `ledger`: what the ledger and
/// HTTP benches issue tokens in.
#[expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]
pub fn company_and_admin(ledger: &Ledger) -> (CompanyId, TeammateId) {
    let company = fresh::company_id().expect("an id");
    let admin = fresh::teammate_id().expect("an id");
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: Name::new("Acme").expect("a name"),
            },
        )
        .expect("the company");
    ledger
        .execute(
            Actor::System,
            Command::AddTeammate {
                company,
                teammate: admin,
                name: Name::new("Ada").expect("a name"),
                role: Role::Admin,
            },
        )
        .expect("the admin");
    (company, admin)
}

/// A token an admin of `company` would make: company-level resources,
/// `tags:read`.
#[expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]
pub fn tags_token(company: CompanyId) -> NewToken {
    NewToken {
        company,
        name: Name::new("Plugin").expect("a name"),
        kind: TokenKind::ApiToken,
        scope: TokenScope {
            features: [Feature::Resources].into(),
            namespaces: Namespaces {
                global: true,
                ..Namespaces::none()
            },
            grants: ["tags:read".parse().expect("a scope")]
                .into_iter()
                .collect(),
        },
        expires_at: None,
    }
}

/// A typical small event (an admin revealing a token), with a distinct id.
///
/// The event's id and the token's are `n` scattered over all 128 bits, as
/// the random ids a service draws are (`authz` draws both at random).
/// Numbered ids would land every index entry at the right edge of sled's
/// tree, which real ids never do.
pub fn reveal(n: u128) -> NewEvent {
    // An odd multiplier is a bijection on u128: distinct `n`, distinct ids.
    let id = n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::Teammate(TeammateId::from_u128(0xad)),
        company: CompanyId::from_u128(0xc0),
        event: Event::TokenRevealed {
            token: TokenId::from_u128(id),
        },
    }
}

/// The size in bytes of a stored [`reveal`] record: the store's 66-byte
/// record header (`crates/store/src/record.rs`) and the encoded envelope.
pub fn record_len() -> usize {
    let event = reveal(1);
    let envelope = Envelope {
        position: 1,
        event_id: event.event_id,
        recorded_at: Timestamp::from_micros(1),
        actor: event.actor,
        company: event.company,
        event: event.event,
    };
    66 + encode_envelope(&envelope).map_or(0, |bytes| bytes.len())
}

/// A generated company world behind a real [`Ledger`], and requests to ask
/// of it, about half of them allowed.
pub struct World {
    /// The ledger, opened on a log written straight to the store.
    pub ledger: Ledger,
    /// Requests with the token and secret that make them.
    pub cases: Vec<Case>,
    /// The companies, with their first admin and first teammate.
    pub companies: Vec<(CompanyId, TeammateId, TeammateId)>,
    /// Each company with its workspace and teammates.
    pub roster: Vec<(CompanyId, WorkspaceId, Vec<TeammateId>)>,
    // Removed when the world is dropped.
    _dir: tempfile::TempDir,
}

/// One request to decide.
pub struct Case {
    /// The token, as the handle authenticating its secret gives.
    pub token: TokenHandle,
    /// Its secret.
    pub secret: Secret,
    /// The request.
    pub request: Request,
    /// The endpoint the request stands for: method and path.
    pub endpoint: (Method, String),
}

/// The scopes generated tokens draw from, with an endpoint needing each.
const SCOPES: [(&str, Method, &str); 4] = [
    ("conversations:read", Method::Get, "/conversations/cnv_1"),
    (
        "messages:send",
        Method::Post,
        "/conversations/cnv_1/messages",
    ),
    ("tags:read", Method::Get, "/tags/tag_1"),
    ("contacts:write", Method::Patch, "/contacts/crd_1"),
];

fn secret_of(token: u128) -> Secret {
    let mut random = [0u8; 32];
    let (head, _) = random.split_at_mut(16);
    head.copy_from_slice(&token.to_be_bytes());
    Secret::from_random(random)
}

/// Builds a world of `tokens` tokens and `teammates` teammates over
/// `companies` companies, half of the teammates allowing private access.
pub fn world(
    companies: u128,
    teammates: u128,
    tokens: u128,
) -> Result<World, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut events = Vec::new();
    let mut id = 0u128;
    let mut next = || {
        id += 1;
        id
    };
    let per_company = teammates / companies;
    let mut roster = Vec::new();
    for c in 0..companies {
        let company = CompanyId::from_u128(0x1_0000 + c);
        let mut push = |event: Event| {
            events.push(NewEvent {
                event_id: EventId::from_u128(0),
                actor: Actor::System,
                company,
                event,
            })
        };
        push(Event::CompanyCreated {
            company,
            name: Name::new("Company")?,
        });
        let workspace = WorkspaceId::from_u128(0x2_0000 + c);
        push(Event::WorkspaceCreated {
            workspace,
            name: Name::new("Support")?,
        });
        let mut mates = Vec::new();
        for t in 0..per_company {
            let teammate = TeammateId::from_u128(0x3_0000 + c * per_company + t);
            push(Event::TeammateAdded {
                teammate,
                name: Name::new("Teammate")?,
                role: if t == 0 { Role::Admin } else { Role::Member },
            });
            if t % 2 == 0 {
                push(Event::PrivateApiAccessChanged {
                    teammate,
                    allowed: true,
                });
            }
            mates.push(teammate);
        }
        roster.push((company, workspace, mates));
    }
    let mut cases = Vec::new();
    for k in 0..tokens {
        let (company, workspace, mates) = &roster[(k % companies) as usize];
        let token = TokenId::from_u128(0x10_0000 + k);
        let secret = secret_of(token.as_u128());
        let granted = &SCOPES[(k % 4) as usize];
        let scope = TokenScope {
            features: [Feature::Resources].into(),
            namespaces: Namespaces {
                global: k % 3 == 0,
                shared: if k % 2 == 0 {
                    SharedNamespace::All
                } else {
                    SharedNamespace::Workspaces([*workspace].into())
                },
                private: k % 5 != 0,
            },
            grants: [granted.0.parse::<Scope>()?].into_iter().collect(),
        };
        events.push(NewEvent {
            event_id: EventId::from_u128(0),
            actor: Actor::Teammate(mates[0]),
            company: *company,
            event: Event::TokenCreated {
                token,
                name: Name::new("Integration")?,
                kind: TokenKind::ApiToken,
                scope,
                secret_digest: secret.digest(),
                sealed_secret: None,
                expires_at: None,
            },
        });
        if cases.len() < 4096 {
            // Ask sometimes for the granted scope, sometimes another; in
            // each namespace; private resources of teammates with the
            // preference on and off.
            let (scope, method, path) = &SCOPES[((k / 7) % 4) as usize];
            let location = match k % 3 {
                0 => Location::Global(*company),
                1 => Location::Shared(*workspace),
                _ => Location::Private(mates[(k as usize / 3) % mates.len()]),
            };
            cases.push(Case {
                // Replaced by the authenticated handle once the log is written.
                token: token.into(),
                secret,
                request: Request {
                    requirement: Requirement::Scope(scope.parse()?),
                    resource: "cnv_1".parse()?,
                    location,
                    at: Timestamp::from_micros(1),
                },
                endpoint: (*method, (*path).to_owned()),
            });
        }
    }
    {
        let log = SledLog::open(dir.path(), Options::default())?;
        for chunk in events.chunks_mut(1000) {
            for event in chunk.iter_mut() {
                event.event_id = EventId::from_u128(next());
            }
            log.append(chunk.to_vec(), Expectation::Any)?;
        }
    }
    let ledger = Ledger::open(dir.path())?;
    let authorizer = ledger.authorizer();
    for case in &mut cases {
        case.token = authorizer
            .authenticate(case.secret.expose())
            .map_err(|refusal| refusal.to_string())?;
    }
    let companies = roster
        .iter()
        .map(|(company, _, mates)| (*company, mates[0], mates[1]))
        .collect();
    Ok(World {
        ledger,
        cases,
        companies,
        roster,
        _dir: dir,
    })
}
