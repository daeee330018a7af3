//! Connections for reads, kept between uses: a read takes one (or opens
//! one), and gives it back unless it failed with the connection.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::Client;

use crate::connect::{Fault, Server};

/// Idle connections kept at most; more readers at once open more.
const IDLE: usize = 8;

/// How long a read waits for a server that does not take its connection.
const REACH_FOR: Duration = Duration::from_secs(15);

pub(crate) struct Pool {
    server: Server,
    idle: Mutex<Vec<Client>>,
}

impl Pool {
    pub(crate) fn new(server: Server, first: Client) -> Pool {
        Pool {
            server,
            idle: Mutex::new(vec![first]),
        }
    }

    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Runs `work` on a connection; an error says what failed and where.
    /// Only reads, and lease statements that may run twice (`lease.rs`),
    /// come here: one that finds its idle connection closed (the server
    /// restarted, or ended it) is run once more on a new one.
    pub(crate) fn with<T, E: Into<Fault>>(
        &self,
        work: impl FnMut(&mut Client) -> Result<T, E>,
    ) -> Result<T, String> {
        self.run(work, Duration::ZERO)
    }

    /// As [`Pool::with`], for reads: a server that does not take the
    /// connection (restarting) is asked again, backing off, for up to
    /// [`REACH_FOR`], as a failed `COMMIT`'s outcome is looked for
    /// (`append.rs`), so that reading back an append acknowledged just
    /// before a restart does not close the ledger. Lease statements keep
    /// [`Pool::with`]: the bounds on a removal's wait rest on time.
    pub(crate) fn reading<T, E: Into<Fault>>(
        &self,
        work: impl FnMut(&mut Client) -> Result<T, E>,
    ) -> Result<T, String> {
        self.run(work, REACH_FOR)
    }

    fn run<T, E: Into<Fault>>(
        &self,
        mut work: impl FnMut(&mut Client) -> Result<T, E>,
        patience: Duration,
    ) -> Result<T, String> {
        let taken = self.idle.lock().pop();
        let (mut client, fresh) = match taken {
            Some(client) if !client.is_closed() => (client, false),
            _ => (self.connect(patience)?, true),
        };
        let mut outcome = work(&mut client);
        if outcome.is_err() && client.is_closed() && !fresh {
            client = self.connect(patience)?;
            outcome = work(&mut client);
        }
        if !client.is_closed() {
            let mut idle = self.idle.lock();
            if idle.len() < IDLE {
                idle.push(client);
            }
        }
        outcome.map_err(|error| {
            format!(
                "PostgreSQL at {} failed: {}",
                self.server.endpoint(),
                error.into().describe()
            )
        })
    }

    fn connect(&self, patience: Duration) -> Result<Client, String> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match self.server.connect() {
                Ok(client) => return Ok(client),
                Err(error) if started.elapsed() + pause > patience => return Err(error.to_string()),
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
