//! The stream index: the positions of each stream's events (a company's, a
//! token's, a teammate's, an actor's).
//!
//! A token's stream is short (created, perhaps revealed, perhaps deleted)
//! and there are a million of them, so tokens' streams are kept in buckets
//! of token ids (`buckets.rs`, [`TOKEN_STREAMS`]). Every other stream is
//! kept in runs of up to [`RUN`] positions under one sled key:
//!
//! `S` ‖ stream key (17 bytes) ‖ first position (u64, big-endian) → the
//! run's later positions, each a big-endian u64, strictly increasing.
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

use crate::buckets::TOKEN_STREAMS;
use crate::log::Problem;

/// The tag of a token's stream key.
pub(crate) const TOKEN: u8 = 2;

/// The token whose stream `stream` is, if it is a token's: its events are
/// in [`TOKEN_STREAMS`], not in runs.
fn token_of(stream: &[u8; 17]) -> Option<u128> {
    match stream.split_first() {
        Some((&TOKEN, id)) => <[u8; 16]>::try_from(id).ok().map(u128::from_be_bytes),
        _ => None,
    }
}

/// The most positions in one run: a value of at most 248 bytes.
pub(crate) const RUN: usize = 32;

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

/// The positions of a run, in order, checked: its key is a run key, its
/// value whole positions, each after the one before.
pub(crate) fn positions(key: &[u8], value: &[u8]) -> Result<Vec<u64>, Problem> {
    let first = key
        .get(18..)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .filter(|_| key.len() == KEY_LEN)
        .ok_or(Problem::BadKey { len: key.len() })?;
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

/// The position of the last event of `stream`, 0 if it has none.
pub(crate) fn head(events: &sled::Tree, stream: &[u8; 17]) -> Result<u64, Problem> {
    if let Some(token) = token_of(stream) {
        return Ok(TOKEN_STREAMS
            .positions(events, token)?
            .last()
            .copied()
            .unwrap_or(0));
    }
    let last = events
        .scan_prefix(prefix(stream))
        .next_back()
        .transpose()
        .map_err(|e| Problem::Storage(e.to_string()))?;
    match last {
        Some((key, value)) => Ok(positions(&key, &value)?.last().copied().unwrap_or(0)),
        None => Ok(0),
    }
}

/// The positions of `stream`'s events from `from` to `to`, in order: from
/// its bucket for a token, else read run by run as they are wanted.
pub(crate) fn positions_between<'a>(
    events: &'a sled::Tree,
    stream: &[u8; 17],
    from: u64,
    to: u64,
) -> Result<Box<dyn Iterator<Item = Result<u64, Problem>> + 'a>, Problem> {
    let wanted = move |position: &u64| (from..=to).contains(position);
    if let Some(token) = token_of(stream) {
        let positions = TOKEN_STREAMS.positions(events, token)?;
        return Ok(Box::new(positions.into_iter().filter(wanted).map(Ok)));
    }
    let storage = |e: sled::Error| Problem::Storage(e.to_string());
    // From the run that holds `from`, if one starts before it.
    let start = events
        .range(key(stream, 0)..=key(stream, from))
        .keys()
        .next_back()
        .transpose()
        .map_err(storage)?
        .map_or_else(|| key(stream, from).to_vec(), |key| key.to_vec());
    let runs = events.range(start..=key(stream, to).to_vec());
    Ok(Box::new(runs.flat_map(move |run| {
        let positions = run
            .map_err(storage)
            .and_then(|(key, value)| positions(&key, &value));
        match positions {
            Ok(positions) => positions.into_iter().filter(wanted).map(Ok).collect(),
            Err(problem) => vec![Err(problem)],
        }
    })))
}

