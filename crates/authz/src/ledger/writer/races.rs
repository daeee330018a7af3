//! A group that meets, at its append, events another process recorded
//! under its ids: made deterministic by a log that, on its first append,
//! first appends what "another process" recorded, then the group. Which
//! answers are lost races (decided again, and answered from the log),
//! and which close the ledger. The same log counts the reads of its head,
//! which on PostgreSQL are queries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokenledger_events::{CompanyId, EventId, Name, Role, TeammateId};
use tokenledger_store::{
    Damage, EventLog, Head, Options, SledLog, StoredEvent, StoredRecord, Stream, Verified,
};

use super::*;
use crate::checkpoints::Checkpoints;
use crate::ledger::{LedgerOptions, Opened};

/// What "another process" appends to the log just before the group's
/// append reaches it, given the group's batch.
type Meanwhile = Box<dyn FnOnce(&dyn EventLog, &[NewEvent]) + Send>;

/// A sled log that runs `meanwhile` before its first append, and whose
/// index of event ids, if `forgets`, finds nothing; it counts the reads
/// of its head in `heads`.
struct Racing {
    inner: SledLog,
    meanwhile: Mutex<Option<Meanwhile>>,
    forgets: bool,
    heads: AtomicUsize,
}

impl EventLog for Racing {
    fn append(
        &self,
        batch: Vec<NewEvent>,
        expectation: Expectation,
    ) -> Result<Vec<u64>, AppendError> {
        if let Some(meanwhile) = self.meanwhile.lock().take() {
            meanwhile(&self.inner, &batch);
        }
        self.inner.append(batch, expectation)
    }
    fn head(&self) -> Head {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.head()
    }
    fn read(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, Damage> {
        self.inner.read(from, limit)
    }
    fn read_stream(
        &self,
        stream: Stream,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Damage> {
        self.inner.read_stream(stream, from, limit)
    }
    fn position_of(&self, id: EventId) -> Result<Option<u64>, Damage> {
        if self.forgets {
            return Ok(None);
        }
        self.inner.position_of(id)
    }
    fn stream_head(&self, stream: Stream) -> Result<u64, Damage> {
        self.inner.stream_head(stream)
    }
    fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        self.inner.wait_for(position, timeout)
    }
    fn verify_with(&self, progress: &mut dyn FnMut(u64)) -> Result<Verified, Damage> {
        self.inner.verify_with(progress)
    }
    fn read_records(&self, from: u64, limit: usize) -> Result<Vec<StoredRecord>, Damage> {
        self.inner.read_records(from, limit)
    }
    fn append_records(&self, records: Vec<Vec<u8>>) -> Result<Head, AppendError> {
        self.inner.append_records(records)
    }
}

/// A ledger over a [`Racing`] log in `dir`, sharing it with other
/// processes if `follows` (as on PostgreSQL).
fn ledger(dir: &std::path::Path, follows: bool, forgets: bool) -> (Ledger, Arc<Racing>) {
    let stamp = Arc::new(Mutex::new(Timestamp::EPOCH));
    let options = Options {
        clock: Some(Writer::log_clock(&stamp)),
        ..Options::default()
    };
    let log = Arc::new(Racing {
        inner: SledLog::open(dir, options).unwrap(),
        meanwhile: Mutex::new(None),
        forgets,
        heads: AtomicUsize::new(0),
    });
    let opened = Opened {
        log: Arc::clone(&log) as Arc<dyn EventLog>,
        checkpoints: Checkpoints::new(dir, None, false),
        newest: None,
        clock: None,
        stamp,
        follows,
    };
    (
        Ledger::open_on(opened, LedgerOptions::default()).unwrap(),
        log,
    )
}

fn create(id: u128, name: &str) -> Command {
    Command::CreateCompany {
        company: CompanyId::from_u128(id),
        name: Name::new(name).unwrap(),
    }
}

/// Races between processes: a lost one is caught up with, which only a
/// ledger built to share its log does.
#[cfg(feature = "postgres")]
mod shared {
    use std::thread::JoinHandle;

