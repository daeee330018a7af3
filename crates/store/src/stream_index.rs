//! The stream index: the positions of each stream's events (a company's, a
//! token's, a teammate's, an actor's).
//!
//! A token's stream is short (created, perhaps revealed, perhaps deleted)
//! and there are a million of them, so tokens' streams are kept in the
//! segments of an index of token ids (`segments.rs`, [`TOKENS`](crate::segments::TOKENS)),
//! and never reach this module. Every other stream is kept in runs of up
//! to [`RUN`] positions under one sled key:
//!
//! `S` ‖ stream key (17 bytes) ‖ first position (u64, big-endian) → the
//! run's later positions, each a big-endian u64, strictly increasing.
//!
//! A company's runs carry its records, not only their positions:
//!
//! `S` ‖ company stream key ‖ first position → (position (u64 BE) ‖ record
//! length (u32 BE) ‖ record)*, from the first position on, strictly
//! increasing, closed at [`RECORDS_RUN_BYTES`] or [`RUN`] records.
//!
//! Why: an as-of query rebuilds one company from its events, which lie
//! scattered through the log, one or two to a page. Fetched by position,
//! each cost sled a leaf of up to 17 pages (70 KB) to read and take apart:
//! 194 to 256 ms for the company of a random point of the generated
//! 5M-event log. In runs of their own, a company's records lie together,
//! about 15 to a run and 17 runs to a leaf: 12 to 23 ms.
//!
//! The price is each record stored twice, and more that sled rewrites as
//! runs grow. For the generated 5M-event log, when the runs came in: sled's
//! file went from 9.4 to 22 GB, the memory after opening grew by 11 bytes
//! per live token (392 to 403), and a single durable append took 6 to 11%
//! longer.
//!
//! `verify` checks every copy against the chain, and that every record has
//! one (`SledLog::verify_with`); a read checks each copy's own hash, as a
//! read of a page does, and that its event is in the stream read, as it
//! does for the events of every stream.
//!
//! A stream's head is the last position of its last run, found with one
//! reverse seek.
//!
//! Why runs: sled's memory and its time to open grow with its leaves, and
//! a leaf holds at most 16 keys. With one key per event and stream, the
//! index was about three quarters of the keys of a generated log (2.9 M of
//! 3.9 M for 1 M events), and opening a 5 M-event log spent about 500 ms
//! and 480 MB on sled's page table.
//!
//! The writer remembers the last run of each stream it has written since
//! the log opened ([`Tails`]) and extends it with sled's merge, which
//! appends to the value; a stream it does not remember starts a new run,
//! so no read comes before a write. Runs are disjoint and ordered by their
//! first position, however many there are, so a new run is always right.

use std::collections::HashMap;

use tokenledger_events::Envelope;

use crate::log::{Damage, Hash, Problem};
use crate::record::stored_event;

/// The tag of a company's stream key.
pub(crate) const COMPANY: u8 = 1;

/// The tag of a token's stream key.
pub(crate) const TOKEN: u8 = 2;

/// Whether the runs of `stream` carry its records: a company's do.
pub(crate) fn carries_records(stream: &[u8; 17]) -> bool {
    stream.first() == Some(&COMPANY)
}

/// The token whose stream `stream` is, if it is a token's: its events are
/// in the index of token ids, not in runs.
pub(crate) fn token_of(stream: &[u8; 17]) -> Option<u128> {
    match stream.split_first() {
        Some((&TOKEN, id)) => <[u8; 16]>::try_from(id).ok().map(u128::from_be_bytes),
        _ => None,
    }
}

/// The most positions in one run: a value of at most 248 bytes.
pub(crate) const RUN: usize = 32;

/// A run of records is closed once its value reaches this many bytes, as
/// a page is (`page::MAX_BYTES`), so that a leaf of them stays well under
/// the 128 KiB over which sled keeps a leaf in a file of its own.
pub(crate) const RECORDS_RUN_BYTES: usize = 4096;

/// The bytes of one record's entry before the record: position and length.
const ENTRY_HEADER: usize = 8 + 4;

