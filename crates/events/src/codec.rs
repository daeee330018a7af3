//! The one place that knows how events are laid out in bytes.
//!
//! A record is one format byte followed by bincode 2 (via serde) with
//! big-endian, fixed-width integers, so that every integer on disk has an
//! explicit width and byte order. Everything else in tokenledger sees only
//! [`encode_envelope`] (or its two halves, [`EncodedEvent`]) and
//! [`decode_envelope`], so the format can be replaced by a migration without
//! touching the rest.
//!
//! Decoding never trusts its input: the length is checked before anything
//! else, bincode's allocation limit is set to the same bound, trailing bytes
//! are an error, every name and scope is re-validated on the way in, and each
//! event's schema version must be one this build knows.

use std::fmt;

use bincode::config::{BigEndian, Configuration, Fixint, Limit};
use serde::{Deserialize, Serialize};

use crate::event::{Actor, Envelope, Event, Timestamp};
use crate::id::{CompanyId, EventId};

/// The largest encoded record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// The first byte of every record: the layout that follows.
const FORMAT_V1: u8 = 1;

const CONFIG: Configuration<BigEndian, Fixint, Limit<MAX_RECORD_BYTES>> =
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_RECORD_BYTES>();

/// Why bytes could not be turned into an event, or an event into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The record is empty.
    Empty,
    /// The record is larger than [`MAX_RECORD_BYTES`].
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// The first byte names a layout this build does not know.
    UnknownFormat {
        /// The byte found.
        found: u8,
    },
    /// The bytes do not follow the layout.
    Malformed {
        /// What the decoder reported.
        detail: String,
    },
    /// The record decoded but bytes were left over.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The event's schema version is not the one this build reads.
    SchemaVersion {
        /// The event's type.
        event_type: &'static str,
        /// The version in the record.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The event could not be encoded.
    Encode {
        /// What the encoder reported.
        detail: String,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Empty => f.write_str("the record is empty"),
            CodecError::TooLarge { len } => write!(
                f,
                "the record is {len} bytes, more than the limit of {MAX_RECORD_BYTES}"
            ),
            CodecError::UnknownFormat { found } => {
                write!(
                    f,
                    "the record has format {found}, this build reads format {FORMAT_V1}"
                )
            }
            CodecError::Malformed { detail } => write!(f, "the record is malformed: {detail}"),
            CodecError::TrailingBytes { extra } => {
                write!(f, "the record has {extra} bytes after its end")
            }
            CodecError::SchemaVersion {
                event_type,
                found,
                supported,
            } => write!(
                f,
                "the {event_type} event has schema version {found}, this build reads version {supported}"
            ),
            CodecError::Encode { detail } => write!(f, "the event could not be encoded: {detail}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// The layout of format 1 is `RecordV1`'s fields in order, written in two
/// parts: what the log's writer fills in, then what an appender can
/// encode ahead of it ([`EncodedEvent`]). bincode writes a struct's fields
/// one after another with nothing between them, so the two parts side by
/// side are the record. The schema version comes before the event so a
/// later decoder can read it first and pick the fields to expect.
#[derive(Serialize)]
struct PlaceV1 {
    position: u64,
    event_id: EventId,
    recorded_at: Timestamp,
}

#[derive(Serialize)]
struct TailV1Ref<'a> {
    actor: Actor,
    company: CompanyId,
    schema_version: u16,
    event: &'a Event,
}

#[derive(Deserialize)]
struct RecordV1 {
    position: u64,
    event_id: EventId,
    recorded_at: Timestamp,
    actor: Actor,
    company: CompanyId,
    schema_version: u16,
    event: Event,
}

/// Encodes an envelope as one record.
pub fn encode_envelope(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    EncodedEvent::new(
        envelope.event_id,
        envelope.actor,
        envelope.company,
        &envelope.event,
    )?
    .place(envelope.position, envelope.recorded_at)
}

/// An event encoded before it has a place in the log: all of its record
/// but the position and the time, which only the log's writer knows. The
/// log's appenders encode their events with it on their own threads, and
/// the writer only places them.
///
/// ```
/// use tokenledger_events::{encode_envelope, Actor, CompanyId, EncodedEvent, Envelope,
///     Event, EventId, Name, Timestamp};
///
/// let company = CompanyId::from_u128(1);
/// let event = Event::CompanyCreated { company, name: Name::new("Acme").unwrap() };
/// let encoded = EncodedEvent::new(EventId::from_u128(2), Actor::System, company, &event).unwrap();
/// let placed = encoded.place(7, Timestamp::from_micros(3)).unwrap();
/// let envelope = Envelope {
///     position: 7,
///     event_id: EventId::from_u128(2),
///     recorded_at: Timestamp::from_micros(3),
///     actor: Actor::System,
///     company,
///     event,
/// };
/// assert_eq!(placed, encode_envelope(&envelope).unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    event_id: EventId,
    /// The record after its time: actor, company, schema version, event.
    tail: Vec<u8>,
}

/// The bytes before an [`EncodedEvent`]'s tail: the format, the position,
/// the event id (16 bytes) and the time.
const PLACE_LEN: usize = 1 + 8 + 16 + 8;

fn encode_error(error: bincode::error::EncodeError) -> CodecError {
    CodecError::Encode {
        detail: error.to_string(),
    }
}

impl EncodedEvent {
    /// Encodes everything of a record but its position and time. Fails if
    /// the event cannot be encoded, or makes a record longer than
    /// [`MAX_RECORD_BYTES`].
    pub fn new(
        event_id: EventId,
        actor: Actor,
        company: CompanyId,
        event: &Event,
    ) -> Result<EncodedEvent, CodecError> {
        let tail = TailV1Ref {
            actor,
            company,
            schema_version: event.schema_version(),
            event,
        };
        let tail = bincode::serde::encode_to_vec(&tail, CONFIG).map_err(encode_error)?;
        let len = PLACE_LEN + tail.len();
        if len > MAX_RECORD_BYTES {
            return Err(CodecError::TooLarge { len });
        }
        Ok(EncodedEvent { event_id, tail })
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// The whole record, at `position` in the log, recorded at
    /// `recorded_at`: the bytes [`encode_envelope`] gives for the same
    /// envelope.
    pub fn place(&self, position: u64, recorded_at: Timestamp) -> Result<Vec<u8>, CodecError> {
        let mut bytes = Vec::with_capacity(PLACE_LEN + self.tail.len());
        bytes.push(FORMAT_V1);
        let place = PlaceV1 {
            position,
            event_id: self.event_id,
            recorded_at,
        };
        bincode::serde::encode_into_std_write(&place, &mut bytes, CONFIG).map_err(encode_error)?;
        bytes.extend_from_slice(&self.tail);
        Ok(bytes)
    }
}

/// Decodes one record. Any damage is an error, never a panic.
///
/// ```
/// use tokenledger_events::{decode_envelope, encode_envelope, Actor, CompanyId, Envelope,
///     Event, EventId, Name, Timestamp};
///
/// let company = CompanyId::from_u128(1);
/// let envelope = Envelope {
///     position: 1,
///     event_id: EventId::from_u128(2),
///     recorded_at: Timestamp::from_micros(3),
///     actor: Actor::System,
///     company,
///     event: Event::CompanyCreated { company, name: Name::new("Acme").unwrap() },
/// };
/// let bytes = encode_envelope(&envelope).unwrap();
/// assert_eq!(decode_envelope(&bytes), Ok(envelope));
/// assert!(decode_envelope(&bytes[..bytes.len() - 1]).is_err());
/// ```
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, CodecError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge { len: bytes.len() });
    }
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_V1 {
        return Err(CodecError::UnknownFormat { found: format });
    }
    let (record, read): (RecordV1, usize) = bincode::serde::decode_from_slice(body, CONFIG)
        .map_err(|e| CodecError::Malformed {
            detail: e.to_string(),
        })?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes {
            extra: body.len().saturating_sub(read),
        });
    }
    let supported = record.event.schema_version();
    if record.schema_version != supported {
        return Err(CodecError::SchemaVersion {
            event_type: record.event.type_name(),
            found: record.schema_version,
            supported,
        });
    }
    Ok(Envelope {
        position: record.position,
        event_id: record.event_id,
        recorded_at: record.recorded_at,
        actor: record.actor,
        company: record.company,
        event: record.event,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use crate::id::TokenId;

    #[test]
    fn the_place_before_a_tail_is_as_long_as_its_constant_says() {
        let token = TokenId::from_u128(3);
        let event = Event::TokenRevealed { token };
        let encoded = EncodedEvent::new(
            EventId::from_u128(1),
            Actor::System,
            CompanyId::from_u128(2),
            &event,
        )
        .unwrap();
        let placed = encoded.place(u64::MAX, Timestamp::from_micros(4)).unwrap();
        assert_eq!(placed.len(), PLACE_LEN + encoded.tail.len());
    }
}