    use metrics_util::MetricKind;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tokenledger_events::Event;

    use super::*;

    fn company(id: u128, name: &str) -> Event {
        Event::CompanyCreated {
            company: CompanyId::from_u128(id),
            name: Name::new(name).unwrap(),
        }
    }

    /// "Another process"'s event.
    fn by_system(event_id: EventId, event: Event) -> NewEvent {
        let company = match &event {
            Event::CompanyCreated { company, .. } => *company,
            _ => panic!("only companies here"),
        };
        NewEvent {
            event_id,
            actor: Actor::System,
            company,
            event,
        }
    }

    /// Sends `commands` to the writer while its desk is held, so they are
    /// decided as one group, in order, once it is let go.
    fn as_one_group(
        ledger: &Arc<Ledger>,
        commands: Vec<(Actor, Command, Option<IdempotencyKey>)>,
    ) -> Vec<JoinHandle<Result<Receipt, LedgerError>>> {
        let desk = ledger.writer();
        let mut threads = Vec::new();
        for (sent, (actor, command, key)) in (1..).zip(commands) {
            let sender = Arc::clone(ledger);
            threads.push(std::thread::spawn(move || {
                sender.execute_keyed(actor, command, key)
            }));
            while ledger.writer.queued.load(Ordering::SeqCst) < sent {
                std::thread::yield_now();
            }
        }
        drop(desk);
        threads
    }

    fn replies(
        threads: Vec<JoinHandle<Result<Receipt, LedgerError>>>,
    ) -> Vec<Result<Receipt, LedgerError>> {
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// Another process recorded two keyed commands of the group with an
    /// unkeyed command between them: the log answers the group as a retry,
    /// at positions that are not contiguous. A lost race: each command is
    /// answered from the log, and the ledger stays open.
    #[test]
    fn keyed_commands_another_process_recorded_apart_are_answered_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, log) = ledger(dir.path(), true, false);
        let ledger = Arc::new(ledger);
        let (k1, k2) = (
            IdempotencyKey::new(b"k1", b"request"),
            IdempotencyKey::new(b"k2", b"request"),
        );
        *log.meanwhile.lock() = Some(Box::new(move |log, _| {
            let theirs = vec![
                by_system(k1.event_id(0), company(11, "Ours one")),
                by_system(fresh::event_id().unwrap(), company(12, "Unkeyed")),
                by_system(k2.event_id(0), company(13, "Ours two")),
            ];
            log.append(theirs, Expectation::Any).unwrap();
        }));
        let threads = as_one_group(
            &ledger,
            vec![
                (Actor::System, create(1, "Ours one"), Some(k1)),
                (Actor::System, create(2, "Ours two"), Some(k2)),
            ],
        );
        let answers = replies(threads);
        assert_eq!(ledger.health().closed, None);
        for (answer, (position, theirs)) in answers.into_iter().zip([(1, 11), (3, 13)]) {
            let receipt = answer.unwrap();
            assert!(receipt.replayed);
            assert_eq!(receipt.events.len(), 1);
            assert_eq!(receipt.events[0].position, position);
            assert_eq!(receipt.events[0].company, CompanyId::from_u128(theirs));
        }
        assert_eq!(ledger.head().position, 3);
        ledger.with_state(|state| {
            assert!(state.company(CompanyId::from_u128(1)).is_none());
            assert!(state.company(CompanyId::from_u128(13)).is_some());
        });
    }