/// Streams a generation of [`Tails`] remembers at most. About 40 bytes
/// each, two generations: at most 10 MiB.
const GENERATION: usize = 1 << 17;

const STREAMS: u8 = b'S';
const KEY_LEN: usize = 1 + 17 + 8;

/// The prefix of every run of `stream`.
pub(crate) fn prefix(stream: &[u8; 17]) -> [u8; 18] {
    let mut prefix = [STREAMS; 18];
    let (_, tail) = prefix.split_at_mut(1);
    tail.copy_from_slice(stream);
    prefix
}

/// The key of the run of `stream` that starts at `first`.
pub(crate) fn key(stream: &[u8; 17], first: u64) -> [u8; KEY_LEN] {
    let mut key = [0; KEY_LEN];
    let (head, tail) = key.split_at_mut(18);
    head.copy_from_slice(&prefix(stream));
    tail.copy_from_slice(&first.to_be_bytes());
    key
}

/// sled's merge operator for the index: a run grows by appending.
pub(crate) fn append(_key: &[u8], old: Option<&[u8]>, more: &[u8]) -> Option<Vec<u8>> {
    let mut value = old.map(<[u8]>::to_vec).unwrap_or_default();
    value.extend_from_slice(more);
    Some(value)
}

fn encode(positions: &[u64]) -> Vec<u8> {
    positions.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// Lays `entries` out as the value of a run of records.
pub(crate) fn encode_records<'a>(entries: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut value = Vec::new();
    for (position, record) in entries {
        push_record(&mut value, position, record);
    }
    value
}

/// Appends one entry of a run of records to `value`.
fn push_record(value: &mut Vec<u8>, position: u64, record: &[u8]) {
    value.extend_from_slice(&position.to_be_bytes());
    value.extend_from_slice(&(record.len() as u32).to_be_bytes());
    value.extend_from_slice(record);
}

/// The first position of the run stored under `key`, checked to be a run
/// key.
fn first_of(key: &[u8]) -> Result<u64, Problem> {
    key.get(18..)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .filter(|_| key.len() == KEY_LEN)
        .ok_or(Problem::BadKey { len: key.len() })
}

/// Whether the run stored under `key` carries records.
fn key_carries_records(key: &[u8]) -> bool {
    key.get(1) == Some(&COMPANY)
}

/// The entries of a run of records, in order, checked: whole entries, at
/// most [`RUN`], the first at the key's position, each after the one
/// before. The records themselves are checked where they are read.
pub(crate) fn records<'v>(key: &[u8], value: &'v [u8]) -> Result<Vec<(u64, &'v [u8])>, Problem> {
    let first = first_of(key)?;
    let torn = Problem::Page("a stream run's value is not whole records");
    let mut entries = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (position, after) = rest.split_first_chunk::<8>().ok_or(torn.clone())?;
        let (len, after) = after.split_first_chunk::<4>().ok_or(torn.clone())?;
        let position = u64::from_be_bytes(*position);
        let len = u32::from_be_bytes(*len) as usize;
        if len > after.len() {
            return Err(torn);
        }
        let (record, after) = after.split_at(len);
        match entries.last() {
            None if position != first => {
                return Err(Problem::Page("a stream run does not start at its key"));
            }
            Some((previous, _)) if position <= *previous => {
                return Err(Problem::Page("a stream run's positions are out of order"));
            }
            _ => {}
        }
        entries.push((position, record));
        rest = after;
    }
    if entries.is_empty() || entries.len() > RUN {
        return Err(Problem::Page(
            "a stream run's value is not a run of records",
        ));
    }
    Ok(entries)
}

/// The positions of a run, in order, checked: its key is a run key, its
/// value whole positions (or records), each after the one before.
pub(crate) fn positions(key: &[u8], value: &[u8]) -> Result<Vec<u64>, Problem> {
    if key_carries_records(key) {
        return Ok(records(key, value)?.into_iter().map(|(p, _)| p).collect());
    }
    let first = first_of(key)?;
    let (later, rest) = value.as_chunks::<8>();
    if !rest.is_empty() || later.len() >= RUN {
        return Err(Problem::Page(
            "a stream run's value is not a run of positions",
        ));
    }
    let mut positions = Vec::with_capacity(1 + later.len());
    positions.push(first);
    let mut previous = first;
    for position in later.iter().map(|bytes| u64::from_be_bytes(*bytes)) {
        if position <= previous {
            return Err(Problem::Page("a stream run's positions are out of order"));
        }
        positions.push(position);
        previous = position;
    }
    Ok(positions)
}

