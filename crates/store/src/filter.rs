//! Bloom filters of 128-bit ids: [`IdFilter`], which grows, for the
//! writer's knowledge of every id in the log (`known_ids.rs`); and
//! [`Level`], of a fixed size, for each segment of an index
//! (`segments.rs`).

/// A Bloom filter of 128-bit ids that grows: a list of blocked Bloom
/// filters, each twice the one before, the newest taking new ids. An id
/// sets [`BITS_SET`] bits of one 512-bit block (one cache line), so a
/// lookup reads a line per level.
pub(crate) struct IdFilter {
    levels: Vec<Level>,
}

/// One blocked Bloom filter, sized when it is made. A segment of an
/// index keeps one of its ids (`segments.rs`), stored beside it.
pub(crate) struct Level {
    blocks: Vec<[u64; 8]>,
    /// Ids held, and how many it is sized for.
    len: u64,
    capacity: u64,
}

/// Bits of filter per id a level is sized for: a full level is wrong about
/// one lookup in 250 (`tests`).
const BITS_PER_ID: u64 = 12;

/// Bits an id sets in its block.
const BITS_SET: u32 = 7;

/// The smallest level, in ids.
const SMALLEST: u64 = 1 << 16;

impl IdFilter {
    /// An empty filter sized for `capacity` ids before it grows.
    pub(crate) fn with_capacity(capacity: u64) -> IdFilter {
        IdFilter {
            levels: vec![Level::new(capacity.max(SMALLEST))],
        }
    }

    pub(crate) fn insert(&mut self, id: u128) {
        let full = self
            .levels
            .last()
            .is_none_or(|level| level.len >= level.capacity);
        if full {
            let held: u64 = self.levels.iter().map(|level| level.capacity).sum();
            self.levels.push(Level::new(held.max(SMALLEST)));
        }
        if let Some(level) = self.levels.last_mut() {
            level.insert(id);
        }
    }

    /// `false` only if `id` was never inserted.
    pub(crate) fn may_contain(&self, id: u128) -> bool {
        self.levels.iter().any(|level| level.may_contain(id))
    }
}

impl Level {
    /// An empty filter for `capacity` ids.
    pub(crate) fn new(capacity: u64) -> Level {
        let blocks = capacity.saturating_mul(BITS_PER_ID).div_ceil(512).max(1);
        Level {
            blocks: vec![[0; 8]; usize::try_from(blocks).unwrap_or(usize::MAX)],
            len: 0,
            capacity,
        }
    }

    /// The block of `id` and the bits it sets there, as (word, mask).
    fn bits(&self, id: u128) -> (usize, impl Iterator<Item = (usize, u64)> + use<>) {
        // Both halves through the finalizer: ids need not be random (the
        // bench generator numbers its events; time-ordered ids, UUIDv7 or
        // ULID, share their leading bits for hours).
        let hash = fmix64(fmix64((id >> 64) as u64) ^ id as u64);
        // The high half of a 64×64-bit product maps the hash onto the
        // blocks evenly, without a division.
        let block = ((u128::from(hash) * self.blocks.len() as u128) >> 64) as usize;
        // Bit positions from a second mix, so they do not follow the block.
        let bits = fmix64(hash ^ 0x2545_f491_4f6c_dd1d);
        let each = (0..BITS_SET).map(move |i| {
            let bit = (bits >> (i * 9)) & 511;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        });
        (block, each)
    }

    pub(crate) fn insert(&mut self, id: u128) {
        let (block, bits) = self.bits(id);
        if let Some(words) = self.blocks.get_mut(block) {
            for (word, mask) in bits {
                if let Some(word) = words.get_mut(word) {
                    *word |= mask;
                }
            }
        }
        self.len += 1;
    }

    /// `false` only if `id` was never inserted.
    pub(crate) fn may_contain(&self, id: u128) -> bool {
        let (block, mut bits) = self.bits(id);
        self.blocks.get(block).is_some_and(|words| {
            bits.all(|(word, mask)| words.get(word).is_some_and(|w| w & mask != 0))
        })
    }

    /// The filter's bits, as it is stored: each block's words, big-endian.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.blocks
            .iter()
            .flatten()
            .flat_map(|word| word.to_be_bytes())
            .collect()
    }

    /// A filter of `len` ids stored as [`Level::to_bytes`] laid it out, or
    /// `None` if `bytes` is not whole blocks.
    pub(crate) fn from_bytes(bytes: &[u8], len: u64) -> Option<Level> {
        let (blocks, rest) = bytes.as_chunks::<64>();
        if !rest.is_empty() || blocks.is_empty() {
            return None;
        }
        let blocks = blocks
            .iter()
            .map(|block| {
                let (words, _) = block.as_chunks::<8>();
                let mut out = [0; 8];
                for (word, bytes) in out.iter_mut().zip(words) {
                    *word = u64::from_be_bytes(*bytes);
                }
                out
            })
            .collect();
        Some(Level {
            blocks,
            len,
            capacity: len,
        })
    }
}

/// MurmurHash3's 64-bit finalizer: every bit of `x` moves every bit of
/// the result.
pub(crate) fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Ids spread as a service's are not: numbered, time-ordered, random;
/// for tests of filters.
#[cfg(test)]
pub(crate) fn test_ids(n: u128) -> impl Iterator<Item = u128> {
    (1..=n).flat_map(|i| {
        [
            i,
            (0x0190_1234_5678 << 80) | i,
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
        ]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use test_ids as ids;

    #[test]
    fn an_inserted_id_is_always_found_and_others_rarely() {
        // Sized for a tenth of what it gets, so it grows three times.
        let mut filter = IdFilter::with_capacity(30_000);
        for id in ids(100_000) {
            filter.insert(id);
        }
        assert_eq!(filter.levels.len(), 4);
        assert!(ids(100_000).all(|id| filter.may_contain(id)));
        let others = ids(200_000).skip(300_000);
        let false_positives = others.filter(|id| filter.may_contain(*id)).count();
        // Four levels are asked, each wrong about 0.4% of the time when
        // full (1.2% measured).
        assert!(false_positives < 6_000, "{false_positives} of 300,000");

        let mut full = IdFilter::with_capacity(300_000);
        for id in ids(100_000) {
            full.insert(id);
        }
        let others = ids(200_000).skip(300_000);
        let false_positives = others.filter(|id| full.may_contain(*id)).count();
        // 0.4% measured.
        assert!(false_positives < 3_000, "{false_positives} of 300,000");
    }

    #[test]
    fn a_filter_read_back_answers_as_the_one_written() {
        let mut level = Level::new(10_000);
        for id in ids(3_000) {
            level.insert(id);
        }
        let bytes = level.to_bytes();
        let back = Level::from_bytes(&bytes, 9_000).unwrap();
        assert!(ids(3_000).all(|id| back.may_contain(id)));
        let others = ids(6_000).skip(9_000);
        assert!(
            others
                .into_iter()
                .all(|id| back.may_contain(id) == level.may_contain(id))
        );
        assert!(Level::from_bytes(&bytes[1..], 9_000).is_none());
        assert!(Level::from_bytes(&[], 0).is_none());
    }
}
