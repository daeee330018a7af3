//! Given / when / then: every rule of the decision, and the forum thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use common::*;
use tokenledger_authz::{
    Command, Location, Reason, Request, Rule, authenticate, authenticate_live, authorize,
    decide_request,
};
use tokenledger_events::*;

struct Given {
    world: World,
    company: CompanyId,
    admin: TeammateId,
    owner: TeammateId,
    workspace: WorkspaceId,
}

/// Given a company with an admin, a member who owns private resources, and
/// a workspace.
fn given() -> Given {
    let mut world = World::new();
    let company = world.company();
    let admin = world.teammate(company, Role::Admin);
    let owner = world.teammate(company, Role::Member);
    let workspace = world.workspace(company);
    Given {
        world,
        company,
        admin,
        owner,
        workspace,
    }
}

fn refused_by(decision: &tokenledger_authz::Decision) -> Rule {
    decision
        .refusal
        .expect("the request should be refused")
        .rule
}

/// A token that reads conversations in private inboxes only.
fn private_reader(g: &mut Given) -> Secret {
    let scope = scope(private(), &["conversations:read"]);
    g.world.token(g.admin, g.company, scope).1
}

/// `secret` asks to read `cnv_1` in the owner's private inbox.
fn owners_conversation(g: &Given, secret: &Secret) -> tokenledger_authz::Decision {
    g.world.check(
        secret,
        "conversations:read",
        "cnv_1",
        Location::Private(g.owner),
    )
}

#[test]
fn the_forum_thread_a_private_scope_is_not_enough_until_the_owner_allows_it() {
    let mut g = given();
    // The token of the thread: shared and private resources, provisioning.
    let token_scope = TokenScope {
        features: [Feature::Resources, Feature::Provisioning].into(),
        namespaces: Namespaces {
            global: false,
            shared: SharedNamespace::All,
            private: true,
        },
        grants: ["conversations:read".parse().unwrap()]
            .into_iter()
            .collect(),
    };
    let (_, secret) = g.world.token(g.admin, g.company, token_scope);
    let endpoint = resolve_endpoint(Method::Get, "/conversations/cnv_X").unwrap();
    let request = |world: &World| Request {
        requirement: endpoint.requirement,
        resource: "cnv_X".parse().unwrap(),
        location: Location::Private(g.owner),
        at: world.now,
    };

    // The owner's preference is off, as it is by default: 403.
    let decision = decide_request(&g.world.state, secret.expose(), &request(&g.world));
    let refusal = decision.refusal.unwrap();
    assert_eq!(refusal.rule, Rule::OwnerAllowsPrivateAccess);
    assert_eq!(refusal.status(), 403);
    let body = refusal.body(&request(&g.world));
    assert_eq!(
        body.to_json(),
        r#"{"_error":{"status":403,"title":"Forbidden","message":"This agent is not allowed to read the \"conversation\" with ID: \"cnv_X\""}}"#
    );
    assert!(
        refusal
            .reason
            .to_string()
            .contains("the owner's private API access is off"),
        "{}",
        refusal.reason
    );
    assert_eq!(refusal.needed.unwrap().to_string(), "conversations:read");
    // The event behind it: the owner's addition, when the preference started off.
    let Reason::PrivateAccessOff { owner, set } = refusal.reason else {
        panic!("{:?}", refusal.reason)
    };
    assert_eq!(owner, g.owner);
    assert_eq!(
        g.world.log[set.position as usize - 1].event.teammate(),
        Some(g.owner)
    );

    // The fix: an admin turns it on for all teammates.
    g.world.ok(
        Actor::Teammate(g.admin),
        Command::SetPrivateApiAccessForAll {
            company: g.company,
            allowed: true,
        },
    );
    let decision = decide_request(&g.world.state, secret.expose(), &request(&g.world));
    assert!(decision.is_allowed(), "{:?}", decision.refusal);
    assert_eq!(decision.position, g.world.log.len() as u64);
}

#[test]
fn rule_1_a_malformed_secret_is_unauthenticated() {
    let g = given();
    let request = g
        .world
        .request("tags:read", "tag_1", Location::Global(g.company));
    for garbage in ["", "Bearer xyz", &"tlk_".repeat(100)] {
        let decision = decide_request(&g.world.state, garbage, &request);
        assert_eq!(refused_by(&decision), Rule::SecretWellFormed);
        assert_eq!(decision.status(), 401);
        assert_eq!(
            decision.refusal.unwrap().body(&request).to_json(),
            r#"{"_error":{"status":401,"title":"Unauthenticated","message":"Invalid token"}}"#
        );
    }
}