/// The position of the last event of `stream` at or before `at_most`, 0
/// if it has none. Readers pass the durable head: sled holds a group's
/// records while its journal frame is still being synced.
pub(crate) fn head(events: &sled::Tree, stream: &[u8; 17], at_most: u64) -> Result<u64, Problem> {
    let last = |positions: Vec<u64>| positions.into_iter().rev().find(|p| *p <= at_most);
    // From the last run back: only runs of records not yet durable lie
    // wholly above `at_most`.
    for run in events.scan_prefix(prefix(stream)).rev() {
        let (key, value) = run.map_err(|e| Problem::Storage(e.to_string()))?;
        if let Some(position) = last(positions(&key, &value)?) {
            return Ok(position);
        }
    }
    Ok(0)
}

/// The positions of `stream`'s events from `from` to `to`, in order, read
/// run by run as they are wanted.
pub(crate) fn positions_between<'a>(
    events: &'a sled::Tree,
    stream: &[u8; 17],
    from: u64,
    to: u64,
) -> Result<impl Iterator<Item = Result<u64, Problem>> + 'a, Problem> {
    let wanted = move |position: &u64| (from..=to).contains(position);
    let storage = |e: sled::Error| Problem::Storage(e.to_string());
    let runs = runs_between(events, stream, from, to)?;
    Ok(runs.flat_map(move |run| {
        let positions = run
            .map_err(storage)
            .and_then(|(key, value)| positions(&key, &value));
        match positions {
            Ok(positions) => positions.into_iter().filter(wanted).map(Ok).collect(),
            Err(problem) => vec![Err(problem)],
        }
    }))
}

/// The runs of `stream` that can hold positions from `from` to `to`: from
/// the run that holds `from`, if one starts before it.
fn runs_between(
    events: &sled::Tree,
    stream: &[u8; 17],
    from: u64,
    to: u64,
) -> Result<sled::Iter, Problem> {
    let start = events
        .range(key(stream, 0)..=key(stream, from))
        .keys()
        .next_back()
        .transpose()
        .map_err(|e| Problem::Storage(e.to_string()))?
        .map_or_else(|| key(stream, from).to_vec(), |key| key.to_vec());
    Ok(events.range(start..=key(stream, to).to_vec()))
}

