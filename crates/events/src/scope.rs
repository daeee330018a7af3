//! The permission model: resource kinds, permissions, scopes.
//!
//! A scope is a resource kind and one permission on it, written
//! `conversations:read`. Which permissions exist for which kind comes from
//! the 56 scopes of Front's Core API specification; a scope outside that
//! list (`messages:delete`) is refused with the permissions that do exist.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::quote_input;

/// What a token may do to a kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Retrieve resources (GET).
    Read,
    /// Create and update resources (POST, PATCH, PUT).
    Write,
    /// Remove resources.
    Delete,
    /// Create and send messages (reply, new message); importing needs only write.
    Send,
}

impl Permission {
    /// Every permission, in bit order.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::Delete,
        Permission::Send,
    ];

    /// The permission as it is written in a scope (`read`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::Send => "send",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions, one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);
    const READ_WRITE_DELETE: PermissionSet =
        PermissionSet(Permission::Read.bit() | Permission::Write.bit() | Permission::Delete.bit());
    const READ_WRITE: PermissionSet =
        PermissionSet(Permission::Read.bit() | Permission::Write.bit());
    const READ: PermissionSet = PermissionSet(Permission::Read.bit());
    const READ_WRITE_SEND: PermissionSet =
        PermissionSet(Permission::Read.bit() | Permission::Write.bit() | Permission::Send.bit());

    /// Whether `permission` is in the set.
    pub const fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// The permissions in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

