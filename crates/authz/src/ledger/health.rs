//! Health, and waiting for a position: whether the ledger answers from a
//! state that has caught up with its log, and a wait until the state
//! readers see has applied a position a client already saw (a receipt's
//! position, sent back as a consistency token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Ledger, LedgerError};

/// Whether a service in front of the ledger should take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Ready to answer: open, holding a lease where the log is shared with
    /// other processes, and the state readers see has applied every event
    /// the log holds (events being recorded by a command that has not
    /// returned yet aside). Never ready once closed.
    pub ready: bool,
    /// The log's durable head.
    pub head: u64,
    /// The position of the state readers see.
    pub applied: u64,
    /// The position of the newest checkpoint written or loaded (0: none).
    pub last_checkpoint: u64,
    /// Why the ledger closed, if it has: a command's outcome became
    /// unknown (a poisoned log, an append not read back).
    pub closed: Option<String>,
}

/// The position of the state readers see, and the way to wait for it.
pub(crate) struct Applied {
    position: Mutex<u64>,
    changed: Condvar,
    /// The head a group being recorded will reach (0: none), so that a
    /// health check does not call a ledger behind while a command it has
    /// not answered yet is on its way.
    recording: AtomicU64,
    #[cfg(feature = "tokio")]
    watch: tokio::sync::watch::Sender<u64>,
}

impl Applied {
    pub(crate) fn new(position: u64) -> Applied {
        Applied {
            position: Mutex::new(position),
            changed: Condvar::new(),
            recording: AtomicU64::new(0),
            #[cfg(feature = "tokio")]
            watch: tokio::sync::watch::Sender::new(position),
        }
    }

    /// A group will take the head to `position`.
    pub(crate) fn recording(&self, position: u64) {
        self.recording.store(position, Ordering::SeqCst);
    }

    /// Readers see `position` now (called after publishing).
    pub(crate) fn set(&self, position: u64) {
        *self.position.lock() = position;
        self.recording.store(0, Ordering::SeqCst);
        self.changed.notify_all();
        #[cfg(feature = "tokio")]
        self.watch.send_replace(position);
    }

    /// Wakes every waiter, to find the ledger closed.
    pub(crate) fn wake_all(&self) {
        self.recording.store(0, Ordering::SeqCst);
        // Under the lock: a waiter looks at whether the ledger is closed
        // and starts waiting with it held, so it has either seen the
        // ledger closed or is waiting now, and is woken.
        let _position = self.position.lock();
        self.changed.notify_all();
        #[cfg(feature = "tokio")]
        self.watch.send_modify(|_| {});
    }

    pub(crate) fn get(&self) -> u64 {
        *self.position.lock()
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch.subscribe()
    }
}

impl Ledger {
    /// Whether the service should take requests (see [`Health`]).
    pub fn health(&self) -> Health {
        // The head first: any group that moved it since is either still
        // marked as recording, or published.
        let head = self.log.head().position;
        let recording = self.applied.recording.load(Ordering::SeqCst);
        let applied = self.applied.get();
        let closed = self.closed.get().cloned();
        Health {
            ready: closed.is_none()
                && self.gate().is_none_or(|gate| gate.allows())
                && (applied >= head || recording >= head),
            head,
            applied,
            last_checkpoint: self.last_checkpoint(),
            closed,
        }
    }

    /// Why the ledger closed, if it has (as [`Health::closed`]), without
    /// reading the log: it never blocks.
    pub fn why_closed(&self) -> Option<&str> {
        self.closed.get().map(String::as_str)
    }

    /// A watch of the position readers see, for async waits.
    #[cfg(feature = "tokio")]
    pub(crate) fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The position of the state readers see.
    pub fn applied_position(&self) -> u64 {
        self.applied.get()
    }

    /// The newest checkpoint's position (0: none), as
    /// [`Health::last_checkpoint`], without reading the log.
    pub fn last_checkpoint(&self) -> u64 {
        self.last_checkpoint.load(Ordering::Relaxed)
    }

    /// Waits until the state readers see has applied `position` (a
    /// receipt's, sent back by a client as a consistency token), for at
    /// most `timeout`; returns the position applied. A decision made after
    /// it returns sees everything up to `position`. Refused once the
    /// ledger is closed; on timeout, [`LedgerError::BeyondHead`] if the log
    /// has not reached `position` either, else [`LedgerError::NotApplied`].
    pub fn wait_for_position(&self, position: u64, timeout: Duration) -> Result<u64, LedgerError> {
        let deadline = Instant::now() + timeout;
        let mut applied = self.applied.position.lock();
        loop {
            self.refuse_if_closed()?;
            if *applied >= position {
                return Ok(*applied);
            }
            if self
                .applied
                .changed
                .wait_until(&mut applied, deadline)
                .timed_out()
            {
                self.refuse_if_closed()?;
                if *applied >= position {
                    return Ok(*applied);
                }
                let reached = *applied;
                // The log's head may be a query (PostgreSQL): not asked
                // with the lock the writer publishes under held.
                drop(applied);
                return Err(self.not_applied(position, reached));
            }
        }
    }

    /// Why a wait for `position` timed out with `applied` reached.
    pub(crate) fn not_applied(&self, position: u64, applied: u64) -> LedgerError {
        // A position no receipt of this log has given yet: say so, rather
        // than that the ledger is slow.
        let head = self.log.head().position;
        if position > head {
            return LedgerError::BeyondHead { position, head };
        }
        LedgerError::NotApplied { position, applied }
    }
}
