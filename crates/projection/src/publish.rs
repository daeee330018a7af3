//! Publishing the state to readers that never lock and never wait.
//!
//! The state is kept twice. Readers load the published copy through an
//! `ArcSwap` (no lock, no shared counter bumped on its fast path). The single writer applies events to its own copy and
//! remembers them; publishing swaps the two copies, waits until no reader
//! still holds the old one (`Arc::get_mut` succeeds only then: `ArcSwap`
//! turns every reader's outstanding borrow of the old pointer into a
//! counted reference before `swap` returns), and applies the remembered
//! events to it, so it becomes the writer's copy again. An event costs what
//! it changes, twice; nothing copies the whole state but the first event
//! after a start: a projection starts with one copy shared by the writer
//! and the readers, and the first `apply` copies it (`Arc::make_mut`), so
//! opening from a checkpoint pays for one copy, and a ledger that is only
//! read keeps one.
//!
//! INVARIANT (publish-before-return): once [`Projection::publish`] returns,
//! every read that starts afterwards, on any thread, sees everything
//! applied before it. The ledger relies on it for immediate revocation.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokenledger_events::Envelope;

use crate::state::State;

/// The writing side of the projection; there is one.
pub struct Projection {
    published: Arc<ArcSwap<State>>,
    /// The writer's copy. INVARIANT (writer-unique): once an event has been
    /// applied, no reader holds it, so `Arc::get_mut` on it succeeds.
    /// Before that it is the published copy itself.
    writer: Arc<State>,
    /// Events applied to the writer's copy and not yet to the published one.
    unpublished: Vec<Envelope>,
}

/// Reads the published state; cheap to clone, `Send` and `Sync`.
#[derive(Clone)]
pub struct Readers {
    published: Arc<ArcSwap<State>>,
}

impl Projection {
    /// An empty projection and the way to read it.
    pub fn new() -> (Projection, Readers) {
        Projection::starting_from(State::new())
    }

    /// A projection that starts from `state` (a checkpoint's) rather than
    /// from nothing, and the way to read it.
    pub fn starting_from(state: State) -> (Projection, Readers) {
        let writer = Arc::new(state);
        let published = Arc::new(ArcSwap::new(Arc::clone(&writer)));
        let readers = Readers {
            published: Arc::clone(&published),
        };
        let projection = Projection {
            published,
            writer,
            unpublished: Vec::new(),
        };
        (projection, readers)
    }

    /// Applies an event to the writer's copy; readers see it once published.
    pub fn apply(&mut self, envelope: Envelope) {
        // Listed before the copy changes: should applying it unwind half
        // way, the copy is known to hold what no reader may see
        // (`has_unpublished`), and a discard puts it back.
        self.unpublished.push(envelope);
        if let Some(envelope) = self.unpublished.last() {
            // By writer-unique this clones only the first time, when the
            // copy is still shared with the readers: they keep it, the
            // writer gets its own.
            Arc::make_mut(&mut self.writer).apply(envelope);
        }
    }

    /// Makes everything applied so far visible to every read that starts
    /// after this returns.
    pub fn publish(&mut self) {
        if self.unpublished.is_empty() {
            return;
        }
        let mut old = self.published.swap(Arc::clone(&self.writer));
        // Wait for the readers still inside the old copy; a read lasts one
        // decision, so the wait is short.
        let stale = loop {
            if let Some(stale) = Arc::get_mut(&mut old) {
                break stale;
            }
            std::thread::yield_now();
        };
        for envelope in self.unpublished.drain(..) {
            stale.apply(&envelope);
        }
        // The published copy is now held by the ArcSwap and its readers
        // only; the old one, brought up to date, is the writer's.
        self.writer = old;
    }

    /// Forgets the events applied since the last publish: the writer's copy
    /// becomes the published one again, shared with the readers until the
    /// next `apply` copies it, as after a start. For a writer that applied
    /// events before they were recorded, to decide what follows them, and
    /// then could not record them. It costs a copy of the state at the next
    /// apply, so it is for failures, not for every command.
    pub fn discard(&mut self) {
        if self.unpublished.is_empty() {
            return;
        }
        self.writer = self.published.load_full();
        self.unpublished.clear();
    }

    /// Whether the writer's copy holds events applied since the last
    /// publish: events whose recording is still under way, or was
    /// interrupted.
    pub fn has_unpublished(&self) -> bool {
        !self.unpublished.is_empty()
    }

    /// Reads the writer's copy: everything applied, published or not; the
    /// closed state once [`Projection::close`] has run.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.writer)
    }

    /// Closes the projection while it lives: every read that starts after
    /// this returns, the readers' and the writer's, sees the closed state
    /// and refuses everything, as after a drop. For a writer that no longer
    /// knows what the log holds (an append it could not confirm), so that
    /// no decision is made against a state that may lack a delete.
    pub fn close(&mut self) {
        let closed = Arc::new(State::closed());
        self.published.store(Arc::clone(&closed));
        // The writer's copy goes too: a state read through it would still
        // allow what the unconfirmed events may have removed. Anything
        // applied to it later starts from the closed state and stays closed.
        self.writer = closed;
        self.unpublished.clear();
    }

    /// Whether [`Projection::close`] has run.
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed()
    }
}

