//! A small Front-like API kept in memory: conversations in teammates'
//! private inboxes and in workspaces' shared inboxes, behind the layer.
//! Shared by the example, its end-to-end tests and the `http` benches.

use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokenledger_authz::{Command, Ledger, Location, NewToken, fresh};
use tokenledger_events::{
    Actor, CompanyId, Feature, Name, Namespaces, ResourceId, Role, Secret, SharedNamespace,
    TeammateId, TokenId, TokenKind, TokenScope, WorkspaceId,
};
use tokenledger_tower::{
    Authorized, DecisionSink, LedgerLayer, LocateError, Located, Locator, Overflow, Target,
};

/// Where a conversation lives: whose private inbox, or which workspace's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// A teammate's individual inbox.
    Private(TeammateId),
    /// A workspace's shared inbox.
    Workspace(WorkspaceId),
}

/// One conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Its subject.
    pub subject: String,
    /// Where it lives.
    pub home: Home,
}

/// The service's own data: conversations by id, and how many requests
/// reached a handler (so tests can see that a refusal never does).
#[derive(Debug, Default)]
pub struct Inboxes {
    conversations: RwLock<HashMap<String, Conversation>>,
    handled: AtomicU64,
}

impl Inboxes {
    /// Files a conversation.
    pub fn insert(&self, id: &str, conversation: Conversation) {
        if let Ok(mut conversations) = self.conversations.write() {
            conversations.insert(id.to_owned(), conversation);
        }
    }

    /// How many requests reached a handler.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    fn get(&self, id: &str) -> Result<Option<Conversation>, LocateError> {
        self.read(id, Conversation::clone)
    }

    /// Where a conversation lives, without copying it.
    fn home(&self, id: &str) -> Result<Option<Home>, LocateError> {
        self.read(id, |conversation| conversation.home)
    }

    fn read<T>(
        &self,
        id: &str,
        f: impl FnOnce(&Conversation) -> T,
    ) -> Result<Option<T>, LocateError> {
        let conversations = self
            .conversations
            .read()
            .map_err(|_| LocateError::new("the conversations' lock is poisoned"))?;
        Ok(conversations.get(id).map(f))
    }
}

/// Tells the layer where a conversation lives: every route of this API is
/// about one conversation, its first path parameter.
pub struct ConversationLocator(pub Arc<Inboxes>);

impl Locator for ConversationLocator {
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send {
        let found = self.find(target);
        async move { found }
    }
}

impl ConversationLocator {
    fn find(&self, target: Target<'_>) -> Result<Option<Located>, LocateError> {
        if !target
            .endpoint()
            .template
            .starts_with("/conversations/{conversation_id}")
        {
            return Ok(None);
        }
        let Some(id) = target.first_parameter() else {
            return Ok(None);
        };
        let Some(home) = self.0.home(&id)? else {
            return Ok(None);
        };
        let resource: ResourceId = id
            .parse()
            .map_err(|e| LocateError::caused_by("a stored conversation id is malformed", e))?;
        let location = match home {
            Home::Private(owner) => Location::Private(owner),
            Home::Workspace(workspace) => Location::Shared(workspace),
        };
        Ok(Some(Located { resource, location }))
    }
}

/// The API's routes, without the layer.
pub fn routes(inboxes: Arc<Inboxes>) -> Router {
    Router::new()
        .route(
            "/conversations/{conversation_id}",
            get(get_conversation).delete(delete_conversation),
        )
        .route(
            "/conversations/{conversation_id}/messages",
            get(list_messages),
        )
        .route("/health", get(|| async { "ok" }))
        .with_state(inboxes)
}

/// The API behind the layer; `/health` is not guarded. A request with a
/// consistency token waits up to `consistency_timeout` for it.
pub fn service(
    ledger: &Ledger,
    inboxes: Arc<Inboxes>,
    sink: Option<Arc<dyn DecisionSink>>,
    consistency_timeout: Duration,
) -> Router {
    let builder = LedgerLayer::builder(ledger.authorizer(), ConversationLocator(inboxes.clone()))
        .unguarded(HttpMethod::GET, "/health")
        .consistency_timeout(consistency_timeout);
    let builder = match sink {
        Some(sink) => builder.sink(sink, Overflow::Refuse),
        None => builder,
    };
    routes(inboxes).layer(builder.build())
}

