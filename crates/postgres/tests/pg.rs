//! What is PostgreSQL's own: several handles (as several processes) on one
//! log, the tail across them with and without notifications, the schema's
//! version, connection errors, tampering with the indexes and the head,
//! and a log copied from sled.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::time::{Duration, Instant};

use tokenledger_events::*;
use tokenledger_postgres::{OpenError, Options, PgLog, SCHEMA_VERSION};
use tokenledger_store::*;

use common::Database;

fn event(id: u128) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::System,
        company: CompanyId::from_u128(1),
        event: Event::WorkspaceCreated {
            workspace: WorkspaceId::from_u128(id),
            name: Name::new("Support").unwrap(),
        },
    }
}

fn open(database: &Database, poll: Duration) -> PgLog {
    let options = Options {
        poll_interval: poll,
        ..Options::default()
    };
    PgLog::open(&database.url, options).unwrap()
}

#[test]
fn expectations_and_retries_hold_across_handles_on_one_database() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let a = open(&database, Duration::from_millis(50));
    let b = open(&database, Duration::from_millis(50));
    assert_eq!(
        a.append(vec![event(1)], Expectation::Head(0)).unwrap(),
        vec![1]
    );
    // b saw the head at 0: its append conflicts, and says where it is.
    assert_eq!(
        b.append(vec![event(2)], Expectation::Head(0)),
        Err(AppendError::Conflict {
            expected: Expectation::Head(0),
            found: 1
        })
    );
    // A retry through the other handle finds the original.
    assert_eq!(b.append(vec![event(1)], Expectation::Any).unwrap(), vec![1]);
    assert_eq!(b.head(), a.head());
    // Racing handles each win or conflict; none is lost.
    let won: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = [&a, &b]
            .into_iter()
            .enumerate()
            .map(|(n, log)| {
                scope.spawn(move || {
                    let mut won = 0;
                    for i in 0..30u128 {
                        let head = log.head().position;
                        let id = 1_000 + 100 * n as u128 + i;
                        match log.append(vec![event(id)], Expectation::Head(head)) {
                            Ok(at) => {
                                assert_eq!(at, vec![head + 1]);
                                won += 1;
                            }
                            Err(AppendError::Conflict { .. }) => {}
                            Err(other) => panic!("{other}"),
                        }
                    }
                    won
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(a.verify().unwrap().records, 1 + won);
    assert_eq!(b.verify().unwrap(), a.verify().unwrap());
}

#[test]
fn a_tail_follows_appends_made_through_another_handle() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    // Polling every 30 s: only a notification can wake the follower soon.
    let follower = open(&database, Duration::from_secs(30));
    let writer = open(&database, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    writer.append(vec![event(1)], Expectation::Any).unwrap();
    assert_eq!(follower.wait_for(1, Duration::from_secs(5)), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut subscription = Subscription::new(&follower, 1);
    assert_eq!(
        subscription.poll(10, Duration::from_secs(1)).unwrap().len(),
        1
    );
}

#[test]
fn a_lost_notification_costs_latency_only() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let follower = open(&database, Duration::from_millis(200));
    let writer = open(&database, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    // The follower's LISTEN connection dropped: notifications sent while
    // it is gone are lost for good.
    let mut admin = database.client();
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'tokenledger-watch' AND datname = current_database()",
            &[],
        )
        .unwrap();
    assert!(!killed.is_empty());
    writer.append(vec![event(1)], Expectation::Any).unwrap();
    assert_eq!(follower.wait_for(1, Duration::from_secs(5)), 1);
    writer.append(vec![event(2)], Expectation::Any).unwrap();
    assert_eq!(follower.wait_for(2, Duration::from_secs(5)), 2);
}

#[test]
fn a_newer_schema_is_refused_with_both_versions_named() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    drop(open(&database, Duration::from_millis(50)));
    database
        .client()
        .execute("UPDATE tokenledger_schema SET version = 99", &[])
        .unwrap();
    let error = PgLog::open(&database.url, Options::default())
        .err()
        .unwrap();
    assert_eq!(
        error,
        OpenError::NewerSchema {
            found: 99,
            known: SCHEMA_VERSION
        }
    );
    let text = error.to_string();
    assert!(
        text.contains("99") && text.contains(&SCHEMA_VERSION.to_string()),
        "{text}"
    );
}

#[test]
fn a_head_row_that_does_not_convert_is_refused_not_read_as_another_head() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    drop(open(&database, Duration::from_millis(50)));
    for (edit, named) in [
        (
            "UPDATE tokenledger_head SET hash = '\\x0102'",
            "hash has 2 bytes",
        ),
        (
            "UPDATE tokenledger_head SET position = -3",
            "position is -3",
        ),
    ] {
        let mut client = database.client();
        let saved = client
            .query_one("SELECT position, hash FROM tokenledger_head", &[])
            .unwrap();
        let (position, hash): (i64, Vec<u8>) = (saved.get(0), saved.get(1));
        let log = open(&database, Duration::from_millis(50));
        client.execute(edit, &[]).unwrap();
        let error = PgLog::open(&database.url, Options::default())
            .err()
            .unwrap();
        assert!(error.to_string().contains(named), "{error}");
        // An append is not chained onto it either: refused, nothing written.
        let refused = log.append(vec![event(1)], Expectation::Any).unwrap_err();
        assert!(refused.to_string().contains(named), "{refused}");
        let events: i64 = client
            .query_one("SELECT count(*) FROM tokenledger_events", &[])
            .unwrap()
            .get(0);
        assert_eq!(events, 0);
        drop(log);
        client
            .execute(
                "UPDATE tokenledger_head SET position = $1, hash = $2",
                &[&position, &hash],
            )
            .unwrap();
    }
    drop(open(&database, Duration::from_millis(50)));
}

#[test]
fn connection_errors_name_the_server_never_the_password_and_do_not_hang() {
    let started = Instant::now();
    let error = PgLog::open(
        "postgres://someone:sekrit-pw@127.0.0.1:1/ledger",
        Options::default(),
    )
    .err()
    .unwrap();
    let text = error.to_string();
    assert!(matches!(error, OpenError::Connect { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("sekrit"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = PgLog::open(
        "postgres://someone:sekrit-pw@[::1:5432/x",
        Options::default(),
    )
    .err()
    .unwrap();
    assert_eq!(error, OpenError::Url);
    assert!(!error.to_string().contains("sekrit"));
    // A server that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let options = Options {
        connect_timeout: Duration::from_millis(500),
        ..Options::default()
    };
    let error = PgLog::open(&format!("postgres://someone@127.0.0.1:{port}/x"), options)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A keyed command looks for its event ids before it is decided, and
/// answers from the record it finds: a row whose id column was edited to
/// name another event must be refused, by the look and by an append
/// that would take it for a retry, never answered with another's record.
#[test]
fn an_event_id_column_naming_another_record_is_refused_by_a_look_or_a_retry() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let log = open(&database, Duration::from_millis(50));
    for id in 1..=3 {
        log.append(vec![event(id)], Expectation::Any).unwrap();
    }
    database
        .client()
        .batch_execute(&format!(
            "UPDATE tokenledger_events SET event_id = '\\x{:032x}' WHERE position = 2",
            99
        ))
        .unwrap();
    let expected = Damage {
        position: 2,
        problem: Problem::IndexDisagrees("its event id column is not the record's"),
    };
    assert_eq!(log.position_of(EventId::from_u128(99)), Err(expected));
    let appended = log.append(vec![event(99)], Expectation::Any);
    assert!(appended.is_err(), "{appended:?}");
    assert_eq!(log.head().position, 3);
    // A true retry still gets its position back.
    assert_eq!(log.append(vec![event(3)], Expectation::Any), Ok(vec![3]));
}

#[test]
fn edits_to_the_indexes_or_the_head_are_found_by_verify() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let log = open(&database, Duration::from_millis(50));
    for id in 1..=10 {
        log.append(vec![event(id)], Expectation::Any).unwrap();
    }
    let good = log.verify().unwrap();
    let mut client = database.client();
    let damage = |client: &mut postgres::Client, edit: &str, undo: &str| {
        client.batch_execute(edit).unwrap();
        let damage = log.verify().unwrap_err();
        client.batch_execute(undo).unwrap();
        assert_eq!(log.verify().unwrap(), good);
        damage
    };
    let found = damage(
        &mut client,
        "UPDATE tokenledger_streams SET position = 1000 WHERE position = 4",
        "UPDATE tokenledger_streams SET position = 4 WHERE position = 1000",
    );
    assert_eq!(found.position, 4, "{found}");
    assert!(
        matches!(found.problem, Problem::IndexDisagrees(_)),
        "{found}"
    );
    let found = damage(
        &mut client,
        "UPDATE tokenledger_events SET event_id = '\\x00' WHERE position = 6",
        &format!(
            "UPDATE tokenledger_events SET event_id = '\\x{:032x}' WHERE position = 6",
            6
        ),
    );
    assert_eq!(found.position, 6, "{found}");
    let found = damage(
        &mut client,
        "UPDATE tokenledger_head SET position = 9",
        "UPDATE tokenledger_head SET position = 10",
    );
    assert!(
        matches!(found.problem, Problem::HeadDisagrees { .. }),
        "{found}"
    );
    // A record and its hash rewritten together breaks the link after it.
    let records = log.read_records(1, 10).unwrap();
    let (forged, _) = backend::seal(&GENESIS, 0, &records[3].bytes[66..]);
    client
        .execute(
            "UPDATE tokenledger_events SET record = $1 WHERE position = 4",
            &[&forged],
        )
        .unwrap();
    let found = log.verify().unwrap_err();
    assert!(
        matches!(found.problem, Problem::ChainBroken { .. }),
        "{found}"
    );
}

#[test]
fn a_log_exported_from_sled_imports_byte_for_byte_with_the_same_head() {
    let Some(server) = common::server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sled = SledLog::open(dir.path(), tokenledger_store::Options::default()).unwrap();
    for chunk in (1..=300u128).collect::<Vec<_>>().chunks(7) {
        sled.append(
            chunk.iter().map(|id| event(*id)).collect(),
            Expectation::Any,
        )
        .unwrap();
    }
    let database = Database::create(&server);
    let pg = open(&database, Duration::from_millis(50));
    let mut from = 1;
    loop {
        let records = sled.read_records(from, 64).unwrap();
        if records.is_empty() {
            break;
        }
        from += records.len() as u64;
        pg.append_records(records.into_iter().map(|r| r.bytes).collect())
            .unwrap();
    }
    assert_eq!(pg.verify().unwrap(), sled.verify().unwrap());
    assert_eq!(
        pg.read_records(1, 1000).unwrap(),
        sled.read_records(1, 1000).unwrap()
    );
    // And back.
    let back = tempfile::tempdir().unwrap();
    let copy = SledLog::open(back.path(), tokenledger_store::Options::default()).unwrap();
    let records = pg.read_records(1, 1000).unwrap();
    copy.append_records(records.into_iter().map(|r| r.bytes).collect())
        .unwrap();
    assert_eq!(copy.verify().unwrap(), sled.verify().unwrap());
}

/// The log's connections killed between appends, as a server restart
/// would: each append succeeds or fails cleanly, the log reconnects, and
/// nothing acknowledged is lost. (Killed during a `COMMIT`, the writer
/// looks for the group's events on a new connection: not reproduced here.)
#[test]
fn connections_killed_between_appends_lose_no_acknowledged_event() {
    let Some(server) = common::server() else {
        return;
    };
    let database = Database::create(&server);
    let log = open(&database, Duration::from_millis(50));
    let mut admin = database.client();
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for id in 1..=60u128 {
        if id % 7 == 0 {
            admin
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'tokenledger' AND datname = current_database()",
                )
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        match log.append(vec![event(id)], Expectation::Any) {
            Ok(at) => acknowledged.push((id, at[0])),
            Err(AppendError::Io(message)) => {
                assert!(
                    message.contains("127.0.0.1") || message.contains("localhost"),
                    "{message}"
                );
                failed += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(failed > 0, "no append met a killed connection");
    let verified = log.verify().unwrap();
    assert_eq!(verified.records, acknowledged.len() as u64);
    let all = log.read(1, 1000).unwrap();
    for (id, at) in &acknowledged {
        assert_eq!(
            all[*at as usize - 1].envelope.event_id,
            EventId::from_u128(*id)
        );
    }
}
