//! Indexes from a 128-bit id to positions, kept in buckets: one sled key
//! per bucket of ids rather than one per id. Two use them:
//! - [`EVENT_IDS`], each event's id and position, for idempotent retries;
//! - [`TOKEN_STREAMS`], the positions of each token's events, for reads
//!   by stream (`stream_index.rs` keeps the other streams in runs).
//!
//! prefix ‖ the bucket (3 bytes, big-endian, below 2¹⁸) → entries of 24
//! bytes, each an id (u128, big-endian) and a position (u64, big-endian),
//! in the order they were appended.
//!
//! Why buckets: sled keeps every leaf of its tree in its page table, and a
//! leaf holds at most 16 keys. With one key per event, 5 M random ids alone
//! made sled take 207 MiB and about 600 ms to open; in 2²⁰ buckets, 67 MiB
//! and 200 ms; in 2¹⁸, 18 MiB and 60 ms, and inserting them was a third
//! faster than one key each (sled alone, this machine, a throwaway
//! program). A million tokens with a few events each are the same case: a
//! run per token was 1.5 M of the 5M-event log's 2.5 M keys.
//!
//! An id's bucket is 18 bits of a fixed mix of all its bits, not its
//! leading bits: ids need not be random. The bench generator numbers its
//! events, and time-ordered ids (UUIDv7, ULID) share their leading bits
//! for hours; with leading bits, either put a whole log in one bucket.
//! Mixed, ids fill the buckets evenly: 19 event ids (456 bytes) each at
//! 5 M events. The mix is not keyed, so ids chosen to collide would make a
//! slow bucket, not a wrong answer; ids come from the service (`authz`
//! draws them at random), not from its callers. The cost of buckets is
//! that a merge rewrites its bucket, which grows with the log: 9 KB of
//! event ids at 100 M events. A log that large would want more buckets,
//! under a new layout version. A bucket of [`TOKEN_STREAMS`] also holds
//! every position of each of its tokens: a token revealed 10,000 times
//! makes a bucket of 240 KB, rewritten by each later event in it. Tokens
//! have a few events each, so this was the right trade for the log's size
//! and start-up; a token with a long history would want its later events
//! in runs.
//!
//! An entry is added with sled's merge, which appends to the value (the
//! tree's merge operator, `stream_index::append`), so no read comes
//! before a write.

use crate::log::Problem;

/// One index kept in buckets: the prefix of its keys.
pub(crate) struct Buckets {
    prefix: u8,
}

/// Event ids and their positions.
pub(crate) const EVENT_IDS: Buckets = Buckets { prefix: b'I' };

/// Token ids and the positions of their events.
pub(crate) const TOKEN_STREAMS: Buckets = Buckets { prefix: b'T' };

/// How many bits choose a bucket: 2¹⁸ buckets.
const BUCKET_BITS: u32 = 18;

const ENTRY: usize = 24;