#[test]
fn rule_2_an_unknown_deleted_or_expired_token_is_unauthenticated() {
    let mut g = given();
    let unknown = Secret::from_random([9; 32]);
    let d = g
        .world
        .check(&unknown, "tags:read", "tag_1", Location::Global(g.company));
    assert_eq!((refused_by(&d), d.status()), (Rule::TokenLive, 401));

    let (token, secret) = g
        .world
        .token(g.admin, g.company, scope(global(), &["tags:read"]));
    let handle = authenticate(&g.world.state, secret.expose()).unwrap();
    assert_eq!(handle.id(), token);
    g.world
        .ok(Actor::Teammate(g.admin), Command::DeleteToken { token });
    let d = g
        .world
        .check(&secret, "tags:read", "tag_1", Location::Global(g.company));
    assert_eq!(refused_by(&d), Rule::TokenLive);
    let Reason::TokenDeleted { deleted } = d.refusal.unwrap().reason else {
        panic!()
    };
    assert_eq!(deleted.actor, Actor::Teammate(g.admin));
    assert_eq!(deleted.position, g.world.log.len() as u64);
    // A handle taken before the delete is refused too.
    let request = g
        .world
        .request("tags:read", "tag_1", Location::Global(g.company));
    assert_eq!(
        refused_by(&authorize(&g.world.state, handle, &request)),
        Rule::TokenLive
    );

    let (mut create, _, expiring) = g
        .world
        .create_token_command(g.company, scope(global(), &["tags:read"]));
    if let Command::CreateToken { expires_at, .. } = &mut create {
        *expires_at = Some(Timestamp::from_micros(g.world.now.as_micros() + 5_000_000));
    }
    g.world.ok(Actor::Teammate(g.admin), create);
    assert!(
        g.world
            .check(&expiring, "tags:read", "tag_1", Location::Global(g.company))
            .is_allowed()
    );
    g.world.tick(5_000_000);
    let d = g
        .world
        .check(&expiring, "tags:read", "tag_1", Location::Global(g.company));
    assert!(matches!(
        d.refusal.unwrap().reason,
        Reason::TokenExpired { .. }
    ));
}

#[test]
fn rule_3_never_across_companies() {
    let mut g = given();
    let (_, secret) = g
        .world
        .token(g.admin, g.company, scope(everywhere(), &["tags:read"]));
    let elsewhere = g.world.company();
    let their_mate = g.world.teammate(elsewhere, Role::Admin);
    let their_space = g.world.workspace(elsewhere);
    for location in [
        Location::Global(elsewhere),
        Location::Shared(their_space),
        Location::Private(their_mate),
        Location::Shared(WorkspaceId::from_u128(123_456)),
        Location::Private(TeammateId::from_u128(123_456)),
    ] {
        let d = g.world.check(&secret, "tags:read", "tag_1", location);
        assert_eq!(
            (refused_by(&d), d.status()),
            (Rule::SameCompany, 403),
            "{location}"
        );
    }
}

#[test]
fn rule_4_the_feature_the_request_needs() {
    let mut g = given();
    let provisioning_only = TokenScope {
        features: [Feature::Provisioning].into(),
        namespaces: Namespaces::none(),
        grants: Grants::NONE,
    };
    let (token, secret) = g.world.token(g.admin, g.company, provisioning_only);
    let d = g
        .world
        .check(&secret, "tags:read", "tag_1", Location::Global(g.company));
    assert_eq!(refused_by(&d), Rule::Feature);

    let trigger = Request {
        requirement: resolve_endpoint(Method::Post, "/applications/app_1/events")
            .unwrap()
            .requirement,
        resource: "app_1".parse().unwrap(),
        location: Location::Global(g.company),
        at: g.world.now,
    };
    let d = authorize(&g.world.state, token, &trigger);
    assert_eq!(refused_by(&d), Rule::Feature);
    assert!(
        d.refusal
            .unwrap()
            .body(&trigger)
            .message
            .contains("trigger")
    );

    let triggers_only = TokenScope {
        features: [Feature::AppTriggers].into(),
        namespaces: Namespaces::none(),
        grants: Grants::NONE,
    };
    let (token, _) = g.world.token(g.admin, g.company, triggers_only);
    assert!(authorize(&g.world.state, token, &trigger).is_allowed());
    let me = Request {
        requirement: Requirement::LiveToken,
        ..trigger
    };
    assert!(authorize(&g.world.state, token, &me).is_allowed());
}

