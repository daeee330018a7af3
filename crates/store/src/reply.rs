//! The writer's answer to one append: a one-shot slot the appender parks
//! on.
//!
//! Why not a crossbeam channel, as before: its `recv` spins and then
//! yields before it parks. With eight appenders waiting on two cores,
//! that took about a quarter of all CPU time in `append/group_commit_8`
//! (perf), CPU the writer needed. Here the appender parks at once.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::log::AppendError;

/// What an append comes back with.
pub(crate) type Outcome = Result<Vec<u64>, AppendError>;

struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

/// The writer's end. Dropped unanswered (the log closing), it answers
/// [`AppendError::Closed`], so an appender never waits forever.
pub(crate) struct Reply(Option<Arc<Slot>>);

/// The appender's end.
pub(crate) struct Awaited(Arc<Slot>);

/// A new slot, with its two ends.
pub(crate) fn reply() -> (Reply, Awaited) {
    let slot = Arc::new(Slot {
        outcome: Mutex::new(None),
        ready: Condvar::new(),
    });
    (Reply(Some(Arc::clone(&slot))), Awaited(slot))
}

impl Reply {
    /// Answers the append.
    pub(crate) fn send(mut self, outcome: Outcome) {
        self.put(outcome);
    }

    /// Answers once: `send` takes the slot, so that `drop` after it does
    /// not lock the slot again while the woken appender may hold it.
    fn put(&mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            *slot.outcome.lock() = Some(outcome);
            slot.ready.notify_one();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.put(Err(AppendError::Closed));
    }
}

impl Awaited {
    /// Parks until the append is answered.
    pub(crate) fn wait(self) -> Outcome {
        let mut slot = self.0.outcome.lock();
        self.0.ready.wait_while(&mut slot, |slot| slot.is_none());
        slot.take().unwrap_or(Err(AppendError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_is_kept_and_a_dropped_reply_answers_closed() {
        let (answer, awaited) = reply();
        let waiting = std::thread::spawn(move || awaited.wait());
        answer.send(Ok(vec![7]));
        assert_eq!(waiting.join().ok(), Some(Ok(vec![7])));

        let (answer, awaited) = reply();
        drop(answer);
        assert_eq!(awaited.wait(), Err(AppendError::Closed));
    }
}
