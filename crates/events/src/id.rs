//! Typed identifiers.
//!
//! Each kind of thing tokenledger records has its own id type with its own
//! prefix (`cmp_`, `tea_`, `tim_`, `tok_`, `evt_`), so a teammate id can never
//! be passed where a token id is expected, in code or on the command line.
//! Ids are 128-bit values; new ones are drawn at random by the caller (this
//! crate does no I/O, and that includes the OS random source).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// The string does not start with the prefix of the expected kind.
    WrongPrefix {
        /// What kind of id was expected, for instance `token`.
        kind: &'static str,
        /// The prefix that was expected, for instance `tok_`.
        expected: &'static str,
        /// The input, shortened for the message.
        found: String,
    },
    /// The part after the prefix is not 32 lowercase hexadecimal digits.
    BadBody {
        /// What kind of id was expected.
        kind: &'static str,
        /// The input, shortened for the message.
        found: String,
    },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::WrongPrefix {
                kind,
                expected,
                found,
            } => write!(
                f,
                "`{found}` is not a {kind} id: {kind} ids start with `{expected}`"
            ),
            IdError::BadBody { kind, found } => write!(
                f,
                "`{found}` is not a {kind} id: expected 32 lowercase hexadecimal digits after the prefix"
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Shortens untrusted input for an error message and makes control
/// characters visible, so an error line can never carry a terminal escape.
pub(crate) fn quote_input(input: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out: String = input
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if input.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

const BODY_LEN: usize = 32;

fn parse_body(input: &str, prefix: &'static str, kind: &'static str) -> Result<u128, IdError> {
    let body = input
        .strip_prefix(prefix)
        .ok_or_else(|| IdError::WrongPrefix {
            kind,
            expected: prefix,
            found: quote_input(input),
        })?;
    let well_formed = body.len() == BODY_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(IdError::BadBody {
            kind,
            found: quote_input(input),
        });
    }
    u128::from_str_radix(body, 16).map_err(|_| IdError::BadBody {
        kind,
        found: quote_input(input),
    })
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Kept as 16 big-endian bytes rather than a `u128`: the same value,
        /// the same encoding, and the same order, but aligned to 1 byte
        /// instead of 16, so the structures and decisions that hold ids
        /// carry no padding.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        // Encoded as a `u128`, which the codec's fixed-width big-endian
        // integers write as the same 16 bytes a `[u8; 16]` gives (the
        // golden files pin them), but read in one step rather than as a
        // tuple of sixteen: that tuple was most of decoding an event.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u128(self.as_u128())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                u128::deserialize(deserializer).map(Self::from_u128)
            }
        }

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Wraps a 128-bit value. New ids should come from a random source.
            pub const fn from_u128(value: u128) -> Self {
                Self(value.to_be_bytes())
            }

            /// The 128-bit value behind the id.
            pub const fn as_u128(self) -> u128 {
                u128::from_be_bytes(self.0)
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                state.write_u128(self.as_u128());
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{:032x}", $prefix, self.as_u128())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(input: &str) -> Result<Self, IdError> {
                parse_body(input, $prefix, $kind).map(Self::from_u128)
            }
        }
    };
}

typed_id!(
    /// A company (tenant); every other thing belongs to exactly one.
    CompanyId,
    "cmp_",
    "company"
);
typed_id!(
    /// A teammate of a company.
    TeammateId,
    "tea_",
    "teammate"
);
typed_id!(
    /// A workspace (team), which owns shared resources.
    WorkspaceId,
    "tim_",
    "workspace"
);
typed_id!(
    /// The public id of an API token; the secret is a different string.
    TokenId,
    "tok_",
    "token"
);
typed_id!(
    /// The id of one event, so that a retried append is recognised.
    EventId,
    "evt_",
    "event"
);

/// The id of a resource the caller asks about (`cnv_…`, `msg_…`, …).
///
/// tokenledger does not store resources; it only checks that the id is well
/// formed (a lowercase prefix, `_`, then up to 64 letters, digits, `-` or `_`)
/// so that the refusal message it builds can be sent as it is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceId(String);

/// Why a string is not a resource id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceIdError {
    found: String,
}

impl fmt::Display for ResourceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a resource id: expected a lowercase prefix, `_`, then 1 to 64 letters, digits, `-` or `_` (for example `cnv_123`)",
            self.found
        )
    }
}

impl std::error::Error for ResourceIdError {}

impl ResourceId {
    const MAX_BODY: usize = 64;

    /// An id that stands for any resource, for questions about what a
    /// token can reach rather than about one resource.
    pub fn any() -> ResourceId {
        ResourceId("res_any".to_owned())
    }

    /// The part before the first `_`, such as `cnv`.
    pub fn prefix(&self) -> &str {
        self.0.split_once('_').map_or("", |(prefix, _)| prefix)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What Front calls a resource with this prefix in its error messages,
    /// when the prefix is one Front documents.
    pub fn resource_type(&self) -> Option<&'static str> {
        Some(match self.prefix() {
            "acc" => "account",
            "cha" => "channel",
            "cnv" => "conversation",
            "com" => "comment",
            "crd" => "contact",
            "cmp" => "company",
            "drf" => "draft",
            "fil" => "attachment",
            "inb" => "inbox",
            "lnk" => "link",
            "msg" => "message",
            "rsp" => "message_template",
            "rul" => "rule",
            "sig" => "signature",
            "tag" => "tag",
            "tea" => "teammate",
            "tim" => "team",
            _ => return None,
        })
    }
}

impl FromStr for ResourceId {
    type Err = ResourceIdError;

    fn from_str(input: &str) -> Result<Self, ResourceIdError> {
        let error = || ResourceIdError {
            found: quote_input(input),
        };
        let (prefix, body) = input.split_once('_').ok_or_else(error)?;
        let prefix_ok =
            (1..=8).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase());
        let body_ok = (1..=Self::MAX_BODY).contains(&body.len())
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if prefix_ok && body_ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(error())
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = TokenId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "tok_0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<TokenId>(), Ok(id));
    }

    #[test]
    fn a_teammate_id_is_not_a_token_id() {
        let teammate = TeammateId::from_u128(7).to_string();
        let err = teammate.parse::<TokenId>().unwrap_err();
        assert!(matches!(err, IdError::WrongPrefix { kind: "token", .. }));
        assert!(err.to_string().contains("token ids start with `tok_`"));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            "tok_",
            "tok_123",
            "tok_0123456789ABCDEF0011223344556677",
            "tok_0123456789abcdef00112233445566770",
            "tok_+123456789abcdef0011223344556677",
        ] {
            assert!(
                matches!(bad.parse::<TokenId>(), Err(IdError::BadBody { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_do_not_echo_control_characters() {
        let err = "tok_\u{1b}[31m".parse::<TokenId>().unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn resource_ids_are_checked_and_typed() {
        let id: ResourceId = "cnv_X".parse().unwrap();
        assert_eq!(id.prefix(), "cnv");
        assert_eq!(id.resource_type(), Some("conversation"));
        for bad in ["", "cnv", "cnv_", "_x", "CNV_1", "cnv_a b", "cnv_\u{1b}"] {
            assert!(bad.parse::<ResourceId>().is_err(), "{bad:?}");
        }
        let long = format!("cnv_{}", "a".repeat(65));
        assert!(long.parse::<ResourceId>().is_err());
    }
}
