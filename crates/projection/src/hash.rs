//! A hasher for keys that are already uniformly random: tokenledger's ids
//! (128 bits from the OS random source) and secret digests (SHA-256).
//!
//! SipHash, std's default, defends against keys chosen to collide; these
//! keys are never chosen by a caller (ids are drawn by tokenledger, digests
//! are hashes), so folding their bits is enough, and SipHash's rounds would
//! buy nothing on the hot path.

use std::hash::{BuildHasherDefault, Hasher};

/// Folds the bytes written into 64 bits with a multiplicative mix.
#[derive(Default, Clone, Copy)]
pub struct RandomKeyHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for RandomKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut word = [0u8; 8];
        for (slot, byte) in word.iter_mut().zip(chunks.remainder()) {
            *slot = *byte;
        }
        self.write_u64(u64::from_le_bytes(word));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(23) ^ value).wrapping_mul(MIX);
    }

    fn write_u128(&mut self, value: u128) {
        self.write_u64(value as u64);
        self.write_u64((value >> 64) as u64);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// A `HashMap` keyed by random ids or digests.
pub type RandomKeyMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<RandomKeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn nearby_keys_spread_over_buckets() {
        let build = BuildHasherDefault::<RandomKeyHasher>::default();
        let buckets: std::collections::HashSet<u64> =
            (0u128..1024).map(|k| build.hash_one(k) & 1023).collect();
        assert!(buckets.len() > 600, "{}", buckets.len());
    }
}
