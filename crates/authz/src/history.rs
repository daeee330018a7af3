//! Reading the past: the events that match a query, the position the log
//! had reached at a time, and the state as it stood at a position.

use tokenledger_events::{
    Actor, CompanyId, Envelope, Event, Secret, TeammateId, Timestamp, TokenId,
};
use tokenledger_projection::{Provenance, State};
use tokenledger_store::{Damage, EventLog, Head, Problem, StoredEvent, Stream};

use crate::ledger::{Ledger, LedgerError};

/// Which events to read. Every filter given must hold; an empty query
/// reads the whole log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Events about this token.
    pub token: Option<TokenId>,
    /// Events this actor caused.
    pub actor: Option<Actor>,
    /// Events about this teammate.
    pub teammate: Option<TeammateId>,
    /// Events of this company.
    pub company: Option<CompanyId>,
    /// Events recorded at or after this time.
    pub since: Option<Timestamp>,
    /// Events recorded at or before this time.
    pub until: Option<Timestamp>,
    /// Events at or after this log position.
    pub from_position: Option<u64>,
    /// Events at or before this log position.
    pub to_position: Option<u64>,
}

impl HistoryQuery {
    fn matches(&self, envelope: &Envelope) -> bool {
        self.token.is_none_or(|t| envelope.event.token() == Some(t))
            && self.actor.is_none_or(|a| envelope.actor == a)
            && self
                .teammate
                .is_none_or(|t| envelope.event.teammate() == Some(t))
            && self.company.is_none_or(|c| envelope.company == c)
    }

    /// The narrowest stream that holds every match, when there is one.
    fn stream(&self) -> Option<Stream> {
        self.token
            .map(Stream::Token)
            .or(self.teammate.map(Stream::Teammate))
            .or(match self.actor {
                Some(Actor::Teammate(id)) => Some(Stream::Actor(id)),
                _ => None,
            })
            .or(self.company.map(Stream::Company))
    }
}

/// How many events are read at a time.
const CHUNK: usize = 10_000;

