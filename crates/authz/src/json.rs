//! Events as JSON, for `history --json` and export: every field readable,
//! ids and times as the text they print as. Secrets never appear: a token's
//! event says whether its secret is sealed, not what it is.

use serde_json::{Value, json};
use tokenledger_events::{Event, SharedNamespace, TokenScope};
use tokenledger_store::{StoredEvent, hex};

/// An event with its place in the log: position, time, id, actor, company,
/// type, fields, hash, and whether its time was clamped.
pub fn event_json(event: &StoredEvent) -> Value {
    let envelope = &event.envelope;
    json!({
        "position": envelope.position,
        "recorded_at": envelope.recorded_at.to_string(),
        "event_id": envelope.event_id.to_string(),
        "actor": envelope.actor.to_string(),
        "company": envelope.company.to_string(),
        "type": envelope.event.type_name(),
        "fields": fields(&envelope.event),
        "hash": hex(&event.hash),
        "clock_clamped": event.clock_clamped,
    })
}

fn fields(event: &Event) -> Value {
    match event {
        Event::CompanyCreated { company, name } => {
            json!({ "company": company.to_string(), "name": name.as_str() })
        }
        Event::TeammateAdded {
            teammate,
            name,
            role,
        } => json!({
            "teammate": teammate.to_string(),
            "name": name.as_str(),
            "role": role.as_str(),
        }),
        Event::TeammateRoleChanged { teammate, role } => {
            json!({ "teammate": teammate.to_string(), "role": role.as_str() })
        }
        Event::TeammateDeactivated { teammate } => json!({ "teammate": teammate.to_string() }),
        Event::WorkspaceCreated { workspace, name } => {
            json!({ "workspace": workspace.to_string(), "name": name.as_str() })
        }
        Event::WorkspaceDeleted { workspace } => json!({ "workspace": workspace.to_string() }),
        Event::TokenCreated {
            token,
            name,
            kind,
            scope,
            sealed_secret,
            expires_at,
            ..
        } => {
            let mut fields = scope_json(scope);
            if let Value::Object(map) = &mut fields {
                map.insert("token".to_owned(), json!(token.to_string()));
                map.insert("name".to_owned(), json!(name.as_str()));
                map.insert("kind".to_owned(), json!(kind.as_str()));
                map.insert("secret_sealed".to_owned(), json!(sealed_secret.is_some()));
                map.insert(
                    "expires_at".to_owned(),
                    json!(expires_at.map(|t| t.to_string())),
                );
            }
            fields
        }
        Event::TokenRevealed { token } | Event::TokenDeleted { token } => {
            json!({ "token": token.to_string() })
        }
        Event::PrivateApiAccessChanged { teammate, allowed } => {
            json!({ "teammate": teammate.to_string(), "allowed": allowed })
        }
        Event::PrivateApiAccessSetForAll { allowed } => json!({ "allowed": allowed }),
    }
}

/// A token's scope: features, namespaces and scopes, as the CLI takes them.
pub fn scope_json(scope: &TokenScope) -> Value {
    let shared = match &scope.namespaces.shared {
        SharedNamespace::None => json!([]),
        SharedNamespace::All => json!("all"),
        SharedNamespace::Workspaces(set) => {
            json!(set.iter().map(ToString::to_string).collect::<Vec<_>>())
        }
    };
    json!({
        "features": scope.features.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "namespaces": {
            "global": scope.namespaces.global,
            "shared": shared,
            "private": scope.namespaces.private,
        },
        "scopes": scope.grants.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenledger_events::{
        Actor, CompanyId, Envelope, EventId, Name, Namespaces, Secret, Timestamp, TokenId,
        TokenKind,
    };

    #[test]
    fn an_event_at_the_end_of_time_prints() {
        let end = Timestamp::from_micros(u64::MAX);
        let event = StoredEvent {
            envelope: Envelope {
                position: 1,
                event_id: EventId::from_u128(1),
                recorded_at: end,
                actor: Actor::System,
                company: CompanyId::from_u128(2),
                event: Event::TokenCreated {
                    token: TokenId::from_u128(3),
                    name: Name::new("far").unwrap(),
                    kind: TokenKind::ApiToken,
                    scope: TokenScope {
                        features: Default::default(),
                        namespaces: Namespaces::none(),
                        grants: Default::default(),
                    },
                    secret_digest: Secret::from_random([4; 32]).digest(),
                    sealed_secret: None,
                    expires_at: Some(end),
                },
            },
            hash: [0; 32],
            previous: [0; 32],
            clock_clamped: false,
        };
        let json = event_json(&event);
        assert_eq!(json["recorded_at"], "+586524-01-19T08:01:49.551615Z");
        assert_eq!(
            json["fields"]["expires_at"],
            "+586524-01-19T08:01:49.551615Z"
        );
    }
}
