//! Given / when / then: every command rule.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use common::*;
use tokenledger_authz::{Command, CommandError};
use tokenledger_events::*;

struct Company {
    world: World,
    company: CompanyId,
    admin: TeammateId,
    member: TeammateId,
}

/// Given a company with an admin and a member.
fn given_a_company() -> Company {
    let mut world = World::new();
    let company = world.company();
    let admin = world.teammate(company, Role::Admin);
    let member = world.teammate(company, Role::Member);
    Company {
        world,
        company,
        admin,
        member,
    }
}

fn conversations_read() -> TokenScope {
    scope(everywhere(), &["conversations:read"])
}

fn is_not_permitted(error: &CommandError) -> bool {
    matches!(error, CommandError::NotPermitted { .. })
}

#[test]
fn an_active_admin_creates_reveals_and_deletes_tokens() {
    let mut c = given_a_company();
    let (token, _) = c.world.token(c.admin, c.company, conversations_read());
    let admin = Actor::Teammate(c.admin);
    assert_eq!(
        c.world.ok(admin, Command::RevealToken { token }),
        vec![Event::TokenRevealed { token }]
    );
    assert_eq!(
        c.world.ok(admin, Command::DeleteToken { token }),
        vec![Event::TokenDeleted { token }]
    );
}

#[test]
fn a_member_cannot_create_reveal_or_delete_tokens() {
    let mut c = given_a_company();
    let (create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    let member = Actor::Teammate(c.member);
    let error = c.world.refused(member, create);
    assert!(is_not_permitted(&error));
    assert!(
        error.to_string().contains("may not create tokens"),
        "{error}"
    );

    let (token, _) = c.world.token(c.admin, c.company, conversations_read());
    assert!(is_not_permitted(
        &c.world.refused(member, Command::RevealToken { token })
    ));
    assert!(is_not_permitted(
        &c.world.refused(member, Command::DeleteToken { token })
    ));
}

#[test]
fn a_deactivated_admin_cannot_act() {
    let mut c = given_a_company();
    let other_admin = c.world.teammate(c.company, Role::Admin);
    c.world.ok(
        Actor::Teammate(c.admin),
        Command::DeactivateTeammate {
            teammate: other_admin,
        },
    );
    let (create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    let error = c.world.refused(Actor::Teammate(other_admin), create);
    assert!(
        matches!(error, CommandError::ActorDeactivated { .. }),
        "{error}"
    );
}

#[test]
fn an_admin_of_another_company_cannot_touch_this_companys_tokens() {
    let mut c = given_a_company();
    let elsewhere = c.world.company();
    let foreign_admin = c.world.teammate(elsewhere, Role::Admin);
    let (create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    assert!(is_not_permitted(
        &c.world.refused(Actor::Teammate(foreign_admin), create)
    ));
    let (token, _) = c.world.token(c.admin, c.company, conversations_read());
    let foreign = Actor::Teammate(foreign_admin);
    assert!(is_not_permitted(
        &c.world.refused(foreign, Command::RevealToken { token })
    ));
    assert!(is_not_permitted(
        &c.world.refused(foreign, Command::DeleteToken { token })
    ));
}

#[test]
fn neither_the_system_nor_a_token_manages_tokens() {
    let mut c = given_a_company();
    let (create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    assert!(is_not_permitted(
        &c.world.refused(Actor::System, create.clone())
    ));
    let (token, _) = c.world.token(c.admin, c.company, conversations_read());
    assert!(is_not_permitted(
        &c.world.refused(Actor::Token(token), create)
    ));
    assert!(is_not_permitted(
        &c.world
            .refused(Actor::System, Command::DeleteToken { token })
    ));
}

#[test]
fn an_unknown_teammate_cannot_act() {
    let mut c = given_a_company();
    let ghost = TeammateId::from_u128(999_999);
    let (create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    assert_eq!(
        c.world.refused(Actor::Teammate(ghost), create),
        CommandError::UnknownActor { actor: ghost }
    );
}

#[test]
fn a_token_needs_a_feature_and_for_resources_a_namespace_and_a_permission() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    let cases = [
        (
            TokenScope {
                features: Default::default(),
                ..conversations_read()
            },
            TokenScopeError::NoFeature,
        ),
        (
            scope(Namespaces::none(), &["conversations:read"]),
            TokenScopeError::NoNamespace,
        ),
        (scope(global(), &[]), TokenScopeError::NoPermission),
    ];
    for (bad, expected) in cases {
        let (create, _, _) = c.world.create_token_command(c.company, bad);
        assert_eq!(
            c.world.refused(admin, create),
            CommandError::InvalidScope(expected)
        );
    }
}

#[test]
fn named_workspaces_must_be_live_workspaces_of_the_company() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    let elsewhere = c.world.company();
    let foreign = c.world.workspace(elsewhere);
    let (create, _, _) = c
        .world
        .create_token_command(c.company, scope(shared(&[foreign]), &["tags:read"]));
    assert_eq!(
        c.world.refused(admin, create),
        CommandError::WorkspaceNotInCompany(foreign)
    );

    let gone = c.world.workspace(c.company);
    c.world
        .ok(admin, Command::DeleteWorkspace { workspace: gone });
    let (create, _, _) = c
        .world
        .create_token_command(c.company, scope(shared(&[gone]), &["tags:read"]));
    assert_eq!(
        c.world.refused(admin, create),
        CommandError::WorkspaceNotInCompany(gone)
    );

    let ours = c.world.workspace(c.company);
    let (create, _, _) = c
        .world
        .create_token_command(c.company, scope(shared(&[ours]), &["tags:read"]));
    c.world.ok(admin, create);
}

#[test]
fn oauth_grants_keep_their_restrictions() {
    let mut c = given_a_company();
    let (mut create, _, _) = c
        .world
        .create_token_command(c.company, scope(private(), &["conversations:read"]));
    if let Command::CreateToken { kind, .. } = &mut create {
        *kind = TokenKind::OAuthGrant;
    }
    let error = c.world.refused(Actor::Teammate(c.admin), create);
    assert_eq!(
        error,
        CommandError::InvalidScope(TokenScopeError::NotForOAuth {
            what: "the private namespace"
        })
    );
}

#[test]
fn an_expiry_must_be_in_the_future() {
    let mut c = given_a_company();
    let (mut create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    if let Command::CreateToken { expires_at, .. } = &mut create {
        *expires_at = Some(Timestamp::from_micros(1));
    }
    assert!(matches!(
        c.world.refused(Actor::Teammate(c.admin), create),
        CommandError::ExpiryNotInFuture { .. }
    ));
}

#[test]
fn an_expiry_after_year_9999_is_refused_and_the_last_moment_taken() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    for too_late in [
        Timestamp::from_micros(Timestamp::MAX_RFC3339.as_micros() + 1),
        Timestamp::from_micros(u64::MAX),
    ] {
        let (mut create, _, _) = c
            .world
            .create_token_command(c.company, conversations_read());
        if let Command::CreateToken { expires_at, .. } = &mut create {
            *expires_at = Some(too_late);
        }
        let error = c.world.refused(admin, create);
        assert_eq!(
            error,
            CommandError::ExpiryTooLate {
                expires_at: too_late
            }
        );
        assert!(
            error
                .to_string()
                .contains("is after 9999-12-31T23:59:59.999999Z, the latest a token may have"),
            "{error}"
        );
    }
    let (mut create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    if let Command::CreateToken { expires_at, .. } = &mut create {
        *expires_at = Some(Timestamp::MAX_RFC3339);
    }
    c.world.ok(admin, create);
}

#[test]
fn a_token_id_or_secret_cannot_be_used_twice() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    let (create, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    c.world.ok(admin, create.clone());
    assert!(matches!(
        c.world.refused(admin, create.clone()),
        CommandError::AlreadyExists { .. }
    ));
    let Command::CreateToken { secret_digest, .. } = create else {
        unreachable!()
    };
    let (mut again, _, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    if let Command::CreateToken {
        secret_digest: digest,
        ..
    } = &mut again
    {
        *digest = secret_digest;
    }
    assert_eq!(c.world.refused(admin, again), CommandError::DuplicateSecret);
}

#[test]
fn deletion_is_final() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    let (token, _) = c.world.token(c.admin, c.company, conversations_read());
    c.world.ok(admin, Command::DeleteToken { token });
    assert!(matches!(
        c.world.refused(admin, Command::DeleteToken { token }),
        CommandError::TokenDeleted { .. }
    ));
    let error = c.world.refused(admin, Command::RevealToken { token });
    assert!(matches!(error, CommandError::TokenDeleted { .. }));
    assert!(error.to_string().contains("deletion is final"), "{error}");
}

#[test]
fn an_expired_token_cannot_be_revealed_but_can_be_deleted() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    let (mut create, token, _) = c
        .world
        .create_token_command(c.company, conversations_read());
    if let Command::CreateToken { expires_at, .. } = &mut create {
        *expires_at = Some(Timestamp::from_micros(c.world.now.as_micros() + 10_000_000));
    }
    c.world.ok(admin, create);
    c.world.tick(60_000_000);
    assert!(matches!(
        c.world.refused(admin, Command::RevealToken { token }),
        CommandError::TokenExpired { .. }
    ));
    c.world.ok(admin, Command::DeleteToken { token });
}

#[test]
fn unknown_tokens_are_errors() {
    let mut c = given_a_company();
    let token = TokenId::from_u128(424_242);
    assert_eq!(
        c.world
            .refused(Actor::Teammate(c.admin), Command::RevealToken { token }),
        CommandError::UnknownToken(token)
    );
}

#[test]
fn the_preference_is_changed_by_the_teammate_or_an_admin() {
    let mut c = given_a_company();
    let other_member = c.world.teammate(c.company, Role::Member);
    let set = |teammate, allowed| Command::SetPrivateApiAccess { teammate, allowed };
    c.world.ok(Actor::Teammate(c.member), set(c.member, true));
    c.world.ok(Actor::Teammate(c.admin), set(c.member, false));
    c.world.ok(Actor::System, set(c.member, true));
    let error = c
        .world
        .refused(Actor::Teammate(other_member), set(c.member, false));
    assert!(is_not_permitted(&error));
    assert!(error.to_string().contains("only the teammate"), "{error}");
}

#[test]
fn for_all_teammates_is_for_admins() {
    let mut c = given_a_company();
    let all = |company| Command::SetPrivateApiAccessForAll {
        company,
        allowed: true,
    };
    assert!(is_not_permitted(
        &c.world.refused(Actor::Teammate(c.member), all(c.company))
    ));
    c.world.ok(Actor::Teammate(c.admin), all(c.company));
    let elsewhere = c.world.company();
    assert!(is_not_permitted(
        &c.world.refused(Actor::Teammate(c.admin), all(elsewhere))
    ));
}

#[test]
fn companies_are_created_by_the_system_with_their_first_admin() {
    let mut c = given_a_company();
    let create = Command::CreateCompany {
        company: CompanyId::from_u128(77),
        name: Name::new("Other").unwrap(),
    };
    assert!(is_not_permitted(
        &c.world.refused(Actor::Teammate(c.admin), create.clone())
    ));
    c.world.ok(Actor::System, create.clone());
    assert!(matches!(
        c.world.refused(Actor::System, create),
        CommandError::AlreadyExists { .. }
    ));
}

#[test]
fn members_cannot_add_teammates_or_workspaces() {
    let mut c = given_a_company();
    let member = Actor::Teammate(c.member);
    let add = Command::AddTeammate {
        company: c.company,
        teammate: TeammateId::from_u128(55),
        name: Name::new("New").unwrap(),
        role: Role::Admin,
    };
    assert!(is_not_permitted(&c.world.refused(member, add.clone())));
    c.world.ok(Actor::Teammate(c.admin), add);
    let workspace = Command::CreateWorkspace {
        company: c.company,
        workspace: WorkspaceId::from_u128(56),
        name: Name::new("Sales").unwrap(),
    };
    assert!(is_not_permitted(&c.world.refused(member, workspace)));
}

#[test]
fn the_last_active_admin_can_be_neither_demoted_nor_deactivated() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    let demote = Command::ChangeRole {
        teammate: c.admin,
        role: Role::Member,
    };
    assert_eq!(
        c.world.refused(admin, demote.clone()),
        CommandError::LastAdmin(c.admin)
    );
    let deactivate = Command::DeactivateTeammate { teammate: c.admin };
    assert_eq!(
        c.world.refused(Actor::System, deactivate.clone()),
        CommandError::LastAdmin(c.admin)
    );

    c.world.ok(
        admin,
        Command::ChangeRole {
            teammate: c.member,
            role: Role::Admin,
        },
    );
    c.world.ok(admin, demote);
    assert_eq!(
        c.world.refused(
            Actor::Teammate(c.member),
            Command::DeactivateTeammate { teammate: c.member }
        ),
        CommandError::LastAdmin(c.member)
    );
}

#[test]
fn a_deactivated_teammate_stays_deactivated() {
    let mut c = given_a_company();
    let admin = Actor::Teammate(c.admin);
    c.world
        .ok(admin, Command::DeactivateTeammate { teammate: c.member });
    assert_eq!(
        c.world
            .refused(admin, Command::DeactivateTeammate { teammate: c.member }),
        CommandError::TeammateDeactivated(c.member)
    );
    assert_eq!(
        c.world.refused(
            admin,
            Command::ChangeRole {
                teammate: c.member,
                role: Role::Admin
            }
        ),
        CommandError::TeammateDeactivated(c.member)
    );
}

#[test]
fn a_role_change_must_change_the_role() {
    let mut c = given_a_company();
    assert!(matches!(
        c.world.refused(
            Actor::Teammate(c.admin),
            Command::ChangeRole {
                teammate: c.member,
                role: Role::Member
            }
        ),
        CommandError::RoleUnchanged { .. }
    ));
}

#[test]
fn a_workspace_is_deleted_once() {
    let mut c = given_a_company();
    let workspace = c.world.workspace(c.company);
    let admin = Actor::Teammate(c.admin);
    c.world.ok(admin, Command::DeleteWorkspace { workspace });
    assert_eq!(
        c.world
            .refused(admin, Command::DeleteWorkspace { workspace }),
        CommandError::WorkspaceDeleted(workspace)
    );
}