impl Ledger {
    /// The events that match `query`, oldest first, each with its position,
    /// time, actor, company, hash, and whether its time was clamped.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredEvent>, LedgerError> {
        self.while_open(|| {
            let head = self.head().position;
            let mut first = query.from_position.unwrap_or(1).max(1);
            if let Some(since) = query.since {
                // Times never go backwards in the log, so the events from `since`
                // on start just after the last one before it.
                let before = since.as_micros().checked_sub(1).map(Timestamp::from_micros);
                let skip = match before {
                    Some(before) => self.position_at(before)?,
                    None => 0,
                };
                first = first.max(skip + 1);
            }
            let mut last = query.to_position.unwrap_or(head).min(head);
            if let Some(until) = query.until {
                last = last.min(self.position_at(until)?);
            }
            let mut found = Vec::new();
            let mut keep = |event: &StoredEvent| {
                if query.matches(&event.envelope) {
                    found.push(event.clone());
                }
            };
            match query.stream() {
                // Read whole, the range's links are checked from the record
                // before it, at the cost of that one read.
                None if first <= last => {
                    replay(&*self.log, first - 1, last, &mut keep)?;
                }
                stream => scan(&*self.log, stream, first, last, &mut keep)?,
            }
            Ok(found)
        })
    }

    /// Every reveal of `token`'s secret, oldest first, read from the
    /// token's events in the log (the state does not keep them).
    pub fn reveals(&self, token: TokenId) -> Result<Vec<Provenance>, LedgerError> {
        let query = HistoryQuery {
            token: Some(token),
            ..HistoryQuery::default()
        };
        Ok(self
            .history(&query)?
            .into_iter()
            .filter(|stored| matches!(stored.envelope.event, Event::TokenRevealed { .. }))
            .map(|stored| Provenance {
                position: stored.envelope.position,
                at: stored.envelope.recorded_at,
                actor: stored.envelope.actor,
            })
            .collect())
    }

    /// The position of the last event recorded at or before `at` (0 if the
    /// log had none then).
    pub fn position_at(&self, at: Timestamp) -> Result<u64, LedgerError> {
        self.while_open(|| {
            // Times never go backwards in the log: a binary search over positions.
            let (mut known, mut beyond) = (0, self.head().position + 1);
            while beyond - known > 1 {
                let middle = known + (beyond - known) / 2;
                let event = self.log.read(middle, 1).map_err(LedgerError::Damaged)?;
                let recorded_at = event.first().map(|e| e.envelope.recorded_at);
                if recorded_at.is_some_and(|t| t <= at) {
                    known = middle;
                } else {
                    beyond = middle;
                }
            }
            Ok(known)
        })
    }

    /// The state as it stood once the event at `position` was applied
    /// (the empty state at 0): the nearest checkpoint at or before it, and
    /// the log replayed from there.
    pub fn state_at(&self, position: u64) -> Result<State, LedgerError> {
        self.while_open(|| {
            let head = self.head().position;
            if position > head {
                return Err(LedgerError::BeyondHead { position, head });
            }
            let mut state = self.checkpoint_at_or_before(position)?.unwrap_or_default();
            replay(&*self.log, state.position(), position, |event| {
                state.apply(&event.envelope);
            })?;
            Ok(state)
        })
    }

    /// The state of one company as it stood at `position`, rebuilt from
    /// that company's events alone (its stream), so that the cost is the
    /// company's history rather than the whole log's. Every decision stays
    /// inside one company (rule 3), so a decision about one of its tokens
    /// made against this state is the one the whole state at `position`
    /// gives.
    pub fn company_state_at(
        &self,
        company: CompanyId,
        position: u64,
    ) -> Result<State, LedgerError> {
        self.while_open(|| {
            let head = self.head().position;
            if position > head {
                return Err(LedgerError::BeyondHead { position, head });
            }
            let mut state = State::new();
            scan(
                &*self.log,
                Some(Stream::Company(company)),
                1,
                position,
                |event| {
                    state.apply(&event.envelope);
                },
            )?;
            Ok(state.as_of(position))
        })
    }

    /// The state to decide a request with `presented` as of `position`:
    /// the state of the company of the token the secret names (a token's
    /// company never changes, and tokens are never forgotten), or an empty
    /// state when it names none, which refuses it as the whole state
    /// would. Decisions against it are those of `state_at(position)`, at
    /// the cost of one company's history.
    pub fn state_for_secret_at(
        &self,
        presented: &str,
        position: u64,
    ) -> Result<State, LedgerError> {
        self.while_open(|| {
            let company = Secret::digest_of(presented).ok().and_then(|digest| {
                self.with_state(|state| {
                    let token = state.token_by_digest(&digest)?;
                    state.token_by_handle(token).map(|t| t.company())
                })
            });
            match company {
                Some(company) => self.company_state_at(company, position),
                None => {
                    let head = self.head().position;
                    if position > head {
                        return Err(LedgerError::BeyondHead { position, head });
                    }
                    Ok(State::new().as_of(position))
                }
            }
        })
    }
}

/// Reads the events at positions `from..=to` in order, of `stream` or of
/// the whole log, a chunk at a time, and lends each to `each`.
///
/// A whole-log read longer than a chunk reads and decodes on two more
/// threads while `each` runs on this one (`scan_beside`).
pub(crate) fn scan(
    log: &dyn EventLog,
    stream: Option<Stream>,
    from: u64,
    to: u64,
    mut each: impl FnMut(&StoredEvent),
) -> Result<(), LedgerError> {
    scan_until(log, stream, from, to, |event| {
        each(event);
        Ok(())
    })
}

