//! A new token's scope, as a request body gives it.

use std::collections::BTreeSet;

use tokenledger_events::{Namespaces, Scope, SharedNamespace, TokenScope};

use crate::error::{ApiError, parse};

/// What a new token may do: the fields of a token's creation that say so.
#[derive(Debug, Default)]
pub(crate) struct ScopeBody<'a> {
    /// Features: `resources`, `provisioning`, `app-triggers`.
    pub features: &'a [String],
    /// Company-level resources.
    pub global: bool,
    /// Shared workspaces: `["all"]`, or workspace ids.
    pub shared: &'a [String],
    /// Teammates' private resources (each owner must allow it too).
    pub private: bool,
    /// Scopes such as `conversations:read`.
    pub scopes: &'a [String],
}

impl ScopeBody<'_> {
    pub(crate) fn parse(&self) -> Result<TokenScope, ApiError> {
        let shared = if self.shared.is_empty() {
            SharedNamespace::None
        } else if self.shared.iter().any(|s| s == "all") {
            if self.shared.len() > 1 {
                return Err(ApiError::field(
                    "shared",
                    "`all` already names every workspace; give it alone",
                ));
            }
            SharedNamespace::All
        } else {
            let mut set = BTreeSet::new();
            for (i, text) in self.shared.iter().enumerate() {
                set.insert(parse(&format!("shared[{i}]"), text)?);
            }
            SharedNamespace::Workspaces(set)
        };
        let mut features = BTreeSet::new();
        for (i, text) in self.features.iter().enumerate() {
            features.insert(parse(&format!("features[{i}]"), text)?);
        }
        let mut grants = Vec::with_capacity(self.scopes.len());
        for (i, text) in self.scopes.iter().enumerate() {
            grants.push(parse::<Scope>(&format!("scopes[{i}]"), text)?);
        }
        Ok(TokenScope {
            features,
            namespaces: Namespaces {
                global: self.global,
                shared,
                private: self.private,
            },
            grants: grants.into_iter().collect(),
        })
    }
}
