//! A keyed hasher for tokenledger's ids and secret digests.
//!
//! These keys are random when tokenledger makes them (ids from the OS
//! random source, digests by SHA-256), but a log someone edited, or an
//! import file someone crafted, can hold any ids and digests, chosen so
//! that an unkeyed hash puts them all in one bucket: every open would then
//! take time quadratic in their number. So each process draws a secret
//! seed once, and a key's hash depends on the seed and on every byte of
//! the key: without the seed, no one can choose keys that collide more
//! often than chance.
//!
//! SipHash (std's `RandomState`) would do as well, with several rounds of
//! mixing a key where this does one or two multiplies (not measured side by side
//! here; `authorize/by_handle` and `with_secret` were measured against the
//! unkeyed hasher before it: 46.3 → 42.7 ns and 218 → 223 ns, medians of
//! three alternating rounds). Here each 16 bytes of a key cost one 64×64-bit
//! multiply of the key's halves, each mixed with the seed, folded to 64
//! bits (the high half of the product XOR the low), as foldhash and wyhash
//! do, and one more to finish: an id is two multiplies, a digest three
//! (the finishing one came after those figures, and is not measured).

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::OnceLock;

/// The process's secret seed.
#[derive(Clone, Copy)]
struct Seed {
    /// Where each hash starts.
    start: u64,
    /// Mixed into the second factor of each multiply.
    factor: u64,
    /// The factor of the last multiply, in `finish` (odd).
    last: u64,
}

fn seed() -> Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    *SEED.get_or_init(|| {
        // std's `RandomState` keys SipHash from the OS random source (and
        // aborts if there is none, as every `HashMap` would); its outputs
        // are as unpredictable as those keys, and drawing them cannot fail.
        let random = RandomState::new();
        Seed {
            start: random.hash_one(1u8),
            factor: random.hash_one(2u8),
            last: random.hash_one(3u8) | 1,
        }
    })
}

/// The 128-bit product of `a` and `b`, its halves XORed together.
const fn fold(a: u64, b: u64) -> u64 {
    let product = (a as u128).wrapping_mul(b as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Hashes the words written into it under the process's seed.
#[derive(Clone, Copy)]
pub struct RandomKeyHasher {
    state: u64,
    seed: Seed,
}

impl Default for RandomKeyHasher {
    fn default() -> RandomKeyHasher {
        let seed = seed();
        RandomKeyHasher {
            state: seed.start,
            seed,
        }
    }
}

impl Hasher for RandomKeyHasher {
    /// One more multiply: after a single one, keys that differ only in
    /// the high bits of a word left the low bits (the bucket) of the hash
    /// depending on them through the product's carries alone, and for
    /// about one seed in forty, 4,096 ids sharing their high half put more
    /// than 16 in one bucket (the test below caught it).
    fn finish(&self) -> u64 {
        fold(self.state, self.seed.last)
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
        // So that `ab` and `ab\0` differ.
        self.write_usize(bytes.len());
    }

    fn write_u64(&mut self, value: u64) {
        self.state = fold(self.state ^ value, self.seed.factor);
    }

    /// One multiply for all 16 bytes: ids are written this way, and a
    /// digest as two of them.
    fn write_u128(&mut self, value: u128) {
        self.state = fold(
            self.state ^ (value as u64),
            self.seed.factor ^ ((value >> 64) as u64),
        );
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// A `HashMap` keyed by ids or digests.
pub type RandomKeyMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<RandomKeyHasher>>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::hash::Hash;

    /// The most keys that share one of 4,096 buckets: about 7 for random
    /// hashes, and more than 16 with odds below one in a billion.
    pub(crate) fn fullest_bucket(hashes: impl Iterator<Item = u64>) -> usize {
        let mut loads = vec![0usize; 4096];
        for hash in hashes {
            loads[(hash & 4095) as usize] += 1;
        }
        loads.into_iter().max().unwrap_or(0)
    }

    fn hash<K: Hash>(key: K) -> u64 {
        BuildHasherDefault::<RandomKeyHasher>::default().hash_one(key)
    }

    #[test]
    fn nearby_keys_spread_over_buckets() {
        assert!(fullest_bucket((0u128..4096).map(hash)) <= 16);
        assert!(fullest_bucket((0u64..4096).map(hash)) <= 16);
    }

    #[test]
    fn keys_sharing_a_half_spread_over_buckets() {
        let shared = 0x0123_4567_89ab_cdef_u128;
        let low = (0u128..4096).map(|i| (i << 116) | shared);
        let high = (0u128..4096).map(|i| (shared << 64) | (i << 52));
        assert!(fullest_bucket(low.map(hash)) <= 16);
        assert!(fullest_bucket(high.map(hash)) <= 16);
    }

    #[test]
    fn the_hash_depends_on_the_seed() {
        let hash_under = |start, factor| {
            let mut hasher = RandomKeyHasher {
                state: start,
                seed: Seed {
                    start,
                    factor,
                    last: 0x9e37_79b9_7f4a_7c15,
                },
            };
            hasher.write_u128(5);
            hasher.finish()
        };
        assert_ne!(hash_under(1, 2), hash_under(3, 2));
        assert_ne!(hash_under(1, 2), hash_under(1, 4));
    }

    #[test]
    fn bytes_written_whole_count_their_length() {
        let mut short = RandomKeyHasher::default();
        short.write(b"ab");
        let mut long = RandomKeyHasher::default();
        long.write(b"ab\0");
        assert_ne!(short.finish(), long.finish());
    }
}
