//! The event log as a trait, and the types every implementation shares.

use std::fmt;
use std::time::Duration;

use tokenledger_events::{
    Actor, CodecError, CompanyId, Envelope, Event, EventId, TeammateId, TokenId,
};

/// A BLAKE3 hash in the chain.
pub type Hash = [u8; 32];

/// The hash "before" position 1.
pub const GENESIS: Hash = [0; 32];

/// Bytes (a hash, a record) as lowercase hex, as every message and export
/// prints them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last durable record: its position (0 for an empty log) and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The position of the last record.
    pub position: u64,
    /// Its hash ([`GENESIS`] for an empty log).
    pub hash: Hash,
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        position: 0,
        hash: GENESIS,
    };
}

/// `POSITION:HASH`, the hash in lowercase hex: the form an operator records
/// a head in, and gives back to refuse a log that does not contain it.
impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.position, hex(&self.hash))
    }
}

/// Reads `POSITION:HASH` as [`Head`]'s `Display` writes it (hex digits in
/// either case).
///
/// ```
/// use tokenledger_store::Head;
///
/// let text = format!("12:{}", "ab".repeat(32));
/// let head: Head = text.parse().unwrap();
/// assert_eq!((head.position, head.hash), (12, [0xab; 32]));
/// assert_eq!(head.to_string(), text);
/// assert!("12".parse::<Head>().is_err());
/// ```
impl std::str::FromStr for Head {
    type Err = ParseHeadError;

    fn from_str(text: &str) -> Result<Head, ParseHeadError> {
        let (position, hash) = text.split_once(':').ok_or(ParseHeadError::Form)?;
        let position = position
            .parse()
            .map_err(|_| ParseHeadError::Position(position.to_owned()))?;
        let digits = hash.as_bytes();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(ParseHeadError::Hash);
        }
        let mut parsed = GENESIS;
        for (byte, pair) in parsed.iter_mut().zip(digits.chunks_exact(2)) {
            let digit = |d: &u8| char::from(*d).to_digit(16).unwrap_or(0) as u8;
            *byte = pair.iter().fold(0, |high, low| high * 16 + digit(low));
        }
        Ok(Head {
            position,
            hash: parsed,
        })
    }
}

/// Why a text is not a head in the form `POSITION:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseHeadError {
    /// There is no `:` between a position and a hash.
    Form,
    /// The position is not a whole number.
    Position(String),
    /// The hash is not 64 hex digits.
    Hash,
}

impl fmt::Display for ParseHeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseHeadError::Form => {
                f.write_str("expected POSITION:HASH, as `verify` prints the head")
            }
            ParseHeadError::Position(text) => {
                write!(f, "the position `{text}` is not a whole number")
            }
            ParseHeadError::Hash => f.write_str("the hash after `:` must be 64 hex digits"),
        }
    }
}

impl std::error::Error for ParseHeadError {}

/// An event to append: the log assigns its position and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Its id; appending an id already in the log appends nothing.
    pub event_id: EventId,
    /// Who caused it.
    pub actor: Actor,
    /// The company it belongs to.
    pub company: CompanyId,
    /// What happened.
    pub event: Event,
}

/// A sequence of events that can be read on its own, and expected at a
/// head for optimistic concurrency: every event of a company, about a
/// token, about a teammate, or caused by a teammate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Every event of a company.
    Company(CompanyId),
    /// The events about a token.
    Token(TokenId),
    /// The events about a teammate.
    Teammate(TeammateId),
    /// The events a teammate caused.
    Actor(TeammateId),
}

impl Stream {
    /// The streams an event belongs to.
    pub fn of(event: &NewEvent) -> impl Iterator<Item = Stream> {
        Stream::of_parts(event.company, event.actor, &event.event)
    }

    /// The streams of an event given by its parts, as a stored envelope
    /// holds them.
    pub(crate) fn of_parts(
        company: CompanyId,
        actor: Actor,
        event: &Event,
    ) -> impl Iterator<Item = Stream> {
        let actor = match actor {
            Actor::Teammate(teammate) => Some(Stream::Actor(teammate)),
            Actor::System | Actor::Token(_) => None,
        };
        [
            Some(Stream::Company(company)),
            event.token().map(Stream::Token),
            event.teammate().map(Stream::Teammate),
            actor,
        ]
        .into_iter()
        .flatten()
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Company(id) => write!(f, "the stream of {id}"),
            Stream::Token(id) => write!(f, "the stream of {id}"),
            Stream::Teammate(id) => write!(f, "the stream of {id}"),
            Stream::Actor(id) => write!(f, "the stream of events by {id}"),
        }
    }
}