/// Takes every position above `position` out of the runs of `stream`.
pub(crate) fn remove_above(
    events: &sled::Tree,
    stream: &[u8; 17],
    position: u64,
) -> Result<(), Problem> {
    if let Some(token) = token_of(stream) {
        return TOKEN_STREAMS.remove_above(events, token, position);
    }
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
        let kept: Vec<u64> = positions(&run, &value)?
            .into_iter()
            .filter(|p| *p <= position)
            .collect();
        match kept.split_first() {
            None => {
                events.remove(run).map_err(storage)?;
            }
            Some((_, later)) => {
                events.insert(run, encode(later)).map_err(storage)?;
            }
        }
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
    recent: HashMap<[u8; 17], (u64, usize)>,
    older: HashMap<[u8; 17], (u64, usize)>,
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

impl Tails {
    /// Indexes `new`, positions of `stream` in order, all after its head.
    pub(crate) fn extend(
        &mut self,
        events: &sled::Tree,
        stream: &[u8; 17],
        new: &[u64],
    ) -> Result<(), sled::Error> {
        if let Some(token) = token_of(stream) {
            return TOKEN_STREAMS.add(events, token, new);
        }
        let mut rest = new;
        if let Some((first, len)) = self.take(stream) {
            let room = RUN.saturating_sub(len).min(rest.len());
            let (now, later) = rest.split_at(room);
            if !now.is_empty() {
                events.merge(key(stream, first), encode(now))?;
            }
            self.remember(stream, first, len + now.len());
            rest = later;
        }
        for run in rest.chunks(RUN) {
            let Some((first, later)) = run.split_first() else {
                continue;
            };
            events.insert(key(stream, *first), encode(later))?;
            self.remember(stream, *first, run.len());
        }
        Ok(())
    }

    fn take(&mut self, stream: &[u8; 17]) -> Option<(u64, usize)> {
        self.recent
            .remove(stream)
            .or_else(|| self.older.remove(stream))
    }

    fn remember(&mut self, stream: &[u8; 17], first: u64, len: usize) {
        if self.recent.len() >= self.generation && !self.recent.contains_key(stream) {
            self.older = std::mem::take(&mut self.recent);
        }
        self.recent.insert(*stream, (first, len));
    }
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
        let (a, b) = ([1; 17], [2; 17]);
        let mut tails = Tails::default();
        let mut written = Vec::new();
        for group in (1..=100u64).collect::<Vec<_>>().chunks(7) {
            tails.extend(&events, &a, group).unwrap();
            written.extend_from_slice(group);
            if group.contains(&50) {
                tails = Tails::default();
            }
        }
        tails.extend(&events, &b, &[101]).unwrap();
        assert_eq!(all(&events, &a), written);
        assert_eq!(head(&events, &a).unwrap(), 100);
        assert_eq!(head(&events, &b).unwrap(), 101);
        assert_eq!(head(&events, &[3; 17]).unwrap(), 0);
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
        let [a, b, c, d] = [[1; 17], [3; 17], [4; 17], [5; 17]];
        // c fills the recent generation, so a and b become the older;
        // a is written again and comes back; d turns the generations
        // again, and b, not written since, is forgotten.
        for (position, stream) in (1..).zip([a, b, c, a, d, b]) {
            tails.extend(&events, &stream, &[position]).unwrap();
        }
        let runs = |stream| events.scan_prefix(prefix(&stream)).count();
        assert_eq!((runs(a), all(&events, &a)), (1, vec![1, 4]));
        assert_eq!((runs(b), all(&events, &b)), (2, vec![2, 6]));
    }

    #[test]
    fn a_tokens_stream_is_kept_in_buckets_not_runs() {
        let events = tree();
        let mut token = [9; 17];
        token[0] = TOKEN;
        Tails::default().extend(&events, &token, &[3, 5]).unwrap();
        // A writer that never saw the token adds to the same bucket.
        Tails::default().extend(&events, &token, &[8]).unwrap();
        assert_eq!(head(&events, &token).unwrap(), 8);
        assert_eq!(events.scan_prefix(prefix(&token)).count(), 0);
        let id = token_of(&token).unwrap();
        assert_eq!(TOKEN_STREAMS.positions(&events, id).unwrap(), vec![3, 5, 8]);
        remove_above(&events, &token, 5).unwrap();
        assert_eq!(head(&events, &token).unwrap(), 5);
        assert_eq!(token_of(&[1; 17]), None);
    }

    #[test]
    fn removing_above_a_position_cuts_runs_there() {
        for cut in [0, 1, 31, 32, 33, 64, 70, 99, 100] {
            let events = tree();
            let stream = [7; 17];
            let mut tails = Tails::default();
            let positions: Vec<u64> = (1..=100).map(|p| p * 2).collect();
            tails.extend(&events, &stream, &positions).unwrap();
            remove_above(&events, &stream, cut * 2 + 1).unwrap();
            let kept: Vec<u64> = positions
                .into_iter()
                .filter(|p| *p <= cut * 2 + 1)
                .collect();
            assert_eq!(all(&events, &stream), kept, "cut at {cut}");
            assert_eq!(
                head(&events, &stream).unwrap(),
                kept.last().copied().unwrap_or(0)
            );
        }
    }

    #[test]
    fn a_damaged_run_is_an_error_not_a_panic() {
        let key = key(&[1; 17], 10);
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
}
