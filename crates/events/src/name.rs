//! Human-readable names (of companies, teammates, workspaces and tokens).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::quote_input;

/// A trimmed, non-empty name of at most [`Name::MAX_CHARS`] characters with
/// no control characters, so it can be printed on a terminal or in a table
/// as it is.
///
/// INVARIANT (name-clean): every `Name` passed [`Name::new`]; decoding goes
/// through it too, so a name read back from the log is as clean as one typed.
///
/// Held as a `Box<str>`: a name never grows, so the capacity a `String`
/// keeps would be a wasted word in each of a million tokens.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(Box<str>);

/// Why a string is not an acceptable name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing but whitespace.
    Empty,
    /// Longer than [`Name::MAX_CHARS`] characters.
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// Contains a control character (a newline, a terminal escape, …).
    ControlCharacter {
        /// The name with control characters made visible.
        found: String,
    },
}

/// A set or map of names can be searched by text alone, without building
/// a `Name`: equal names have equal text, and a name hashes as its text
/// does.
impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("a name must not be empty"),
            NameError::TooLong { chars } => write!(
                f,
                "a name must be at most {} characters, this one has {chars}",
                Name::MAX_CHARS
            ),
            NameError::ControlCharacter { found } => {
                write!(f, "a name must not contain control characters: `{found}`")
            }
        }
    }
}

impl std::error::Error for NameError {}

impl Name {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Trims `input` and checks it.
    pub fn new(input: &str) -> Result<Self, NameError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        let chars = trimmed.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(NameError::TooLong { chars });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter {
                found: quote_input(trimmed),
            });
        }
        Ok(Self(trimmed.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        Name::new(&value)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0.into_string()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed() {
        assert_eq!(
            Name::new("  Zapier sync  ").unwrap().as_str(),
            "Zapier sync"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Name::new(" \t "), Err(NameError::Empty));
        assert_eq!(
            Name::new(&"x".repeat(201)),
            Err(NameError::TooLong { chars: 201 })
        );
        assert!(Name::new(&"é".repeat(200)).is_ok());
        assert!(matches!(
            Name::new("evil\u{1b}[2J"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(matches!(
            Name::new("two\nlines"),
            Err(NameError::ControlCharacter { .. })
        ));
    }
}