/// The bucket `id` is in.
fn bucket(id: u128) -> [u8; 3] {
    // The finalizer over both halves: every bit of the id moves the top
    // bits, which choose the bucket.
    let x = fmix64((id >> 64) as u64 ^ (id as u64).rotate_left(32));
    let [_, a, b, c] = ((x >> (64 - BUCKET_BITS)) as u32).to_be_bytes();
    [a, b, c]
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

fn entry(id: u128, position: u64) -> [u8; ENTRY] {
    let mut entry = [0; ENTRY];
    let (head, tail) = entry.split_at_mut(16);
    head.copy_from_slice(&id.to_be_bytes());
    tail.copy_from_slice(&position.to_be_bytes());
    entry
}

impl Buckets {
    /// The key of the bucket that holds `id`.
    fn key(&self, id: u128) -> [u8; 4] {
        let [a, b, c] = bucket(id);
        [self.prefix, a, b, c]
    }

    /// The entries of a bucket, checked: whole entries, each of an id
    /// that belongs in the bucket stored under `key`.
    fn entries(&self, key: &[u8], value: &[u8]) -> Result<Vec<(u128, u64)>, Problem> {
        let (chunks, rest) = value.as_chunks::<ENTRY>();
        if !rest.is_empty() {
            return Err(Problem::Page("a bucket of the index is not whole entries"));
        }
        chunks
            .iter()
            .map(|chunk| {
                let (id, position) = chunk
                    .split_first_chunk::<16>()
                    .and_then(|(id, rest)| Some((*id, <[u8; 8]>::try_from(rest).ok()?)))
                    .ok_or(Problem::Page("a bucket of the index is not whole entries"))?;
                let id = u128::from_be_bytes(id);
                if key != self.key(id) {
                    return Err(Problem::Page("an id is in another id's bucket"));
                }
                Ok((id, u64::from_be_bytes(position)))
            })
            .collect()
    }

    /// Every bucket, in order of its key.
    pub(crate) fn all(&self, events: &sled::Tree) -> sled::Iter {
        events.scan_prefix([self.prefix])
    }

    /// The ids in a bucket that [`Buckets::all`] gave, checked as
    /// [`Buckets::positions`] checks them.
    pub(crate) fn ids(&self, key: &[u8], value: &[u8]) -> Result<Vec<u128>, Problem> {
        Ok(self
            .entries(key, value)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Records that `id` has events at `positions`, in one merge: each
    /// merge rewrites the whole bucket.
    pub(crate) fn add(
        &self,
        events: &sled::Tree,
        id: u128,
        positions: &[u64],
    ) -> Result<(), sled::Error> {
        let entries: Vec<u8> = positions.iter().flat_map(|p| entry(id, *p)).collect();
        events.merge(self.key(id), entries)?;
        Ok(())
    }

    /// The positions recorded for `id`, in order: each after the one
    /// before, as they were appended, or the bucket is damaged.
    pub(crate) fn positions(&self, events: &sled::Tree, id: u128) -> Result<Vec<u64>, Problem> {
        let key = self.key(id);
        let Some(value) = events
            .get(key)
            .map_err(|e| Problem::Storage(e.to_string()))?
        else {
            return Ok(Vec::new());
        };
        let positions: Vec<u64> = self
            .entries(&key, &value)?
            .into_iter()
            .filter(|(held, _)| *held == id)
            .map(|(_, position)| position)
            .collect();
        if positions.is_sorted_by(|a, b| a < b) {
            Ok(positions)
        } else {
            Err(Problem::Page(
                "a bucket of the index has an id's positions out of order",
            ))
        }
    }

    /// Takes out the positions of `id` above `position`, and a bucket
    /// left empty out of sled.
    pub(crate) fn remove_above(
        &self,
        events: &sled::Tree,
        id: u128,
        position: u64,
    ) -> Result<(), Problem> {
        let storage = |e: sled::Error| Problem::Storage(e.to_string());
        let key = self.key(id);
        let Some(value) = events.get(key).map_err(storage)? else {
            return Ok(());
        };
        let kept: Vec<u8> = self
            .entries(&key, &value)?
            .into_iter()
            .filter(|(held, at)| *held != id || *at <= position)
            .flat_map(|(held, at)| entry(held, at))
            .collect();
        if kept.is_empty() {
            events.remove(key).map_err(storage)?;
        } else if kept.len() != value.len() {
            events.insert(key, kept).map_err(storage)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use crate::stream_index::temporary_tree as tree;

    #[test]
    fn positions_are_found_by_id_in_their_buckets_and_cut_above_a_position() {
        let events = tree();
        let index = TOKEN_STREAMS;
        // The first two share a bucket.
        let same = (2..).find(|id| bucket(*id) == bucket(1)).unwrap();
        let (a, b, c) = (1, same, 7);
        for (position, id) in (1..).zip([a, b, a, c, b]) {
            index.add(&events, id, &[position]).unwrap();
        }
        // A group's positions for one id, in one merge.
        index.add(&events, a, &[6, 7]).unwrap();
        assert_eq!(index.positions(&events, a).unwrap(), vec![1, 3, 6, 7]);
        assert_eq!(index.positions(&events, b).unwrap(), vec![2, 5]);
        assert_eq!(index.positions(&events, c).unwrap(), vec![4]);
        assert!(index.positions(&events, 8).unwrap().is_empty());
        // Another index, the same ids: nothing shared.
        assert!(EVENT_IDS.positions(&events, a).unwrap().is_empty());

        index.remove_above(&events, a, 3).unwrap();
        index.remove_above(&events, c, 3).unwrap();
        assert_eq!(index.positions(&events, a).unwrap(), vec![1, 3]);
        assert_eq!(index.positions(&events, b).unwrap(), vec![2, 5]);
        assert!(index.positions(&events, c).unwrap().is_empty());
        assert!(events.get(index.key(c)).unwrap().is_none());
    }

    #[test]
    fn numbered_and_time_ordered_ids_spread_over_the_buckets() {
        let numbered: Vec<u128> = (1..=100_000).collect();
        // One prefix for all, as time-ordered ids made within a second share.
        let time_ordered = (1..=100_000)
            .map(|n| (0x0190_1234_5678 << 80) | n)
            .collect();
        for ids in [numbered, time_ordered] {
            let mut counts = std::collections::HashMap::new();
            for id in ids {
                *counts.entry(bucket(id)).or_insert(0) += 1;
            }
            // 100,000 ids in 262,144 buckets: a few each at most.
            let fullest = counts.values().copied().max().unwrap();
            assert!(
                counts.len() > 80_000 && fullest <= 8,
                "{} buckets, {fullest} in the fullest",
                counts.len()
            );
        }
    }

    #[test]
    fn a_damaged_bucket_is_an_error_not_a_panic() {
        let events = tree();
        let index = EVENT_IDS;
        let damaged = [
            entry(3, 1)[..20].to_vec(),
            entry(u128::MAX, 1).to_vec(),
            [entry(3, 2), entry(3, 1)].concat(),
        ];
        for value in damaged {
            events.insert(index.key(3), value).unwrap();
            assert!(matches!(index.positions(&events, 3), Err(Problem::Page(_))));
        }
        events.insert(index.key(3), &entry(3, 1)[..20]).unwrap();
        assert!(index.remove_above(&events, 3, 0).is_err());
    }
}
