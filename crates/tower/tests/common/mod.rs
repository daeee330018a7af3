//! What the layer's tests share: a ledger with one token that may read
//! tags, a locator for tags, an inner service that counts its calls, and a
//! sink that keeps every record.

#![allow(
    dead_code,
    reason = "each test file uses its own part of what is shared"
)]

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokenledger_authz::{Command, Ledger, Location, NewToken, fresh};
use tokenledger_events::{
    Actor, CompanyId, Feature, Name, Namespaces, Role, Secret, TeammateId, Timestamp, TokenKind,
    TokenScope,
};
use tokenledger_tower::{
    DecisionRecord, DecisionSink, LocateError, Located, Locator, SinkError, Target,
};
use tower::{Service, ServiceExt};

/// A company with one token that may read tags everywhere global.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ledger: Ledger,
    pub company: CompanyId,
    pub admin: TeammateId,
    pub secret: Secret,
}

pub fn fixture() -> Fixture {
    fixture_expiring(None)
}

/// The same, the token expiring at `expires_at`.
pub fn fixture_expiring(expires_at: Option<Timestamp>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let company = fresh::company_id().unwrap();
    let admin = fresh::teammate_id().unwrap();
    ledger
        .execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: Name::new("Acme").unwrap(),
            },
        )
        .unwrap();
    ledger
        .execute(
            Actor::System,
            Command::AddTeammate {
                company,
                teammate: admin,
                name: Name::new("Ada").unwrap(),
                role: Role::Admin,
            },
        )
        .unwrap();
    let created = ledger
        .create_token(
            Actor::Teammate(admin),
            NewToken {
                company,
                name: Name::new("Reader").unwrap(),
                kind: TokenKind::ApiToken,
                scope: TokenScope {
                    features: [Feature::Resources].into(),
                    namespaces: Namespaces {
                        global: true,
                        ..Namespaces::none()
                    },
                    grants: ["tags:read".parse().unwrap()].into_iter().collect(),
                },
                expires_at,
            },
        )
        .unwrap();
    Fixture {
        dir,
        ledger,
        company,
        admin,
        secret: created.secret,
    }
}

/// Every tag is the company's; or the locator's database is down.
pub struct Tags {
    pub company: CompanyId,
    pub down: bool,
}

impl Locator for Tags {
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
        // Asked only for a live token, and told its company.
        assert_eq!(target.company(), self.company);
        let found = if self.down {
            Err(LocateError::caused_by(
                "the tags database is down",
                std::io::Error::other("connection refused"),
            ))
        } else {
            Ok(target.first_parameter().map(|id| Located {
                resource: id.parse().unwrap(),
                location: Location::Global(self.company),
            }))
        };
        async move { found }
    }
}

pub type Inner = tower::util::BoxCloneSyncService<Request<()>, Response<Full<Bytes>>, Infallible>;

/// The inner service, counting its calls.
pub fn inner(calls: Arc<AtomicU64>) -> Inner {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |_: Request<()>| {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Ok(Response::new(Full::new(Bytes::from_static(b"served")))) }
    }))
}

pub fn get_tag(secret: &Secret) -> Request<()> {
    Request::get("/tags/tag_1")
        .header("authorization", format!("Bearer {}", secret.expose()))
        .body(())
        .unwrap()
}

pub async fn answer(
    service: impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible>,
    request: Request<()>,
) -> (StatusCode, String) {
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A sink that keeps every record.
#[derive(Clone, Default)]
pub struct Kept(pub Arc<Mutex<Vec<DecisionRecord>>>);

impl DecisionSink for Kept {
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(record);
        Ok(())
    }
}
