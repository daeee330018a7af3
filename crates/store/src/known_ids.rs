//! What the writer knows of the event ids in the log without asking
//! sled: a Bloom filter of every id, so that an append of new events,
//! the usual case, skips the lookup that checks whether it is a retry.
//!
//! Why: that lookup, a sled `get` of the id's bucket (`buckets.rs`),
//! took about 15 µs of the writer's time before each group's journal
//! write, on the path of every append (perf); a filter answers in well
//! under a microsecond. A "maybe" still asks sled, so a false positive
//! costs what every append cost before, and a retry is found as before.
//! In five alternating pairs of runs, `append/single_durable` went from
//! a median of 219 to 203 µs and `append/group_commit_8` from 103 to 92
//! µs an event.
//!
//! The filter must hold every id in the log before it may say "no". A
//! thread of its own gathers it from sled's event-id buckets once
//! [`GATHER_AFTER`] events have been appended since opening: opening
//! costs nothing, a log that is only read or rarely written never
//! gathers, and no append waits for it. The writer keeps the ids of
//! every group it writes meanwhile, and adds them when the gathered
//! filter arrives. Together they cover the log: groups are made whole
//! in sled one after another, so when gathering starts every earlier id
//! is in a bucket, and buckets only grow while the log is open
//! (`remove_above` runs before the writer starts).
//!
//! Gathering a 5 M-event log's 262,144 buckets took 1.1 s with sled's
//! pages in memory and 8.3 s without (a throwaway test). In steps on
//! the writer, between appends, a step of 64 buckets took 0.27 ms on
//! average with the pages in memory, and up to 51 ms without: an append
//! arriving meanwhile would have waited that long.
//!
//! Memory: 12 bits an id, sized at twice the log's events when
//! gathering starts and doubled when full: about 15 MB for a 5 M-event
//! log. Reading every bucket also brings them into sled's cache: on the
//! 5 M-event bench log, with gathering started by the first command,
//! the process grew from 440 to 600 MiB in the 10 s after it (a
//! throwaway program). Appends bring buckets in too, one at a time:
//! sled reads the leaf of the bucket each merges into. Hence
//! [`GATHER_AFTER`]: a service that writes a few events a day saves
//! little by skipping the lookup, and would hold the buckets early.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::buckets::{EVENT_IDS, fmix64};

/// The ids of the log, as far as the writer knows them.
pub(crate) struct KnownIds {
    state: State,
}

enum State {
    /// Not gathered: fewer than [`GATHER_AFTER`] events appended since
    /// opening, `written` of them.
    NotYet { written: u64 },
    /// Being gathered by `thread`, which sends the filter, or `None` if a
    /// bucket could not be read; `written` are the ids written since it
    /// started.
    Gathering {
        thread: Gatherer,
        written: Vec<u128>,
    },
    /// Every id in the log is in the filter.
    All(IdFilter),
    /// A bucket could not be read, or the thread not started: sled is
    /// asked every time, and reports the damage when its bucket is looked up.
    Unknown,
}

