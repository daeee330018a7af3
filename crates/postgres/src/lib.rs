//! tokenledger's event log on PostgreSQL (13 or newer): the log several
//! processes share, each a full peer.
//!
//! [`PgLog`] implements the store's [`EventLog`] with exactly the records
//! and chain the embedded log writes (`tokenledger_store::backend`), so an
//! export of one imports into the other and `verify` finds the same head
//! on both. This is the only crate that knows the PostgreSQL client.
//!
//! # What it promises, and what it rests on
//!
//! - Appends of every process are serialized through one row, the head,
//!   locked `FOR UPDATE` (`append.rs`): positions are gapless, each record
//!   is sealed after its predecessor, and `Head` and `Stream` expectations
//!   hold across processes. Event ids are unique keys: a retry appends
//!   nothing and gets its positions back. A batch is one transaction.
//! - An append returns `Ok` only after `COMMIT` returned: durable as far
//!   as the server's `synchronous_commit` makes it (SECURITY.md says what
//!   `off`, or an asynchronous standby promoted, would lose).
//! - Reads by position and by stream go through the primary keys
//!   (`tokenledger_events` by position, `tokenledger_streams` by stream
//!   and position), and every record read is checked against its hash.
//! - [`EventLog::wait_for`] and subscriptions follow the head across
//!   processes: `LISTEN/NOTIFY` wakes them, and the head is also read every
//!   [`Options::poll_interval`], so a lost notification costs latency only.
//! - [`Lease`]: each replica's lease, renewed with the position it has
//!   applied, so that a removal can wait until every replica that may
//!   still allow has applied it, or has stopped allowing.
//! - The schema is the library's own: created on first use, migrated, its
//!   version in `tokenledger_schema`; a newer one is refused.
//!
//! Why the blocking `postgres` client rather than `tokio-postgres` used
//! directly: `EventLog` is a blocking trait, called from the ledger's
//! threads; the blocking client runs `tokio-postgres` on a small runtime
//! of its own per connection, so no caller needs or sees a runtime.
//!
//! ```no_run
//! use tokenledger_postgres::{Options, PgLog};
//! use tokenledger_store::EventLog;
//!
//! let log = PgLog::open("postgres://postgres@127.0.0.1:5432/ledger", Options::default()).unwrap();
//! println!("head {}", log.head());
//! ```

mod append;
mod connect;
mod lease;
mod pool;
mod read;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokenledger_events::EventId;
use tokenledger_store::backend::{self, Appending, check_batch_size};
use tokenledger_store::{
    AppendError, Clock, Damage, EventLog, Expectation, Head, NewEvent, StoredEvent, StoredRecord,
    Stream, Verified,
};

use append::{Job, Prepared, Request, Writer};
use connect::Server;
pub use lease::{Grant, Lease, LeaseError, MAX_LEASE, MIN_LEASE, MIN_MARGIN};
use pool::Pool;
pub use schema::SCHEMA_VERSION;
use watch::Known;

/// How to open a log on PostgreSQL.
#[derive(Clone)]
pub struct Options {
    /// The longest a connection may take to open.
    pub connect_timeout: Duration,
    /// The longest a statement may run on the server; a server that stops
    /// answering is given up on about this long after (TCP user timeout).
    pub statement_timeout: Duration,
    /// How often the head is read when no notification came.
    pub poll_interval: Duration,
    /// Refuse a log that does not hold this head.
    pub known_head: Option<Head>,
    /// The time to stamp appends with (the system's by default).
    pub clock: Option<Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            known_head: None,
            clock: None,
        }
    }
}

