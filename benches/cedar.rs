//! The same decisions as `authorize/by_handle`, made by the `cedar-policy`
//! crate, with entities built from the ledger's own state and requests
//! built in advance. Used by the `authorize` bench only; its setup checks
//! that both agree on every request.
//!
//! Two policy sets: [`RULES`], one policy per rule, so that Cedar's answer
//! names the rule that refused as tokenledger's does (the setup checks that
//! the lowest-numbered forbid Cedar cites is tokenledger's rule); and
//! [`COMBINED`], one policy for all of them, which only allows or denies.

use std::fmt::Write;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request, Response,
    RestrictedExpression,
};
use tokenledger_authz::Location;
use tokenledger_benches::World;
use tokenledger_events::{Feature, Requirement, SharedNamespace};

/// Rules 2 to 7 of docs/RULES.md, one policy each, named after the rule (rule 1
/// is the secret's form, which Cedar has no notion of). A request is allowed
/// when nothing forbids it.
pub const RULES: &str = r#"
@id("2")
forbid(principal is Token, action, resource is Resource)
when { principal.deleted };
@id("3")
forbid(principal is Token, action, resource is Resource)
unless { principal.company == resource.company };
@id("4")
forbid(principal is Token, action, resource is Resource)
unless { principal.features.contains("resources") };
@id("5")
forbid(principal is Token, action, resource is Resource)
unless { principal.grants.contains(context.scope) };
@id("6")
forbid(principal is Token, action, resource is Resource)
unless {
  (resource.namespace == "global" && principal.global) ||
  (resource.namespace == "shared" &&
     (principal.shared_all || principal.workspaces.contains(resource.workspace))) ||
  (resource.namespace == "private" && principal.private)
};
@id("7")
forbid(principal is Token, action, resource is Resource)
when { resource.namespace == "private" }
unless { resource.owner.private_access };
@id("allow")
permit(principal is Token, action == Action::"call", resource is Resource);
"#;

/// Rules 2 to 7 as one policy: allow or deny, without saying why.
pub const COMBINED: &str = r#"
permit(principal is Token, action == Action::"call", resource is Resource)
when {
  !principal.deleted &&
  principal.company == resource.company &&
  principal.features.contains("resources") &&
  principal.grants.contains(context.scope) &&
  ((resource.namespace == "global" && principal.global) ||
   (resource.namespace == "shared" &&
      (principal.shared_all || principal.workspaces.contains(resource.workspace))) ||
   (resource.namespace == "private" && principal.private && resource.owner.private_access))
};
"#;

/// Everything Cedar needs, built once.
pub struct Cedar {
    pub authorizer: Authorizer,
    pub policies: PolicySet,
    pub entities: Entities,
    pub requests: Vec<Request>,
}

impl Cedar {
    pub fn allows(&self, i: usize) -> bool {
        self.answer(i).decision() == Decision::Allow
    }

    /// The rule that refused request `i`: the lowest-numbered forbid among
    /// those Cedar cites (tokenledger names the first rule that fails).
    pub fn refused_by(&self, i: usize) -> Option<u8> {
        let answer = self.answer(i);
        if answer.decision() == Decision::Allow {
            return None;
        }
        answer
            .diagnostics()
            .reason()
            .filter_map(|id| self.policies.policy(id)?.annotation("id")?.parse().ok())
            .min()
    }

    pub fn answer(&self, i: usize) -> Response {
        self.authorizer
            .is_authorized(&self.requests[i], &self.policies, &self.entities)
    }
}

