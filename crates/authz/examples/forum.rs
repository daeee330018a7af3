//! The forum thread's 403 and its fix, replayed through a real ledger.
//!
//! A plugin's token has the Private namespace and `conversations:read`, yet
//! reading a conversation in a teammate's private inbox is refused: the
//! teammate's "Allow access to my individual resources via the API" is off.
//! An admin turns it on for everyone, the request is allowed; the token is
//! deleted, and the very next request is refused.
//!
//! Run it with `cargo run -p tokenledger-authz --example forum`. It keeps
//! its data in a temporary directory, verified and removed at the end.

use std::error::Error;
use std::time::SystemTime;

use tokenledger_authz::{Authorizer, Command, Ledger, Location, NewToken, Request, fresh};
use tokenledger_events::{
    Actor, Feature, Method, Name, Namespaces, ResourceId, Role, Secret, SharedNamespace, Timestamp,
    TokenKind, TokenScope, resolve_endpoint,
};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    let company = fresh::company_id()?;
    let admin = fresh::teammate_id()?;
    let owner = fresh::teammate_id()?;

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
    let created = ledger.create_token(
        Actor::Teammate(admin),
        NewToken {
            company,
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
            expires_at: None,
        },
    )?;

    let authorizer = ledger.authorizer();
    let request = Request {
        requirement: resolve_endpoint(Method::Get, "/conversations/cnv_X")?.requirement,
        resource: "cnv_X".parse::<ResourceId>()?,
        location: Location::Private(owner),
        at: Timestamp::from_system_time(SystemTime::now()),
    };
    show(
        "1. The teammate's private API access is off (the default):",
        &authorizer,
        &created.secret,
        &request,
    );
    ledger.execute(
        Actor::Teammate(admin),
        Command::SetPrivateApiAccessForAll {
            company,
            allowed: true,
        },
    )?;
    show(
        "2. An admin turns it on for all teammates:",
        &authorizer,
        &created.secret,
        &request,
    );
    ledger.execute(
        Actor::Teammate(admin),
        Command::DeleteToken {
            token: created.token,
        },
    )?;
    show(
        "3. The admin deletes the token; the next request:",
        &authorizer,
        &created.secret,
        &request,
    );
    let verified = ledger.verify()?;
    println!(
        "\nThe log: {} events, hash chain intact up to position {}.",
        verified.records, verified.head.position
    );
    Ok(())
}

fn show(title: &str, authorizer: &Authorizer, secret: &Secret, request: &Request) {
    let decision = authorizer.check(secret.expose(), request);
    println!("\n{title}");
    println!("  GET /conversations/cnv_X  ({})", request.location);
    match decision.refusal {
        None => println!(
            "  -> {} allowed, at log position {}",
            decision.status(),
            decision.position
        ),
        Some(refusal) => {
            println!("  -> {}", refusal.body(request).to_json());
            println!("     why: {refusal}");
            println!("     at log position {}", decision.position);
        }
    }
}
