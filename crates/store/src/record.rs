//! The layout of one stored record, and the hash chain through them.
//!
//! ```text
//! offset  size  field
//!      0     1  layout version (2)
//!      1    32  hash of the previous record (zeros before position 1)
//!     33    32  this record's hash
//!     65     1  flags (bit 0: the clock went backwards and the time was clamped)
//!     66     n  the envelope, as `tokenledger_events::encode_envelope` writes it
//! ```
//!
//! hash = BLAKE3("tokenledger record v2" ‖ previous hash ‖ flags ‖ envelope).
//! (Layout 1 used SHA-256; it is refused, as the store's layout version
//! refuses its logs.)
//! The envelope carries its own position, so the chain also pins the order.

use tokenledger_events::{Timestamp, decode_envelope};

use crate::log::{Damage, Hash, Head, Problem, StoredEvent};

const LAYOUT: u8 = 2;
const HEADER_LEN: usize = 1 + 32 + 32 + 1;
const DOMAIN: &[u8] = b"tokenledger record v2";
/// Flag bit: the system clock was behind the previous record's time, so the
/// previous time was used instead.
pub const FLAG_CLOCK_CLAMPED: u8 = 1;

fn chain_hash(previous: &Hash, flags: u8, envelope: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update(DOMAIN)
        .update(previous)
        .update(&[flags])
        .update(envelope);
    hasher.finalize().into()
}

/// Builds the record for `envelope` after a record whose hash is `previous`;
/// returns it with its own hash.
pub fn seal(previous: &Hash, flags: u8, envelope: &[u8]) -> (Vec<u8>, Hash) {
    let hash = chain_hash(previous, flags, envelope);
    let mut record = Vec::with_capacity(HEADER_LEN + envelope.len());
    record.push(LAYOUT);
    record.extend_from_slice(previous);
    record.extend_from_slice(&hash);
    record.push(flags);
    record.extend_from_slice(envelope);
    (record, hash)
}

/// A record taken apart, its own hash checked.
pub(crate) struct Opened<'a> {
    pub(crate) previous: Hash,
    pub(crate) hash: Hash,
    pub(crate) flags: u8,
    pub(crate) envelope: &'a [u8],
}

/// Takes a record apart and checks that its stored hash matches its bytes.
pub(crate) fn open(record: &[u8]) -> Result<Opened<'_>, Problem> {
    let (&layout, rest) = record
        .split_first()
        .ok_or(Problem::Layout("the record is empty"))?;
    if layout != LAYOUT {
        return Err(Problem::UnknownLayout(layout));
    }
    let (previous, rest) = rest
        .split_first_chunk::<32>()
        .ok_or(Problem::Layout("the record is shorter than its header"))?;
    let (hash, rest) = rest
        .split_first_chunk::<32>()
        .ok_or(Problem::Layout("the record is shorter than its header"))?;
    let (&flags, envelope) = rest
        .split_first()
        .ok_or(Problem::Layout("the record is shorter than its header"))?;
    let computed = chain_hash(previous, flags, envelope);
    if computed != *hash {
        return Err(Problem::HashMismatch {
            stored: *hash,
            computed,
        });
    }
    Ok(Opened {
        previous: *previous,
        hash: *hash,
        flags,
        envelope,
    })
}

/// Decodes and checks one record read at `position`: its own hash, its
/// layout and its envelope's position. Checked after every read, as it was
/// before the write.
pub fn stored_event(position: u64, bytes: &[u8]) -> Result<StoredEvent, Damage> {
    let damage = |problem| Damage { position, problem };
    let opened = open(bytes).map_err(damage)?;
    let envelope = decode_envelope(opened.envelope).map_err(|e| damage(Problem::Decode(e)))?;
    if envelope.position != position {
        return Err(damage(Problem::PositionMismatch {
            found: envelope.position,
        }));
    }
    Ok(StoredEvent {
        envelope,
        hash: opened.hash,
        previous: opened.previous,
        clock_clamped: opened.flags & FLAG_CLOCK_CLAMPED != 0,
    })
}

/// Checks sealed records one after another as `verify` checks a stored
/// log: each record's own hash, its encoding, its position, its
/// predecessor's hash and its time. It stores nothing, so a copy of a log
/// can be checked whole before any of it is written.
#[derive(Debug, Clone, Copy)]
pub struct ChainCheck {
    head: Head,
    last_time: Timestamp,
}

impl ChainCheck {
    /// Checks a log from its first record.
    pub fn new() -> ChainCheck {
        ChainCheck::after(Head::EMPTY, Timestamp::EPOCH)
    }

    /// Checks records that continue a log at `head`, whose last record
    /// was recorded at `last_time`.
    pub fn after(head: Head, last_time: Timestamp) -> ChainCheck {
        ChainCheck { head, last_time }
    }

    /// Checks the next record; on success it becomes the head.
    pub fn check(&mut self, bytes: &[u8]) -> Result<StoredEvent, Damage> {
        let position = self.head.position + 1;
        let damage = |problem| Damage { position, problem };
        let event = stored_event(position, bytes)?;
        if event.previous != self.head.hash {
            return Err(damage(Problem::ChainBroken {
                expected: self.head.hash,
                found: event.previous,
            }));
        }
        if event.envelope.recorded_at < self.last_time {
            return Err(damage(Problem::TimeWentBackwards));
        }
        self.head = Head {
            position,
            hash: event.hash,
        };
        self.last_time = event.envelope.recorded_at;
        Ok(event)
    }

    /// The last record checked ([`Head::EMPTY`] before any).
    pub fn head(&self) -> Head {
        self.head
    }

    /// The time of the last record checked (the epoch before any).
    pub fn last_time(&self) -> Timestamp {
        self.last_time
    }
}

impl Default for ChainCheck {
    fn default() -> ChainCheck {
        ChainCheck::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_and_any_flipped_byte_is_caught() {
        let (record, hash) = seal(&[7; 32], 0, b"envelope bytes");
        let opened = open(&record).unwrap();
        assert_eq!(opened.hash, hash);
        assert_eq!(opened.previous, [7; 32]);
        assert_eq!(opened.envelope, b"envelope bytes");
        for i in 0..record.len() {
            let mut damaged = record.clone();
            damaged[i] ^= 0x01;
            assert!(open(&damaged).is_err(), "byte {i}");
        }
        for len in 0..HEADER_LEN {
            assert!(open(&record[..len]).is_err());
        }
    }
}