async fn get_conversation(
    State(inboxes): State<Arc<Inboxes>>,
    Path(id): Path<String>,
    authorized: Authorized,
) -> Response {
    inboxes.handled.fetch_add(1, Ordering::Relaxed);
    match inboxes.get(&id) {
        Ok(Some(conversation)) => Json(json!({
            "id": id,
            "subject": conversation.subject,
            "company": authorized.company.to_string(),
            "decided_at": authorized.position,
        }))
        .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn delete_conversation(
    State(inboxes): State<Arc<Inboxes>>,
    Path(id): Path<String>,
    _authorized: Authorized,
) -> StatusCode {
    inboxes.handled.fetch_add(1, Ordering::Relaxed);
    let removed = inboxes
        .conversations
        .write()
        .is_ok_and(|mut conversations| conversations.remove(&id).is_some());
    if removed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn list_messages(
    State(inboxes): State<Arc<Inboxes>>,
    _authorized: Authorized,
) -> Json<serde_json::Value> {
    inboxes.handled.fetch_add(1, Ordering::Relaxed);
    Json(json!({ "_results": [] }))
}

/// The forum thread's cast: Acme, its admin Ada, Bob (whose private inbox
/// holds `cnv_forum`), the Support workspace (`cnv_support`), and the
/// plugin's token with the Private and Shared namespaces and
/// `conversations:read`/`conversations:delete`.
pub struct Forum {
    /// Acme.
    pub company: CompanyId,
    /// Ada, an admin.
    pub admin: TeammateId,
    /// Bob, whose private access is off.
    pub bob: TeammateId,
    /// The plugin's token.
    pub plugin: TokenId,
    /// Its secret.
    pub secret: Secret,
}

impl Forum {
    /// Sets the story up in `ledger` and files its conversations.
    pub fn seed(ledger: &Ledger, inboxes: &Inboxes) -> Result<Forum, Box<dyn Error>> {
        let company = fresh::company_id()?;
        let admin = fresh::teammate_id()?;
        let bob = fresh::teammate_id()?;
        let support = fresh::workspace_id()?;
        ledger.execute(
            Actor::System,
            Command::CreateCompany {
                company,
                name: Name::new("Acme")?,
            },
        )?;
        for (teammate, name, role) in [(admin, "Ada", Role::Admin), (bob, "Bob", Role::Member)] {
            ledger.execute(
                Actor::System,
                Command::AddTeammate {
                    company,
                    teammate,
                    name: Name::new(name)?,
                    role,
                },
            )?;
        }
        ledger.execute(
            Actor::Teammate(admin),
            Command::CreateWorkspace {
                company,
                workspace: support,
                name: Name::new("Support")?,
            },
        )?;
        let created = ledger.create_token(
            Actor::Teammate(admin),
            NewToken {
                company,
                name: Name::new("Forum plugin")?,
                kind: TokenKind::ApiToken,
                scope: TokenScope {
                    features: [Feature::Resources].into(),
                    namespaces: Namespaces {
                        global: false,
                        shared: SharedNamespace::All,
                        private: true,
                    },
                    grants: [
                        "conversations:read",
                        "conversations:delete",
                        "messages:read",
                    ]
                    .into_iter()
                    .map(str::parse)
                    .collect::<Result<_, _>>()?,
                },
                expires_at: None,
            },
        )?;
        inboxes.insert(
            "cnv_forum",
            Conversation {
                subject: "Plugin cannot read my conversations".to_owned(),
                home: Home::Private(bob),
            },
        );
        inboxes.insert(
            "cnv_support",
            Conversation {
                subject: "Refund request".to_owned(),
                home: Home::Workspace(support),
            },
        );
        Ok(Forum {
            company,
            admin,
            bob,
            plugin: created.token,
            secret: created.secret,
        })
    }
}