impl Drop for Projection {
    fn drop(&mut self) {
        // Readers that outlive the projection see a closed state, and the
        // decisions made against it refuse everything.
        self.published.store(Arc::new(State::closed()));
    }
}

impl Readers {
    /// Reads one consistent published state with `f`, or answers with
    /// `closed` once the projection has been dropped.
    ///
    /// Both answers are built where the caller wants them: the hot path
    /// returns a decision of about a hundred bytes, and an `Option` around
    /// it cost copies that showed in the benchmarks.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R, closed: impl FnOnce() -> R) -> R {
        let state = self.published.load();
        if state.is_closed() {
            closed()
        } else {
            f(&state)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenledger_events::{Actor, CompanyId, Event, EventId, Name, Timestamp};

    fn company_created(position: u64) -> Envelope {
        let company = CompanyId::from_u128(u128::from(position));
        Envelope {
            position,
            event_id: EventId::from_u128(u128::from(position)),
            recorded_at: Timestamp::from_micros(position),
            actor: Actor::System,
            company,
            event: Event::CompanyCreated {
                company,
                name: Name::new("Acme").unwrap(),
            },
        }
    }

    fn published(readers: &Readers) -> Option<u64> {
        readers.read(|s| Some(s.position()), || None)
    }

    #[test]
    fn readers_see_what_was_published_and_nothing_before() {
        let (mut projection, readers) = Projection::new();
        projection.apply(company_created(1));
        assert_eq!(published(&readers), Some(0));
        assert_eq!(projection.read(State::position), 1);
        projection.publish();
        assert_eq!(published(&readers), Some(1));
        projection.apply(company_created(2));
        projection.publish();
        projection.apply(company_created(3));
        projection.publish();
        // Both copies have every event, each applied once.
        assert_eq!(published(&readers), Some(3));
        assert_eq!(projection.read(State::position), 3);
        assert!(readers.read(|s| s.company(CompanyId::from_u128(2)).is_some(), || false));
        assert!(projection.read(|s| s.company(CompanyId::from_u128(1)).is_some()));
        drop(projection);
        assert_eq!(published(&readers), None);
    }

    #[test]
    fn a_reader_inside_the_old_copy_delays_publish_but_never_sees_it_change() {
        let (mut projection, readers) = Projection::new();
        projection.apply(company_created(1));
        projection.publish();
        let (entered, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        let projection = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                readers.read(
                    |state| {
                        let before = state.position();
                        entered.wait();
                        release.wait();
                        // The writer has swapped and is waiting for this read
                        // to end before it touches this copy.
                        assert_eq!(state.position(), before);
                        Some(before)
                    },
                    || None,
                )
            });
            entered.wait();
            projection.apply(company_created(2));
            let publisher = scope.spawn(move || {
                projection.publish();
                projection
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            release.wait();
            assert_eq!(reader.join().unwrap(), Some(1));
            let projection = publisher.join().unwrap();
            assert_eq!(projection.read(State::position), 2);
            projection
        });
        assert_eq!(published(&readers), Some(2));
        drop(projection);
    }

    #[test]
    fn discarded_events_reach_neither_copy() {
        let (mut projection, readers) = Projection::new();
        projection.apply(company_created(1));
        projection.publish();
        projection.apply(company_created(2));
        projection.discard();
        assert_eq!(projection.read(State::position), 1);
        assert!(projection.read(|s| s.company(CompanyId::from_u128(2)).is_none()));
        // What follows is applied to both copies, once each.
        projection.apply(company_created(2));
        projection.publish();
        projection.apply(company_created(3));
        projection.publish();
        assert_eq!(published(&readers), Some(3));
        assert_eq!(projection.read(State::position), 3);
        assert!(readers.read(|s| s.company(CompanyId::from_u128(2)).is_some(), || false));
    }

    #[test]
    fn a_closed_projection_shows_the_closed_state_to_readers_and_writer() {
        let (mut projection, readers) = Projection::new();
        projection.apply(company_created(1));
        projection.publish();
        let other = readers.clone();
        projection.close();
        assert!(projection.is_closed());
        assert_eq!(published(&readers), None);
        assert_eq!(published(&other), None);
        assert!(projection.read(State::is_closed));
        assert!(projection.read(|s| s.company(CompanyId::from_u128(1)).is_none()));
        // Nothing applied afterwards reopens it.
        projection.apply(company_created(2));
        projection.publish();
        assert_eq!(published(&readers), None);
        assert!(projection.is_closed());
    }
}