    /// A group holding an unkeyed command whose every id the log answers as
    /// found: no other process can hold a random id, so this is no race,
    /// and the ledger closes rather than run the unkeyed command again.
    #[test]
    fn a_mixed_group_the_log_answers_as_all_found_closes_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, log) = ledger(dir.path(), true, false);
        let ledger = Arc::new(ledger);
        let key = IdempotencyKey::new(b"k1", b"request");
        *log.meanwhile.lock() = Some(Box::new(|log, batch| {
            let others = [company(11, "Other one"), company(12, "Other two")];
            let theirs = batch
                .iter()
                .zip(others)
                .map(|(ours, event)| by_system(ours.event_id, event))
                .collect();
            log.append(theirs, Expectation::Any).unwrap();
        }));
        let threads = as_one_group(
            &ledger,
            vec![
                (Actor::System, create(1, "Keyed"), Some(key)),
                (Actor::System, create(2, "Unkeyed"), None),
            ],
        );
        for answer in replies(threads) {
            assert!(answer.is_err());
        }
        assert!(ledger.health().closed.is_some());
        assert_eq!(ledger.head().position, 2);
    }

    /// Only the commands placed in the batch count: a keyed command refused
    /// before an unkeyed one leaves a group of random ids, and the log's
    /// answer that they are all found closes the ledger.
    #[test]
    fn a_refused_keyed_command_does_not_make_its_group_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, log) = ledger(dir.path(), true, false);
        let ledger = Arc::new(ledger);
        let key = IdempotencyKey::new(b"k1", b"request");
        *log.meanwhile.lock() = Some(Box::new(|log, batch| {
            let theirs = vec![by_system(batch[0].event_id, company(11, "Other"))];
            log.append(theirs, Expectation::Any).unwrap();
        }));
        let outsider = Actor::Teammate(TeammateId::from_u128(9));
        let threads = as_one_group(
            &ledger,
            vec![
                (outsider, create(1, "Refused"), Some(key)),
                (Actor::System, create(2, "Unkeyed"), None),
            ],
        );
        let answers = replies(threads);
        assert!(matches!(answers[0], Err(LedgerError::Refused(_))));
        assert!(answers[1].is_err());
        assert!(ledger.health().closed.is_some());
        assert_eq!(ledger.head().position, 1);
    }

    /// What another process appended, caught up with, moves the head and
    /// applied gauges, which a replica's own commands may never do.
    #[test]
    fn catching_up_records_the_positions_reached() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, log) = ledger(dir.path(), true, false);
        let theirs = vec![by_system(fresh::event_id().unwrap(), company(11, "Acme"))];
        log.inner.append(theirs, Expectation::Any).unwrap();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || ledger.catch_up_now().unwrap());
        let snapshot = snapshotter.snapshot().into_vec();
        let gauge = |name| {
            snapshot
                .iter()
                .find_map(|(key, _, _, value)| match (key.kind(), value) {
                    (MetricKind::Gauge, DebugValue::Gauge(g)) if key.key().name() == name => {
                        Some(g.into_inner())
                    }
                    _ => None,
                })
        };
        assert_eq!(gauge(observe::HEAD_POSITION), Some(1.0));
        assert_eq!(gauge(observe::APPLIED_POSITION), Some(1.0));
    }

    /// Another process's clock runs an hour ahead: once its events are
    /// caught up with, this process's commands are decided at the time
    /// the log will stamp them with (never before the last record's), not
    /// at its own clock's. Decided at its own, a token expiring in half an
    /// hour was created, and recorded half an hour after its expiry.
    #[test]
    fn commands_after_another_process_s_later_events_are_decided_at_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, log) = ledger(dir.path(), true, false);
        let (company_id, admin) = (CompanyId::from_u128(1), TeammateId::from_u128(2));
        ledger.execute(Actor::System, create(1, "Acme")).unwrap();
        let add = Command::AddTeammate {
            company: company_id,
            teammate: admin,
            name: Name::new("Ada").unwrap(),
            role: Role::Admin,
        };
        ledger.execute(Actor::System, add).unwrap();
        let now = Timestamp::from_system_time(SystemTime::now());
        let hour = 3_600_000_000;
        // Stamped by the log with the clock it was given: an hour ahead.
        *ledger.writer.stamp.lock() = Timestamp::from_micros(now.as_micros() + hour);
        let theirs = vec![by_system(fresh::event_id().unwrap(), company(11, "Ahead"))];
        log.inner.append(theirs, Expectation::Any).unwrap();
        ledger.catch_up_now().unwrap();

        let expires_at = Timestamp::from_micros(now.as_micros() + hour / 2);
        let new = crate::NewToken {
            company: company_id,
            name: Name::new("Plugin").unwrap(),
            kind: tokenledger_events::TokenKind::ApiToken,
            scope: tokenledger_events::TokenScope {
                features: [tokenledger_events::Feature::Resources].into(),
                namespaces: tokenledger_events::Namespaces {
                    global: true,
                    ..tokenledger_events::Namespaces::none()
                },
                grants: ["tags:read".parse().unwrap()].into_iter().collect(),
            },
            expires_at: Some(expires_at),
        };
        let refused = ledger
            .create_token(Actor::Teammate(admin), new)
            .map(|created| created.receipt.events[0].recorded_at);
        assert!(
            matches!(
                refused,
                Err(LedgerError::Refused(
                    crate::CommandError::ExpiryNotInFuture { .. }
                ))
            ),
            "{refused:?}"
        );
    }

    /// A command records one event: a key whose second derived id follows
    /// its first in the log names no command this one could have been, and
    /// is refused rather than answered with the first event alone.
    #[test]
    fn a_key_whose_events_run_on_past_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, log) = ledger(dir.path(), true, false);
        let key = IdempotencyKey::new(b"k1", b"request");
        let theirs = vec![
            by_system(key.event_id(0), company(11, "Acme")),
            by_system(key.event_id(1), company(12, "Acme")),
        ];
        log.inner.append(theirs, Expectation::Any).unwrap();
        let refused = ledger
            .execute_keyed(Actor::System, create(1, "Acme"), Some(key))
            .unwrap_err();
        assert!(
            matches!(refused, LedgerError::KeyReused { position: 1 }),
            "{refused}"
        );
        assert_eq!(ledger.head().position, 2);
    }
}

