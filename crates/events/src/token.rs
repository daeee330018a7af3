//! What a token is allowed: its kind, features, namespaces and grants.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::WorkspaceId;
use crate::scope::{Grants, ResourceKind};

/// What a token can be used for at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Feature {
    /// *Access resources*: the Core API.
    Resources,
    /// *Auto-provisioning*: SCIM.
    Provisioning,
    /// *Application triggers*: `POST /applications/{uid}/events`.
    AppTriggers,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 3] = [
        Feature::Resources,
        Feature::Provisioning,
        Feature::AppTriggers,
    ];

    /// The feature's name on the command line (`resources`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Feature::Resources => "resources",
            Feature::Provisioning => "provisioning",
            Feature::AppTriggers => "app-triggers",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Feature {
    type Err = String;

    fn from_str(input: &str) -> Result<Feature, String> {
        Feature::ALL
            .into_iter()
            .find(|f| f.as_str() == input)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a feature; the features are: resources, provisioning, app-triggers",
                    crate::id::quote_input(input)
                )
            })
    }
}

/// The shared namespace of a token: which workspaces' resources it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SharedNamespace {
    /// No shared resources.
    None,
    /// *All shared workspaces*, including ones created later.
    All,
    /// These workspaces only.
    Workspaces(BTreeSet<WorkspaceId>),
}

impl SharedNamespace {
    /// Whether resources of `workspace` are covered.
    pub fn covers(&self, workspace: WorkspaceId) -> bool {
        match self {
            SharedNamespace::None => false,
            SharedNamespace::All => true,
            SharedNamespace::Workspaces(set) => set.contains(&workspace),
        }
    }

    /// Whether no workspace is covered.
    pub fn is_none(&self) -> bool {
        match self {
            SharedNamespace::None => true,
            SharedNamespace::All => false,
            SharedNamespace::Workspaces(set) => set.is_empty(),
        }
    }
}

/// Where a token's resources may live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Namespaces {
    /// Company-level resources.
    pub global: bool,
    /// Workspaces' resources.
    pub shared: SharedNamespace,
    /// Teammates' individual resources (each owner must also allow it).
    pub private: bool,
}

impl Namespaces {
    /// No namespace at all.
    pub fn none() -> Namespaces {
        Namespaces {
            global: false,
            shared: SharedNamespace::None,
            private: false,
        }
    }

    /// Whether no namespace is selected.
    pub fn is_empty(&self) -> bool {
        !self.global && self.shared.is_none() && !self.private
    }
}

/// The two kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenKind {
    /// An API token created by an admin.
    ApiToken,
    /// An OAuth grant to an app: shared resources only, no private
    /// namespace, no knowledge bases, no application triggers.
    OAuthGrant,
}

impl TokenKind {
    /// The kind's name (`api_token`, `oauth_grant`).
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::ApiToken => "api_token",
            TokenKind::OAuthGrant => "oauth_grant",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a token may do, chosen at creation and never edited.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenScope {
    /// The features, as a sorted set.
    pub features: BTreeSet<Feature>,
    /// The namespaces.
    pub namespaces: Namespaces,
    /// The permissions, per resource kind.
    pub grants: Grants,
}

/// Why a scope is not acceptable for a token of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenScopeError {
    /// No feature was chosen.
    NoFeature,
    /// Access to resources needs at least one namespace.
    NoNamespace,
    /// Access to resources needs at least one permission.
    NoPermission,
    /// Permissions were given without the resources feature.
    PermissionsWithoutResources,
    /// A named workspace list is empty.
    EmptyWorkspaceList,
    /// An OAuth grant asked for something OAuth grants cannot have.
    NotForOAuth {
        /// What was asked for.
        what: &'static str,
    },
}

impl fmt::Display for TokenScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenScopeError::NoFeature => f.write_str("a token needs at least one feature"),
            TokenScopeError::NoNamespace => f.write_str(
                "access to resources needs at least one namespace (global, shared or private)",
            ),
            TokenScopeError::NoPermission => {
                f.write_str("access to resources needs at least one permission")
            }
            TokenScopeError::PermissionsWithoutResources => {
                f.write_str("permissions were given but the `resources` feature was not")
            }
            TokenScopeError::EmptyWorkspaceList => {
                f.write_str("a shared namespace must name at least one workspace, or `all`")
            }
            TokenScopeError::NotForOAuth { what } => {
                write!(f, "an OAuth grant cannot have {what}")
            }
        }
    }
}