/// What an append expects of the log; when it does not hold, nothing is
/// written and the conflict says what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Append whatever the log holds.
    Any,
    /// The log's head is at this position.
    Head(u64),
    /// This stream's last event is at this log position (0: it has none).
    Stream(Stream, u64),
}

/// An event as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event with its position, id, time, actor and company.
    pub envelope: Envelope,
    /// Its hash in the chain.
    pub hash: Hash,
    /// The hash it records of the record before it ([`GENESIS`] at
    /// position 1): a reader that holds the predecessor's hash checks the
    /// link with one comparison.
    pub previous: Hash,
    /// Whether the clock was behind the previous event's time when this one
    /// was recorded, so that time was used instead.
    pub clock_clamped: bool,
}

/// What is wrong with a stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The storage engine failed to read it.
    Storage(String),
    /// A key is not an 8-byte position.
    BadKey {
        /// The key's length.
        len: usize,
    },
    /// Positions are not contiguous.
    Gap {
        /// The position that was expected next.
        expected: u64,
    },
    /// The record's layout is damaged.
    Layout(&'static str),
    /// The record's layout version is not one this build reads.
    UnknownLayout(u8),
    /// The page that holds the record, or a run of the stream index
    /// naming it, is damaged.
    Page(&'static str),
    /// The hash stored in the record does not match its bytes.
    HashMismatch {
        /// The stored hash.
        stored: Hash,
        /// The hash of the bytes.
        computed: Hash,
    },
    /// The record does not point at its predecessor.
    ChainBroken {
        /// The predecessor's hash.
        expected: Hash,
        /// The hash the record points at.
        found: Hash,
    },
    /// The last record is not the head the log reports: its hash is
    /// another.
    HeadDisagrees {
        /// The head's hash, as the log reports it.
        head: Hash,
        /// The hash of the record at the head's position.
        found: Hash,
    },
    /// The envelope does not decode.
    Decode(CodecError),
    /// The envelope's position is not the key it is stored under.
    PositionMismatch {
        /// The position inside the envelope.
        found: u64,
    },
    /// The recorded time is before the previous record's.
    TimeWentBackwards,
    /// The log ends before the head it is expected to reach.
    Missing,
    /// The record's event id is in the log already.
    DuplicateEventId(EventId),
    /// The journal holds a different record for this position than the
    /// database does.
    JournalDisagrees,
    /// The copy of the record in its company's stream is not the record
    /// in the log, is missing, or is in another company's stream.
    CopyDisagrees(&'static str),
    /// An index disagrees with the record: names it for a stream it is
    /// not in or an event id it does not hold, or lacks its entry.
    IndexDisagrees(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Storage(e) => write!(f, "the storage engine failed: {e}"),
            Problem::BadKey { len } => write!(f, "a key is {len} bytes, not an 8-byte position"),
            Problem::Gap { expected } => {
                write!(f, "positions are not contiguous: expected {expected}")
            }
            Problem::Layout(what) => write!(f, "the record is damaged: {what}"),
            Problem::Page(what) => write!(f, "its page is damaged: {what}"),
            Problem::UnknownLayout(v) => write!(f, "the record has layout {v}, this build reads 1"),
            Problem::HashMismatch { stored, computed } => write!(
                f,
                "the record's bytes hash to {}, but it says {}",
                hex(computed),
                hex(stored)
            ),
            Problem::ChainBroken { expected, found } => write!(
                f,
                "the chain is broken: the previous record's hash is {}, this record points at {}",
                hex(expected),
                hex(found)
            ),
            Problem::HeadDisagrees { head, found } => write!(
                f,
                "the log's head has hash {}, but the record there has {}",
                hex(head),
                hex(found)
            ),
            Problem::Decode(e) => write!(f, "the event does not decode: {e}"),
            Problem::PositionMismatch { found } => {
                write!(f, "the event inside says it is at position {found}")
            }
            Problem::TimeWentBackwards => {
                f.write_str("its time is earlier than the previous record's")
            }
            Problem::Missing => f.write_str("the record is missing"),
            Problem::DuplicateEventId(id) => {
                write!(f, "its event id `{id}` is in the log already")
            }
            Problem::JournalDisagrees => {
                f.write_str("the journal holds a different record for this position")
            }
            Problem::IndexDisagrees(what) => {
                write!(f, "an index disagrees with the record: {what}")
            }
            Problem::CopyDisagrees(what) => {
                write!(f, "its copy in its company's stream {what}")
            }
        }
    }
}

/// A damaged or unreadable record, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The position of the first record found wrong.
    pub position: u64,
    /// What is wrong with it.
    pub problem: Problem,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log position {}: {}", self.position, self.problem)
    }
}