/// Replays the whole log's events after position `from` up to `to`, as
/// `scan` reads them, checking that each one's `previous` is the hash of
/// the one before it, from the record at `from` (or genesis at 0) on, and
/// that the record after `to`, if there is one, points at the last one
/// replayed: an edited record whose own hash was recomputed breaks the
/// link after it, and is refused there, as `verify` would refuse it.
/// Returns the head reached.
///
/// The record at `from` is the anchor, and is trusted as far as its own
/// hash: for a checkpoint, the checkpoint's hash was compared with it.
/// The check costs one 32-byte comparison an event on the thread that
/// applies them, and two reads of one record: the anchor and the record
/// after `to` (none when `to` is the head). `each` borrows each event:
/// moving it once more through this closure showed as a tenth more of a
/// replay's copying (callgrind, `open/replay_1m_events`'s log).
pub(crate) fn replay(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    mut each: impl FnMut(&StoredEvent),
) -> Result<Head, LedgerError> {
    let mut reached = match from {
        0 => Head::EMPTY,
        _ => {
            let anchor = log.read(from, 1).map_err(LedgerError::Damaged)?;
            let anchor = anchor.first().ok_or(LedgerError::Damaged(Damage {
                position: from,
                problem: Problem::Missing,
            }))?;
            Head {
                position: from,
                hash: anchor.hash,
            }
        }
    };
    scan_until(log, None, from + 1, to, |event| {
        // INVARIANT (linked-replay): every event applied points at the one
        // applied before it, so a replay applies the chain `verify` checks.
        if event.previous != reached.hash {
            return Err(Damage {
                position: event.envelope.position,
                problem: Problem::ChainBroken {
                    expected: reached.hash,
                    found: event.previous,
                },
            });
        }
        reached = Head {
            position: event.envelope.position,
            hash: event.hash,
        };
        each(event);
        Ok(())
    })?;
    if reached.position < to {
        return Err(LedgerError::Damaged(Damage {
            position: reached.position + 1,
            problem: Problem::Missing,
        }));
    }
    let next = log.read(to + 1, 1).map_err(LedgerError::Damaged)?;
    if let Some(next) = next.first()
        && next.previous != reached.hash
    {
        return Err(LedgerError::Damaged(Damage {
            position: to + 1,
            problem: Problem::ChainBroken {
                expected: reached.hash,
                found: next.previous,
            },
        }));
    }
    Ok(reached)
}

/// `scan`, with an `each` that can stop it: the damage it returns ends
/// the scan, as damage read does. Each event is lent where it lies in the
/// chunk read: moving it out once more was a copy of its ~300 bytes a
/// event on the thread that applies them.
fn scan_until(
    log: &dyn EventLog,
    stream: Option<Stream>,
    from: u64,
    to: u64,
    mut each: impl FnMut(&StoredEvent) -> Result<(), Damage>,
) -> Result<(), LedgerError> {
    if stream.is_none() && to.saturating_sub(from) >= CHUNK as u64 {
        return scan_beside(log, from, to, each);
    }
    let mut stopped = None;
    read_chunks(log, stream, from, to, |chunk| {
        for event in &chunk {
            if let Err(damage) = each(event) {
                stopped = Some(damage);
                return false;
            }
        }
        true
    })?;
    stopped.map_or(Ok(()), |damage| Err(LedgerError::Damaged(damage)))
}

