//! Health and metrics: ready once the state has caught up with the log,
//! never once closed; commands, positions and decisions reach whatever
//! metrics recorder the service installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

mod common;

use common::ledger::{a_company, create_tags_token, failing_at, read_tag};
use tokenledger_authz::*;
use tokenledger_events::*;
use tokenledger_store::FaultPoint;

#[test]
fn a_ledger_is_ready_while_caught_up_and_not_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at(FaultPoint::Sync);
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    let empty = ledger.health();
    assert!(empty.ready, "{empty:?}");
    assert_eq!((empty.head, empty.applied, empty.closed), (0, 0, None));

    let (company, _) = a_company(&ledger);
    let health = ledger.health();
    assert!(health.ready, "{health:?}");
    assert_eq!((health.head, health.applied), (2, 2));
    assert_eq!(ledger.applied_position(), 2);

    armed.store(true, Ordering::SeqCst);
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company: fresh::company_id().unwrap(),
                name: Name::new("Other").unwrap(),
            },
        )
        .unwrap_err();
    let closed = ledger.health();
    assert!(!closed.ready, "{closed:?}");
    assert!(closed.closed.is_some(), "{closed:?}");
    // A wait for a position fails at once, closed, rather than time out.
    assert!(matches!(
        ledger.wait_for_position(1, Duration::from_secs(30)),
        Err(LedgerError::Closed(_))
    ));
    assert!(ledger.with_state(|s| s.company(company).is_none()));
}

#[test]
fn a_wait_for_a_position_beyond_the_head_times_out_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let waited = ledger.wait_for_position(3, Duration::from_millis(10));
    assert!(
        matches!(
            waited,
            Err(LedgerError::BeyondHead {
                position: 3,
                head: 0
            })
        ),
        "{waited:?}"
    );
    a_company(&ledger);
    assert_eq!(ledger.wait_for_position(2, Duration::ZERO).unwrap(), 2);
}

type Snapshot = [(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)];

fn value<'a>(
    snapshot: &'a Snapshot,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let matches = key.kind() == kind
            && key.key().name() == name
            && labels.iter().all(|(k, v)| {
                key.key()
                    .labels()
                    .any(|label| label.key() == *k && label.value() == *v)
            });
        matches.then_some(value)
    })
}

#[test]
fn commands_positions_and_decisions_are_recorded_through_the_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (company, admin) = a_company(&ledger);
        let created = create_tags_token(&ledger, admin, company);
        // A member may not create tokens: refused.
        let refused = ledger.execute(
            Actor::Teammate(fresh::teammate_id().unwrap()),
            Command::DeleteToken {
                token: created.token,
            },
        );
        assert!(refused.is_err());
        let authorizer = ledger.authorizer();
        let allowed = authorizer.check(created.secret.expose(), &read_tag(company));
        observe::record_decision(&allowed, Duration::from_nanos(300));
        let unknown = authorizer.check("nope", &read_tag(company));
        observe::record_decision(&unknown, Duration::from_nanos(200));
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let counter =
        |name, labels: &[(&str, &str)]| match value(&snapshot, MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?}: {other:?}"),
        };
    assert_eq!(counter(observe::COMMANDS, &[("outcome", "recorded")]), 3);
    assert_eq!(counter(observe::COMMANDS, &[("outcome", "refused")]), 1);
    assert_eq!(
        counter(
            observe::DECISIONS,
            &[("verdict", "allow"), ("rule", "none")]
        ),
        1
    );
    assert_eq!(
        counter(
            observe::DECISIONS,
            &[("verdict", "refuse"), ("rule", "secret_well_formed")]
        ),
        1
    );
    let gauge = |name| match value(&snapshot, MetricKind::Gauge, name, &[]) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge(observe::HEAD_POSITION), 3.0);
    assert_eq!(gauge(observe::APPLIED_POSITION), 3.0);
    assert_eq!(gauge(observe::CLOSED), 0.0);
    assert!(matches!(
        value(&snapshot, MetricKind::Histogram, observe::COMMAND_SECONDS, &[("outcome", "recorded")]),
        Some(DebugValue::Histogram(h)) if h.len() == 3
    ));
}
