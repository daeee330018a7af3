//! Reads by position and by stream, and `verify`, each record checked as
//! every backend checks it (`tokenledger_store::backend`).

use std::collections::HashMap;

use postgres::{Client, IsolationLevel};
use tokenledger_events::EventId;
use tokenledger_store::backend::{self, ChainCheck, StreamKey, event_of_stream, stored_event};
use tokenledger_store::{Damage, Head, Problem, StoredEvent, Verified};

use crate::pool::Pool;
use crate::watch::read_head;

/// Records checked by `verify` in one query.
const CHUNK: i64 = 4096;

/// A position as the database stores it. Positions stay far below 2^63:
/// a log would need 9 * 10^18 events.
pub(crate) fn sql(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn storage(position: u64) -> impl FnOnce(String) -> Damage {
    move |detail| Damage {
        position,
        problem: Problem::Storage(detail),
    }
}

fn stored_position(position: i64, at: u64) -> Result<u64, Damage> {
    u64::try_from(position).map_err(|_| Damage {
        position: at,
        problem: Problem::Layout("a stored position is negative"),
    })
}

/// Reads records `from..from + limit` in order, each checked, and hands
/// each to `each` with its bytes. A missing position is a gap.
pub(crate) fn read_as<T>(
    pool: &Pool,
    from: u64,
    count: usize,
    into: &mut Vec<T>,
    mut each: impl FnMut(StoredEvent, &[u8]) -> T,
) -> Result<(), Damage> {
    let from = from.max(1);
    if count == 0 {
        return Ok(());
    }
    let rows = pool
        .reading(|client| {
            client.query(
                "SELECT position, record FROM tokenledger_events
                 WHERE position >= $1 ORDER BY position LIMIT $2",
                &[&sql(from), &limit(count)],
            )
        })
        .map_err(storage(from))?;
    for (expected, row) in (from..).zip(rows) {
        let position = stored_position(row.get(0), expected)?;
        if position != expected {
            return Err(Damage {
                position: expected,
                problem: Problem::Gap { expected },
            });
        }
        let bytes: &[u8] = row.get(1);
        into.push(each(stored_event(position, bytes)?, bytes));
    }
    Ok(())
}

/// Up to `count` events of the stream `key` from position `from`.
pub(crate) fn read_stream(
    pool: &Pool,
    key: &StreamKey,
    from: u64,
    count: usize,
) -> Result<Vec<StoredEvent>, Damage> {
    let rows = pool
        .reading(|client| {
            client.query(
                "SELECT s.position, e.record FROM tokenledger_streams s
                 LEFT JOIN tokenledger_events e ON e.position = s.position
                 WHERE s.stream = $1 AND s.position >= $2
                 ORDER BY s.position LIMIT $3",
                &[&key.as_slice(), &sql(from), &limit(count)],
            )
        })
        .map_err(storage(from))?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let position = stored_position(row.get(0), from)?;
        let Some(bytes) = row.get::<_, Option<&[u8]>>(1) else {
            return Err(Damage {
                position,
                problem: Problem::IndexDisagrees("a stream names a record the log lacks"),
            });
        };
        events.push(event_of_stream(position, bytes, key)?);
    }
    Ok(events)
}

/// The position of the event `id`, checked against the record there (a
/// keyed command is answered with the events it finds there), if the log
/// holds it.
pub(crate) fn position_of(pool: &Pool, id: EventId) -> Result<Option<u64>, Damage> {
    let row = pool
        .reading(|client| {
            client.query_opt(
                "SELECT position, record FROM tokenledger_events WHERE event_id = $1",
                &[&id.as_u128().to_be_bytes().as_slice()],
            )
        })
        .map_err(storage(0))?;
    let Some(row) = row else {
        return Ok(None);
    };
    checked_position(id, row.get(0), row.get(1)).map(Some)
}

/// The position of the row the event id column says holds `id`, once its
/// record is seen to hold it: an edited column must not have a look or a
/// retry answered with another event's record.
pub(crate) fn checked_position(id: EventId, position: i64, record: &[u8]) -> Result<u64, Damage> {
    let position = stored_position(position, 0)?;
    let event = stored_event(position, record)?;
    if event.envelope.event_id != id {
        return Err(Damage {
            position,
            problem: Problem::IndexDisagrees("its event id column is not the record's"),
        });
    }
    Ok(position)
}

/// The position of the stream `key`'s last event, 0 if none.
pub(crate) fn stream_head(pool: &Pool, key: &StreamKey) -> Result<u64, Damage> {
    let position: i64 = pool
        .reading(|client| {
            client
                .query_one(
                    "SELECT coalesce(max(position), 0) FROM tokenledger_streams WHERE stream = $1",
                    &[&key.as_slice()],
                )
                .map(|row| row.get(0))
        })
        .map_err(storage(0))?;
    stored_position(position, 0)
}

