//! A head given from outside the data directory, as `POSITION:HASH`.
//!
//! Operators keep a log's head elsewhere (a ticket, the service's own
//! database) and hand it back to check a log or an export against it. The
//! form is the position `verify` and `import` report in decimal, a colon,
//! and the record's hash they report, in 64 hex digits.

use std::fmt;
use std::str::FromStr;

use tokenledger_store::{Head, hex};

/// A head written as `POSITION:HASH`, parsed by [`FromStr`] (so a clap
/// argument of this type is parsed before anything is opened).
///
/// ```
/// use tokenledger_authz::PinnedHead;
///
/// let text = format!("12:{}", "ab".repeat(32));
/// let pinned: PinnedHead = text.parse().unwrap();
/// assert_eq!(pinned.head().position, 12);
/// assert_eq!(pinned.to_string(), text);
/// assert!("12".parse::<PinnedHead>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedHead(Head);

impl PinnedHead {
    /// The head.
    pub fn head(self) -> Head {
        self.0
    }
}

impl From<Head> for PinnedHead {
    fn from(head: Head) -> PinnedHead {
        PinnedHead(head)
    }
}

impl From<PinnedHead> for Head {
    fn from(pinned: PinnedHead) -> Head {
        pinned.0
    }
}

impl fmt::Display for PinnedHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.position, hex(&self.0.hash))
    }
}

/// Why a text is not a `POSITION:HASH` head. The input is not repeated:
/// whatever was pasted in stays out of error output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedHeadError {
    /// There is no colon.
    NoColon,
    /// The part before the colon is not a position.
    Position,
    /// The part after the colon is not 64 hex digits.
    Hash,
}

impl fmt::Display for PinnedHeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            PinnedHeadError::NoColon => "it has no colon",
            PinnedHeadError::Position => "the part before the colon is not a log position",
            PinnedHeadError::Hash => "the part after the colon is not 64 hex digits",
        };
        write!(
            f,
            "a head is written POSITION:HASH, the position and the 64 hex digits of the hash that `verify` reports, joined by a colon, and {what}"
        )
    }
}

impl std::error::Error for PinnedHeadError {}

impl FromStr for PinnedHead {
    type Err = PinnedHeadError;

    fn from_str(input: &str) -> Result<PinnedHead, PinnedHeadError> {
        let (position, hash) = input
            .trim()
            .split_once(':')
            .ok_or(PinnedHeadError::NoColon)?;
        let digits_only = !position.is_empty() && position.bytes().all(|b| b.is_ascii_digit());
        let position = digits_only
            .then(|| position.parse::<u64>().ok())
            .flatten()
            .ok_or(PinnedHeadError::Position)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PinnedHeadError::Hash);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hash.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| PinnedHeadError::Hash)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| PinnedHeadError::Hash)?;
        }
        Ok(PinnedHead(Head {
            position,
            hash: bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly at the first surprise"
    )]

    use super::*;

    #[test]
    fn a_head_parses_from_what_verify_prints_and_nothing_else() {
        let head = Head {
            position: 7,
            hash: [0xa5; 32],
        };
        let text = PinnedHead(head).to_string();
        assert_eq!(text.parse::<PinnedHead>().unwrap().head(), head);
        assert_eq!(
            text.to_uppercase().parse::<PinnedHead>().unwrap().head(),
            head
        );
        let hash = "a5".repeat(32);
        for (input, error) in [
            ("7", PinnedHeadError::NoColon),
            (&format!(":{hash}"), PinnedHeadError::Position),
            (&format!("-7:{hash}"), PinnedHeadError::Position),
            (&format!("+7:{hash}"), PinnedHeadError::Position),
            (
                &format!("99999999999999999999:{hash}"),
                PinnedHeadError::Position,
            ),
            ("7:a5", PinnedHeadError::Hash),
            (&format!("7:{hash}0"), PinnedHeadError::Hash),
            (&format!("7:{}", "g5".repeat(32)), PinnedHeadError::Hash),
            (&format!("7:{}", "é".repeat(32)), PinnedHeadError::Hash),
        ] {
            assert_eq!(input.parse::<PinnedHead>(), Err(error), "{input}");
        }
    }
}
