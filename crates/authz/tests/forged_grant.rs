//! Given a state folded from events `decide` would have refused (a forged
//! log), the decision still refuses what no valid log can grant, and never
//! allows across companies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use common::*;
use tokenledger_authz::{Command, Location, Reason, Rule};
use tokenledger_events::*;

/// Applies `event` as if the log held it, filed under `company` by `actor`,
/// without asking `decide`.
fn forge(world: &mut World, actor: Actor, company: CompanyId, event: Event) -> u64 {
    world.tick(1_000_000);
    let position = world.log.len() as u64 + 1;
    let envelope = Envelope {
        position,
        event_id: EventId::from_u128(u128::from(position) + 1_000_000),
        recorded_at: world.now,
        actor,
        company,
        event,
    };
    world.state.apply(&envelope);
    world.log.push(envelope);
    position
}

#[test]
fn an_oauth_grant_with_the_global_or_private_namespace_is_refused_at_rule_6_whatever_its_scope() {
    let mut world = World::new();
    let acme = world.company();
    let admin = world.teammate(acme, Role::Admin);
    let owner = world.teammate(acme, Role::Member);
    let support = world.workspace(acme);
    let beta = world.company();
    let stranger = world.teammate(beta, Role::Member);
    for teammate in [owner, stranger] {
        world.ok(
            Actor::System,
            Command::SetPrivateApiAccess {
                teammate,
                allowed: true,
            },
        );
    }

    // The grant `decide` refuses to create: every namespace.
    let (command, token, secret) = world.create_token_command(acme, scope(everywhere(), &[]));
    let Command::CreateToken {
        name,
        secret_digest,
        ..
    } = command
    else {
        unreachable!()
    };
    let forged_scope = scope(everywhere(), &["conversations:read"]);
    assert!(forged_scope.validate(TokenKind::OAuthGrant).is_err());
    let created = forge(
        &mut world,
        Actor::Teammate(admin),
        acme,
        Event::TokenCreated {
            token,
            name,
            kind: TokenKind::OAuthGrant,
            scope: forged_scope,
            secret_digest,
            sealed_secret: None,
            expires_at: None,
        },
    );

    // In its own company: the global and private namespaces are refused by
    // rule 6, pointing at the creation that recorded them.
    for location in [Location::Global(acme), Location::Private(owner)] {
        let decision = world.check(&secret, "conversations:read", "cnv_1", location);
        let refusal = decision.refusal.expect("refused");
        assert_eq!(refusal.rule, Rule::Namespace, "{location}");
        let Reason::NotForOAuth { created: by } = refusal.reason else {
            panic!("{location}: {refusal}");
        };
        assert_eq!(by.position, created);
        assert_eq!(refusal.status(), 403);
        assert!(
            refusal.to_string().contains("OAuth grants reach shared"),
            "{refusal}"
        );
    }
    // Its shared namespace is what an OAuth grant may have.
    assert!(
        world
            .check(
                &secret,
                "conversations:read",
                "cnv_1",
                Location::Shared(support)
            )
            .is_allowed()
    );
    // Another company's namespaces stay out of reach: rule 3 comes first.
    for location in [Location::Global(beta), Location::Private(stranger)] {
        let decision = world.check(&secret, "conversations:read", "cnv_1", location);
        assert_eq!(decision.refusal.unwrap().rule, Rule::SameCompany);
    }
}

#[test]
fn events_filed_under_another_company_do_not_move_anything_across_companies() {
    let mut world = World::new();
    let acme = world.company();
    let admin = world.teammate(acme, Role::Admin);
    let acme_space = world.workspace(acme);
    let beta = world.company();
    let stranger = world.teammate(beta, Role::Member);
    let beta_space = world.workspace(beta);
    let (token, secret) = world.token(
        admin,
        acme,
        scope(
            Namespaces {
                global: true,
                shared: SharedNamespace::All,
                private: true,
            },
            &["conversations:read"],
        ),
    );

    // Forged under Acme: Beta's teammate allows private access, Beta's
    // teammate and workspace are "added" again to Acme, and Acme's token
    // is created again under Beta.
    forge(
        &mut world,
        Actor::Teammate(admin),
        acme,
        Event::PrivateApiAccessChanged {
            teammate: stranger,
            allowed: true,
        },
    );
    forge(
        &mut world,
        Actor::Teammate(admin),
        acme,
        Event::TeammateAdded {
            teammate: stranger,
            name: Name::new("Mallory").unwrap(),
            role: Role::Admin,
        },
    );
    forge(
        &mut world,
        Actor::Teammate(admin),
        acme,
        Event::WorkspaceCreated {
            workspace: beta_space,
            name: Name::new("Stolen").unwrap(),
        },
    );
    forge(
        &mut world,
        Actor::System,
        beta,
        Event::TokenCreated {
            token,
            name: Name::new("Again").unwrap(),
            kind: TokenKind::ApiToken,
            scope: scope(everywhere(), &["conversations:read"]),
            secret_digest: secret.digest(),
            sealed_secret: None,
            expires_at: None,
        },
    );

    assert_eq!(world.state.teammate(stranger).unwrap().company, beta);
    assert_eq!(world.state.workspace(beta_space).unwrap().company, beta);
    assert_eq!(world.state.token(token).unwrap().company(), acme);
    for location in [
        Location::Global(beta),
        Location::Private(stranger),
        Location::Shared(beta_space),
    ] {
        let decision = world.check(&secret, "conversations:read", "cnv_1", location);
        assert_eq!(
            decision.refusal.unwrap().rule,
            Rule::SameCompany,
            "{location}"
        );
    }
    assert!(
        world
            .check(
                &secret,
                "conversations:read",
                "cnv_1",
                Location::Shared(acme_space)
            )
            .is_allowed()
    );
}
