//! Indexes from a 128-bit id to positions, written once per settle as
//! sorted segments that never change. Two:
//! - [`EVENT_IDS`], each event's id and position, for idempotent retries;
//! - [`TOKENS`], the positions of each token's events, for reads of a
//!   token's stream (`stream_index.rs` keeps the other streams in runs).
//!
//! ```text
//! chunk:      'J' ‖ kind ‖ settled (u64 BE) ‖ its first entry
//!               → (id (u128 BE) ‖ position (u64 BE))*, at most CHUNK,
//!                 ordered by id, then position
//! descriptor: 'F' ‖ kind ‖ settled (u64 BE)
//!               → distinct ids (u64 BE) ‖ a Bloom filter of them
//! ```
//!
//! `kind` is `I` or `T`; `settled` is the position the log was settled at
//! when the segment was written: it holds the entries of the events after
//! the previous segment's, up to it.
//!
//! Why segments: the entries of the events since the last settle are kept
//! in memory ([`Index::add`]), and written, sorted, in the same sled batch
//! that records the settled position (`SledLog`'s `settle`), one key per
//! [`CHUNK`] entries. Before, each event merged its entry into one of 2¹⁸
//! buckets of each index, at random keys: about 15 to 30 µs of sled's time
//! each on this machine, half of `append/group_commit_8`'s time and four
//! fifths of `append/batch_100`'s (measured by leaving the merges out).
//! A segment is written whole with its settled position, so a crash leaves
//! all of it or none, and no entry of it lies above the settled position.
//!
//! A lookup asks each segment's filter, in memory (12 bits an id), and
//! reads one chunk of each segment that may hold the id: about one. The
//! cost is that segments accumulate, one per settle (8,192 groups, or
//! about 100,000 events in larger groups, at the default journal size): a
//! lookup asks every filter, which a log of 100 M events (3,000 to 12,000
//! segments) would feel. Merging segments
//! would bound that; it is not built.

use std::collections::{HashMap, HashSet};

use crate::filter::Level;
use crate::log::{Damage, Problem};

/// One of the two indexes: the byte its keys carry after their prefix.
#[derive(Clone, Copy)]
pub(crate) struct Kind(u8);

/// Event ids and their positions.
pub(crate) const EVENT_IDS: Kind = Kind(b'I');

/// Token ids and the positions of their events.
pub(crate) const TOKENS: Kind = Kind(b'T');

const CHUNKS: u8 = b'J';
const DESCRIPTORS: u8 = b'F';

/// Entries in one chunk: 3 KiB, well under the page size sled's leaves
/// are kept to (`page::MAX_BYTES`).
const CHUNK: usize = 128;

const ENTRY: usize = 24;

const CHUNK_KEY: usize = 2 + 8 + ENTRY;

fn entry(id: u128, position: u64) -> [u8; ENTRY] {
    let mut entry = [0; ENTRY];
    let (head, tail) = entry.split_at_mut(16);
    head.copy_from_slice(&id.to_be_bytes());
    tail.copy_from_slice(&position.to_be_bytes());
    entry
}

impl Kind {
    /// `tag` ‖ kind ‖ settled: a segment's descriptor key, or the prefix
    /// of its chunks' keys.
    fn segment_key(self, tag: u8, settled: u64) -> [u8; 10] {
        let mut key = [0; 10];
        let (head, tail) = key.split_at_mut(2);
        head.copy_from_slice(&[tag, self.0]);
        tail.copy_from_slice(&settled.to_be_bytes());
        key
    }

    fn descriptor_key(self, settled: u64) -> [u8; 10] {
        self.segment_key(DESCRIPTORS, settled)
    }

    /// The key of the chunk of the segment settled at `settled` whose
    /// first entry is `first`: an entry rather than an id, since one id's
    /// entries can fill more than one chunk.
    fn chunk_key(self, settled: u64, (id, position): (u128, u64)) -> [u8; CHUNK_KEY] {
        let mut key = [0; CHUNK_KEY];
        let (segment, first) = key.split_at_mut(10);
        segment.copy_from_slice(&self.segment_key(CHUNKS, settled));
        first.copy_from_slice(&entry(id, position));
        key
    }

    /// A check of this index's segments settled at or before `durable`
    /// against the records they index ([`IndexCheck`]).
    pub(crate) fn check(self, events: &sled::Tree, durable: u64) -> Result<IndexCheck, Damage> {
        let index = Index::load(events, self)?;
        let mut segments: Vec<Segment> = index
            .segments
            .into_iter()
            .filter(|segment| segment.settled <= durable)
            .collect();
        segments.reverse();
        Ok(IndexCheck {
            kind: self,
            segments,
            expected: Vec::new(),
        })
    }