macro_rules! resource_kinds {
    ($($variant:ident => $name:literal, $singular:literal, $perms:ident;)*) => {
        /// A kind of resource of the Core API, as scopes name it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum ResourceKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl ResourceKind {
            /// Every kind, in declaration order (the order of their bits in [`Grants`]).
            pub const ALL: &'static [ResourceKind] = &[$(ResourceKind::$variant),*];

            /// The kind as it is written in a scope (`conversations`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ResourceKind::$variant => $name,)*
                }
            }

            /// What one resource of this kind is called in Front's messages.
            pub const fn singular(self) -> &'static str {
                match self {
                    $(ResourceKind::$variant => $singular,)*
                }
            }

            /// The permissions that exist for this kind.
            pub const fn permissions(self) -> PermissionSet {
                match self {
                    $(ResourceKind::$variant => PermissionSet::$perms,)*
                }
            }

            fn from_name(name: &str) -> Option<ResourceKind> {
                match name {
                    $($name => Some(ResourceKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

resource_kinds! {
    Accounts => "accounts", "account", READ_WRITE_DELETE;
    Analytics => "analytics", "analytics", READ;
    Attachments => "attachments", "attachment", READ;
    Channels => "channels", "channel", READ_WRITE;
    Comments => "comments", "comment", READ_WRITE;
    Contacts => "contacts", "contact", READ_WRITE_DELETE;
    Conversations => "conversations", "conversation", READ_WRITE_DELETE;
    CustomFields => "custom_fields", "custom_field", READ;
    Drafts => "drafts", "draft", READ_WRITE_DELETE;
    Events => "events", "event", READ;
    Inboxes => "inboxes", "inbox", READ_WRITE;
    KnowledgeBases => "knowledge_bases", "knowledge_base", READ_WRITE_DELETE;
    Links => "links", "link", READ_WRITE;
    MessageTemplates => "message_templates", "message_template", READ_WRITE_DELETE;
    Messages => "messages", "message", READ_WRITE_SEND;
    Rules => "rules", "rule", READ;
    Shifts => "shifts", "shift", READ_WRITE;
    Signatures => "signatures", "signature", READ_WRITE_DELETE;
    Statuses => "statuses", "status", READ;
    Tags => "tags", "tag", READ_WRITE_DELETE;
    TeammateGroups => "teammate_groups", "teammate_group", READ_WRITE_DELETE;
    Teammates => "teammates", "teammate", READ_WRITE;
    Teams => "teams", "team", READ_WRITE;
    TimeOff => "time_off", "time_off", READ_WRITE_DELETE;
    Views => "views", "view", READ_WRITE;
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One permission on one kind of resource, such as `conversations:read`.
///
/// INVARIANT (scope-exists): the permission exists for the kind; [`Scope::new`]
/// and parsing enforce it, and [`Grants`] relies on it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(
    try_from = "(ResourceKind, Permission)",
    into = "(ResourceKind, Permission)"
)]
pub struct Scope {
    kind: ResourceKind,
    permission: Permission,
}

/// Why a string or pair is not a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeError {
    /// Not of the form `kind:permission`.
    Malformed {
        /// The input, made printable.
        found: String,
    },
    /// The kind is not one of the Core API's.
    UnknownKind {
        /// The kind that was given, made printable.
        found: String,
    },
    /// The permission is not read, write, delete or send.
    UnknownPermission {
        /// The kind, which is valid.
        kind: ResourceKind,
        /// The permission that was given, made printable.
        found: String,
    },
    /// The permission exists, but not for this kind (`messages:delete`).
    NotAvailable {
        /// The kind.
        kind: ResourceKind,
        /// The permission asked for.
        permission: Permission,
    },
}

fn list_permissions(kind: ResourceKind) -> String {
    kind.permissions()
        .iter()
        .map(Permission::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Malformed { found } => write!(
                f,
                "`{found}` is not a scope: expected `kind:permission`, for example `conversations:read`"
            ),
            ScopeError::UnknownKind { found } => {
                let kinds: Vec<_> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
                write!(
                    f,
                    "`{found}` is not a resource kind; the kinds are: {}",
                    kinds.join(", ")
                )
            }
            ScopeError::UnknownPermission { kind, found } => write!(
                f,
                "`{found}` is not a permission; {kind} has: {}",
                list_permissions(*kind)
            ),
            ScopeError::NotAvailable { kind, permission } => write!(
                f,
                "`{kind}:{permission}` does not exist; {kind} has: {}",
                list_permissions(*kind)
            ),
        }
    }
}

impl std::error::Error for ScopeError {}

impl Scope {
    /// The scope `permission` on `kind`, if that permission exists for the kind.
    pub const fn new(kind: ResourceKind, permission: Permission) -> Result<Scope, ScopeError> {
        if kind.permissions().contains(permission) {
            Ok(Scope { kind, permission })
        } else {
            Err(ScopeError::NotAvailable { kind, permission })
        }
    }

    /// The kind of resource.
    pub const fn kind(self) -> ResourceKind {
        self.kind
    }

    /// The permission.
    pub const fn permission(self) -> Permission {
        self.permission
    }

    /// Every scope that exists, kind by kind.
    pub fn all() -> impl Iterator<Item = Scope> {
        ResourceKind::ALL.iter().flat_map(|kind| {
            kind.permissions().iter().map(move |permission| Scope {
                kind: *kind,
                permission,
            })
        })
    }

    /// This scope's bit in a [`Grants`] set.
    const fn bit(self) -> u128 {
        1u128 << ((self.kind as u32) * 4 + self.permission as u32)
    }
}

impl TryFrom<(ResourceKind, Permission)> for Scope {
    type Error = ScopeError;

    fn try_from((kind, permission): (ResourceKind, Permission)) -> Result<Scope, ScopeError> {
        Scope::new(kind, permission)
    }
}

impl From<Scope> for (ResourceKind, Permission) {
    fn from(scope: Scope) -> Self {
        (scope.kind, scope.permission)
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    /// Parses `conversations:read`. Events are written `events:*:read` in
    /// Front's specification; both that and `events:read` are accepted.
    fn from_str(input: &str) -> Result<Scope, ScopeError> {
        let normalised = match input {
            "events:*:read" => "events:read",
            other => other,
        };
        let (kind_name, permission_name) =
            normalised
                .split_once(':')
                .ok_or_else(|| ScopeError::Malformed {
                    found: quote_input(input),
                })?;
        let kind = ResourceKind::from_name(kind_name).ok_or_else(|| ScopeError::UnknownKind {
            found: quote_input(kind_name),
        })?;
        let permission = Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == permission_name)
            .ok_or_else(|| ScopeError::UnknownPermission {
                kind,
                found: quote_input(permission_name),
            })?;
        Scope::new(kind, permission)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ResourceKind::Events {
            write!(f, "events:*:{}", self.permission)
        } else {
            write!(f, "{}:{}", self.kind, self.permission)
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A set of scopes, one bit each: a decision tests one bit.
///
/// 25 kinds × 4 permissions fit in 100 bits.
///
/// Packed to 8-byte alignment: a `u128` would align every structure that
/// holds grants (a million tokens' scopes) to 16 bytes, and pad them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Scope>", into = "Vec<Scope>")]
#[repr(Rust, packed(8))]
pub struct Grants(u128);

impl Grants {
    /// No scope at all.
    pub const NONE: Grants = Grants(0);

    /// Whether the set holds `scope`.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Adds `scope`.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Whether the set holds no scope.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether any scope on `kind` is in the set.
    pub fn has_kind(self, kind: ResourceKind) -> bool {
        kind.permissions()
            .iter()
            .filter_map(|p| Scope::new(kind, p).ok())
            .any(|s| self.contains(s))
    }

    /// The scopes in the set, kind by kind.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::all().filter(move |s| self.contains(*s))
    }

    /// The set as its bits, for a checkpoint.
    pub const fn bits(self) -> u128 {
        self.0
    }

    /// The set from [`Grants::bits`]; `None` if a bit names no scope.
    pub fn from_bits(bits: u128) -> Option<Grants> {
        (bits & !VALID_BITS == 0).then_some(Grants(bits))
    }
}

/// Every bit that names a scope, [`Scope::all`] folded at compile time:
/// a checkpoint checks the grants of each of a million tokens.
const VALID_BITS: u128 = {
    let mut bits = 0;
    let mut kinds = ResourceKind::ALL;
    while let [kind, rest @ ..] = kinds {
        bits |= (kind.permissions().0 as u128) << (*kind as u32 * 4);
        kinds = rest;
    }
    bits
};

impl FromIterator<Scope> for Grants {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Grants {
        let mut grants = Grants::NONE;
        for scope in iter {
            grants.insert(scope);
        }
        grants
    }
}

impl From<Vec<Scope>> for Grants {
    fn from(scopes: Vec<Scope>) -> Grants {
        scopes.into_iter().collect()
    }
}

impl From<Grants> for Vec<Scope> {
    fn from(grants: Grants) -> Vec<Scope> {
        grants.iter().collect()
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_has_56_scopes_with_the_app_trigger_feature() {
        // 55 resource scopes here; `feature:app_trigger` is a feature, not a scope.
        assert_eq!(Scope::all().count(), 55);
        assert_eq!(ResourceKind::ALL.len(), 25);
    }

    #[test]
    fn grants_from_bits_accept_exactly_the_bits_of_scopes() {
        let valid = Scope::all().fold(0, |all, s| all | s.bit());
        assert_eq!(VALID_BITS, valid);
        assert_eq!(Grants::from_bits(valid), Some(Scope::all().collect()));
        for bit in (0..128).map(|i| 1u128 << i) {
            assert_eq!(
                Grants::from_bits(bit).is_some(),
                valid & bit != 0,
                "{bit:#x}"
            );
        }
    }

    #[test]
    fn scopes_round_trip_through_text() {
        for scope in Scope::all() {
            assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
        }
        assert_eq!(
            "events:read".parse::<Scope>().unwrap().to_string(),
            "events:*:read"
        );
    }

    #[test]
    fn a_permission_that_does_not_exist_for_its_kind_names_the_valid_ones() {
        let err = "messages:delete".parse::<Scope>().unwrap_err();
        assert_eq!(
            err,
            ScopeError::NotAvailable {
                kind: ResourceKind::Messages,
                permission: Permission::Delete
            }
        );
        assert_eq!(
            err.to_string(),
            "`messages:delete` does not exist; messages has: read, write, send"
        );
    }

    #[test]
    fn malformed_scopes_are_refused() {
        assert!(matches!(
            "conversations".parse::<Scope>(),
            Err(ScopeError::Malformed { .. })
        ));
        assert!(matches!(
            "convos:read".parse::<Scope>(),
            Err(ScopeError::UnknownKind { .. })
        ));
        assert!(matches!(
            "conversations:admin".parse::<Scope>(),
            Err(ScopeError::UnknownPermission { .. })
        ));
        assert!(matches!(
            "conversations:read:extra".parse::<Scope>(),
            Err(ScopeError::UnknownPermission { .. })
        ));
    }

    #[test]
    fn grants_hold_exactly_what_was_inserted() {
        let read: Scope = "conversations:read".parse().unwrap();
        let send: Scope = "messages:send".parse().unwrap();
        let grants: Grants = [read, send].into_iter().collect();
        for scope in Scope::all() {
            assert_eq!(grants.contains(scope), scope == read || scope == send);
        }
        assert!(grants.has_kind(ResourceKind::Messages));
        assert!(!grants.has_kind(ResourceKind::Tags));
    }
}