#[test]
fn rule_5_the_permission_on_the_resource_kind() {
    let mut g = given();
    let (_, secret) = g
        .world
        .token(g.admin, g.company, scope(everywhere(), &["messages:write"]));
    let d = g.world.check(
        &secret,
        "messages:send",
        "msg_1",
        Location::Global(g.company),
    );
    let refusal = d.refusal.unwrap();
    assert_eq!(refusal.rule, Rule::Permission);
    assert_eq!(refusal.needed.unwrap().to_string(), "messages:send");
    let request = g
        .world
        .request("messages:send", "msg_1", Location::Global(g.company));
    assert_eq!(
        refusal.body(&request).message,
        r#"This agent is not allowed to send the "message" with ID: "msg_1""#
    );
    assert!(
        g.world
            .check(
                &secret,
                "messages:write",
                "msg_1",
                Location::Global(g.company)
            )
            .is_allowed()
    );
}

#[test]
fn rule_6_the_namespaces_cover_where_the_resource_lives() {
    let mut g = given();
    let other_space = g.world.workspace(g.company);
    let (_, secret) = g.world.token(
        g.admin,
        g.company,
        scope(shared(&[g.workspace]), &["tags:read"]),
    );
    assert!(
        g.world
            .check(&secret, "tags:read", "tag_1", Location::Shared(g.workspace))
            .is_allowed()
    );
    for location in [
        Location::Shared(other_space),
        Location::Global(g.company),
        Location::Private(g.owner),
    ] {
        let d = g.world.check(&secret, "tags:read", "tag_1", location);
        assert_eq!(refused_by(&d), Rule::Namespace, "{location}");
    }

    let (_, all) = g
        .world
        .token(g.admin, g.company, scope(everywhere(), &["tags:read"]));
    g.world.ok(
        Actor::Teammate(g.admin),
        Command::DeleteWorkspace {
            workspace: g.workspace,
        },
    );
    let d = g
        .world
        .check(&all, "tags:read", "tag_1", Location::Shared(g.workspace));
    assert!(matches!(
        d.refusal.unwrap().reason,
        Reason::WorkspaceDeleted { .. }
    ));
    let later = g.world.workspace(g.company);
    assert!(
        g.world
            .check(&all, "tags:read", "tag_1", Location::Shared(later))
            .is_allowed(),
        "all shared workspaces includes ones created later"
    );
}

#[test]
fn rule_7_the_later_of_the_owners_choice_and_the_companys_wins() {
    let mut g = given();
    let secret = private_reader(&mut g);
    let at = |g: &Given| owners_conversation(g, &secret);
    assert_eq!(refused_by(&at(&g)), Rule::OwnerAllowsPrivateAccess);

    g.world.ok(
        Actor::Teammate(g.owner),
        Command::SetPrivateApiAccess {
            teammate: g.owner,
            allowed: true,
        },
    );
    assert!(at(&g).is_allowed());

    g.world.ok(
        Actor::Teammate(g.admin),
        Command::SetPrivateApiAccessForAll {
            company: g.company,
            allowed: false,
        },
    );
    let d = at(&g);
    let Reason::PrivateAccessOff { set, .. } = d.refusal.unwrap().reason else {
        panic!()
    };
    assert_eq!(set.actor, Actor::Teammate(g.admin));

    g.world.ok(
        Actor::Teammate(g.owner),
        Command::SetPrivateApiAccess {
            teammate: g.owner,
            allowed: true,
        },
    );
    assert!(at(&g).is_allowed());

    // A teammate added after "on for all" starts with it off.
    g.world.ok(
        Actor::Teammate(g.admin),
        Command::SetPrivateApiAccessForAll {
            company: g.company,
            allowed: true,
        },
    );
    let newcomer = g.world.teammate(g.company, Role::Member);
    let d = g.world.check(
        &secret,
        "conversations:read",
        "cnv_1",
        Location::Private(newcomer),
    );
    assert_eq!(refused_by(&d), Rule::OwnerAllowsPrivateAccess);
}

