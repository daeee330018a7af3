//! The store's `EventLog` conformance suite, on PostgreSQL: each log in a
//! database of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::time::Duration;

use parking_lot::Mutex;
use tokenledger_postgres::{Options, PgLog};
use tokenledger_store::Clock;
use tokenledger_store::conformance::{Backend, Tamper};

use common::Database;

struct Pg {
    server: String,
    databases: Mutex<Vec<Database>>,
}

impl Pg {
    fn new() -> Option<Pg> {
        Some(Pg {
            server: common::server()?,
            databases: Mutex::new(Vec::new()),
        })
    }

    fn open(url: &str, clock: Option<Clock>) -> PgLog {
        PgLog::open(
            url,
            Options {
                clock,
                poll_interval: Duration::from_millis(50),
                ..Options::default()
            },
        )
        .unwrap()
    }

    fn last(&self) -> String {
        self.databases.lock().last().unwrap().url.clone()
    }
}

impl Backend for Pg {
    type Log = PgLog;

    fn fresh(&self, clock: Option<Clock>) -> PgLog {
        let database = Database::create(&self.server);
        let log = Pg::open(&database.url, clock);
        self.databases.lock().push(database);
        log
    }

    fn reopen(&self, log: PgLog) -> PgLog {
        drop(log);
        Pg::open(&self.last(), None)
    }

    fn tamper(&self, log: PgLog, tamper: Tamper) -> (PgLog, u64) {
        drop(log);
        let url = self.last();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let at = match tamper {
            Tamper::FlipLastByte(position) => {
                client
                    .execute(
                        "UPDATE tokenledger_events
                         SET record = set_byte(record, length(record) - 1,
                                               get_byte(record, length(record) - 1) # 32)
                         WHERE position = $1",
                        &[&i64::try_from(position).unwrap()],
                    )
                    .unwrap();
                position
            }
            Tamper::Remove(position) => {
                client
                    .execute(
                        "DELETE FROM tokenledger_events WHERE position = $1",
                        &[&i64::try_from(position).unwrap()],
                    )
                    .unwrap();
                position
            }
        };
        (Pg::open(&url, None), at)
    }
}

tokenledger_store::conformance_tests!(Pg::new());
