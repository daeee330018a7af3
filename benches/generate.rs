//! A generator of realistic logs for the scale benchmarks: companies with
//! teammates and workspaces, tokens created over years, some deleted,
//! some revealed, and teammates changing their private-access preference,
//! in a deterministic random order, written straight to the store with a
//! clock that spreads them over the period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokenledger_events::{
    Actor, CompanyId, Event, EventId, Feature, Name, Namespaces, Role, SealedSecret, Secret,
    SharedNamespace, TeammateId, Timestamp, TokenId, TokenKind, TokenScope, WorkspaceId,
};
use tokenledger_store::{EventLog, Expectation, NewEvent, Options, SledLog, hex};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// A name for the cached copy.
    pub name: &'static str,
    /// Companies.
    pub companies: u64,
    /// Teammates in each company (the first is its admin).
    pub teammates: u64,
    /// Shared workspaces in each company.
    pub workspaces: u64,
    /// Tokens live at the end.
    pub live_tokens: u64,
    /// Events in all.
    pub events: u64,
}

/// The 5-million-event log with a million live tokens of issue 6.
pub const FIVE_MILLION: Spec = Spec {
    name: "5m-events-1m-tokens",
    companies: 1_000,
    teammates: 50,
    workspaces: 5,
    live_tokens: 1_000_000,
    events: 5_000_000,
};

/// A million events, for replay.
pub const ONE_MILLION: Spec = Spec {
    name: "1m-events",
    companies: 200,
    teammates: 50,
    workspaces: 5,
    live_tokens: 200_000,
    events: 1_000_000,
};

/// Three years, in microseconds.
const PERIOD: u64 = 3 * 365 * 24 * 3600 * 1_000_000;
/// 2023-11-22T00:00:00Z.
const START: u64 = 1_700_611_200_000_000;

/// The secret of a generated token, derived from its id.
pub fn secret_of(token: TokenId) -> Secret {
    let mut random = [0u8; 32];
    let (head, _) = random.split_at_mut(16);
    head.copy_from_slice(&token.as_u128().to_be_bytes());
    Secret::from_random(random)
}

/// A small deterministic generator (xorshift), so runs repeat.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn company(c: u64) -> CompanyId {
    CompanyId::from_u128(0x1_0000_0000 + u128::from(c))
}

/// The `t`-th teammate of the `c`-th company (the 0th is its admin).
pub fn teammate(spec: &Spec, c: u64, t: u64) -> TeammateId {
    TeammateId::from_u128(0x2_0000_0000 + u128::from(c * spec.teammates + t))
}

fn workspace(spec: &Spec, c: u64, w: u64) -> WorkspaceId {
    WorkspaceId::from_u128(0x3_0000_0000 + u128::from(c * spec.workspaces + w))
}

/// A generated log: where it is, and a sample of its live tokens.
pub struct Generated {
    /// The data directory.
    pub dir: PathBuf,
    /// Up to 4,096 tokens live at the end, with their company.
    pub live: Vec<(TokenId, CompanyId)>,
    /// How many tokens are live at the end.
    pub live_tokens: u64,
}

/// The log for `spec` under `root`, generated once and kept: a second call
/// finds it complete and reuses it, unless secrets digest differently now
/// (the digest's domain changed, say), which would leave every generated
/// secret unknown to the log, or the log no longer reads (the store's
/// layout changed).
pub fn generated(root: &Path, spec: Spec) -> Result<Generated, Box<dyn std::error::Error>> {
    let dir = root.join(spec.name);
    let done = dir.join("generated");
    let marker = format!(
        "complete; a sample secret digests to {}\n",
        hex(secret_of(TokenId::from_u128(1)).digest().as_bytes())
    );
    let plan = Plan::new(spec);
    let reusable = std::fs::read_to_string(&done).ok().as_deref() == Some(marker.as_str())
        && SledLog::open(&dir, Options::default()).is_ok_and(|log| log.read(1, 1).is_ok());
    if !reusable {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        write(&dir, &plan)?;
        std::fs::write(&done, marker)?;
    }
    Ok(Generated {
        dir,
        live: plan.sample,
        live_tokens: spec.live_tokens,
    })
}

/// The events, decided before anything is written, so the sample of live
/// tokens is known whether the log is generated or reused.
struct Plan {
    spec: Spec,
    events: Vec<(u64, Event)>,
    sample: Vec<(TokenId, CompanyId)>,
}