fn uid(kind: &str, id: impl std::fmt::Display) -> String {
    format!(r#"{{"__entity": {{"type": "{kind}", "id": "{id}"}}}}"#)
}

fn entity(kind: &str, id: impl std::fmt::Display, attrs: &str) -> String {
    format!(r#"{{"uid": {{"type": "{kind}", "id": "{id}"}}, "attrs": {{{attrs}}}, "parents": []}}"#)
}

pub fn build(world: &World, policies: &str) -> Result<Cedar, Box<dyn std::error::Error>> {
    let mut entities: Vec<String> = Vec::new();
    world.ledger.with_state(|state| {
        for (company, workspace, mates) in &world.roster {
            entities.push(entity("Company", company, ""));
            entities.push(entity(
                "Workspace",
                workspace,
                &format!(r#""company": {}"#, uid("Company", company)),
            ));
            for mate in mates {
                let allowed = state
                    .teammate(*mate)
                    .is_some_and(|m| m.private_access.value);
                entities.push(entity(
                    "Teammate",
                    mate,
                    &format!(
                        r#""company": {}, "private_access": {allowed}"#,
                        uid("Company", company)
                    ),
                ));
            }
            for (id, token) in state.tokens_of(*company) {
                let scope = &token.scope();
                let features: Vec<String> = scope
                    .features
                    .iter()
                    .map(|f| match f {
                        Feature::Resources => r#""resources""#.to_owned(),
                        other => format!(r#""{other}""#),
                    })
                    .collect();
                let grants: Vec<String> = scope.grants.iter().map(|s| format!(r#""{s}""#)).collect();
                let (shared_all, named) = match &scope.namespaces.shared {
                    SharedNamespace::None => (false, Vec::new()),
                    SharedNamespace::All => (true, Vec::new()),
                    SharedNamespace::Workspaces(set) => {
                        (false, set.iter().map(|w| uid("Workspace", w)).collect())
                    }
                };
                let mut attrs = String::new();
                let _ = write!(
                    attrs,
                    r#""company": {}, "deleted": {}, "features": [{}], "grants": [{}], "global": {}, "shared_all": {}, "workspaces": [{}], "private": {}"#,
                    uid("Company", company),
                    token.deleted().is_some(),
                    features.join(", "),
                    grants.join(", "),
                    scope.namespaces.global,
                    shared_all,
                    named.join(", "),
                    scope.namespaces.private
                );
                entities.push(entity("Token", id, &attrs));
            }
        }
    });
    // One resource entity per request, saying where it lives.
    let mut requests = Vec::with_capacity(world.cases.len());
    for (i, case) in world.cases.iter().enumerate() {
        let roster = |company| world.roster.iter().find(|(c, _, _)| *c == company);
        let (namespace, company, workspace, owner) = match case.request.location {
            Location::Global(company) => {
                let (_, w, mates) = roster(company).ok_or("unknown company")?;
                ("global", company, *w, mates[0])
            }
            Location::Shared(workspace) => {
                let (company, _, mates) = world
                    .roster
                    .iter()
                    .find(|(_, w, _)| *w == workspace)
                    .ok_or("unknown workspace")?;
                ("shared", *company, workspace, mates[0])
            }
            Location::Private(owner) => {
                let (company, w, _) = world
                    .roster
                    .iter()
                    .find(|(_, _, mates)| mates.contains(&owner))
                    .ok_or("unknown teammate")?;
                ("private", *company, *w, owner)
            }
        };
        entities.push(entity(
            "Resource",
            format!("r{i}"),
            &format!(
                r#""company": {}, "namespace": "{namespace}", "workspace": {}, "owner": {}"#,
                uid("Company", company),
                uid("Workspace", workspace),
                uid("Teammate", owner)
            ),
        ));
        let Requirement::Scope(scope) = case.request.requirement else {
            return Err("the bench asks by scope".into());
        };
        let context = Context::from_pairs([(
            "scope".to_owned(),
            RestrictedExpression::new_string(scope.to_string()),
        )])?;
        requests.push(Request::new(
            EntityUid::from_str(&format!(r#"Token::"{}""#, case.token.id()))?,
            EntityUid::from_str(r#"Action::"call""#)?,
            EntityUid::from_str(&format!(r#"Resource::"r{i}""#))?,
            context,
            None,
        )?);
    }
    let json = format!("[{}]", entities.join(",\n"));
    Ok(Cedar {
        authorizer: Authorizer::new(),
        policies: PolicySet::from_str(policies)?,
        entities: Entities::from_json_str(&json, None)?,
        requests,
    })
}