    /// The entries of every chunk of this index, chunk by chunk, each
    /// checked as a lookup checks it.
    pub(crate) fn all_entries(
        self,
        events: &sled::Tree,
    ) -> impl Iterator<Item = Result<Vec<(u128, u64)>, Problem>> {
        chunks(events, [CHUNKS, self.0])
    }
}

/// The entries of each chunk under `prefix`, chunk by chunk, each checked
/// as a lookup checks it.
fn chunks(
    events: &sled::Tree,
    prefix: impl AsRef<[u8]>,
) -> impl Iterator<Item = Result<Vec<(u128, u64)>, Problem>> {
    events.scan_prefix(prefix).map(|chunk| {
        let (key, value) = chunk.map_err(storage)?;
        let (settled, first) = chunk_key_parts(&key)?;
        entries(&value, first, settled)
    })
}

fn storage(error: sled::Error) -> Problem {
    Problem::Storage(error.to_string())
}

/// An entry laid out as stored: id, then position.
fn read_entry(bytes: &[u8; ENTRY]) -> (u128, u64) {
    let (id, position) = bytes.split_at(16);
    let id = <[u8; 16]>::try_from(id).map_or(0, u128::from_be_bytes);
    let position = <[u8; 8]>::try_from(position).map_or(0, u64::from_be_bytes);
    (id, position)
}

/// The settled position and first entry a chunk's key names.
fn chunk_key_parts(key: &[u8]) -> Result<(u64, (u128, u64)), Problem> {
    let bad = Problem::BadKey { len: key.len() };
    let rest = key
        .get(2..)
        .filter(|_| key.len() == CHUNK_KEY)
        .ok_or(bad.clone())?;
    let (at, first) = rest.split_first_chunk::<8>().ok_or(bad.clone())?;
    let first = <&[u8; ENTRY]>::try_from(first).map_err(|_| bad)?;
    Ok((u64::from_be_bytes(*at), read_entry(first)))
}

/// The entries of a chunk, checked: whole entries, the first the one its
/// key names, in order, none above the segment's settled position.
fn entries(value: &[u8], first: (u128, u64), settled: u64) -> Result<Vec<(u128, u64)>, Problem> {
    let damaged = Problem::Page;
    let (chunks, rest) = value.as_chunks::<ENTRY>();
    if !rest.is_empty() {
        return Err(damaged("a chunk of an id index is not whole entries"));
    }
    let entries: Vec<(u128, u64)> = chunks.iter().map(read_entry).collect();
    if entries.first() != Some(&first) {
        return Err(damaged(
            "a chunk of an id index starts elsewhere than its key says",
        ));
    }
    if !entries.is_sorted_by(|a, b| a < b) {
        return Err(damaged("a chunk of an id index is out of order"));
    }
    if entries.iter().any(|(_, at)| *at == 0 || *at > settled) {
        return Err(damaged(
            "a chunk of an id index holds a position its segment cannot",
        ));
    }
    Ok(entries)
}

/// A segment as held in memory: the position it was settled at, and the
/// filter of its ids.
pub(crate) struct Segment {
    settled: u64,
    filter: Level,
}

/// The check of one index by `verify`, fed the records in order: each
/// segment must hold exactly the entries of the records after the previous
/// segment's, up to its settled position, and its filter every id of them.
///
/// The segments are not chained. Without this, an entry deleted from one
/// would let a retry of its event be appended again, and a filter damaged
/// to leave an id out would do the same; reads and retries check what an
/// entry names, not what is missing (`SledLog`'s `event_of_stream`,
/// `existing_position`). Entries since the last settle are held in memory,
/// derived from the records, and are not checked.
pub(crate) struct IndexCheck {
    kind: Kind,
    /// The segments still to compare, the next last.
    segments: Vec<Segment>,
    /// The entries of the records since the last segment compared.
    expected: Vec<(u128, u64)>,
}

impl IndexCheck {
    /// Adds the entry a record at `position` should have: `id` there.
    pub(crate) fn expect(&mut self, id: u128, position: u64) {
        self.expected.push((id, position));
    }