impl std::error::Error for Damage {}

/// Why an append wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendError {
    /// The expectation did not hold.
    Conflict {
        /// What was expected.
        expected: Expectation,
        /// The head position found: the log's, or the stream's.
        found: u64,
    },
    /// The batch is empty.
    Empty,
    /// The batch has more events than [`MAX_BATCH`].
    TooManyEvents {
        /// How many.
        events: usize,
    },
    /// The same event id appears twice in the batch.
    DuplicateEventId(EventId),
    /// Some of the batch's event ids are in the log and some are not: not a
    /// retry of one earlier append.
    PartialRetry(EventId),
    /// An event could not be encoded.
    Encode(CodecError),
    /// Storage failed before the batch was committed; nothing was written.
    Io(String),
    /// Storage failed after a commit, while making it durable. Whether the
    /// batch survives a crash is unknown, so the log refuses every append
    /// until it is reopened and verified.
    Poisoned(String),
    /// The log is closed.
    Closed,
    /// A sealed record handed to [`EventLog::append_records`] does not
    /// continue the log: its hash, encoding, position, predecessor or time
    /// is wrong, or its event id is taken. Nothing of the batch was written.
    Rejected(Damage),
}

/// The most events in one batch.
pub const MAX_BATCH: usize = 10_000;

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Conflict { expected, found } => match expected {
                Expectation::Any => write!(f, "conflict: found {found}"),
                Expectation::Head(n) => {
                    write!(f, "conflict: expected the head at {n}, found it at {found}")
                }
                Expectation::Stream(stream, n) => write!(
                    f,
                    "conflict: expected the last event of {stream} at position {n}, found it at {found}"
                ),
            },
            AppendError::Empty => f.write_str("nothing to append"),
            AppendError::TooManyEvents { events } => {
                write!(
                    f,
                    "a batch holds at most {MAX_BATCH} events, this one has {events}"
                )
            }
            AppendError::DuplicateEventId(id) => {
                write!(f, "event id `{id}` appears twice in the batch")
            }
            AppendError::PartialRetry(id) => write!(
                f,
                "event id `{id}` is already in the log but others of the batch are not"
            ),
            AppendError::Encode(e) => write!(f, "an event could not be encoded: {e}"),
            AppendError::Io(e) => write!(f, "storage failed, nothing was written: {e}"),
            AppendError::Poisoned(e) => write!(
                f,
                "storage failed while making a commit durable ({e}); reopen the log and verify it"
            ),
            AppendError::Closed => f.write_str("the log is closed"),
            AppendError::Rejected(damage) => write!(f, "record refused at {damage}"),
        }
    }
}

impl std::error::Error for AppendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppendError::Encode(error) => Some(error),
            AppendError::Rejected(damage) => Some(damage),
            _ => None,
        }
    }
}

/// What `verify` found in an intact log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// How many records were checked.
    pub records: u64,
    /// The head they lead to.
    pub head: Head,
    /// How many records had their time clamped.
    pub clamped: u64,
}

/// An append-only, hash-chained log of events.
///
/// Implementations are shared between threads. Reads see only durable
/// records: an event is readable once the append that wrote it could have
/// returned.
pub trait EventLog: Send + Sync {
    /// Appends `batch` atomically if `expectation` holds, and returns the
    /// positions of its events, contiguous and in order. Returns only once
    /// the events are durable. A batch whose event ids are all in the log
    /// already is not appended again: its original positions come back.
    fn append(
        &self,
        batch: Vec<NewEvent>,
        expectation: Expectation,
    ) -> Result<Vec<u64>, AppendError>;