impl std::error::Error for TokenScopeError {}

impl TokenScope {
    /// Checks the rules every token of `kind` obeys, whatever the state of the
    /// company: a feature; for resource access, a namespace and a permission;
    /// and OAuth's restrictions.
    pub fn validate(&self, kind: TokenKind) -> Result<(), TokenScopeError> {
        if self.features.is_empty() {
            return Err(TokenScopeError::NoFeature);
        }
        if matches!(&self.namespaces.shared, SharedNamespace::Workspaces(set) if set.is_empty()) {
            return Err(TokenScopeError::EmptyWorkspaceList);
        }
        if self.features.contains(&Feature::Resources) {
            if self.namespaces.is_empty() {
                return Err(TokenScopeError::NoNamespace);
            }
            if self.grants.is_empty() {
                return Err(TokenScopeError::NoPermission);
            }
        } else if !self.grants.is_empty() {
            return Err(TokenScopeError::PermissionsWithoutResources);
        }
        if kind == TokenKind::OAuthGrant {
            let refusal = if self.features.contains(&Feature::AppTriggers) {
                Some("application triggers")
            } else if self.namespaces.private {
                Some("the private namespace")
            } else if self.namespaces.global {
                Some("the global namespace (OAuth grants reach shared resources only)")
            } else if self.grants.has_kind(ResourceKind::KnowledgeBases) {
                Some("knowledge base permissions")
            } else {
                None
            };
            if let Some(what) = refusal {
                return Err(TokenScopeError::NotForOAuth { what });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn scope(features: &[Feature], namespaces: Namespaces, scopes: &[&str]) -> TokenScope {
        TokenScope {
            features: features.iter().copied().collect(),
            namespaces,
            grants: scopes.iter().map(|s| s.parse::<Scope>().unwrap()).collect(),
        }
    }

    fn shared_all() -> Namespaces {
        Namespaces {
            shared: SharedNamespace::All,
            ..Namespaces::none()
        }
    }

    #[test]
    fn resource_access_needs_a_namespace_and_a_permission() {
        let s = scope(&[Feature::Resources], Namespaces::none(), &["tags:read"]);
        assert_eq!(
            s.validate(TokenKind::ApiToken),
            Err(TokenScopeError::NoNamespace)
        );
        let s = scope(&[Feature::Resources], shared_all(), &[]);
        assert_eq!(
            s.validate(TokenKind::ApiToken),
            Err(TokenScopeError::NoPermission)
        );
        let s = scope(&[], shared_all(), &[]);
        assert_eq!(
            s.validate(TokenKind::ApiToken),
            Err(TokenScopeError::NoFeature)
        );
        let s = scope(&[Feature::AppTriggers], Namespaces::none(), &[]);
        assert_eq!(s.validate(TokenKind::ApiToken), Ok(()));
        let s = scope(&[Feature::AppTriggers], Namespaces::none(), &["tags:read"]);
        assert_eq!(
            s.validate(TokenKind::ApiToken),
            Err(TokenScopeError::PermissionsWithoutResources)
        );
    }

    #[test]
    fn oauth_grants_have_their_restrictions() {
        let ok = scope(&[Feature::Resources], shared_all(), &["conversations:read"]);
        assert_eq!(ok.validate(TokenKind::OAuthGrant), Ok(()));
        let cases = [
            scope(&[Feature::AppTriggers], Namespaces::none(), &[]),
            scope(
                &[Feature::Resources],
                Namespaces {
                    private: true,
                    ..shared_all()
                },
                &["conversations:read"],
            ),
            scope(
                &[Feature::Resources],
                Namespaces {
                    global: true,
                    ..shared_all()
                },
                &["conversations:read"],
            ),
            scope(
                &[Feature::Resources],
                shared_all(),
                &["knowledge_bases:read"],
            ),
        ];
        for case in cases {
            assert!(matches!(
                case.validate(TokenKind::OAuthGrant),
                Err(TokenScopeError::NotForOAuth { .. })
            ));
            assert_eq!(case.validate(TokenKind::ApiToken), Ok(()));
        }
    }
}