/// `scan` of the whole log, with the reading on two scoped threads, each
/// reading every other chunk and staying at most two of its chunks ahead
/// of `each`, which takes the chunks in order and hands each buffer back
/// to its reader, so that a replay reads into the same few buffers rather
/// than into fresh memory for every chunk, and each event is freed where
/// it was allocated.
///
/// Why two: reading (a record's hash, its decoding, the allocations) was
/// the slower side, 54% of a replay's samples against 29% applying (perf);
/// one reader left the applying thread waiting.
fn scan_beside(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    mut each: impl FnMut(&StoredEvent) -> Result<(), Damage>,
) -> Result<(), LedgerError> {
    const READERS: u64 = 2;
    let chunk = CHUNK as u64;
    std::thread::scope(|scope| {
        let (readers, lanes): (Vec<_>, Vec<_>) = (0..READERS)
            .map(|reader| {
                let (sender, chunks) = std::sync::mpsc::sync_channel(1);
                let (give_back, given_back) = std::sync::mpsc::channel();
                let first = from.saturating_add(reader.saturating_mul(chunk));
                let read = scope.spawn(move || {
                    let stride = READERS.saturating_mul(chunk);
                    // The events a buffer comes back with are dropped on
                    // the thread that decoded them, so that what they
                    // allocated goes back to the cache it came from.
                    let buffer = || {
                        let mut read: Vec<StoredEvent> = given_back.try_recv().unwrap_or_default();
                        read.clear();
                        read
                    };
                    read_every(log, first, stride, to, buffer, |read| {
                        sender.send(read).is_ok()
                    })
                });
                (read, (chunks, give_back))
            })
            .unzip();
        // Chunk k comes from reader k mod READERS. A reader that stops (at
        // `to`, or at damage) ends the scan at its next chunk, so the
        // chunks before damage are applied, as reading on one thread does.
        // `each` stopping ends it at once; the readers stop at their next
        // send.
        let mut stopped = None;
        'chunks: for _ in 0.. {
            for (inbox, give_back) in &lanes {
                let Ok(read) = inbox.recv() else {
                    break 'chunks;
                };
                for event in &read {
                    if let Err(damage) = each(event) {
                        stopped = Some(damage);
                        break 'chunks;
                    }
                }
                // A reader that has read its last chunk takes no buffer
                // back; this one is then freed here.
                if give_back.send(read).is_err() {
                    continue;
                }
            }
        }
        drop(lanes);
        // The damage in the earliest chunk is where the scan stopped.
        let earliest = readers
            .into_iter()
            .filter_map(|read| {
                read.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    .err()
            })
            .min_by_key(|(chunk, _)| *chunk);
        // What `each` stopped at comes before any chunk a reader failed
        // to read: every chunk before its own was read whole.
        match stopped.or(earliest.map(|(_, damage)| damage)) {
            Some(damage) => Err(LedgerError::Damaged(damage)),
            None => Ok(()),
        }
    })
}

/// Reads the whole log's chunks of `..=to` that start at `first`, `first +
/// stride` and so on, each [`CHUNK`] long or up to `to`, each into an empty
/// buffer from `buffer`, handing each to `send` until it answers false. A
/// damaged or short chunk is an error carrying the chunk's start.
fn read_every(
    log: &dyn EventLog,
    first: u64,
    stride: u64,
    to: u64,
    mut buffer: impl FnMut() -> Vec<StoredEvent>,
    mut send: impl FnMut(Vec<StoredEvent>) -> bool,
) -> Result<(), (u64, Damage)> {
    let mut start = first;
    while start <= to {
        let end = to.min(start.saturating_add(CHUNK as u64 - 1));
        let len = usize::try_from(end - start + 1).unwrap_or(CHUNK);
        let mut read = buffer();
        log.read_into(start, len, &mut read)
            .map_err(|damage| (start, damage))?;
        if read.len() != len {
            let missing = Damage {
                position: start + read.len() as u64,
                problem: Problem::Missing,
            };
            return Err((start, missing));
        }
        if !send(read) {
            break;
        }
        start = start.saturating_add(stride);
    }
    Ok(())
}

/// Reads `from..=to` as `scan` does, handing over a chunk at a time until
/// `chunk_read` answers false.
fn read_chunks(
    log: &dyn EventLog,
    stream: Option<Stream>,
    from: u64,
    to: u64,
    mut chunk_read: impl FnMut(Vec<StoredEvent>) -> bool,
) -> Result<(), LedgerError> {
    let mut next = from.max(1);
    while next <= to {
        let mut chunk = match stream {
            Some(stream) => log.read_stream(stream, next, CHUNK),
            // The log is read no further than `to`.
            None => log.read(
                next,
                usize::try_from(to - next + 1).map_or(CHUNK, |n| n.min(CHUNK)),
            ),
        }
        .map_err(LedgerError::Damaged)?;
        let Some(end) = chunk.last().map(|e| e.envelope.position) else {
            break;
        };
        next = end + 1;
        chunk.retain(|e| e.envelope.position <= to);
        if !chunk_read(chunk) {
            break;
        }
    }
    Ok(())
}

fn on_off(allowed: bool) -> &'static str {
    if allowed { "on" } else { "off" }
}

