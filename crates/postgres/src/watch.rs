//! Following the head across processes: every append's transaction
//! notifies [`CHANNEL`], and a thread listening there reads the head when
//! woken, and every poll interval whether woken or not, so that a lost
//! notification (a dropped connection, a server that does not notify)
//! costs latency, never an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tokenledger_store::Head;

use crate::connect::Server;

/// The channel every append notifies on commit.
pub(crate) const CHANNEL: &str = "tokenledger_head";

/// The head as this process last saw it, and the waiters for it.
pub(crate) struct Known {
    head: Mutex<Head>,
    grew: Condvar,
    pub(crate) stop: AtomicBool,
}

impl Known {
    pub(crate) fn new(head: Head) -> Known {
        Known {
            head: Mutex::new(head),
            grew: Condvar::new(),
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

/// Reads the head row.
pub(crate) fn read_head(client: &mut Client) -> Result<Head, postgres::Error> {
    let row = client.query_one(
        "SELECT position, hash FROM tokenledger_head WHERE id = 0",
        &[],
    )?;
    let position: i64 = row.get(0);
    let hash: &[u8] = row.get(1);
    Ok(Head {
        position: u64::try_from(position).unwrap_or(0),
        hash: hash.try_into().unwrap_or_default(),
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
        let woken = {
            let mut notifications = client.notifications();
            let woken = notifications.timeout_iter(poll.min(SLICE)).next();
            // One read covers every notification already here.
            let mut more = notifications.iter();
            while let Ok(Some(_)) = more.next() {}
            woken
        };
        // Woken, or the poll interval passed: the head is read.
        let due = match woken {
            Ok(Some(_)) => true,
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
    client.batch_execute(&format!("LISTEN {CHANNEL}")).ok()?;
    Some(client)
}