#[test]
fn rule_7_a_deactivated_owners_resources_are_refused_whatever_the_preference() {
    let mut g = given();
    let secret = private_reader(&mut g);
    let at = |g: &Given| owners_conversation(g, &secret);
    g.world.ok(
        Actor::Teammate(g.owner),
        Command::SetPrivateApiAccess {
            teammate: g.owner,
            allowed: true,
        },
    );
    assert!(at(&g).is_allowed());

    g.world.ok(
        Actor::Teammate(g.admin),
        Command::DeactivateTeammate { teammate: g.owner },
    );
    let refusal = at(&g)
        .refusal
        .expect("a deactivated owner's resources are refused");
    assert_eq!(refusal.rule, Rule::OwnerAllowsPrivateAccess);
    assert_eq!(refusal.status(), 403);
    let Reason::OwnerDeactivated { owner, deactivated } = refusal.reason else {
        panic!("{:?}", refusal.reason)
    };
    assert_eq!(owner, g.owner);
    assert_eq!(deactivated.actor, Actor::Teammate(g.admin));
    assert_eq!(refusal.reason.provenance(), Some(deactivated));
}

#[test]
fn rules_are_checked_in_order() {
    let mut g = given();
    // A token that fails rules 4, 5 and 6 at once is refused by rule 4.
    let provisioning_only = TokenScope {
        features: [Feature::Provisioning].into(),
        namespaces: Namespaces::none(),
        grants: Grants::NONE,
    };
    let (_, secret) = g.world.token(g.admin, g.company, provisioning_only);
    let d = g.world.check(
        &secret,
        "conversations:read",
        "cnv_1",
        Location::Private(g.owner),
    );
    assert_eq!(refused_by(&d), Rule::Feature);
    // Fails 5 and 6 and 7: refused by 5.
    let (_, secret) = g
        .world
        .token(g.admin, g.company, scope(global(), &["tags:read"]));
    let d = g.world.check(
        &secret,
        "conversations:read",
        "cnv_1",
        Location::Private(g.owner),
    );
    assert_eq!(refused_by(&d), Rule::Permission);
}

#[test]
fn rule_8_allow_by_endpoint() {
    let mut g = given();
    let (token, _) = g
        .world
        .token(g.admin, g.company, scope(global(), &["messages:read"]));
    let endpoint = resolve_endpoint(Method::Get, "/conversations/cnv_1/messages").unwrap();
    let request = Request {
        requirement: endpoint.requirement,
        resource: "cnv_1".parse().unwrap(),
        location: Location::Global(g.company),
        at: g.world.now,
    };
    let d = authorize(&g.world.state, token, &request);
    assert!(d.is_allowed());
    assert_eq!(d.status(), 200);
    assert_eq!(d.token, Some(token));
}

/// `authenticate_live` answers as `authenticate`, then a live-token
/// decision in the token's own company: for a live token, a deleted one, one
/// before and after it expires, an unknown secret and a malformed one.
#[test]
fn rule_2_in_full_at_once_answers_as_authenticate_then_a_live_token_decision() {
    let mut g = given();
    let (_, live) = g
        .world
        .token(g.admin, g.company, scope(global(), &["tags:read"]));
    let (deleted, deleted_secret) =
        g.world
            .token(g.admin, g.company, scope(global(), &["tags:read"]));
    g.world.ok(
        Actor::Teammate(g.admin),
        Command::DeleteToken { token: deleted },
    );
    let (mut create, _, expiring) = g
        .world
        .create_token_command(g.company, scope(global(), &["tags:read"]));
    if let Command::CreateToken { expires_at, .. } = &mut create {
        *expires_at = Some(Timestamp::from_micros(g.world.now.as_micros() + 5_000_000));
    }
    g.world.ok(Actor::Teammate(g.admin), create);
    let unknown = Secret::from_random([9; 32]);

    let stepwise = |state: &tokenledger_authz::State, presented: &str, at: Timestamp| {
        let handle = authenticate(state, presented).map_err(|refusal| (None, refusal))?;
        let company = state.token_by_handle(handle).unwrap().company();
        let request = Request {
            requirement: Requirement::LiveToken,
            resource: ResourceId::any(),
            location: Location::Global(company),
            at,
        };
        match authorize(state, handle, &request).refusal {
            Some(refusal) => Err((Some(handle.id()), refusal)),
            None => Ok((handle, company)),
        }
    };
    let mut refused = Vec::new();
    for _ in 0..2 {
        for presented in [
            live.expose(),
            deleted_secret.expose(),
            expiring.expose(),
            unknown.expose(),
            "tlk_not_a_secret",
        ] {
            let at = g.world.now;
            let found = authenticate_live(&g.world.state, presented, at);
            assert_eq!(found, stepwise(&g.world.state, presented, at));
            if let Err((_, refusal)) = found {
                refused.push(refusal.rule);
            }
        }
        g.world.tick(5_000_000);
    }
    // Deleted, unknown and malformed twice; expired once.
    assert_eq!(refused.len(), 7, "{refused:?}");
}