/// What an event did, in a few words.
pub fn describe_event(event: &Event) -> String {
    match event {
        Event::CompanyCreated { company, name } => format!("created company {company} \"{name}\""),
        Event::TeammateAdded {
            teammate,
            name,
            role,
        } => format!("added teammate {teammate} \"{name}\" as {role}"),
        Event::TeammateRoleChanged { teammate, role } => {
            format!("made {teammate} {role}")
        }
        Event::TeammateDeactivated { teammate } => format!("deactivated {teammate}"),
        Event::WorkspaceCreated { workspace, name } => {
            format!("created workspace {workspace} \"{name}\"")
        }
        Event::WorkspaceDeleted { workspace } => format!("deleted workspace {workspace}"),
        Event::TokenCreated {
            token, name, kind, ..
        } => format!("created {kind} {token} \"{name}\""),
        Event::TokenRevealed { token } => format!("revealed the secret of {token}"),
        Event::TokenDeleted { token } => format!("deleted {token}"),
        Event::PrivateApiAccessChanged { teammate, allowed } => format!(
            "turned {}'s private API access {}",
            teammate,
            on_off(*allowed)
        ),
        Event::PrivateApiAccessSetForAll { allowed } => format!(
            "turned private API access {} for every teammate",
            on_off(*allowed)
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use std::time::Duration;

    use tokenledger_events::{Actor, CompanyId, Envelope, EventId, Timestamp};
    use tokenledger_store::{AppendError, Expectation, Head, NewEvent, StoredRecord, Verified};

    use super::*;

    /// A log of `len` events that are damaged at the positions in
    /// `damaged`: a read over one fails there, as the sled log's does.
    /// The events at the positions in `unlinked` point at no predecessor,
    /// as a record edited with its own hash recomputed leaves the one
    /// after it. Only `read` is used by a scan.
    struct Damaged {
        len: u64,
        damaged: Vec<u64>,
        unlinked: Vec<u64>,
    }

    /// The hash of the mock's record at `position`.
    fn hash_of(position: u64) -> [u8; 32] {
        let mut hash = [0; 32];
        hash[..8].copy_from_slice(&position.to_be_bytes());
        hash
    }

    impl EventLog for Damaged {
        fn append(&self, _: Vec<NewEvent>, _: Expectation) -> Result<Vec<u64>, AppendError> {
            Err(AppendError::Closed)
        }
        fn head(&self) -> Head {
            Head::EMPTY
        }
        fn read(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, Damage> {
            let to = self.len.min(from + limit as u64 - 1);
            if let Some(position) = self.damaged.iter().find(|p| (from..=to).contains(*p)) {
                return Err(Damage {
                    position: *position,
                    problem: Problem::Missing,
                });
            }
            Ok((from..=to)
                .map(|position| StoredEvent {
                    envelope: Envelope {
                        position,
                        event_id: EventId::from_u128(position.into()),
                        recorded_at: Timestamp::from_micros(position),
                        actor: Actor::System,
                        company: CompanyId::from_u128(1),
                        event: Event::TokenRevealed {
                            token: tokenledger_events::TokenId::from_u128(1),
                        },
                    },
                    hash: hash_of(position),
                    previous: if self.unlinked.contains(&position) {
                        [7; 32]
                    } else {
                        hash_of(position - 1)
                    },
                    clock_clamped: false,
                })
                .collect())
        }
        fn read_stream(&self, _: Stream, _: u64, _: usize) -> Result<Vec<StoredEvent>, Damage> {
            Ok(Vec::new())
        }
        fn position_of(&self, _: EventId) -> Result<Option<u64>, Damage> {
            Ok(None)
        }
        fn stream_head(&self, _: Stream) -> Result<u64, Damage> {
            Ok(0)
        }
        fn wait_for(&self, _: u64, _: Duration) -> u64 {
            0
        }
        fn verify_with(&self, _: &mut dyn FnMut(u64)) -> Result<Verified, Damage> {
            Err(Damage {
                position: 1,
                problem: Problem::Missing,
            })
        }
        fn read_records(&self, _: u64, _: usize) -> Result<Vec<StoredRecord>, Damage> {
            Ok(Vec::new())
        }
        fn append_records(&self, _: Vec<Vec<u8>>) -> Result<Head, AppendError> {
            Err(AppendError::Closed)
        }
    }

    /// Scans the whole of `log`; returns the positions handed over, and the
    /// position of the damage it stopped at.
    fn scanned(log: &Damaged) -> (Vec<u64>, Option<u64>) {
        let mut seen = Vec::new();
        let outcome = scan(log, None, 1, log.len, |event| {
            seen.push(event.envelope.position)
        });
        let damage = match outcome {
            Ok(()) => None,
            Err(LedgerError::Damaged(damage)) => Some(damage.position),
            Err(other) => panic!("{other}"),
        };
        (seen, damage)
    }

    #[test]
    fn a_scan_read_on_two_threads_hands_over_every_event_in_order() {
        let chunk = CHUNK as u64;
        for len in [chunk, 2 * chunk + 1, 4 * chunk, 4 * chunk + 7] {
            let (seen, damage) = scanned(&Damaged {
                len,
                damaged: Vec::new(),
                unlinked: Vec::new(),
            });
            assert_eq!((seen, damage), ((1..=len).collect(), None), "{len}");
        }
    }

    #[test]
    fn a_scan_stops_at_the_earliest_damage_with_everything_before_its_chunk() {
        let chunk = CHUNK as u64;
        // Chunks are 1..=10,000, 10,001..=20,000, ...; the first reader
        // reads the odd ones, the second the even ones.
        for (damaged, stopped_at, applied) in [
            (vec![chunk + 5], chunk + 5, chunk),
            (vec![2 * chunk + 5], 2 * chunk + 5, 2 * chunk),
            (vec![chunk + 5, 2 * chunk + 5], chunk + 5, chunk),
            (vec![2 * chunk + 5, 3 * chunk + 5], 2 * chunk + 5, 2 * chunk),
            (vec![1], 1, 0),
        ] {
            let log = Damaged {
                len: 5 * chunk,
                damaged: damaged.clone(),
                unlinked: Vec::new(),
            };
            let (seen, damage) = scanned(&log);
            assert_eq!(damage, Some(stopped_at), "{damaged:?}");
            assert_eq!(seen, (1..=applied).collect::<Vec<_>>(), "{damaged:?}");
        }
    }

    #[test]
    fn a_replay_stops_at_the_first_broken_link_with_everything_before_it() {
        let chunk = CHUNK as u64;
        let len = 5 * chunk;
        // In the first reader's chunks and the second's, at a chunk's
        // first event, with damage read later, and the record after the
        // last one replayed.
        for (unlinked, damaged, from, to, stopped_at) in [
            (vec![chunk + 5], vec![], 0, len, chunk + 5),
            (vec![2 * chunk + 5], vec![], 0, len, 2 * chunk + 5),
            (vec![2 * chunk + 1], vec![4 * chunk], 0, len, 2 * chunk + 1),
            (vec![1], vec![], 0, len, 1),
            (vec![chunk + 5], vec![], chunk, len, chunk + 5),
            (vec![7], vec![], 0, 6, 7),
            (vec![3 * chunk], vec![], 0, 3 * chunk - 1, 3 * chunk),
        ] {
            let log = Damaged {
                len,
                damaged,
                unlinked: unlinked.clone(),
            };
            let mut seen = Vec::new();
            let outcome = replay(&log, from, to, |event| seen.push(event.envelope.position));
            match outcome {
                Err(LedgerError::Damaged(Damage {
                    position,
                    problem: Problem::ChainBroken { .. },
                })) => assert_eq!(position, stopped_at, "{unlinked:?}"),
                other => panic!("{unlinked:?}: {other:?}"),
            }
            let applied = (stopped_at - 1).min(to);
            assert_eq!(
                seen,
                (from + 1..=applied).collect::<Vec<_>>(),
                "{unlinked:?}"
            );
        }
        // Whole, it reaches the end.
        let whole = Damaged {
            len,
            damaged: Vec::new(),
            unlinked: Vec::new(),
        };
        let reached = replay(&whole, 0, len, |_| {}).unwrap();
        assert_eq!(
            reached,
            Head {
                position: len,
                hash: hash_of(len)
            }
        );
    }
}
