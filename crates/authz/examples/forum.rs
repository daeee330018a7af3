//! The forum thread's 403 and its fix, replayed through the rules in memory.
//!
//! A plugin's token has the Private namespace and `conversations:read`, yet
//! reading a conversation in a teammate's private inbox is refused: the
//! teammate's "Allow access to my individual resources via the API" is off.
//! An admin turns it on for everyone, the request is allowed; the token is
//! deleted, and the very next request is refused.
//!
//! Run it with `cargo run -p tokenledger-authz --example forum`.

use std::error::Error;
use std::time::SystemTime;

use tokenledger_authz::{Command, Location, Request, State, decide, decide_request, fresh};
use tokenledger_events::{
    Actor, Envelope, Feature, Method, Name, Namespaces, ResourceId, Role, SharedNamespace,
    Timestamp, TokenKind, TokenScope, resolve_endpoint,
};

/// The log, in memory: the store crate will keep it on disk.
struct Ledger {
    state: State,
    log: Vec<Envelope>,
}

impl Ledger {
    fn execute(&mut self, actor: Actor, command: Command) -> Result<(), Box<dyn Error>> {
        let now = Timestamp::from_system_time(SystemTime::now());
        let decided = decide(&self.state, actor, now, &command)?;
        for event in decided.events {
            let envelope = Envelope {
                position: self.state.position() + 1,
                event_id: fresh::event_id()?,
                recorded_at: now,
                actor,
                company: decided.company,
                event,
            };
            self.state.apply(&envelope);
            self.log.push(envelope);
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut ledger = Ledger {
        state: State::new(),
        log: Vec::new(),
    };
    let company = fresh::company_id()?;
    let admin = fresh::teammate_id()?;
    let owner = fresh::teammate_id()?;
    let token = fresh::token_id()?;
    let secret = fresh::secret()?;

    ledger.execute(
        Actor::System,
        Command::CreateCompany {
            company,
            name: Name::new("Acme Support")?,
        },
    )?;
    for (teammate, name, role) in [
        (admin, "Ada (admin)", Role::Admin),
        (owner, "Olu", Role::Member),
    ] {
        ledger.execute(
            Actor::System,
            Command::AddTeammate {
                company,
                teammate,
                name: Name::new(name)?,
                role,
            },
        )?;
    }
    ledger.execute(
        Actor::Teammate(admin),
        Command::CreateToken {
            company,
            token,
            name: Name::new("Helpdesk plugin: reads conversations the agent selects")?,
            kind: TokenKind::ApiToken,
            scope: TokenScope {
                features: [Feature::Resources, Feature::Provisioning].into(),
                namespaces: Namespaces {
                    global: false,
                    shared: SharedNamespace::All,
                    private: true,
                },
                grants: ["conversations:read".parse()?].into_iter().collect(),
            },
            secret_digest: secret.digest(),
            sealed_secret: None,
            expires_at: None,
        },
    )?;

    let endpoint = resolve_endpoint(Method::Get, "/conversations/cnv_X")?;
    let resource: ResourceId = "cnv_X".parse()?;
    let show = |title: &str, state: &State| {
        let request = Request {
            requirement: endpoint.requirement,
            resource: resource.clone(),
            location: Location::Private(owner),
            at: Timestamp::from_system_time(SystemTime::now()),
        };
        let decision = decide_request(state, secret.expose(), &request);
        println!("\n{title}");
        println!("  GET /conversations/cnv_X  ({})", request.location);
        match decision.refusal {
            None => println!(
                "  -> {} allowed, at log position {}",
                decision.status(),
                decision.position
            ),
            Some(refusal) => {
                println!("  -> {}", refusal.body(&request).to_json());
                println!("     why: {refusal}");
                println!("     at log position {}", decision.position);
            }
        }
    };

    show(
        "1. The teammate's private API access is off (the default):",
        &ledger.state,
    );
    ledger.execute(
        Actor::Teammate(admin),
        Command::SetPrivateApiAccessForAll {
            company,
            allowed: true,
        },
    )?;
    show("2. An admin turns it on for all teammates:", &ledger.state);
    ledger.execute(Actor::Teammate(admin), Command::DeleteToken { token })?;
    show(
        "3. The admin deletes the token; the next request:",
        &ledger.state,
    );

    println!("\nThe audit trail:");
    for envelope in &ledger.log {
        println!(
            "  {:>3}  {}  {:<36}  {}",
            envelope.position,
            envelope.recorded_at,
            envelope.actor.to_string(),
            envelope.event.type_name()
        );
    }
    Ok(())
}