    /// Called after the entries of the record at `position` are in: if
    /// `position` is the next segment's settled position, compares that
    /// segment with them.
    pub(crate) fn passed(&mut self, events: &sled::Tree, position: u64) -> Result<(), Damage> {
        let Some(segment) = self.segments.pop_if(|next| next.settled == position) else {
            return Ok(());
        };
        let mut expected = std::mem::take(&mut self.expected);
        expected.sort_unstable();
        let damage = |position, what| Damage {
            position,
            problem: Problem::IndexDisagrees(what),
        };
        let left_out = expected
            .iter()
            .filter(|(id, _)| !segment.filter.may_contain(*id))
            .map(|(_, at)| *at)
            .min();
        if let Some(at) = left_out {
            return Err(damage(at, "the filter of its segment leaves its id out"));
        }
        let mut found = Vec::with_capacity(expected.len());
        for chunk in chunks(events, self.kind.segment_key(CHUNKS, segment.settled)) {
            found.extend(chunk.map_err(|problem| Damage { position, problem })?);
        }
        if found == expected {
            return Ok(());
        }
        // The first position one side has an entry for and the other lacks;
        // the segment's own if they differ only in an entry held twice.
        let (in_found, in_expected): (HashSet<_>, HashSet<_>) =
            (found.iter().collect(), expected.iter().collect());
        let at = found
            .iter()
            .filter(|entry| !in_expected.contains(entry))
            .chain(expected.iter().filter(|entry| !in_found.contains(entry)))
            .map(|(_, at)| *at)
            .min()
            .unwrap_or(segment.settled);
        Err(damage(at, "its segment holds other entries than it should"))
    }

    /// Called after the last record: a segment settled beyond it indexes
    /// records the log does not have.
    pub(crate) fn finish(self) -> Result<(), Damage> {
        match self.segments.last() {
            None => Ok(()),
            Some(segment) => Err(Damage {
                position: segment.settled,
                problem: Problem::IndexDisagrees(
                    "a segment is settled at this position, which has no record",
                ),
            }),
        }
    }
}

/// One index: its segments, oldest first, and the entries not yet in one.
pub(crate) struct Index {
    kind: Kind,
    segments: Vec<Segment>,
    recent: HashMap<u128, Vec<u64>>,
}

impl Index {
    /// The index's segments as stored in `events`, their filters read.
    pub(crate) fn load(events: &sled::Tree, kind: Kind) -> Result<Index, Damage> {
        let mut segments = Vec::new();
        for descriptor in events.scan_prefix([DESCRIPTORS, kind.0]) {
            let (key, value) = descriptor.map_err(|e| Damage {
                position: 0,
                problem: storage(e),
            })?;
            let settled = key
                .get(2..)
                .and_then(|at| <[u8; 8]>::try_from(at).ok())
                .filter(|_| key.len() == 10)
                .map(u64::from_be_bytes)
                .ok_or(Damage {
                    position: 0,
                    problem: Problem::BadKey { len: key.len() },
                })?;
            let filter = value
                .split_first_chunk::<8>()
                .and_then(|(len, bits)| Level::from_bytes(bits, u64::from_be_bytes(*len)))
                .ok_or(Damage {
                    position: settled,
                    problem: Problem::Page("the filter of an id index's segment is damaged"),
                })?;
            segments.push(Segment { settled, filter });
        }
        Ok(Index {
            kind,
            segments,
            recent: HashMap::new(),
        })
    }

    /// Records that `id` has an event at `position`, after every position
    /// recorded before.
    pub(crate) fn add(&mut self, id: u128, position: u64) {
        self.recent.entry(id).or_default().push(position);
    }

    /// The positions recorded for `id`, in order, or the index is damaged.
    pub(crate) fn positions(&self, events: &sled::Tree, id: u128) -> Result<Vec<u64>, Problem> {
        let mut positions = Vec::new();
        for segment in &self.segments {
            if segment.filter.may_contain(id) {
                self.segment_positions(events, segment.settled, id, &mut positions)?;
            }
        }
        positions.extend(self.recent.get(&id).into_iter().flatten());
        if positions.is_sorted_by(|a, b| a < b) {
            Ok(positions)
        } else {
            Err(Problem::Page(
                "an id index has an id's positions out of order",
            ))
        }
    }

    /// Adds the positions of `id` in the segment settled at `settled`:
    /// from the last chunk that starts before its entries (positions start
    /// at 1), or the segment's first, on through those that start within
    /// them.
    fn segment_positions(
        &self,
        events: &sled::Tree,
        settled: u64,
        id: u128,
        positions: &mut Vec<u64>,
    ) -> Result<(), Problem> {
        let kind = self.kind;
        let segment = kind.chunk_key(settled, (0, 0));
        let before = events
            .range(segment..=kind.chunk_key(settled, (id, 0)))
            .keys()
            .next_back()
            .transpose()
            .map_err(storage)?;
        let start = before.map_or(segment.to_vec(), |key| key.to_vec());
        for chunk in events.range(start..=kind.chunk_key(settled, (id, u64::MAX)).to_vec()) {
            let (key, value) = chunk.map_err(storage)?;
            let (_, first) = chunk_key_parts(&key)?;
            positions.extend(
                entries(&value, first, settled)?
                    .into_iter()
                    .filter(|(held, _)| *held == id)
                    .map(|(_, position)| position),
            );
        }
        Ok(())
    }

