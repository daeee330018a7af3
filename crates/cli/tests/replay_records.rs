//! The tower layer's decision records replay through the command line:
//! `tokenledger check --position N`, given the record's endpoint, resource
//! and location and the token's secret, gives the verdict and rule the
//! layer recorded. The forum thread's case: refused by rule 7, then allowed
//! once the owner turns private access on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{binary, finish};
use http::{Request, Response};
use tokenledger_authz::{Command, Ledger, Location, NewToken, fresh};
use tokenledger_events::{
    Actor, Feature, Name, Namespaces, Role, TeammateId, TokenKind, TokenScope,
};
use tokenledger_tower::{
    DecisionRecord, DecisionSink, LedgerLayer, LocateError, Located, Locator, SinkError, Target,
    Verdict,
};
use tower::{Layer, ServiceExt};

/// Every conversation is in Bob's private inbox.
struct BobsInbox(TeammateId);

impl Locator for BobsInbox {
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
        let found = target.first_parameter().map(|id| Located {
            resource: id.parse().unwrap(),
            location: Location::Private(self.0),
        });
        async move { Ok(found) }
    }
}

#[derive(Default)]
struct Kept(Mutex<Vec<DecisionRecord>>);

impl DecisionSink for Kept {
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(record);
        Ok(())
    }
}

#[test]
fn recorded_decisions_replay_through_check_position() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ledger = Ledger::open(&data).unwrap();
    let (company, admin, bob) = (
        fresh::company_id().unwrap(),
        fresh::teammate_id().unwrap(),
        fresh::teammate_id().unwrap(),
    );
    let name = |text| Name::new(text).unwrap();
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: name("Acme"),
            },
        )
        .unwrap();
    for (teammate, who, role) in [(admin, "Ada", Role::Admin), (bob, "Bob", Role::Member)] {
        ledger
            .execute(
                Actor::System,
                Command::AddTeammate {
                    company,
                    teammate,
                    name: name(who),
                    role,
                },
            )
            .unwrap();
    }
    let created = ledger
        .create_token(
            Actor::Teammate(admin),
            NewToken {
                company,
                name: name("Forum plugin"),
                kind: TokenKind::ApiToken,
                scope: TokenScope {
                    features: [Feature::Resources].into(),
                    namespaces: Namespaces {
                        private: true,
                        ..Namespaces::none()
                    },
                    grants: ["conversations:read".parse().unwrap()]
                        .into_iter()
                        .collect(),
                },
                expires_at: None,
            },
        )
        .unwrap();

    let kept = Arc::new(Kept::default());
    let layer = LedgerLayer::builder(ledger.authorizer(), BobsInbox(bob))
        .sink(kept.clone(), tokenledger_tower::Overflow::Refuse)
        .build();
    let service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Vec::<u8>::from(Bytes::new())))
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ask = || {
        let request = Request::get("/conversations/cnv_forum")
            .header(
                "authorization",
                format!("Bearer {}", created.secret.expose()),
            )
            .body(())
            .unwrap();
        runtime
            .block_on(service.clone().oneshot(request))
            .unwrap()
            .status()
    };
    assert_eq!(ask(), 403);
    ledger
        .execute(
            Actor::Teammate(bob),
            Command::SetPrivateApiAccess {
                teammate: bob,
                allowed: true,
            },
        )
        .unwrap();
    assert_eq!(ask(), 200);
    drop(service);
    drop(layer);
    drop(ledger);

    let records = kept.0.lock().unwrap().clone();
    let reasons: Vec<&str> = records.iter().map(|record| record.reason).collect();
    assert_eq!(reasons, ["owner_allows_private_access", "allow"]);
    let bob = bob.to_string();
    for record in records {
        let position = record.position.unwrap().to_string();
        let mut command = binary();
        command.arg("--data").arg(&data).args([
            "--json",
            "check",
            "--endpoint",
            "GET /conversations/cnv_forum",
            "--resource",
            record.resource.as_ref().unwrap().as_str(),
            "--private",
            &bob,
            "--position",
            &position,
        ]);
        let run = finish(command, Some(created.secret.expose()));
        let answer = run.json();
        assert_eq!(
            answer["allowed"],
            record.verdict == Verdict::Allowed,
            "{record:?}: {answer}"
        );
        assert_eq!(
            answer["rule"].as_str(),
            record.rule.map(|rule| rule.as_str()),
            "{record:?}: {answer}"
        );
        assert_eq!(answer["position"], record.position.unwrap());
    }
}
