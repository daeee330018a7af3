//! Following the head across processes: every append's transaction
//! notifies [`CHANNEL`], and a thread listening there reads the head when
//! woken, and every poll interval whether woken or not, so that a lost
//! notification (a dropped connection, a server that does not notify)
//! costs latency, never an event. The same thread listens on
//! [`LEASES`], where replicas say they renewed or applied, and wakes the
//! removals waiting for them (`lease.rs`), which poll too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tokenledger_store::Head;

use crate::connect::{Fault, Server};

/// The channel every append notifies on commit.
pub(crate) const CHANNEL: &str = "tokenledger_head";

/// The channel every change of a lease notifies.
pub(crate) const LEASES: &str = "tokenledger_leases";

/// The head as this process last saw it, and the waiters for it.
pub(crate) struct Known {
    head: Mutex<Head>,
    grew: Condvar,
    /// How many lease notifications came, and the waiters for the next.
    leases: Mutex<u64>,
    leases_changed: Condvar,
    pub(crate) stop: AtomicBool,
}

impl Known {
    pub(crate) fn new(head: Head) -> Known {
        Known {
            head: Mutex::new(head),
            grew: Condvar::new(),
            leases: Mutex::new(0),
            leases_changed: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// Moves the head forward (never back) and wakes its waiters.
    pub(crate) fn advance(&self, head: Head) {
        let mut known = self.head.lock();
        if head.position > known.position {
            *known = head;
            self.grew.notify_all();
        }
    }

    pub(crate) fn get(&self) -> Head {
        *self.head.lock()
    }

    /// The count of lease notifications so far.
    pub(crate) fn lease_changes(&self) -> u64 {
        *self.leases.lock()
    }

    /// Waits until a lease notification comes after the `seen`th, or
    /// `timeout` passes.
    pub(crate) fn wait_for_lease_change(&self, seen: u64, timeout: Duration) {
        let mut changes = self.leases.lock();
        if *changes == seen {
            let _ = self
                .leases_changed
                .wait_while_for(&mut changes, |c| *c == seen, timeout);
        }
    }

    fn lease_changed(&self) {
        *self.leases.lock() += 1;
        self.leases_changed.notify_all();
    }

    /// Waits until the head reaches `position` or `timeout` passes.
    pub(crate) fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        let mut head = self.head.lock();
        if head.position < position {
            let _ = self
                .grew
                .wait_while_for(&mut head, |h| h.position < position, timeout);
        }
        head.position
    }
}

/// Reads the head row. A row that does not convert is an error, never a
/// head of 0: a reader told the log is shorter than it is could take a
/// removal for absent.
pub(crate) fn read_head(client: &mut Client) -> Result<Head, Fault> {
    let row = client.query_one(
        "SELECT position, hash FROM tokenledger_head WHERE id = 0",
        &[],
    )?;
    head_of(&row)
}

/// The head a row of `tokenledger_head` holds (its position and hash
/// first), refused if they do not convert.
pub(crate) fn head_of(row: &postgres::Row) -> Result<Head, Fault> {
    let position: i64 = row.try_get(0)?;
    let hash: &[u8] = row.try_get(1)?;
    Ok(Head {
        position: u64::try_from(position)
            .map_err(|_| Fault::Malformed(format!("the head row's position is {position}")))?,
        hash: hash.try_into().map_err(|_| {
            Fault::Malformed(format!("the head row's hash has {} bytes", hash.len()))
        })?,
    })
}

/// The longest the thread waits before it looks at `stop`.
const SLICE: Duration = Duration::from_millis(200);

/// Listens and polls until `known.stop`; reconnects after any failure.
pub(crate) fn run(server: &Server, known: &Arc<Known>, poll: Duration) {
    let mut listening: Option<Client> = None;
    let mut last_read = Instant::now();
    while !known.stop.load(Ordering::Acquire) {
        let client = match &mut listening {
            Some(client) if !client.is_closed() => client,
            _ => {
                listening = listen(server);
                if listening.is_none() {
                    std::thread::sleep(poll.min(SLICE));
                }
                continue;
            }
        };
        let (woken, head_moved, leases_changed) = {
            let mut notifications = client.notifications();
            let woken = notifications.timeout_iter(poll.min(SLICE)).next();
            let mut head_moved = false;
            let mut leases_changed = false;
            if let Ok(Some(first)) = &woken {
                head_moved |= first.channel() == CHANNEL;
                leases_changed |= first.channel() == LEASES;
            }
            // One read covers every notification already here.
            let mut more = notifications.iter();
            while let Ok(Some(notification)) = more.next() {
                head_moved |= notification.channel() == CHANNEL;
                leases_changed |= notification.channel() == LEASES;
            }
            (woken, head_moved, leases_changed)
        };
        if leases_changed {
            known.lease_changed();
        }
        // Woken for the head, or the poll interval passed: the head is read.
        let due = match woken {
            Ok(Some(_)) => head_moved || last_read.elapsed() >= poll,
            Ok(None) => last_read.elapsed() >= poll,
            Err(_) => {
                listening = None;
                continue;
            }
        };
        if !due {
            continue;
        }
        last_read = Instant::now();
        match read_head(client) {
            Ok(head) => known.advance(head),
            Err(_) => listening = None,
        }
    }
}

fn listen(server: &Server) -> Option<Client> {
    let mut client = server.connect_named("tokenledger-watch").ok()?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {LEASES}"))
        .ok()?;
    Some(client)
}