    /// Puts the entries not yet in a segment into `batch` as the segment
    /// settled at `settled`, and returns it, to be taken in with
    /// [`Index::settled`] once the batch is applied; `None` if there are
    /// none.
    pub(crate) fn write_segment(&self, settled: u64, batch: &mut sled::Batch) -> Option<Segment> {
        if self.recent.is_empty() {
            return None;
        }
        let mut ids: Vec<u128> = self.recent.keys().copied().collect();
        ids.sort_unstable();
        let mut filter = Level::new(ids.len() as u64);
        let sorted = ids.iter().flat_map(|id| {
            filter.insert(*id);
            let positions = self.recent.get(id).into_iter().flatten();
            positions.map(move |position| (*id, *position))
        });
        let sorted: Vec<(u128, u64)> = sorted.collect();
        for chunk in sorted.chunks(CHUNK) {
            let Some(first) = chunk.first() else {
                continue;
            };
            let value: Vec<u8> = chunk.iter().flat_map(|(id, at)| entry(*id, *at)).collect();
            batch.insert(&self.kind.chunk_key(settled, *first)[..], value);
        }
        let mut descriptor = (ids.len() as u64).to_be_bytes().to_vec();
        descriptor.extend_from_slice(&filter.to_bytes());
        batch.insert(&self.kind.descriptor_key(settled)[..], descriptor);
        Some(Segment { settled, filter })
    }

    /// Takes in the segment [`Index::write_segment`] wrote: its entries are
    /// looked up there from now on.
    pub(crate) fn settled(&mut self, segment: Option<Segment>) {
        if let Some(segment) = segment {
            self.segments.push(segment);
            self.recent.clear();
        }
    }

    /// The ids not yet in a segment.
    pub(crate) fn recent_ids(&self) -> impl Iterator<Item = u128> + '_ {
        self.recent.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use crate::stream_index::temporary_tree as tree;

    fn settle(events: &sled::Tree, index: &mut Index, at: u64) {
        let mut batch = sled::Batch::default();
        let segment = index.write_segment(at, &mut batch);
        events.apply_batch(batch).unwrap();
        index.settled(segment);
    }

    #[test]
    fn positions_are_found_in_segments_and_recent_entries_in_order() {
        let events = tree();
        let mut index = Index::load(&events, TOKENS).unwrap();
        // A token with more positions than two chunks hold, among others.
        for position in 1..=900 {
            let id = if position % 3 == 0 {
                7
            } else {
                u128::from(position) << 64
            };
            index.add(id, position);
        }
        settle(&events, &mut index, 900);
        index.add(7, 901);
        index.add(9, 902);
        settle(&events, &mut index, 902);
        // Nothing new: no segment.
        settle(&events, &mut index, 902);
        index.add(7, 903);
        let sevens: Vec<u64> = (1..=300).map(|n| n * 3).chain([901, 903]).collect();
        assert_eq!(index.positions(&events, 7).unwrap(), sevens);
        // Reloaded, the entry never settled is not there.
        let reloaded = Index::load(&events, TOKENS).unwrap();
        assert_eq!(reloaded.positions(&events, 7).unwrap(), sevens[..301]);
        for index in [index, reloaded] {
            assert_eq!(index.positions(&events, 9).unwrap(), vec![902]);
            assert_eq!(index.positions(&events, 2 << 64).unwrap(), vec![2]);
            assert!(index.positions(&events, 8).unwrap().is_empty());
            assert_eq!(index.segments.len(), 2);
        }
        // Another index, the same ids: nothing shared.
        let ids = Index::load(&events, EVENT_IDS).unwrap();
        assert!(ids.positions(&events, 7).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_segment_is_an_error_not_a_panic() {
        let events = tree();
        let mut index = Index::load(&events, EVENT_IDS).unwrap();
        index.add(3, 1);
        index.add(4, 2);
        settle(&events, &mut index, 2);
        let key = EVENT_IDS.chunk_key(2, (3, 1));
        let damaged = [
            [entry(3, 1), entry(4, 2)].concat()[..30].to_vec(),
            [entry(3, 1), entry(4, 2), entry(3, 2)].concat(),
            [entry(3, 1), entry(4, 9)].concat(),
            entry(5, 1).to_vec(),
            Vec::new(),
        ];
        for value in damaged {
            events.insert(key, value).unwrap();
            assert!(matches!(index.positions(&events, 3), Err(Problem::Page(_))));
            assert!(EVENT_IDS.all_entries(&events).any(|chunk| chunk.is_err()));
        }
        events
            .insert(EVENT_IDS.descriptor_key(2), &[0u8; 20][..])
            .unwrap();
        assert!(Index::load(&events, EVENT_IDS).is_err());
    }
}