/// Walks the log in one snapshot: the chain, each record's event id
/// column and its entries in the stream index, and the head row against
/// the last record.
pub(crate) fn verify(pool: &Pool, progress: &mut dyn FnMut(u64)) -> Result<Verified, Damage> {
    pool.reading(|client| walk(client, progress))
        .map_err(storage(0))?
}

type Walked = Result<Result<Verified, Damage>, postgres::Error>;

fn walk(client: &mut Client, progress: &mut dyn FnMut(u64)) -> Walked {
    let mut snapshot = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let durable = {
        let row = snapshot.query_one(
            "SELECT position, hash FROM tokenledger_head WHERE id = 0",
            &[],
        )?;
        let position: i64 = row.get(0);
        let hash: &[u8] = row.get(1);
        Head {
            position: u64::try_from(position).unwrap_or(0),
            hash: hash.try_into().unwrap_or_default(),
        }
    };
    let mut chain = ChainCheck::new();
    let mut clamped = 0;
    loop {
        let from = chain.head().position + 1;
        let to = from.saturating_add(CHUNK.unsigned_abs() - 1);
        let rows = snapshot.query(
            "SELECT position, event_id, record FROM tokenledger_events
             WHERE position >= $1 AND position <= $2 ORDER BY position",
            &[&sql(from), &sql(to)],
        )?;
        if rows.is_empty() {
            break;
        }
        let mut indexed: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        for row in snapshot.query(
            "SELECT position, stream FROM tokenledger_streams
             WHERE position >= $1 AND position <= $2",
            &[&sql(from), &sql(to)],
        )? {
            let position: i64 = row.get(0);
            let stream: Vec<u8> = row.get(1);
            indexed
                .entry(u64::try_from(position).unwrap_or(0))
                .or_default()
                .push(stream);
        }
        for row in rows {
            let expected = chain.head().position + 1;
            let damage = |problem| Damage {
                position: expected,
                problem,
            };
            let position: i64 = row.get(0);
            if u64::try_from(position).ok() != Some(expected) {
                return Ok(Err(damage(Problem::Gap { expected })));
            }
            let event_id: &[u8] = row.get(1);
            let bytes: &[u8] = row.get(2);
            let event = match chain.check(bytes) {
                Ok(event) => event,
                Err(damage) => return Ok(Err(damage)),
            };
            clamped += u64::from(event.clock_clamped);
            if event_id != event.envelope.event_id.as_u128().to_be_bytes() {
                return Ok(Err(damage(Problem::IndexDisagrees(
                    "its event id key is not the record's",
                ))));
            }
            let mut wanted: Vec<Vec<u8>> = backend::stream_keys(&event.envelope)
                .iter()
                .map(|key| key.to_vec())
                .collect();
            wanted.sort();
            let mut found = indexed.remove(&expected).unwrap_or_default();
            found.sort();
            if found != wanted {
                return Ok(Err(damage(Problem::IndexDisagrees(
                    "the stream index does not list exactly the record's streams",
                ))));
            }
            if expected.is_multiple_of(10_000) {
                progress(2 * expected);
            }
        }
        if let Some(position) = indexed.keys().min() {
            return Ok(Err(Damage {
                position: *position,
                problem: Problem::IndexDisagrees("a stream names a record the log lacks"),
            }));
        }
    }
    let reached = chain.head();
    if reached.position < durable.position {
        return Ok(Err(Damage {
            position: reached.position + 1,
            problem: Problem::Missing,
        }));
    }
    if reached != durable {
        return Ok(Err(Damage {
            position: durable.position,
            problem: Problem::HeadDisagrees {
                head: durable.hash,
                found: reached.hash,
            },
        }));
    }
    let stray: Option<i64> = snapshot
        .query_one(
            "SELECT min(position) FROM tokenledger_streams WHERE position > $1",
            &[&sql(reached.position)],
        )?
        .get(0);
    if let Some(position) = stray {
        return Ok(Err(Damage {
            position: u64::try_from(position).unwrap_or(0),
            problem: Problem::IndexDisagrees("a stream names a record the log lacks"),
        }));
    }
    snapshot.commit()?;
    progress(2 * durable.position);
    Ok(Ok(Verified {
        records: reached.position,
        head: reached,
        clamped,
    }))
}

/// The head row, read now.
pub(crate) fn head(pool: &Pool) -> Result<Head, String> {
    pool.with(read_head)
}
