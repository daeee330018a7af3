//! Connections for reads, kept between uses: a read takes one (or opens
//! one), and gives it back unless it failed with the connection.

use parking_lot::Mutex;
use postgres::Client;

use crate::connect::{Fault, Server};

/// Idle connections kept at most; more readers at once open more.
const IDLE: usize = 8;

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
        mut work: impl FnMut(&mut Client) -> Result<T, E>,
    ) -> Result<T, String> {
        let taken = self.idle.lock().pop();
        let (mut client, fresh) = match taken {
            Some(client) if !client.is_closed() => (client, false),
            _ => (
                self.server.connect().map_err(|error| error.to_string())?,
                true,
            ),
        };
        let mut outcome = work(&mut client);
        if outcome.is_err() && client.is_closed() && !fresh {
            client = self.server.connect().map_err(|error| error.to_string())?;
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
}
