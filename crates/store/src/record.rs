//! The layout of one stored record, and the hash chain through them.
//!
//! ```text
//! offset  size  field
//!      0     1  layout version (1)
//!      1    32  hash of the previous record (zeros before position 1)
//!     33    32  this record's hash
//!     65     1  flags (bit 0: the clock went backwards and the time was clamped)
//!     66     n  the envelope, as `tokenledger_events::encode_envelope` writes it
//! ```
//!
//! hash = SHA-256("tokenledger record v1" ‖ previous hash ‖ flags ‖ envelope).
//! The envelope carries its own position, so the chain also pins the order.

use sha2::{Digest, Sha256};

use crate::log::{Hash, Problem};

const LAYOUT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 32 + 32 + 1;
const DOMAIN: &[u8] = b"tokenledger record v1";
/// Flag bit: the system clock was behind the previous record's time, so the
/// previous time was used instead.
pub(crate) const FLAG_CLOCK_CLAMPED: u8 = 1;

fn chain_hash(previous: &Hash, flags: u8, envelope: &[u8]) -> Hash {
    Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(previous)
        .chain_update([flags])
        .chain_update(envelope)
        .finalize()
        .into()
}

/// Builds the record for `envelope` after a record whose hash is `previous`;
/// returns it with its own hash.
pub(crate) fn seal(previous: &Hash, flags: u8, envelope: &[u8]) -> (Vec<u8>, Hash) {
    let hash = chain_hash(previous, flags, envelope);
    let mut record = Vec::with_capacity(HEADER_LEN + envelope.len());
    record.push(LAYOUT_V1);
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
    if layout != LAYOUT_V1 {
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