/// On a log this process owns, an answer at positions other than those a
/// write lands at closes the ledger, even when the events there hold what
/// the group decided: applied, they would move the state back. Here the
/// index of event ids lost the first command's, so its retry is decided
/// again, the same role change, and the log answers where it was.
#[test]
fn an_answer_at_older_positions_closes_a_ledger_the_log_is_not_shared_by() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _log) = ledger(dir.path(), false, true);
    let company_id = CompanyId::from_u128(1);
    let (admin, member) = (TeammateId::from_u128(2), TeammateId::from_u128(3));
    ledger.execute(Actor::System, create(1, "Acme")).unwrap();
    for (teammate, role) in [(admin, Role::Admin), (member, Role::Member)] {
        let add = Command::AddTeammate {
            company: company_id,
            teammate,
            name: Name::new("Someone").unwrap(),
            role,
        };
        ledger.execute(Actor::System, add).unwrap();
    }
    let key = IdempotencyKey::new(b"promote", b"request");
    let promote = Command::ChangeRole {
        teammate: member,
        role: Role::Admin,
    };
    let by = Actor::Teammate(admin);
    let first = ledger.execute_once(by, promote.clone(), key).unwrap();
    let demote = Command::ChangeRole {
        teammate: member,
        role: Role::Member,
    };
    ledger.execute(by, demote).unwrap();
    let again = ledger.execute_once(by, promote, key);
    assert!(again.is_err(), "{again:?}");
    assert!(ledger.health().closed.is_some());
    assert_eq!(first.position(), 4);
    assert_eq!(ledger.head().position, 5);
}

/// Recording a group asks the log for nothing but the append and its read
/// back: on PostgreSQL the head is a query, which every member of the
/// group, the leader's caller too, would wait for.
#[test]
fn a_command_reads_no_head_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, log) = ledger(dir.path(), false, false);
    log.heads.store(0, Ordering::SeqCst);
    ledger.execute(Actor::System, create(1, "Acme")).unwrap();
    assert_eq!(log.heads.load(Ordering::SeqCst), 0);
}
