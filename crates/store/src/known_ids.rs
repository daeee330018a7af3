//! What the writer knows of the event ids in the log without asking
//! sled: a Bloom filter of every id, so that an append of new events,
//! the usual case, skips the lookup that checks whether it is a retry.
//!
//! Why: that lookup, then a sled `get` of the id's bucket (layout 6),
//! took about 15 µs of the writer's time before each group's journal
//! write, on the path of every append (perf); a filter answers in well
//! under a microsecond. A "maybe" still asks the index of event ids
//! (`segments.rs`), so a false positive costs a lookup there, and a
//! retry is found as before. In five alternating pairs of runs,
//! `append/single_durable` went from a median of 219 to 203 µs and
//! `append/group_commit_8` from 103 to 92 µs an event. The index's own
//! segments have filters too, but one each: a lookup asks all of them,
//! about 140 for a 5 M-event log, where this filter asks a few levels.
//!
//! The filter must hold every id in the log before it may say "no". A
//! thread of its own gathers it from the index's segments once
//! [`GATHER_AFTER`] events have been appended since opening: opening
//! costs nothing, a log that is only read or rarely written never
//! gathers, and no append waits for it. The writer hands it the ids not
//! yet in a segment when gathering starts, keeps the ids of every group
//! it writes meanwhile, and adds them when the gathered filter arrives.
//! Together they cover the log: segments are only added while the log is
//! open, and an id moves into one only from among those handed over or
//! written since.
//!
//! Gathering a 5 M-event log's 262,144 buckets (layout 6) took 1.1 s
//! with sled's pages in memory and 8.3 s without (a throwaway test); a
//! segment's chunks hold 128 ids each, in key order, so gathering reads
//! about 40,000 keys rather than 262,144. In steps on the writer, between
//! appends, a step of 64 buckets took 0.27 ms on average with the pages
//! in memory, and up to 51 ms without: an append arriving meanwhile would
//! have waited that long.
//!
//! Memory: 12 bits an id, sized at twice the log's events when
//! gathering starts and doubled when full: about 15 MB for a 5 M-event
//! log. Reading the index also brings it into sled's cache (with buckets,
//! on the 5 M-event bench log, the process grew from 440 to 600 MiB in
//! the 10 s after gathering started). Hence [`GATHER_AFTER`]: a service
//! that writes a few events a day saves little by skipping the lookup,
//! and would hold the index in memory early.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::filter::IdFilter;
use crate::segments::EVENT_IDS;

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
    /// written since opening, keeping the ids `unsettled` gives (those not
    /// yet in a segment of the index, which the thread may not find);
    /// later, takes the gathered filter if it has arrived, with the ids
    /// written since gathering started.
    pub(crate) fn catch_up(
        &mut self,
        tree: &sled::Tree,
        events: u64,
        unsettled: impl FnOnce() -> Vec<u128>,
    ) {
        let State::Gathering { thread, written } = &mut self.state else {
            if let State::NotYet { written } = self.state
                && written >= GATHER_AFTER
            {
                self.state = match Gatherer::start(tree.clone(), events) {
                    Ok(thread) => State::Gathering {
                        thread,
                        written: unsettled(),
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
                for chunk in EVENT_IDS.all_entries(&tree) {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(entries) = chunk else {
                        let _ = send.send(None);
                        return;
                    };
                    entries.into_iter().for_each(|(id, _)| filter.insert(id));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use crate::filter::test_ids as ids;
    use crate::segments::Index;
    use crate::stream_index::temporary_tree as tree;

    #[test]
    fn gathering_finds_every_id_in_the_segments_and_those_written_meanwhile() {
        let events = tree();
        let (before, during): (Vec<u128>, Vec<u128>) = ids(1_000).partition(|id| id % 2 == 0);
        // Most of the earlier ids are in a segment, the last not yet.
        let (settled, unsettled) = before.split_at(1_000);
        let mut index = Index::load(&events, EVENT_IDS).unwrap();
        for (position, id) in (1..).zip(settled) {
            index.add(*id, position);
        }
        let mut batch = sled::Batch::default();
        index.write_segment(settled.len() as u64, &mut batch);
        events.apply_batch(batch).unwrap();
        let unsettled = || unsettled.to_vec();
        let mut known = KnownIds::new();
        known.catch_up(&events, before.len() as u64, unsettled);
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
        known.catch_up(&events, before.len() as u64, unsettled);
        assert!(matches!(known.state, State::Gathering { .. }));
        // Written while gathering: whether the thread sees them in a
        // segment or not, the writer keeps them until the filter arrives.
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
            known.catch_up(events, 0, Vec::new);
        }
    }

    #[test]
    fn a_damaged_segment_leaves_every_lookup_to_sled() {
        let events = tree();
        let mut index = Index::load(&events, EVENT_IDS).unwrap();
        index.add(1, 1);
        let mut batch = sled::Batch::default();
        index.write_segment(1, &mut batch);
        events.apply_batch(batch).unwrap();
        let (key, _) = events.scan_prefix(b"JI").next().unwrap().unwrap();
        events.insert(key, &[1u8; 20][..]).unwrap();
        let mut known = KnownIds::new();
        known.add(0..u128::from(GATHER_AFTER));
        known.catch_up(&events, 1, Vec::new);
        gathered(&mut known, &events);
        assert!(known.may_hold(2));
        assert!(matches!(known.state, State::Unknown));
    }
}