/// Why a log on PostgreSQL could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL does not parse (its text is not repeated: it may hold a
    /// password).
    Url,
    /// No connection could be made.
    Connect {
        /// `HOST:PORT`.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// The server refused or failed a statement.
    Storage {
        /// `HOST:PORT`.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// The database's schema is newer than this build knows.
    NewerSchema {
        /// The database's version.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// The log does not hold the known head.
    NotKnownHead {
        /// The head expected.
        known: Head,
        /// The log's head.
        found: Head,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Url => f.write_str(
                "the PostgreSQL URL is malformed: expected postgres://USER@HOST:PORT/DATABASE",
            ),
            OpenError::Connect { endpoint, detail } => {
                write!(f, "could not connect to PostgreSQL at {endpoint}: {detail}")
            }
            OpenError::Storage { endpoint, detail } => {
                write!(f, "PostgreSQL at {endpoint} failed: {detail}")
            }
            OpenError::NewerSchema { found, known } => write!(
                f,
                "the database holds tokenledger schema version {found}, newer than version {known} that this build knows; upgrade tokenledger"
            ),
            OpenError::NotKnownHead { known, found } => write!(
                f,
                "the log does not hold the known head {known}: its head is {found}"
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// The event log in a PostgreSQL database, shared by every process that
/// opens it.
pub struct PgLog {
    pool: Arc<Pool>,
    appending: Arc<AtomicUsize>,
    known: Arc<Known>,
    requests: Option<Sender<Request>>,
    threads: Vec<JoinHandle<()>>,
}

impl PgLog {
    /// Opens the log in the database `url` names, creating or migrating
    /// its schema.
    pub fn open(url: &str, options: Options) -> Result<PgLog, OpenError> {
        let server = Server::parse(url, &options)?;
        let mut client = server.connect()?;
        schema::ensure(&mut client, server.endpoint())?;
        let head = watch::read_head(&mut client).map_err(|error| OpenError::Storage {
            endpoint: server.endpoint().to_owned(),
            detail: error.describe(),
        })?;
        let pool = Arc::new(Pool::new(server.clone(), client));
        if let Some(known) = options.known_head {
            let held = pool
                .with(|client| {
                    client.query_opt(
                        "SELECT record FROM tokenledger_events WHERE position = $1",
                        &[&read::sql(known.position)],
                    )
                })
                .map_err(|detail| OpenError::Storage {
                    endpoint: server.endpoint().to_owned(),
                    detail,
                })?;
            let hash = held.and_then(|row| {
                backend::stored_event(known.position, row.get::<_, &[u8]>(0))
                    .ok()
                    .map(|event| event.hash)
            });
            let holds = known.position == 0 || hash == Some(known.hash);
            if !holds {
                return Err(OpenError::NotKnownHead { known, found: head });
            }
        }
        let known = Arc::new(Known::new(head));
        let (requests, inbox) = crossbeam_channel::unbounded();
        let appending = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            appending: Arc::clone(&appending),
            server: server.clone(),
            client: None,
            known: Arc::clone(&known),
            clock: options.clock,
        };
        let watching = Arc::clone(&known);
        let poll = options.poll_interval;
        let threads = vec![
            std::thread::Builder::new()
                .name("tokenledger-pg-writer".to_owned())
                .spawn(move || writer.run(&inbox)),
            std::thread::Builder::new()
                .name("tokenledger-pg-watch".to_owned())
                .spawn(move || watch::run(&server, &watching, poll)),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| OpenError::Storage {
            endpoint: pool.server().endpoint().to_owned(),
            detail: format!("no thread could be started: {error}"),
        })?;
        Ok(PgLog {
            pool,
            appending,
            known,
            requests: Some(requests),
            threads,
        })
    }

    /// `HOST:PORT` of the server, for messages.
    pub fn endpoint(&self) -> &str {
        self.pool.server().endpoint()
    }

    /// A lease of `length` for this replica, with a
    /// random id, to [`Lease::join`]. Every process that decides requests
    /// on this log holds one, so that removals wait for it (`lease.rs`).
    pub fn lease(&self, length: Duration) -> Result<Lease, LeaseError> {
        Lease::new(
            length,
            self.pool.server().clone(),
            Arc::clone(&self.pool),
            Arc::clone(&self.known),
        )
    }

    fn send(&self, job: Job) -> Result<Vec<u64>, AppendError> {
        let requests = self.requests.as_ref().ok_or(AppendError::Closed)?;
        let _appending = Appending::enter(&self.appending);
        let (reply, answer) = crossbeam_channel::bounded(1);
        requests
            .send(Request { job, reply })
            .map_err(|_| AppendError::Closed)?;
        answer.recv().map_err(|_| AppendError::Closed)?
    }
}

impl EventLog for PgLog {
    fn append(
        &self,
        batch: Vec<NewEvent>,
        expectation: Expectation,
    ) -> Result<Vec<u64>, AppendError> {
        check_batch_size(batch.len())?;
        let batch = batch
            .iter()
            .map(|event| {
                Ok(Prepared {
                    event_id: event.event_id,
                    encoded: backend::prepare(event)?,
                    streams: Stream::of(event).map(backend::stream_key).collect(),
                })
            })
            .collect::<Result<_, AppendError>>()?;
        self.send(Job::Events { batch, expectation })
    }

    fn append_records(&self, records: Vec<Vec<u8>>) -> Result<Head, AppendError> {
        self.send(Job::Records(records))?;
        Ok(self.known.get())
    }

    /// Reads the head row; if the server cannot be reached, the head last
    /// seen (which covers this process's own appends).
    fn head(&self) -> Head {
        match read::head(&self.pool) {
            Ok(head) => {
                self.known.advance(head);
                head
            }
            Err(_) => self.known.get(),
        }
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, Damage> {
        let mut read = Vec::new();
        self.read_into(from, limit, &mut read)?;
        Ok(read)
    }

    fn read_into(
        &self,
        from: u64,
        limit: usize,
        into: &mut Vec<StoredEvent>,
    ) -> Result<(), Damage> {
        read::read_as(&self.pool, from, limit, into, |event, _| event)
    }

    fn read_stream(
        &self,
        stream: Stream,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Damage> {
        read::read_stream(&self.pool, &backend::stream_key(stream), from, limit)
    }

    /// One query on the events' `event_id` column, which is unique, so
    /// indexed.
    fn position_of(&self, id: EventId) -> Result<Option<u64>, Damage> {
        read::position_of(&self.pool, id)
    }

    fn stream_head(&self, stream: Stream) -> Result<u64, Damage> {
        read::stream_head(&self.pool, &backend::stream_key(stream))
    }

    fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        self.known.wait_for(position, timeout)
    }

    fn verify_with(&self, progress: &mut dyn FnMut(u64)) -> Result<Verified, Damage> {
        read::verify(&self.pool, progress)
    }

    fn read_records(&self, from: u64, limit: usize) -> Result<Vec<StoredRecord>, Damage> {
        let mut read = Vec::new();
        read::read_as(&self.pool, from, limit, &mut read, |event, bytes| {
            StoredRecord {
                event,
                bytes: bytes.to_vec(),
            }
        })?;
        Ok(read)
    }
}

impl Drop for PgLog {
    fn drop(&mut self) {
        self.known.stop.store(true, Ordering::Release);
        // The writer ends when its inbox closes, after what it holds.
        self.requests = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
