//! What every backend of the log shares, so that a record sealed by one
//! reads, verifies and imports byte for byte in another: how an event is
//! encoded and checked before it is sealed, the record and its chain
//! (`record.rs`), the time a record is stamped with, and the keys of the
//! streams an event belongs to.
//!
//! A backend holds the head, serializes its appends, and for each event
//! calls [`prepare`] (on the appender's side), [`stamp`] and then
//! [`seal`] in position order; it indexes the record under
//! [`stream_keys`] and its event id, and checks what it reads back with
//! [`stored_event`] or [`ChainCheck`], and a read by stream with
//! [`event_of_stream`].
//!
//! ```
//! use tokenledger_events::{Actor, CompanyId, Event, EventId, Name, Timestamp};
//! use tokenledger_store::backend::{prepare, seal, stamp, stored_event};
//! use tokenledger_store::{GENESIS, NewEvent};
//!
//! let company = CompanyId::from_u128(1);
//! let event = NewEvent {
//!     event_id: EventId::from_u128(7),
//!     actor: Actor::System,
//!     company,
//!     event: Event::CompanyCreated { company, name: Name::new("Acme").unwrap() },
//! };
//! let encoded = prepare(&event).unwrap();
//! let (recorded_at, flags) = stamp(Timestamp::from_micros(5), Timestamp::EPOCH);
//! let envelope = encoded.place(1, recorded_at).unwrap();
//! let (record, hash) = seal(&GENESIS, flags, &envelope);
//! let read = stored_event(1, &record).unwrap();
//! assert_eq!((read.hash, read.envelope.event_id), (hash, event.event_id));
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use tokenledger_events::{EncodedEvent, Envelope, Timestamp, decode_envelope};

pub use crate::record::{ChainCheck, FLAG_CLOCK_CLAMPED, seal, stored_event};

use crate::log::{AppendError, Damage, MAX_BATCH, NewEvent, Problem, StoredEvent, Stream};
use crate::stream_index;

/// A stream's key in every index: a tag byte and its id, big-endian.
pub type StreamKey = [u8; 17];

/// Encodes `event` for the log, and checks that its record reads back as
/// `event`: placing it (at a position and time) changes nothing else.
pub fn prepare(event: &NewEvent) -> Result<EncodedEvent, AppendError> {
    let encoded = EncodedEvent::new(event.event_id, event.actor, event.company, &event.event)
        .map_err(AppendError::Encode)?;
    let record = encoded
        .place(0, Timestamp::EPOCH)
        .map_err(AppendError::Encode)?;
    // Pair assertion: what is written must read back as what was meant.
    // Field by field, not against an envelope built for it, which cost a
    // clone of every appended event; destructured, so that a field added
    // to the envelope must be compared here before this compiles.
    let read_back = decode_envelope(&record).is_ok_and(|read| {
        let Envelope {
            position,
            event_id,
            recorded_at,
            actor,
            company,
            event: decoded,
        } = read;
        position == 0
            && recorded_at == Timestamp::EPOCH
            && event_id == event.event_id
            && actor == event.actor
            && company == event.company
            && decoded == event.event
    });
    if !read_back {
        return Err(AppendError::Encode(
            tokenledger_events::CodecError::Encode {
                detail: "the record does not decode to the event it encodes".to_owned(),
            },
        ));
    }
    Ok(encoded)
}

/// The time to record an append with, and its flags: the clock's `now`,
/// or the last record's time if the clock is behind it (then flagged), so
/// that recorded time never goes backwards.
pub fn stamp(now: Timestamp, last: Timestamp) -> (Timestamp, u8) {
    if now < last {
        (last, FLAG_CLOCK_CLAMPED)
    } else {
        (now, 0)
    }
}

/// Refuses an empty batch and one of more than [`MAX_BATCH`] events.
pub fn check_batch_size(len: usize) -> Result<(), AppendError> {
    if len == 0 {
        Err(AppendError::Empty)
    } else if len > MAX_BATCH {
        Err(AppendError::TooManyEvents { events: len })
    } else {
        Ok(())
    }
}

/// The key `stream` is indexed under.
pub fn stream_key(stream: Stream) -> StreamKey {
    let (tag, id) = match stream {
        Stream::Company(id) => (stream_index::COMPANY, id.as_u128()),
        Stream::Token(id) => (stream_index::TOKEN, id.as_u128()),
        Stream::Teammate(id) => (3, id.as_u128()),
        Stream::Actor(id) => (4, id.as_u128()),
    };
    let mut key = [0u8; 17];
    let (head, tail) = key.split_at_mut(1);
    head.copy_from_slice(&[tag]);
    tail.copy_from_slice(&id.to_be_bytes());
    key
}

/// The streams a stored event is in.
pub fn streams(envelope: &Envelope) -> impl Iterator<Item = Stream> {
    Stream::of_parts(envelope.company, envelope.actor, &envelope.event)
}

/// The keys a stored event is indexed under.
pub fn stream_keys(envelope: &Envelope) -> Vec<StreamKey> {
    streams(envelope).map(stream_key).collect()
}

/// The event of the record at `position`, read by `stream`: an error if
/// the event is not in that stream. A stream index is not chained, so an
/// entry edited to name another record, even a whole one, would otherwise
/// put a stranger into the stream.
pub fn event_of_stream(
    position: u64,
    record: &[u8],
    stream: &StreamKey,
) -> Result<StoredEvent, Damage> {
    let event = stored_event(position, record)?;
    if !streams(&event.envelope).any(|of| stream_key(of) == *stream) {
        return Err(Damage {
            position,
            problem: Problem::IndexDisagrees("it is not in the stream read"),
        });
    }
    Ok(event)
}

/// Counts an appender in `count` while it lives, from before it encodes
/// its events until it has read its answer: a writer gathering a group
/// waits for those counted and not yet in it.
pub struct Appending<'a>(&'a AtomicUsize);

impl<'a> Appending<'a> {
    /// Counts one more in `count` until dropped.
    pub fn enter(count: &'a AtomicUsize) -> Appending<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Appending(count)
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
