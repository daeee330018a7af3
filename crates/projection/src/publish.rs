//! Publishing the state to readers that never lock and never wait.
//!
//! The state is kept twice (the `left-right` crate): readers read one copy
//! while the single writer applies events to the other; publishing swaps
//! them, waits until no reader is still in the old copy, and applies the
//! same events to it. Applying an event costs what the event changes (done
//! twice), never a copy of the whole state; readers pay two atomic
//! increments per read.
//!
//! INVARIANT (publish-before-return): once [`Projection::publish`] returns,
//! every read that starts afterwards, on any thread, sees everything
//! applied before it. The ledger relies on it for immediate revocation.

use left_right::{Absorb, ReadHandle, ReadHandleFactory, WriteHandle};
use tokenledger_events::Envelope;

use crate::state::State;

impl Absorb<Envelope> for State {
    fn absorb_first(&mut self, envelope: &mut Envelope, _: &Self) {
        self.apply(envelope);
    }

    fn absorb_second(&mut self, envelope: Envelope, _: &Self) {
        self.apply(&envelope);
    }

    fn sync_with(&mut self, first: &Self) {
        self.clone_from(first);
    }
}

/// The writing side of the projection; there is one.
pub struct Projection {
    handle: WriteHandle<State, Envelope>,
}

/// What creates readers; cheap to clone, `Send` and `Sync`.
#[derive(Clone)]
pub struct Readers {
    factory: ReadHandleFactory<State>,
}

/// One thread's reader. `Send`, not `Sync`: each thread makes its own from
/// [`Readers`].
pub struct Reader {
    handle: ReadHandle<State>,
}

impl Projection {
    /// An empty projection and the way to read it.
    pub fn new() -> (Projection, Readers) {
        let (write, read) = left_right::new_from_empty::<State, Envelope>(State::new());
        let readers = Readers {
            factory: read.factory(),
        };
        (Projection { handle: write }, readers)
    }

    /// Applies an event to the writer's copy; readers see it once published.
    pub fn apply(&mut self, envelope: Envelope) {
        self.handle.append(envelope);
    }

    /// Makes everything applied so far visible to every read that starts
    /// after this returns.
    pub fn publish(&mut self) {
        self.handle.publish();
    }

    /// Reads the published state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Option<R> {
        self.handle.enter().map(|state| f(&state))
    }
}

impl Readers {
    /// A reader for the calling thread.
    pub fn reader(&self) -> Reader {
        Reader {
            handle: self.factory.handle(),
        }
    }
}

impl Reader {
    /// Reads one consistent published state; `None` once the projection
    /// has been dropped.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Option<R> {
        self.handle.enter().map(|state| f(&state))
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

    #[test]
    fn readers_see_what_was_published_and_nothing_before() {
        let (mut projection, readers) = Projection::new();
        let reader = readers.reader();
        projection.apply(company_created(1));
        assert_eq!(reader.read(State::position), Some(0));
        projection.publish();
        assert_eq!(reader.read(State::position), Some(1));
        projection.apply(company_created(2));
        projection.publish();
        projection.apply(company_created(3));
        projection.publish();
        // Both copies have every event, each applied once.
        assert_eq!(reader.read(State::position), Some(3));
        assert_eq!(projection.read(State::position), Some(3));
        assert!(
            reader
                .read(|s| s.company(CompanyId::from_u128(2)).is_some())
                .unwrap()
        );
        drop(projection);
        assert_eq!(reader.read(State::position), None);
    }
}