/// Hands `each` the records of `stream` from `from` to `to`, in order,
/// with their positions, while it returns `Ok(true)`. Only for a stream
/// whose runs carry its records ([`carries_records`]). A damaged run is
/// an error at its first position.
pub(crate) fn for_each_record(
    events: &sled::Tree,
    stream: &[u8; 17],
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<bool, Damage>,
) -> Result<(), Damage> {
    let at = |position| move |problem| Damage { position, problem };
    for run in runs_between(events, stream, from, to).map_err(at(from))? {
        let (key, value) = run.map_err(|e| at(from)(Problem::Storage(e.to_string())))?;
        let first = first_of(&key).map_err(at(from))?;
        for (position, record) in records(&key, &value).map_err(at(first))? {
            if position > to {
                return Ok(());
            }
            if position >= from && !each(position, record)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The first 16 bytes of a record's hash, which [`check_copies`] compares.
pub(crate) fn hash_half(hash: &Hash) -> u128 {
    hash.first_chunk::<16>()
        .map_or(0, |half| u128::from_be_bytes(*half))
}

/// Checks the copies of records in companies' runs against the log, whose
/// records' hashes `hashes` holds ([`hash_half`]), position `p`'s at `p - 1`:
/// every record has exactly one copy, in the stream `stream_of` gives
/// its envelope, and the copy is the record (its hash, which it is checked
/// to match, is the record's). Returns the positions of the copies past
/// the last hash, unchecked.
pub(crate) fn check_copies(
    events: &sled::Tree,
    hashes: &[u128],
    stream_of: impl Fn(&Envelope) -> [u8; 17],
    mut checked: impl FnMut(),
) -> Result<Vec<u64>, Damage> {
    let mut beyond = Vec::new();
    let mut copied = vec![false; hashes.len()];
    for run in events.scan_prefix([STREAMS, COMPANY]) {
        let (key, value) = run.map_err(|e| Damage {
            position: 0,
            problem: Problem::Storage(e.to_string()),
        })?;
        let first = first_of(&key).map_err(|problem| Damage {
            position: 0,
            problem,
        })?;
        for (position, record) in records(&key, &value).map_err(|problem| Damage {
            position: first,
            problem,
        })? {
            let disagrees = |what| Damage {
                position,
                problem: Problem::CopyDisagrees(what),
            };
            if position > hashes.len() as u64 {
                beyond.push(position);
                continue;
            }
            let event = stored_event(position, record)?;
            let index = position
                .checked_sub(1)
                .and_then(|index| usize::try_from(index).ok());
            if index.and_then(|index| hashes.get(index)) != Some(&hash_half(&event.hash)) {
                return Err(disagrees("is not the record in the log"));
            }
            if key.get(1..18) != Some(&stream_of(&event.envelope)[..]) {
                return Err(disagrees("is in another company's stream"));
            }
            match index.and_then(|index| copied.get_mut(index)) {
                Some(seen) if !*seen => *seen = true,
                _ => return Err(disagrees("is there twice")),
            }
            checked();
        }
    }
    match copied.iter().position(|seen| !seen) {
        Some(index) => Err(Damage {
            position: index as u64 + 1,
            problem: Problem::CopyDisagrees("is missing"),
        }),
        None => Ok(beyond),
    }
}

/// Takes every position above `position` out of the runs of `stream`.
pub(crate) fn remove_above(
    events: &sled::Tree,
    stream: &[u8; 17],
    position: u64,
) -> Result<(), Problem> {
    let storage = |e: sled::Error| Problem::Storage(e.to_string());
    let Some(next) = position.checked_add(1) else {
        return Ok(());
    };
    let above = events.range(key(stream, next)..=key(stream, u64::MAX));
    for entry in above.chain(
        events
            .range(key(stream, 0)..=key(stream, position))
            .next_back(),
    ) {
        let (run, value) = entry.map_err(storage)?;
        let kept = if key_carries_records(&run) {
            let kept: Vec<_> = records(&run, &value)?
                .into_iter()
                .filter(|(p, _)| *p <= position)
                .collect();
            (!kept.is_empty()).then(|| encode_records(kept))
        } else {
            let kept: Vec<u64> = positions(&run, &value)?
                .into_iter()
                .filter(|p| *p <= position)
                .collect();
            kept.split_first().map(|(_, later)| encode(later))
        };
        match kept {
            None => {
                events.remove(run).map_err(storage)?;
            }
            Some(kept) if kept != value.as_ref() => {
                events.insert(run, kept).map_err(storage)?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Takes every position above `position` out of the runs of every stream.
///
/// Recovery cannot learn which streams have runs above the settled
/// position from the pages above it: a run's merge written after the
/// settle can reach the disk without its page (a drive that reorders
/// writes, a lost write), and as-of reads would then return positions
/// that were never acknowledged, and that later appends reuse. So every
/// stream is looked at, from the last backwards, one seek each: the
/// seek that finds a stream's last run also names the stream. Only a
/// stream whose last run reaches above `position` is changed. It runs at
/// every open: 50,000 streams took 141 to 198 ms in a release build (a
/// throwaway test, the tree in memory), about 3 µs a stream.
pub(crate) fn remove_all_above(events: &sled::Tree, position: u64) -> Result<(), Problem> {
    let storage = |e: sled::Error| Problem::Storage(e.to_string());
    let mut below = vec![STREAMS + 1];
    while let Some((run, value)) = events
        .range(vec![STREAMS]..below)
        .next_back()
        .transpose()
        .map_err(storage)?
    {
        let stream: [u8; 17] = run
            .get(1..18)
            .and_then(|id| id.try_into().ok())
            .ok_or(Problem::BadKey { len: run.len() })?;
        if positions(&run, &value)?
            .last()
            .is_some_and(|p| *p > position)
        {
            remove_above(events, &stream, position)?;
        }
        below = prefix(&stream).to_vec();
    }
    Ok(())
}

/// The last run of each stream the writer has written to lately: where it
/// starts and how many positions it holds.
///
/// In two generations: when the recent one is full it becomes the older,
/// and what the older held is forgotten, except the streams written to
/// since, which moved back. So a stream that comes back often (a
/// teammate's, a company's) outlives the million token streams that pass
/// through between its events, and a forgotten stream only costs a new
/// run. Clearing everything at 2¹⁶ streams, as before, left the generated
/// 5M-event log's 50,000 teammates forgotten between two of their events:
/// 2 M runs of one position, half of the stream index's keys.
pub(crate) struct Tails {
    recent: HashMap<[u8; 17], Tail>,
    older: HashMap<[u8; 17], Tail>,
    /// [`GENERATION`], or fewer in a test.
    generation: usize,
}

impl Default for Tails {
    fn default() -> Tails {
        Tails {
            recent: HashMap::new(),
            older: HashMap::new(),
            generation: GENERATION,
        }
    }
}

/// A stream's last run: where it starts, how many positions it holds, and
/// its value's length in bytes.
#[derive(Clone, Copy)]
struct Tail {
    first: u64,
    len: usize,
    bytes: usize,
}

impl Tail {
    fn is_full(&self, records: bool) -> bool {
        self.len >= RUN || (records && self.bytes >= RECORDS_RUN_BYTES)
    }
}

impl Tails {
    /// Indexes `new`, the positions of `stream` in order, all after its
    /// head, each with its record (kept only in a run that carries them).
    pub(crate) fn extend(
        &mut self,
        events: &sled::Tree,
        stream: &[u8; 17],
        new: &[(u64, &[u8])],
    ) -> Result<(), sled::Error> {
        let records = carries_records(stream);
        let mut tail = self.take(stream);
        // What `tail`'s run gets, and whether the run is new to sled.
        let mut more = Vec::new();
        let mut started = false;
        for &(position, record) in new {
            let current = match tail {
                Some(current) if !current.is_full(records) => current,
                _ => {
                    if let Some(full) = tail {
                        write(events, stream, full.first, started, &more)?;
                    }
                    more.clear();
                    started = true;
                    Tail {
                        first: position,
                        len: 0,
                        bytes: 0,
                    }
                }
            };
            // A run of positions keeps its first in the key only.
            if records {
                push_record(&mut more, position, record);
            } else if current.len > 0 {
                more.extend_from_slice(&position.to_be_bytes());
            }
            tail = Some(Tail {
                len: current.len + 1,
                bytes: current.bytes
                    + if records {
                        ENTRY_HEADER + record.len()
                    } else {
                        8
                    },
                ..current
            });
        }
        if let Some(last) = tail {
            write(events, stream, last.first, started, &more)?;
            self.remember(stream, last);
        }
        Ok(())
    }

    fn take(&mut self, stream: &[u8; 17]) -> Option<Tail> {
        self.recent
            .remove(stream)
            .or_else(|| self.older.remove(stream))
    }

    fn remember(&mut self, stream: &[u8; 17], tail: Tail) {
        if self.recent.len() >= self.generation && !self.recent.contains_key(stream) {
            self.older = std::mem::take(&mut self.recent);
        }
        self.recent.insert(*stream, tail);
    }
}

/// Writes what a run gets: the run itself if it is new, else a merge that
/// appends to it.
fn write(
    events: &sled::Tree,
    stream: &[u8; 17],
    first: u64,
    new: bool,
    more: &[u8],
) -> Result<(), sled::Error> {
    if new {
        events.insert(key(stream, first), more)?;
    } else if !more.is_empty() {
        events.merge(key(stream, first), more)?;
    }
    Ok(())
}

/// A temporary tree with the log's merge operator, for tests of the
/// indexes.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly")]
pub(crate) fn temporary_tree() -> sled::Tree {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("events").unwrap();
    tree.set_merge_operator(append);
    tree
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use temporary_tree as tree;

    /// Positions with no records, for the streams whose runs hold none.
    fn at(positions: &[u64]) -> Vec<(u64, &'static [u8])> {
        positions.iter().map(|p| (*p, &[][..])).collect()
    }

    fn all(events: &sled::Tree, stream: &[u8; 17]) -> Vec<u64> {
        events
            .scan_prefix(prefix(stream))
            .flat_map(|entry| {
                let (key, value) = entry.unwrap();
                positions(&key, &value).unwrap()
            })
            .collect()
    }

    #[test]
    fn runs_fill_up_to_their_size_and_a_forgotten_stream_starts_a_new_one() {
        let events = tree();
        let (a, b) = ([6; 17], [2; 17]);
        let mut tails = Tails::default();
        let mut written = Vec::new();
        for group in (1..=100u64).collect::<Vec<_>>().chunks(7) {
            tails.extend(&events, &a, &at(group)).unwrap();
            written.extend_from_slice(group);
            if group.contains(&50) {
                tails = Tails::default();
            }
        }
        tails.extend(&events, &b, &at(&[101])).unwrap();
        assert_eq!(all(&events, &a), written);
        assert_eq!(head(&events, &a, u64::MAX).unwrap(), 100);
        assert_eq!(head(&events, &b, u64::MAX).unwrap(), 101);
        assert_eq!(head(&events, &[3; 17], u64::MAX).unwrap(), 0);
        // 1..=49 in two runs (32, 17); forgotten after 50's group; then
        // 50..=56 and on in runs of 32.
        let runs = events.scan_prefix(prefix(&a)).count();
        assert_eq!(runs, 2 + 100_usize.saturating_sub(49).div_ceil(RUN));
        for entry in events.scan_prefix(prefix(&a)) {
            let (_, value) = entry.unwrap();
            assert!(value.len() / 8 < RUN);
        }
    }

    #[test]
    fn a_stream_written_again_within_two_generations_keeps_its_run() {
        let events = tree();
        let mut tails = Tails {
            generation: 2,
            ..Tails::default()
        };
        // No tag 2: a token's stream is not kept in runs.
        let [a, b, c, d] = [[6; 17], [3; 17], [4; 17], [5; 17]];
        // c fills the recent generation, so a and b become the older;
        // a is written again and comes back; d turns the generations
        // again, and b, not written since, is forgotten.
        for (position, stream) in (1..).zip([a, b, c, a, d, b]) {
            tails.extend(&events, &stream, &at(&[position])).unwrap();
        }
        let runs = |stream| events.scan_prefix(prefix(&stream)).count();
        assert_eq!((runs(a), all(&events, &a)), (1, vec![1, 4]));
        assert_eq!((runs(b), all(&events, &b)), (2, vec![2, 6]));
    }

    #[test]
    fn a_head_at_most_a_position_is_the_last_event_at_or_before_it() {
        let events = tree();
        let stream = [7; 17];
        let positions: Vec<u64> = (1..=100).map(|p| p * 2).collect();
        Tails::default()
            .extend(&events, &stream, &at(&positions))
            .unwrap();
        for limit in 0..=201 {
            let expected = limit / 2 * 2;
            assert_eq!(head(&events, &stream, limit).unwrap(), expected);
        }
    }

    #[test]
    fn removing_above_a_position_cuts_runs_there() {
        for cut in [0, 1, 31, 32, 33, 64, 70, 99, 100] {
            let events = tree();
            let stream = [7; 17];
            let mut tails = Tails::default();
            let positions: Vec<u64> = (1..=100).map(|p| p * 2).collect();
            tails.extend(&events, &stream, &at(&positions)).unwrap();
            remove_above(&events, &stream, cut * 2 + 1).unwrap();
            let kept: Vec<u64> = positions
                .into_iter()
                .filter(|p| *p <= cut * 2 + 1)
                .collect();
            assert_eq!(all(&events, &stream), kept, "cut at {cut}");
            assert_eq!(
                head(&events, &stream, u64::MAX).unwrap(),
                kept.last().copied().unwrap_or(0)
            );
        }
    }

    #[test]
    fn a_damaged_run_is_an_error_not_a_panic() {
        let key = key(&[6; 17], 10);
        assert_eq!(positions(&key, &[]).unwrap(), vec![10]);
        assert_eq!(
            positions(&key, &encode(&[11, 12])).unwrap(),
            vec![10, 11, 12]
        );
        for value in [
            vec![0; 7],
            encode(&[10]),
            encode(&[12, 11]),
            encode(&(11..11 + RUN as u64).collect::<Vec<_>>()),
        ] {
            assert!(positions(&key, &value).is_err(), "{value:?}");
        }
        assert_eq!(positions(&key[..20], &[]), Err(Problem::BadKey { len: 20 }));
    }

    fn company(n: u8) -> [u8; 17] {
        let mut stream = [n; 17];
        stream[0] = COMPANY;
        stream
    }

    fn records_of(
        events: &sled::Tree,
        stream: &[u8; 17],
        from: u64,
        to: u64,
    ) -> Vec<(u64, Vec<u8>)> {
        let mut read = Vec::new();
        for_each_record(events, stream, from, to, |position, record| {
            read.push((position, record.to_vec()));
            Ok(true)
        })
        .unwrap();
        read
    }

    #[test]
    fn a_companys_runs_carry_its_records_and_close_at_their_byte_limit() {
        let events = tree();
        let stream = company(1);
        let record = |position: u64| vec![position as u8; 100 + (position as usize % 7) * 50];
        let written: Vec<(u64, Vec<u8>)> = (1..=200u64).map(|p| (p * 3, record(p * 3))).collect();
        let mut tails = Tails::default();
        for (i, group) in written.chunks(9).enumerate() {
            let entries: Vec<(u64, &[u8])> =
                group.iter().map(|(p, r)| (*p, r.as_slice())).collect();
            tails.extend(&events, &stream, &entries).unwrap();
            if i == 5 {
                tails = Tails::default();
            }
        }
        assert_eq!(records_of(&events, &stream, 0, u64::MAX), written);
        assert_eq!(
            records_of(&events, &stream, 31, 299),
            written[10..99].to_vec()
        );
        assert_eq!(
            all(&events, &stream),
            written.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        );
        assert_eq!(head(&events, &stream, u64::MAX).unwrap(), 600);
        for entry in events.scan_prefix(prefix(&stream)) {
            let (key, value) = entry.unwrap();
            let len = records(&key, &value).unwrap().len();
            let last = records(&key, &value)
                .unwrap()
                .last()
                .map(|(_, r)| r.len())
                .unwrap();
            assert!(len <= RUN && value.len() < RECORDS_RUN_BYTES + ENTRY_HEADER + last);
        }
        for cut in [0, 3, 299, 300, 301, 600] {
            let copy = tree();
            for entry in events.iter() {
                let (key, value) = entry.unwrap();
                copy.insert(key, value).unwrap();
            }
            remove_above(&copy, &stream, cut).unwrap();
            let kept: Vec<_> = written.iter().filter(|(p, _)| *p <= cut).cloned().collect();
            assert_eq!(
                records_of(&copy, &stream, 0, u64::MAX),
                kept,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_damaged_run_of_records_is_an_error_not_a_panic() {
        let key = key(&company(1), 10);
        let whole = encode_records([(10, &b"abc"[..]), (12, &b"de"[..])]);
        assert_eq!(
            records(&key, &whole).unwrap(),
            vec![(10, &b"abc"[..]), (12, &b"de"[..])]
        );
        for cut in 0..whole.len() {
            let cut = whole.get(..cut).unwrap();
            if cut.len() != 8 + 4 + 3 {
                assert!(records(&key, cut).is_err(), "{cut:?}");
            }
        }
        for value in [
            encode_records([(11, &b"abc"[..])]),
            encode_records([(10, &b"abc"[..]), (10, &b"de"[..])]),
            encode_records((10..11 + RUN as u64).map(|p| (p, &b"x"[..]))),
        ] {
            assert!(records(&key, &value).is_err(), "{value:?}");
        }
    }
}