    /// The last durable record. It covers every append answered before
    /// the call, so what an append returned can be read.
    fn head(&self) -> Head;

    /// Up to `limit` events from position `from` (1 is the first), in order.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, Damage>;

    /// As [`EventLog::read`], appending the events to `into`, so that a
    /// reader of the whole log can hand the same few buffers round rather
    /// than fill fresh memory for every chunk. On damage, `into` holds the
    /// events read before it.
    fn read_into(
        &self,
        from: u64,
        limit: usize,
        into: &mut Vec<StoredEvent>,
    ) -> Result<(), Damage> {
        into.extend(self.read(from, limit)?);
        Ok(())
    }

    /// Up to `limit` events of `stream` at positions from `from`, in order.
    fn read_stream(
        &self,
        stream: Stream,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Damage>;

    /// The position of the event whose id is `id`, if the log holds it (as
    /// far as reads see: up to the durable head). A command keyed by an
    /// idempotency key asks it whether it was recorded already.
    fn position_of(&self, id: EventId) -> Result<Option<u64>, Damage>;

    /// The log position of `stream`'s last event, 0 if it has none.
    fn stream_head(&self, stream: Stream) -> Result<u64, Damage>;

    /// Waits until the head reaches `position` or `timeout` passes; returns
    /// the head position then.
    fn wait_for(&self, position: u64, timeout: Duration) -> u64;

    /// Walks the whole log and checks contiguity, each record's hash, the
    /// chain, the encoding, positions and times, any copies an
    /// implementation keeps of its records for reads by stream (the sled
    /// log keeps one in each company's stream, and holds 16 bytes a record
    /// while it checks them), and the indexes it has written for retries
    /// and reads by stream. Reports the first damage.
    fn verify(&self) -> Result<Verified, Damage> {
        self.verify_with(&mut |_| {})
    }

    /// As [`EventLog::verify`], calling `progress` every so often, for long
    /// walks, with the checks done so far, out of twice the head as the
    /// walk started: each record counts twice, once for its place in the
    /// chain and once for its company's copy of it (a log that keeps no
    /// copies counts its records twice over), and the count is reported at
    /// its end.
    fn verify_with(&self, progress: &mut dyn FnMut(u64)) -> Result<Verified, Damage>;

    /// Up to `limit` records from position `from`, as stored: each checked
    /// as [`EventLog::read`] checks it, and returned with its bytes, so that
    /// a copy of the log can be made that verifies byte for byte.
    fn read_records(&self, from: u64, limit: usize) -> Result<Vec<StoredRecord>, Damage>;

    /// Appends records sealed by another copy of this log (an export), after
    /// checking that each continues the chain at the head: its own hash, its
    /// encoding, its position, its predecessor's hash, its time and its
    /// event id. Atomic and durable as [`EventLog::append`] is; returns the
    /// new head.
    fn append_records(&self, records: Vec<Vec<u8>>) -> Result<Head, AppendError>;
}

/// A record as stored: the event, and the bytes whose hash the chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The event, decoded and checked; `event.previous` is the hash of
    /// the record before it.
    pub event: StoredEvent,
    /// The record's bytes.
    pub bytes: Vec<u8>,
}

/// Follows a log from a position, delivering events as they become durable.
pub struct Subscription<'a> {
    log: &'a dyn EventLog,
    next: u64,
}

impl<'a> Subscription<'a> {
    /// Starts at position `from` (1 for the beginning).
    pub fn new(log: &'a dyn EventLog, from: u64) -> Subscription<'a> {
        Subscription {
            log,
            next: from.max(1),
        }
    }

    /// The next events, at most `max`; waits up to `wait` when there are
    /// none yet, and returns an empty batch if none arrived.
    pub fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<StoredEvent>, Damage> {
        let mut batch = self.log.read(self.next, max)?;
        if batch.is_empty() && self.log.wait_for(self.next, wait) >= self.next {
            batch = self.log.read(self.next, max)?;
        }
        self.next += batch.len() as u64;
        Ok(batch)
    }
}
