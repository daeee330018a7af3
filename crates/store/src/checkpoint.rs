//! Keyed checkpoints: an HMAC of the log's head under a key kept away from
//! the data directory.
//!
//! The hash chain shows that records were changed, unless the one who
//! changed them rewrote every record after them too, which anyone who can
//! write the directory can do. A checkpoint signed with a key they do not
//! have pins the head: a rewritten history no longer matches it.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::log::{Damage, EventLog, Hash, Head, hex};

const DOMAIN: &[u8] = b"tokenledger checkpoint v1";

/// The secret key checkpoints are signed with. Keep it outside the data
/// directory (a secrets manager, an environment the data never sees).
#[derive(Clone)]
pub struct CheckpointKey(Hmac<Sha256>);

impl CheckpointKey {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> CheckpointKey {
        // HMAC pads a key shorter than the hash's 64-byte block with zeros,
        // so this is HMAC-SHA-256 under the 32-byte key, built with the
        // constructor that cannot fail.
        let mut block = [0u8; 64];
        let (key, _) = block.split_at_mut(32);
        key.copy_from_slice(&bytes);
        CheckpointKey(<Hmac<Sha256> as KeyInit>::new(&block.into()))
    }

    fn mac(&self, head: &Head) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        mac.update(&head.position.to_be_bytes());
        mac.update(&head.hash);
        mac
    }
}

impl CheckpointKey {
    /// The MAC of a checkpoint file's header, which holds the digest of
    /// its payload.
    pub(crate) fn mac_of_state_header(&self, header: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(STATE_DOMAIN);
        mac.update(header);
        mac
    }
}

const STATE_DOMAIN: &[u8] = b"tokenledger state checkpoint v1";

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckpointKey(<redacted>)")
    }
}

/// A head and its HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The head signed.
    pub head: Head,
    /// HMAC-SHA-256 of the head under the key.
    pub mac: Hash,
}

/// Why a checkpoint does not vouch for a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The MAC does not match: a forged checkpoint, or the wrong key.
    BadMac,
    /// The log has no record at the checkpoint's position: truncated or rolled back.
    Truncated {
        /// The checkpoint's position.
        position: u64,
        /// The log's head.
        head: u64,
    },
    /// The log's record at that position is not the one signed: rewritten.
    Rewritten {
        /// The position.
        position: u64,
        /// The hash signed.
        signed: Hash,
        /// The hash found.
        found: Hash,
    },
    /// The log could not be read there.
    Damaged(Damage),
    /// There is no checkpoint, though the log has records.
    Missing,
    /// The checkpoint is not laid out as one.
    Malformed(&'static str),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::BadMac => {
                f.write_str("the checkpoint's MAC does not match: forged, or the wrong key")
            }
            CheckpointError::Truncated { position, head } => write!(
                f,
                "the checkpoint is at position {position} but the log ends at {head}: it was truncated or rolled back"
            ),
            CheckpointError::Rewritten {
                position,
                signed,
                found,
            } => write!(
                f,
                "the record at position {position} has hash {}, the checkpoint signed {}: the history was rewritten",
                hex(found),
                hex(signed)
            ),
            CheckpointError::Damaged(damage) => write!(f, "the log is damaged at {damage}"),
            CheckpointError::Missing => f.write_str(
                "there is none, though the log has records: either the log was written without a checkpoint key, or the signed head was removed, which is suspect (its records may have been changed since); compare the log's head with one kept outside the data directory before signing it (sign-head --known-head POSITION:HASH)",
            ),
            CheckpointError::Malformed(what) => write!(f, "it is damaged: {what}"),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Damaged(damage) => Some(damage),
            _ => None,
        }
    }
}

impl Checkpoint {
    /// Signs `head` with `key`.
    pub fn sign(head: Head, key: &CheckpointKey) -> Checkpoint {
        Checkpoint {
            head,
            mac: key.mac(&head).finalize().into_bytes().into(),
        }
    }

    /// Checks the MAC (in constant time) and that `log` holds the signed
    /// record at the signed position.
    pub fn check(&self, key: &CheckpointKey, log: &dyn EventLog) -> Result<(), CheckpointError> {
        self.check_with(key, log.head().position, |position| {
            Ok(log.read(position, 1)?.first().map(|record| record.hash))
        })
    }

    /// [`Checkpoint::check`] against a log whose head is at `head`, and
    /// whose hash at a position `hash_at` gives (`None` past its end).
    pub(crate) fn check_with(
        &self,
        key: &CheckpointKey,
        head: u64,
        hash_at: impl FnOnce(u64) -> Result<Option<Hash>, Damage>,
    ) -> Result<(), CheckpointError> {
        key.mac(&self.head)
            .verify_slice(&self.mac)
            .map_err(|_| CheckpointError::BadMac)?;
        let position = self.head.position;
        if position == 0 {
            return Ok(());
        }
        let truncated = CheckpointError::Truncated { position, head };
        if position > head {
            return Err(truncated);
        }
        let found = hash_at(position)
            .map_err(CheckpointError::Damaged)?
            .ok_or(truncated)?;
        if found != self.head.hash {
            return Err(CheckpointError::Rewritten {
                position,
                signed: self.head.hash,
                found,
            });
        }
        Ok(())
    }
}