/// The thread gathering the filter, stopped and joined when dropped: it
/// holds sled open, and a log reopened at once would find sled locked.
struct Gatherer {
    gathered: Receiver<Option<IdFilter>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KnownIds {
    /// Nothing known yet.
    pub(crate) fn new() -> KnownIds {
        KnownIds {
            state: State::NotYet { written: 0 },
        }
    }

    /// Called before each group, with the log's `tree` and its number of
    /// `events`: starts gathering once [`GATHER_AFTER`] events have been
    /// written since opening; later, takes the gathered filter if it has
    /// arrived, with the ids written since gathering started.
    pub(crate) fn catch_up(&mut self, tree: &sled::Tree, events: u64) {
        let State::Gathering { thread, written } = &mut self.state else {
            if let State::NotYet { written } = self.state
                && written >= GATHER_AFTER
            {
                self.state = match Gatherer::start(tree.clone(), events) {
                    Ok(thread) => State::Gathering {
                        thread,
                        written: Vec::new(),
                    },
                    Err(_) => State::Unknown,
                };
            }
            return;
        };
        let gathered = match thread.gathered.try_recv() {
            Ok(gathered) => gathered,
            Err(crossbeam_channel::TryRecvError::Empty) => return,
            Err(crossbeam_channel::TryRecvError::Disconnected) => None,
        };
        self.state = match gathered {
            Some(mut filter) => {
                written.iter().for_each(|id| filter.insert(*id));
                State::All(filter)
            }
            None => State::Unknown,
        };
    }

    /// Records ids just written to the log.
    pub(crate) fn add(&mut self, ids: impl Iterator<Item = u128>) {
        match &mut self.state {
            State::Gathering { written, .. } => written.extend(ids),
            State::All(filter) => ids.for_each(|id| filter.insert(id)),
            State::NotYet { written } => *written += ids.count() as u64,
            State::Unknown => {}
        }
    }

    /// `false` only if `id` is certainly not in the log.
    pub(crate) fn may_hold(&self, id: u128) -> bool {
        match &self.state {
            State::All(filter) => filter.may_contain(id),
            _ => true,
        }
    }
}

impl Gatherer {
    fn start(tree: sled::Tree, events: u64) -> std::io::Result<Gatherer> {
        let (send, gathered) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tl-log-ids".to_owned())
            .spawn(move || {
                let mut filter = IdFilter::with_capacity(events.saturating_mul(2));
                for bucket in EVENT_IDS.all(&tree) {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let ids = bucket
                        .ok()
                        .and_then(|(key, value)| EVENT_IDS.ids(&key, &value).ok());
                    let Some(ids) = ids else {
                        let _ = send.send(None);
                        return;
                    };
                    ids.into_iter().for_each(|id| filter.insert(id));
                }
                let _ = send.send(Some(filter));
            })?;
        Ok(Gatherer {
            gathered,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Gatherer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How many events appended since opening start the gathering.
pub(crate) const GATHER_AFTER: u64 = 1_000;

/// A Bloom filter of 128-bit ids that grows: a list of blocked Bloom
/// filters, each twice the one before, the newest taking new ids. An id
/// sets [`BITS_SET`] bits of one 512-bit block (one cache line), so a
/// lookup reads a line per level.
pub(crate) struct IdFilter {
    levels: Vec<Level>,
}

struct Level {
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
    fn new(capacity: u64) -> Level {
        let blocks = capacity.saturating_mul(BITS_PER_ID).div_ceil(512).max(1);
        Level {
            blocks: vec![[0; 8]; usize::try_from(blocks).unwrap_or(usize::MAX)],
            len: 0,
            capacity,
        }
    }

    /// The block of `id` and the bits it sets there, as (word, mask).
    fn bits(&self, id: u128) -> (usize, impl Iterator<Item = (usize, u64)> + use<>) {
        // Both halves through the finalizer: ids need not be random
        // (`buckets.rs`).
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

    fn insert(&mut self, id: u128) {
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

    fn may_contain(&self, id: u128) -> bool {
        let (block, mut bits) = self.bits(id);
        self.blocks.get(block).is_some_and(|words| {
            bits.all(|(word, mask)| words.get(word).is_some_and(|w| w & mask != 0))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use crate::stream_index::temporary_tree as tree;

    /// Ids spread as a service's are not: numbered, time-ordered, random.
    fn ids(n: u128) -> impl Iterator<Item = u128> {
        (1..=n).flat_map(|i| {
            [
                i,
                (0x0190_1234_5678 << 80) | i,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            ]
        })
    }

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
    fn gathering_finds_every_id_in_the_buckets_and_those_written_meanwhile() {
        let events = tree();
        let (before, during): (Vec<u128>, Vec<u128>) = ids(1_000).partition(|id| id % 2 == 0);
        for (position, id) in (1..).zip(&before) {
            EVENT_IDS.add(&events, *id, &[position]).unwrap();
        }
        let mut known = KnownIds::new();
        known.catch_up(&events, before.len() as u64);
        assert!(
            matches!(known.state, State::NotYet { written: 0 }),
            "no gathering before {GATHER_AFTER} events are written"
        );
        // Written before gathering, so in sled by then: counted, not kept.
        known.add(before.iter().copied());
        known.add(before.iter().copied());
        assert!(
            known.may_hold(during[0]),
            "nothing is known before gathering"
        );
        known.catch_up(&events, before.len() as u64);
        assert!(matches!(known.state, State::Gathering { .. }));
        // Written while gathering: whether the thread sees them in their
        // buckets or not, the writer keeps them until the filter arrives.
        for id in &during {
            known.add(std::iter::once(*id));
        }
        assert!(known.may_hold(u128::MAX - 1), "no answer while gathering");
        gathered(&mut known, &events);
        assert!(matches!(known.state, State::All(_)));
        assert!(before.iter().chain(&during).all(|id| known.may_hold(*id)));
        let strangers = (1..=10_000u128).map(|i| i << 100 | 7);
        assert!(strangers.filter(|id| known.may_hold(*id)).count() < 300);
        // After gathering, written ids go straight into the filter.
        known.add(std::iter::once(u128::MAX - 1));
        assert!(known.may_hold(u128::MAX - 1));
    }

    fn gathered(known: &mut KnownIds, events: &sled::Tree) {
        while let State::Gathering { .. } = known.state {
            std::thread::sleep(std::time::Duration::from_millis(1));
            known.catch_up(events, 0);
        }
    }

    #[test]
    fn a_damaged_bucket_leaves_every_lookup_to_sled() {
        let events = tree();
        EVENT_IDS.add(&events, 1, &[1]).unwrap();
        events.insert([b'I', 0, 0, 0], &[1u8; 20][..]).unwrap();
        let mut known = KnownIds::new();
        known.add(0..u128::from(GATHER_AFTER));
        known.catch_up(&events, 1);
        gathered(&mut known, &events);
        assert!(known.may_hold(2));
        assert!(matches!(known.state, State::Unknown));
    }
}