impl Plan {
    fn new(spec: Spec) -> Plan {
        let mut rng = Rng(0x5ca1_ab1e_0000_0001);
        let mut events: Vec<(u64, Event)> = Vec::with_capacity(spec.events as usize);
        for c in 0..spec.companies {
            events.push((
                c,
                Event::CompanyCreated {
                    company: company(c),
                    name: name("Company"),
                },
            ));
            for t in 0..spec.teammates {
                let role = if t == 0 { Role::Admin } else { Role::Member };
                events.push((
                    c,
                    Event::TeammateAdded {
                        teammate: teammate(&spec, c, t),
                        name: name("Teammate"),
                        role,
                    },
                ));
            }
            for w in 0..spec.workspaces {
                events.push((
                    c,
                    Event::WorkspaceCreated {
                        workspace: workspace(&spec, c, w),
                        name: name("Workspace"),
                    },
                ));
            }
        }
        let deleted = spec.live_tokens / 5;
        let mut to_create = spec.live_tokens + deleted;
        let mut to_delete = deleted;
        let mut to_reveal = spec.live_tokens / 4;
        let setup = events.len() as u64;
        let mut to_change = spec
            .events
            .saturating_sub(setup + to_create + to_delete + to_reveal);
        let mut live: Vec<(TokenId, u64)> =
            Vec::with_capacity((spec.live_tokens + deleted) as usize);
        let mut next_token = 0u128;
        while to_create + to_delete + to_reveal + to_change > 0 {
            let total = to_create
                + to_delete.min(live.len() as u64)
                + to_reveal.min(live.len() as u64)
                + to_change;
            let mut pick = rng.below(total);
            if pick < to_create {
                to_create -= 1;
                let c = rng.below(spec.companies);
                next_token += 1;
                let token = TokenId::from_u128(0x4_0000_0000 + next_token);
                events.push((c, token_created(&spec, &mut rng, c, token)));
                live.push((token, c));
                continue;
            }
            pick -= to_create;
            let deletable = to_delete.min(live.len() as u64);
            if pick < deletable {
                to_delete -= 1;
                let (token, c) = live.swap_remove(rng.below(live.len() as u64) as usize);
                events.push((c, Event::TokenDeleted { token }));
                continue;
            }
            pick -= deletable;
            let revealable = to_reveal.min(live.len() as u64);
            if pick < revealable {
                to_reveal -= 1;
                let (token, c) = live[rng.below(live.len() as u64) as usize];
                events.push((c, Event::TokenRevealed { token }));
                continue;
            }
            to_change -= 1;
            let c = rng.below(spec.companies);
            if rng.below(1000) == 0 {
                events.push((
                    c,
                    Event::PrivateApiAccessSetForAll {
                        allowed: rng.below(2) == 0,
                    },
                ));
            } else {
                let t = rng.below(spec.teammates);
                events.push((
                    c,
                    Event::PrivateApiAccessChanged {
                        teammate: teammate(&spec, c, t),
                        allowed: rng.below(3) != 0,
                    },
                ));
            }
        }
        let step = (live.len() / 4096).max(1);
        let sample = live
            .iter()
            .step_by(step)
            .take(4096)
            .map(|(token, c)| (*token, company(*c)))
            .collect();
        Plan {
            spec,
            events,
            sample,
        }
    }
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap_or_else(|_| unreachable!("a fixed, valid name"))
}

fn token_created(spec: &Spec, rng: &mut Rng, c: u64, token: TokenId) -> Event {
    let shared = match rng.below(3) {
        0 => SharedNamespace::None,
        1 => SharedNamespace::All,
        _ => SharedNamespace::Workspaces([workspace(spec, c, rng.below(spec.workspaces))].into()),
    };
    let grants = [
        "conversations:read",
        "messages:send",
        "tags:read",
        "contacts:write",
    ];
    Event::TokenCreated {
        token,
        name: name("Integration"),
        kind: TokenKind::ApiToken,
        scope: TokenScope {
            features: [Feature::Resources].into(),
            namespaces: Namespaces {
                global: !matches!(shared, SharedNamespace::None) || rng.below(2) == 0,
                shared,
                private: rng.below(2) == 0,
            },
            grants: grants
                .iter()
                .take(1 + rng.below(4) as usize)
                .filter_map(|s| s.parse().ok())
                .collect(),
        },
        secret_digest: secret_of(token).digest(),
        // The size of a real sealed secret: version, nonce, ciphertext, tag.
        sealed_secret: SealedSecret::try_from(vec![0x5e; 1 + 24 + 62 + 16]).ok(),
        expires_at: None,
    }
}

fn write(dir: &Path, plan: &Plan) -> Result<(), Box<dyn std::error::Error>> {
    let per_event = PERIOD / plan.spec.events.max(1);
    let clock = Arc::new(AtomicU64::new(START));
    let ticking = Arc::clone(&clock);
    let log = SledLog::open(
        dir,
        Options {
            clock: Some(Arc::new(move || {
                Timestamp::from_micros(ticking.load(Ordering::Relaxed))
            })),
            ..Options::default()
        },
    )?;
    let mut id = 0u128;
    for chunk in plan.events.chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|(c, event)| {
                id += 1;
                let actor = match event {
                    Event::CompanyCreated { .. } | Event::TeammateAdded { .. } => Actor::System,
                    _ => Actor::Teammate(teammate(&plan.spec, *c, 0)),
                };
                NewEvent {
                    event_id: EventId::from_u128(id),
                    actor,
                    company: company(*c),
                    event: event.clone(),
                }
            })
            .collect();
        log.append(batch, Expectation::Any)?;
        clock.fetch_add(per_event * chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}
