//! The event-id index, for idempotent retries: each event's id and
//! position, in buckets under one sled key per [`BITS`] leading bits of
//! the id:
//!
//! `I` ‖ the bucket (3 bytes, big-endian, below 2¹⁸) → entries of 24
//! bytes, each an id (u128, big-endian) and its position (u64,
//! big-endian), in the order they were appended.
//!
//! An id's bucket is 18 bits of a fixed mix of all its bits, not its
//! leading bits: ids need not be random. The bench generator numbers its
//! events, and time-ordered ids (UUIDv7, ULID) share their leading bits
//! for hours; with leading bits, either put a whole log in one bucket.
//! The mix is not keyed, so ids chosen to collide would make a slow
//! bucket, not a wrong answer; ids come from the service (`authz` draws
//! them at random), not from its callers.
//!
//! Why buckets: sled keeps every leaf of its tree in its page table, and a
//! leaf holds at most 16 keys. With one key per event, 5 M random ids alone
//! made sled take 207 MiB and about 600 ms to open; in 2²⁰ buckets, 67 MiB
//! and 200 ms; in 2¹⁸, 18 MiB and 60 ms, and inserting them was a third
//! faster than one key each (sled alone, this machine, a throwaway
//! program). Mixed ids fill the buckets evenly: 19 entries
//! (456 bytes) each at 5 M events. The cost is that a merge rewrites its
//! bucket, which grows with the log: 9 KB at 100 M events. A log that
//! large would want more buckets, under a new layout version.
//!
//! An entry is added with sled's merge, which appends to the value (the
//! tree's merge operator, `stream_index::append`), so no read comes
//! before a write.

use tokenledger_events::EventId;

use crate::log::Problem;

const EVENT_IDS: u8 = b'I';

/// How many bits choose a bucket: 2¹⁸ buckets.
const BUCKET_BITS: u32 = 18;

const ENTRY: usize = 24;

/// The key of the bucket that holds `id`.
pub(crate) fn key(id: EventId) -> [u8; 4] {
    let id = id.as_u128();
    // MurmurHash3's 64-bit finalizer over both halves: every bit of the
    // id moves the top bits, which choose the bucket.
    let mut x = (id >> 64) as u64 ^ (id as u64).rotate_left(32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    let [_, a, b, c] = ((x >> (64 - BUCKET_BITS)) as u32).to_be_bytes();
    [EVENT_IDS, a, b, c]
}

/// The entry that records `id` at `position`.
pub(crate) fn entry(id: EventId, position: u64) -> [u8; ENTRY] {
    let mut entry = [0; ENTRY];
    let (head, tail) = entry.split_at_mut(16);
    head.copy_from_slice(&id.as_u128().to_be_bytes());
    tail.copy_from_slice(&position.to_be_bytes());
    entry
}

/// The entries of a bucket, checked: whole entries, each of an id that
/// belongs in the bucket stored under `key`.
fn entries(key: &[u8], value: &[u8]) -> Result<Vec<(EventId, u64)>, Problem> {
    let (chunks, rest) = value.as_chunks::<ENTRY>();
    if !rest.is_empty() {
        return Err(Problem::Page("an event-id bucket is not whole entries"));
    }
    chunks
        .iter()
        .map(|chunk| {
            let (id, position) = chunk
                .split_first_chunk::<16>()
                .and_then(|(id, rest)| Some((*id, <[u8; 8]>::try_from(rest).ok()?)))
                .ok_or(Problem::Page("an event-id bucket is not whole entries"))?;
            let id = EventId::from_u128(u128::from_be_bytes(id));
            if key != self::key(id) {
                return Err(Problem::Page("an event id is in another id's bucket"));
            }
            Ok((id, u64::from_be_bytes(position)))
        })
        .collect()
}

/// The position of the event with `id`, if the log has it.
pub(crate) fn find(events: &sled::Tree, id: EventId) -> Result<Option<u64>, Problem> {
    let key = key(id);
    let Some(value) = events
        .get(key)
        .map_err(|e| Problem::Storage(e.to_string()))?
    else {
        return Ok(None);
    };
    Ok(entries(&key, &value)?
        .into_iter()
        .find(|(held, _)| *held == id)
        .map(|(_, position)| position))
}

/// Takes `ids` out of their buckets, and a bucket left empty out of sled.
pub(crate) fn remove(events: &sled::Tree, ids: &[EventId]) -> Result<(), Problem> {
    let storage = |e: sled::Error| Problem::Storage(e.to_string());
    for id in ids {
        let key = key(*id);
        let Some(value) = events.get(key).map_err(storage)? else {
            continue;
        };
        let kept: Vec<u8> = entries(&key, &value)?
            .into_iter()
            .filter(|(held, _)| held != id)
            .flat_map(|(held, position)| entry(held, position))
            .collect();
        if kept.is_empty() {
            events.remove(key).map_err(storage)?;
        } else {
            events.insert(key, kept).map_err(storage)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_index::append;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("events").unwrap();
        tree.set_merge_operator(append);
        tree
    }

    #[test]
    fn ids_are_found_in_their_buckets_and_removed_from_them() {
        let events = tree();
        // The first two share a bucket.
        let first = EventId::from_u128(1);
        let same = (2..)
            .map(EventId::from_u128)
            .find(|id| key(*id) == key(first))
            .unwrap();
        let ids = [first, same, EventId::from_u128(7)];
        assert_ne!(key(ids[0]), key(ids[2]));
        for (position, id) in (1..).zip(ids) {
            events.merge(key(id), entry(id, position)).unwrap();
        }
        for (position, id) in (1..).zip(ids) {
            assert_eq!(find(&events, id).unwrap(), Some(position));
        }
        assert_eq!(find(&events, EventId::from_u128(8)).unwrap(), None);

        remove(&events, &[ids[0], ids[2]]).unwrap();
        assert_eq!(find(&events, ids[0]).unwrap(), None);
        assert_eq!(find(&events, ids[1]).unwrap(), Some(2));
        assert_eq!(find(&events, ids[2]).unwrap(), None);
        assert!(events.get(key(ids[2])).unwrap().is_none());
    }

    #[test]
    fn numbered_and_time_ordered_ids_spread_over_the_buckets() {
        let numbered = (1..=100_000u128).map(EventId::from_u128);
        // One prefix for all, as time-ordered ids made within a second share.
        let time_ordered =
            (1..=100_000u128).map(|n| EventId::from_u128((0x0190_1234_5678 << 80) | n));
        for ids in [numbered.collect::<Vec<_>>(), time_ordered.collect()] {
            let mut counts = std::collections::HashMap::new();
            for id in ids {
                *counts.entry(key(id)).or_insert(0) += 1;
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
        let id = EventId::from_u128(3);
        events.insert(key(id), &entry(id, 1)[..20]).unwrap();
        assert!(matches!(find(&events, id), Err(Problem::Page(_))));
        let stranger = EventId::from_u128(u128::MAX);
        events.insert(key(id), &entry(stranger, 1)[..]).unwrap();
        assert!(matches!(find(&events, id), Err(Problem::Page(_))));
        assert!(remove(&events, &[id]).is_err());
    }
}
