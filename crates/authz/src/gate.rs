//! Whether a replica may allow now: the end of its lease on its own
//! monotonic clock, checked by every decision.
//!
//! A ledger on PostgreSQL holds a lease (`ledger/follower.rs`); a removal
//! on another replica waits for it to apply the removal, or for the lease
//! to end. So once the lease may have ended, this replica's state may lack
//! a removal that has returned elsewhere, and it refuses everything as a
//! closed ledger does (503) until it holds a lease again and has caught up.
//! The check is two atomic loads (the lease and its end) and one read of
//! the monotonic clock: the deadline is checked by the decision itself,
//! not by a thread that might be paused with the rest of the process and
//! wake after the requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The end of the lease this replica holds, if any.
///
/// A decision checks the gate before it reads the state and again before
/// it allows, and both checks must find the same lease: a decision that
/// began under a lease that then lapsed, and that was paused past a new
/// lease's taking, read a state that may lack a removal which returned
/// elsewhere between the two.
pub(crate) struct Gate {
    origin: Instant,
    /// Nanoseconds after `origin` until which decisions may allow; 0: shut.
    until: AtomicU64,
    /// Which lease: counted up each time one is taken afresh, before the
    /// gate opens on it. Renewals keep it.
    lease: AtomicU64,
}

impl Gate {
    /// A gate shut until a lease is granted.
    #[cfg_attr(
        not(any(feature = "postgres", test)),
        expect(dead_code, reason = "only a ledger on PostgreSQL holds a lease")
    )]
    pub(crate) fn shut() -> Gate {
        Gate {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            lease: AtomicU64::new(0),
        }
    }

    /// Whether decisions may allow now.
    #[inline]
    pub(crate) fn allows(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        // Shut: no clock read.
        until != 0 && nanos(self.origin.elapsed().as_nanos()) < until
    }

    /// The lease a decision begins under, if decisions may allow now.
    #[inline]
    pub(crate) fn lease(&self) -> Option<u64> {
        let lease = self.lease.load(Ordering::Acquire);
        self.allows().then_some(lease)
    }

    /// Whether decisions may allow now under `lease`, the one a decision
    /// began under. The gate is read first: a gate opened on a new lease
    /// shows that lease's number with it (Acquire after Release).
    #[inline]
    pub(crate) fn still(&self, lease: u64) -> bool {
        self.allows() && self.lease.load(Ordering::Acquire) == lease
    }

    /// Allows until `until`, on a lease taken afresh: decisions begun
    /// under an earlier one are not vouched for under it.
    #[cfg_attr(
        not(any(feature = "postgres", test)),
        expect(dead_code, reason = "only a ledger on PostgreSQL holds a lease")
    )]
    pub(crate) fn open_anew(&self, until: Instant) {
        self.lease.fetch_add(1, Ordering::AcqRel);
        self.open_until(until);
    }

    /// Allows until `until`, on the lease held (renewed). Called only once
    /// the state readers see has applied everything a removal that could
    /// still return without this replica might need (Release: a reader
    /// that sees the gate open sees that state).
    pub(crate) fn open_until(&self, until: Instant) {
        let at = nanos(until.saturating_duration_since(self.origin).as_nanos());
        self.until.store(at.max(1), Ordering::Release);
    }

    /// Allows nothing until opened again.
    #[cfg_attr(
        not(any(feature = "postgres", test)),
        expect(dead_code, reason = "only a ledger on PostgreSQL holds a lease")
    )]
    pub(crate) fn close(&self) {
        self.until.store(0, Ordering::Release);
    }
}

fn nanos(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_gate_allows_until_its_deadline_and_not_once_closed() {
        let gate = Gate::shut();
        assert!(!gate.allows());
        gate.open_until(Instant::now() + Duration::from_secs(60));
        assert!(gate.allows());
        gate.close();
        assert!(!gate.allows());
        gate.open_until(Instant::now() + Duration::from_millis(20));
        assert!(gate.allows());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!gate.allows(), "the deadline passed");
        // A deadline already past (or before the gate was made) is shut.
        gate.open_until(Instant::now() - Duration::from_millis(1));
        assert!(!gate.allows());
    }

    #[test]
    fn a_decision_is_vouched_for_only_under_the_lease_it_began_under() {
        let gate = Gate::shut();
        assert_eq!(gate.lease(), None);
        gate.open_anew(Instant::now() + Duration::from_secs(60));
        let first = gate.lease().unwrap();
        assert!(gate.still(first));
        // Renewed: the same lease.
        gate.open_until(Instant::now() + Duration::from_secs(90));
        assert!(gate.still(first));
        // Lapsed, then taken afresh: open again, but not for `first`.
        gate.close();
        assert!(!gate.still(first));
        gate.open_anew(Instant::now() + Duration::from_secs(60));
        assert!(gate.allows());
        assert!(!gate.still(first));
        assert!(gate.still(gate.lease().unwrap()));
    }
}
