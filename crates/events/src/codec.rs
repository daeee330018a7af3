//! The one place that knows how events are laid out in bytes.
//!
//! A record is one format byte followed by bincode 2 (via serde) with
//! big-endian, fixed-width integers, so that every integer on disk has an
//! explicit width and byte order. Everything else in tokenledger sees only
//! [`encode_envelope`] and [`decode_envelope`], so the format can be replaced
//! by a migration without touching the rest.
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

/// The layout of format 1. The schema version comes before the event so a
/// later decoder can read it first and pick the fields to expect.
#[derive(Serialize)]
struct RecordV1Ref<'a> {
    position: u64,
    event_id: EventId,
    recorded_at: Timestamp,
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
    let record = RecordV1Ref {
        position: envelope.position,
        event_id: envelope.event_id,
        recorded_at: envelope.recorded_at,
        actor: envelope.actor,
        company: envelope.company,
        schema_version: envelope.event.schema_version(),
        event: &envelope.event,
    };
    let mut bytes = vec![FORMAT_V1];
    let body = bincode::serde::encode_to_vec(&record, CONFIG).map_err(|e| CodecError::Encode {
        detail: e.to_string(),
    })?;
    bytes.extend_from_slice(&body);
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge { len: bytes.len() });
    }
    Ok(bytes)
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
