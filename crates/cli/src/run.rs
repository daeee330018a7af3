//! Each command: read the input, ask the ledger, print the answer.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokenledger_authz::{
    CheckpointKey, Command, CommandError, Decision, Explanation, Head, HistoryQuery, Ledger,
    LedgerError, LedgerOptions, Location, OpenError, Options, Provenance, Request, SealingKey,
    State, TransferError, decide_request, hex, location_label, scope_json, who,
};
use tokenledger_events::{
    Actor, CompanyId, Name, Namespaces, Requirement, Role, SharedNamespace, Timestamp, TokenKind,
    TokenScope, resolve_endpoint_line,
};

use crate::Failure;
use crate::args::{
    CheckArgs, Cli, CompanyCommand, NamespaceArgs, PrefCommand, TeammateCommand, TokenCommand,
    TokenCreateArgs, Top, WorkspaceCommand,
};
use crate::investigate::{history, timeline, who_can};
use crate::output::{fields, print, table};
use crate::progress::Progress;
use crate::{demo, files, keyfiles, serve};

/// What every command shares: where the data is, and how to print.
pub struct Context {
    pub data: PathBuf,
    pub json: bool,
    pub sealing_key_file: Option<PathBuf>,
    pub old_sealing_key_files: Vec<PathBuf>,
    pub checkpoint_key_file: Option<PathBuf>,
    pub known_head: Option<Head>,
    /// Whether the command may start a new ledger where there is none.
    pub create: bool,
}

/// The commands that may start a ledger: every other one refuses a
/// directory that holds none, so a mistyped `--data` is not answered as
/// an empty, intact log (the demo picks its own fresh directory).
fn starts_a_ledger(command: &Top) -> bool {
    matches!(
        command,
        Top::Company(CompanyCommand::Create { .. }) | Top::Import { .. }
    )
}

/// The data directory: `--data`, else `$TOKENLEDGER_DATA`, else
/// `./tokenledger-data`. `None` when neither was given.
fn chosen_data_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        std::env::var_os("TOKENLEDGER_DATA")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

pub fn run(cli: Cli) -> Result<u8, Failure> {
    let explicit = chosen_data_dir(cli.data);
    let context = Context {
        data: explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from("./tokenledger-data")),
        json: cli.json,
        sealing_key_file: cli.sealing_key_file,
        old_sealing_key_files: cli.old_sealing_key_files,
        checkpoint_key_file: cli.checkpoint_key_file,
        create: starts_a_ledger(&cli.command),
        known_head: cli.known_head,
    };
    match cli.command {
        Top::Company(command) => company(&context, command),
        Top::Teammate(command) => teammate(&context, command),
        Top::Workspace(command) => workspace(&context, command),
        Top::Token(command) => token(&context, command),
        Top::Pref(command) => pref(&context, command),
        Top::Check(args) => check(&context, args),
        Top::History(args) => history(&context, args),
        Top::Timeline(args) => timeline(&context, args),
        Top::WhoCan(args) => who_can(&context, args),
        Top::Verify => verify(&context),
        Top::SignHead => sign_head(&context),
        Top::Export { out } => export(&context, &out),
        Top::Import { file, expect_head } => import(&context, &file, expect_head),
        Top::Compact => compact(&context),
        Top::Demo => {
            directory_only(
                &context,
                "demo",
                "it makes a data directory of its own (and a sealing key file beside it)",
            )?;
            demo::run(explicit, context.json)
        }
        Top::Serve(args) => serve::run(&context, args),
    }
}

pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn name(flag: &str, text: &str) -> Result<Name, Failure> {
    Name::new(text).map_err(|e| Failure::BadInput(format!("{flag}: {e}")))
}

fn checkpoint_key(context: &Context) -> Result<Option<CheckpointKey>, Failure> {
    match &context.checkpoint_key_file {
        Some(path) => Ok(Some(CheckpointKey::from_bytes(keyfiles::read_key(
            "checkpoint key",
            path,
        )?))),
        None => Ok(None),
    }
}

/// The PostgreSQL URL `--data` (or `$TOKENLEDGER_DATA`) gives, if it is
/// one rather than a directory. Never printed: it may hold a password.
pub fn database_url(context: &Context) -> Option<&str> {
    let data = context.data.to_str()?;
    // Schemes are case-insensitive: `POSTGRES://` taken for a directory
    // would make one named after the URL, password included.
    let (scheme, _) = data.split_once("://")?;
    (scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql"))
        .then_some(data)
}

/// Refuses a command that works on a data directory only.
fn directory_only(context: &Context, command: &str, why: &str) -> Result<(), Failure> {
    match database_url(context) {
        Some(_) => Err(Failure::BadInput(format!(
            "`{command}` works on a data directory, not on a database: {why}"
        ))),
        None => Ok(()),
    }
}

/// Opens the ledger, with a progress bar while a long log is replayed.
pub fn open(context: &Context) -> Result<Arc<Ledger>, Failure> {
    open_ledger(context)?.map_err(failure)
}

/// Opens the ledger; the outer error is a bad sealing key file, the inner
/// one the ledger's own.
fn open_ledger(context: &Context) -> Result<Result<Arc<Ledger>, LedgerError>, Failure> {
    let keys = [
        ("sealing key", context.sealing_key_file.as_ref()),
        ("checkpoint key", context.checkpoint_key_file.as_ref()),
    ]
    .into_iter()
    .chain(
        context
            .old_sealing_key_files
            .iter()
            .map(|path| ("old sealing key", Some(path))),
    );
    for (what, path) in keys {
        if let Some(path) = path
            && database_url(context).is_none()
        {
            keyfiles::refuse_inside(what, path, &context.data)?;
        }
    }
    let sealing_key = match &context.sealing_key_file {
        Some(path) => Some(SealingKey::from_bytes(keyfiles::read_key(
            "sealing key",
            path,
        )?)),
        None => None,
    };
    let old_sealing_keys = context
        .old_sealing_key_files
        .iter()
        .map(|path| keyfiles::read_key("old sealing key", path).map(SealingKey::from_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpoint_key = checkpoint_key(context)?;
    let bar = Mutex::new(Progress::new("replaying the log"));
    let mut options = LedgerOptions {
        sealing_key,
        old_sealing_keys,
        checkpoint_key,
        log: Options {
            must_exist: !context.create,
            ..Options::default()
        },
        replay_progress: Some(Arc::new(move |done, total| {
            if let Ok(mut bar) = bar.lock() {
                bar.update(done, total);
            }
        })),
        ..LedgerOptions::default()
    };
    options.log.known_head = context.known_head;
    // On PostgreSQL the command line keeps no checkpoints: it replays.
    let opened = match database_url(context) {
        Some(url) => Ledger::open_postgres(url, None, options),
        None => Ledger::open_with(&context.data, options).map(Arc::new),
    };
    if let Err(error @ LedgerError::Open(OpenError::NoLog { .. })) = &opened {
        return Err(no_ledger(error));
    }
    if let Ok(ledger) = &opened {
        // A skipped checkpoint costs time, not correctness: say so, go on.
        for warning in ledger.warnings() {
            eprintln!(
                "tokenledger: warning: {}",
                crate::guard::redact(&warning.to_string())
            );
        }
    }
    Ok(opened)
}

/// A directory without a ledger, for a command that does not start one.
fn no_ledger(error: &LedgerError) -> Failure {
    Failure::BadInput(format!(
        "no ledger here: {error}; check --data (or $TOKENLEDGER_DATA): only `company create` and `import` start a new one"
    ))
}

/// What a ledger error means for the exit code.
pub fn failure(error: LedgerError) -> Failure {
    let message = error.to_string();
    match error {
        LedgerError::Refused(
            CommandError::UnknownActor { .. }
            | CommandError::UnknownCompany(_)
            | CommandError::UnknownTeammate(_)
            | CommandError::UnknownWorkspace(_)
            | CommandError::UnknownToken(_)
            | CommandError::InvalidScope(_)
            | CommandError::ExpiryNotInFuture { .. }
            | CommandError::ExpiryTooLate { .. }
            | CommandError::WorkspaceNotInCompany(_),
        ) => Failure::BadInput(message),
        LedgerError::Open(_)
        | LedgerError::Database(_)
        | LedgerError::NotFound(_)
        | LedgerError::BeyondHead { .. }
        | LedgerError::Sealing(tokenledger_authz::SealingError::WrongKey { .. }) => {
            Failure::BadInput(message)
        }
        _ => Failure::Refused(message),
    }
}

fn provenance_json(p: &Provenance) -> Value {
    json!({ "by": p.actor.to_string(), "at": p.at.to_string(), "position": p.position })
}

fn company(context: &Context, command: CompanyCommand) -> Result<u8, Failure> {
    let CompanyCommand::Create { name: text } = command;
    let name = name("--name", &text)?;
    let ledger = open(context)?;
    let company =
        tokenledger_authz::fresh::company_id().map_err(|e| Failure::Refused(e.to_string()))?;
    let receipt = ledger
        .execute(Actor::System, Command::CreateCompany { company, name })
        .map_err(failure)?;
    print(
        context.json,
        &json!({ "company": company.to_string() }),
        || {
            format!(
                "created company {company} (log position {})",
                receipt.position()
            )
        },
    );
    Ok(0)
}

fn teammate(context: &Context, command: TeammateCommand) -> Result<u8, Failure> {
    match command {
        TeammateCommand::Add {
            company,
            name: text,
            admin,
            by,
        } => {
            let name = name("--name", &text)?;
            let ledger = open(context)?;
            let teammate = tokenledger_authz::fresh::teammate_id()
                .map_err(|e| Failure::Refused(e.to_string()))?;
            let role = if admin { Role::Admin } else { Role::Member };
            let receipt = ledger
                .execute(
                    by,
                    Command::AddTeammate {
                        company,
                        teammate,
                        name,
                        role,
                    },
                )
                .map_err(failure)?;
            print(
                context.json,
                &json!({ "teammate": teammate.to_string() }),
                || {
                    format!(
                        "added {role} {teammate} (log position {})",
                        receipt.position()
                    )
                },
            );
        }
        TeammateCommand::Role {
            teammate,
            admin,
            member: _,
            by,
        } => {
            let role = if admin { Role::Admin } else { Role::Member };
            let ledger = open(context)?;
            let receipt = ledger
                .execute(by, Command::ChangeRole { teammate, role })
                .map_err(failure)?;
            let json = json!({ "teammate": teammate.to_string(), "role": role.as_str(), "position": receipt.position() });
            print(context.json, &json, || {
                format!(
                    "{teammate} is now {role} (log position {})",
                    receipt.position()
                )
            });
        }
        TeammateCommand::Deactivate { teammate, by } => {
            let ledger = open(context)?;
            let receipt = ledger
                .execute(by, Command::DeactivateTeammate { teammate })
                .map_err(failure)?;
            let json = json!({ "teammate": teammate.to_string(), "deactivated": true, "position": receipt.position() });
            print(context.json, &json, || {
                format!(
                    "deactivated {teammate} (log position {})",
                    receipt.position()
                )
            });
        }
    }
    Ok(0)
}

fn workspace(context: &Context, command: WorkspaceCommand) -> Result<u8, Failure> {
    let WorkspaceCommand::Create {
        company,
        name: text,
        by,
    } = command;
    let name = name("--name", &text)?;
    let ledger = open(context)?;
    let workspace =
        tokenledger_authz::fresh::workspace_id().map_err(|e| Failure::Refused(e.to_string()))?;
    let receipt = ledger
        .execute(
            by,
            Command::CreateWorkspace {
                company,
                workspace,
                name,
            },
        )
        .map_err(failure)?;
    print(
        context.json,
        &json!({ "workspace": workspace.to_string() }),
        || {
            format!(
                "created workspace {workspace} (log position {})",
                receipt.position()
            )
        },
    );
    Ok(0)
}

fn token_scope(args: &TokenCreateArgs) -> Result<TokenScope, Failure> {
    let shared = if args.shared.is_empty() {
        SharedNamespace::None
    } else if args.shared.iter().any(|s| s == "all") {
        if args.shared.len() > 1 {
            return Err(Failure::BadInput(
                "--shared all already names every workspace; give it alone".to_owned(),
            ));
        }
        SharedNamespace::All
    } else {
        let mut set = BTreeSet::new();
        for text in &args.shared {
            let id = text
                .parse()
                .map_err(|e| Failure::BadInput(format!("--shared: {e}")))?;
            set.insert(id);
        }
        SharedNamespace::Workspaces(set)
    };
    Ok(TokenScope {
        features: args.features.iter().copied().collect(),
        namespaces: Namespaces {
            global: args.global,
            shared,
            private: args.private,
        },
        grants: args.scopes.iter().copied().collect(),
    })
}

fn token(context: &Context, command: TokenCommand) -> Result<u8, Failure> {
    match command {
        TokenCommand::Create(args) => {
            let name = name("--name", &args.name)?;
            let scope = token_scope(&args)?;
            let kind = if args.oauth {
                TokenKind::OAuthGrant
            } else {
                TokenKind::ApiToken
            };
            let ledger = open(context)?;
            let created = ledger
                .create_token(
                    args.by,
                    tokenledger_authz::NewToken {
                        company: args.company,
                        name,
                        kind,
                        scope,
                        expires_at: args.expires,
                    },
                )
                .map_err(failure)?;
            let json =
                json!({ "token": created.token.to_string(), "secret": created.secret.expose() });
            let sealed = context.sealing_key_file.is_some();
            print(context.json, &json, || {
                let note = if sealed {
                    "an admin can reveal it again with the sealing key"
                } else {
                    "it is shown now only: no sealing key was given, so it cannot be revealed again"
                };
                format!(
                    "created {} (log position {})\nsecret: {}\n({note})",
                    created.token,
                    created.receipt.position(),
                    created.secret.expose()
                )
            });
        }
        TokenCommand::List { company } => {
            let ledger = open(context)?;
            let rows = ledger.with_state(|state| token_list(state, company))?;
            let json: Vec<Value> = rows.iter().map(|(json, _)| json.clone()).collect();
            print(context.json, &Value::Array(json), || {
                let cells: Vec<Vec<String>> = rows.into_iter().map(|(_, cells)| cells).collect();
                table(
                    &["TOKEN", "NAME", "CREATED_BY", "CREATED_AT", "DELETED_AT"],
                    &cells,
                )
            });
        }
        TokenCommand::Show { token } => {
            let ledger = open(context)?;
            let revealed = ledger.reveals(token).map_err(failure)?;
            let (json, human) = ledger.with_state(|state| {
                let found = state
                    .token(token)
                    .ok_or_else(|| Failure::BadInput(format!("token `{token}` does not exist")))?;
                let scope = found.scope();
                let json = json!({
                    "token": token.to_string(),
                    "company": found.company().to_string(),
                    "name": found.name().as_str(),
                    "kind": found.kind().as_str(),
                    "scope": scope_json(&scope),
                    "expires_at": found.expires_at().map(|t| t.to_string()),
                    "created_by": found.created().actor.to_string(),
                    "created_at": found.created().at.to_string(),
                    "reveals": revealed.iter().map(provenance_json).collect::<Vec<_>>(),
                    "deleted_by": found.deleted().map(|d| d.actor.to_string()),
                    "deleted_at": found.deleted().map(|d| d.at.to_string()),
                });
                let scopes: Vec<String> = scope.grants.iter().map(|s| s.to_string()).collect();
                let features: Vec<&str> = scope.features.iter().map(|f| f.as_str()).collect();
                let ns = &scope.namespaces;
                let shared = match &ns.shared {
                    SharedNamespace::None => "none".to_owned(),
                    SharedNamespace::All => "all".to_owned(),
                    SharedNamespace::Workspaces(set) => set
                        .iter()
                        .map(|w| location_label(state, Location::Shared(*w)))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let reveals = if revealed.is_empty() {
                    "never".to_owned()
                } else {
                    revealed
                        .iter()
                        .map(|r| format!("{} at {}", who(state, r.actor), r.at))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let human = fields(&[
                    ("token", token.to_string()),
                    ("name", found.name().to_string()),
                    ("kind", found.kind().to_string()),
                    ("features", features.join(", ")),
                    ("global", scope.namespaces.global.to_string()),
                    ("shared", shared),
                    ("private", ns.private.to_string()),
                    ("scopes", scopes.join(", ")),
                    (
                        "expires_at",
                        found
                            .expires_at()
                            .map_or("never".to_owned(), |t| t.to_string()),
                    ),
                    ("created_by", who(state, found.created().actor)),
                    ("created_at", found.created().at.to_string()),
                    ("reveals", reveals),
                    (
                        "deleted_by",
                        found
                            .deleted()
                            .map_or("-".to_owned(), |d| who(state, d.actor)),
                    ),
                    (
                        "deleted_at",
                        found.deleted().map_or("-".to_owned(), |d| d.at.to_string()),
                    ),
                ]);
                Ok::<_, Failure>((json, human))
            })?;
            print(context.json, &json, || human);
        }
        TokenCommand::Reveal { token, by } => {
            let ledger = open(context)?;
            let secret = ledger.reveal(by, token).map_err(failure)?;
            let json = json!({ "token": token.to_string(), "secret": secret.expose() });
            print(context.json, &json, || {
                format!(
                    "revealed {token} (recorded in the log)\nsecret: {}",
                    secret.expose()
                )
            });
        }
        TokenCommand::Delete { token, by } => {
            let ledger = open(context)?;
            let receipt = ledger
                .execute(by, Command::DeleteToken { token })
                .map_err(failure)?;
            let at = receipt.events.last().map(|e| e.recorded_at);
            let json = json!({
                "token": token.to_string(),
                "deleted_at": at.map(|t| t.to_string()),
                "position": receipt.position(),
            });
            print(context.json, &json, || {
                format!(
                    "deleted {token} (log position {}); it is refused from now on",
                    receipt.position()
                )
            });
        }
    }
    Ok(0)
}

fn token_list(state: &State, company: CompanyId) -> Result<Vec<(Value, Vec<String>)>, Failure> {
    if state.company(company).is_none() {
        return Err(Failure::BadInput(format!(
            "company `{company}` does not exist"
        )));
    }
    let mut tokens: Vec<_> = state.tokens_of(company).collect();
    tokens.sort_by_key(|(_, t)| t.created().position);
    Ok(tokens
        .into_iter()
        .map(|(id, t)| {
            let json = json!({
                "token": id.to_string(),
                "name": t.name().as_str(),
                "created_by": t.created().actor.to_string(),
                "created_at": t.created().at.to_string(),
                "deleted_at": t.deleted().map(|d| d.at.to_string()),
            });
            let cells = vec![
                id.to_string(),
                t.name().to_string(),
                who(state, t.created().actor),
                t.created().at.to_string(),
                t.deleted().map_or("-".to_owned(), |d| d.at.to_string()),
            ];
            (json, cells)
        })
        .collect())
}

fn pref(context: &Context, command: PrefCommand) -> Result<u8, Failure> {
    let (command, subject, value) = match command {
        PrefCommand::Set {
            teammate,
            private_api_access,
            by,
        } => (
            (
                by,
                Command::SetPrivateApiAccess {
                    teammate,
                    allowed: private_api_access.allowed(),
                },
            ),
            ("teammate", teammate.to_string()),
            private_api_access,
        ),
        PrefCommand::SetAll {
            company,
            private_api_access,
            by,
        } => (
            (
                by,
                Command::SetPrivateApiAccessForAll {
                    company,
                    allowed: private_api_access.allowed(),
                },
            ),
            ("company", company.to_string()),
            private_api_access,
        ),
    };
    let ledger = open(context)?;
    let receipt = ledger.execute(command.0, command.1).map_err(failure)?;
    let on = if value.allowed() { "on" } else { "off" };
    let json =
        json!({ subject.0: subject.1, "private_api_access": on, "position": receipt.position() });
    print(context.json, &json, || {
        format!(
            "private API access {on} for {} (log position {})",
            subject.1,
            receipt.position()
        )
    });
    Ok(0)
}

pub fn location(args: &NamespaceArgs) -> Result<Location, Failure> {
    match (args.global, args.company, args.shared, args.private) {
        (true, Some(company), None, None) => Ok(Location::Global(company)),
        (false, None, Some(workspace), None) => Ok(Location::Shared(workspace)),
        (false, None, None, Some(teammate)) => Ok(Location::Private(teammate)),
        _ => Err(Failure::BadInput(
            "give one namespace: --global --company CMP, --shared TIM, or --private TEA".to_owned(),
        )),
    }
}

/// The longest standard input taken as a secret: a secret is 62 bytes,
/// and more than this is not one.
const MAX_SECRET_INPUT: u64 = 1024;

fn read_secret() -> Result<String, Failure> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_SECRET_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::BadInput(format!("standard input: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_INPUT {
        return Err(Failure::BadInput(format!(
            "standard input holds more than {MAX_SECRET_INPUT} bytes, which is no secret"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::BadInput("standard input is not UTF-8".to_owned()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Failure::BadInput(
            "no secret on standard input: pipe the token's secret in".to_owned(),
        ));
    }
    Ok(secret.to_owned())
}

fn check(context: &Context, args: CheckArgs) -> Result<u8, Failure> {
    let requirement = match (&args.scope, &args.endpoint) {
        (Some(scope), _) => Requirement::Scope(*scope),
        (None, Some(line)) => {
            resolve_endpoint_line(line)
                .map_err(|e| Failure::BadInput(format!("--endpoint: {e}")))?
                .requirement
        }
        (None, None) => return Err(Failure::BadInput("give --scope or --endpoint".to_owned())),
    };
    let resource = args
        .resource
        .parse()
        .map_err(|e| Failure::BadInput(format!("--resource: {e}")))?;
    let location = location(&args.namespace)?;
    let secret = read_secret()?;
    let ledger = open(context)?;
    let asked = |at| Request {
        requirement,
        resource,
        location,
        at,
    };
    let (request, decision, explanation) = match (args.at, args.position) {
        (None, None) => {
            let request = asked(now());
            ledger.with_state(|state| decide_and_explain(&ledger, state, &secret, request))?
        }
        (at, position) => {
            let position = match (at, position) {
                (Some(at), _) => ledger.position_at(at).map_err(failure)?,
                (None, Some(position)) => position,
                (None, None) => 0,
            };
            // The token's company's history is enough, and far shorter.
            let state = ledger
                .state_for_secret_at(&secret, position)
                .map_err(failure)?;
            // As of a position: the moment its event was recorded.
            let at = match at {
                Some(at) => at,
                None => ledger
                    .history(&HistoryQuery {
                        from_position: Some(position),
                        to_position: Some(position),
                        ..HistoryQuery::default()
                    })
                    .map_err(failure)?
                    .first()
                    .map_or(Timestamp::EPOCH, |e| e.envelope.recorded_at),
            };
            decide_and_explain(&ledger, &state, &secret, asked(at))?
        }
    };
    let refusal = decision.refusal;
    let body = refusal.map(|r| r.body(&request));
    let json = json!({
        "allowed": decision.is_allowed(),
        "token": decision.token.map(|t| t.to_string()),
        "rule": refusal.map(|r| r.rule.as_str()),
        "needed_scope": requirement.to_string(),
        "position": decision.position,
        "status": decision.status(),
        "error": body.as_ref().map(|b| serde_json::from_str::<Value>(&b.to_json()).unwrap_or(Value::Null)),
        "explanation": explanation.as_ref().map(|e| e.text.clone()),
    });
    print(context.json, &json, || match (&body, &explanation) {
        (Some(body), Some(explanation)) => format!(
            "refused: {} {}: {}\nwhy: {}\n(decided at log position {})",
            body.status, body.title, body.message, explanation.text, decision.position
        ),
        _ => format!(
            "allowed: {requirement} on {} (decided at log position {})",
            location, decision.position
        ),
    });
    Ok(if decision.is_allowed() { 0 } else { 1 })
}

fn decide_and_explain(
    ledger: &Ledger,
    state: &State,
    secret: &str,
    request: Request,
) -> Result<(Request, Decision, Option<Explanation>), Failure> {
    let decision = decide_request(state, secret, &request);
    let explanation = match &decision.refusal {
        Some(refusal) => Some(ledger.explain(state, refusal).map_err(failure)?),
        None => None,
    };
    Ok((request, decision, explanation))
}

fn damaged(context: &Context, position: u64, problem: String) -> Result<u8, Failure> {
    let json = json!({ "intact": false, "position": position, "problem": problem });
    print(context.json, &json, String::new);
    Err(Failure::Refused(format!(
        "the log is damaged at position {position}: {problem}"
    )))
}

/// A log that its signed head or the known head does not vouch for: a
/// failed check, as damage is.
fn not_vouched_for(context: &Context, error: &OpenError) -> Result<u8, Failure> {
    let problem = error.to_string();
    print(
        context.json,
        &json!({ "intact": false, "problem": problem }),
        String::new,
    );
    Err(Failure::Refused(problem))
}

fn verify(context: &Context) -> Result<u8, Failure> {
    let ledger = match open_ledger(context)? {
        Ok(ledger) => ledger,
        // A log too damaged to open is a failed check, with its position.
        Err(LedgerError::Damaged(d) | LedgerError::Open(OpenError::Damaged(d))) => {
            return damaged(context, d.position, d.problem.to_string());
        }
        Err(LedgerError::Open(
            error @ (OpenError::RolledBack { .. } | OpenError::SignedHead { .. }),
        )) => return not_vouched_for(context, &error),
        Err(error) => return Err(failure(error)),
    };
    let mut bar = Progress::new("verifying");
    let verified = ledger.verify_with(&mut |done, total| bar.update(done, total));
    drop(bar);
    match verified {
        Ok(verified) => {
            let json = json!({
                "intact": true,
                "records": verified.records,
                "head": { "position": verified.head.position, "hash": hex(&verified.head.hash) },
                "known_head": verified.head.to_string(),
                "clock_clamped": verified.clamped,
            });
            // The head as `--known-head` takes it, for the operator to keep.
            print(context.json, &json, || {
                format!(
                    "intact: {} records, head {}",
                    verified.records, verified.head
                )
            });
            Ok(0)
        }
        Err(damage) => damaged(context, damage.position, damage.problem.to_string()),
    }
}

fn sign_head(context: &Context) -> Result<u8, Failure> {
    let key = checkpoint_key(context)?.ok_or_else(|| {
        Failure::BadInput(
            "sign-head needs the checkpoint key: give --checkpoint-key-file".to_owned(),
        )
    })?;
    // Only an existing log is signed: a mistyped --data must not sign a
    // new, empty one.
    let mut options = LedgerOptions::default();
    options.log.known_head = context.known_head;
    options.log.must_exist = true;
    directory_only(
        context,
        "sign-head",
        "a database's head is kept by PostgreSQL; record it (`verify`) and pass it as --known-head",
    )?;
    let verified = match Ledger::sign_head(&context.data, &key, options) {
        Err(error @ LedgerError::Open(OpenError::NoLog { .. })) => return Err(no_ledger(&error)),
        Ok(verified) => verified,
        Err(LedgerError::Open(OpenError::Damaged(d))) => {
            return damaged(context, d.position, d.problem.to_string());
        }
        Err(LedgerError::Open(
            error @ (OpenError::RolledBack { .. } | OpenError::KeyedBefore { .. }),
        )) => {
            return not_vouched_for(context, &error);
        }
        Err(error) => return Err(failure(error)),
    };
    let json = json!({
        "signed": true,
        "records": verified.records,
        "known_head": verified.head.to_string(),
    });
    print(context.json, &json, || {
        format!(
            "intact: {} records; signed the head {}",
            verified.records, verified.head
        )
    });
    Ok(0)
}

fn export(context: &Context, out: &Path) -> Result<u8, Failure> {
    let ledger = open(context)?;
    let file = files::create_new_private(out)
        .map_err(|e| Failure::BadInput(format!("--out {}: {e}", out.display())))?;
    let mut writer = BufWriter::new(file);
    let mut bar = Progress::new("exporting");
    let exported = ledger.export(&mut writer, out, &mut |done, total| bar.update(done, total));
    drop(bar);
    drop(writer);
    let count = match exported {
        Ok(count) => count,
        Err(error) => {
            // A partial export is no export.
            let _ = std::fs::remove_file(out);
            return Err(transfer_failure(error));
        }
    };
    let json = json!({ "exported": count, "out": out.display().to_string() });
    print(context.json, &json, || {
        format!("exported {count} events to {}", out.display())
    });
    Ok(0)
}

fn transfer_failure(error: TransferError) -> Failure {
    match error {
        TransferError::Ledger(error) => failure(error),
        TransferError::Line { .. }
        | TransferError::UnexpectedHead { .. }
        | TransferError::Changed { .. } => Failure::Refused(error.to_string()),
        TransferError::Io { .. } | TransferError::NotEmpty { .. } => {
            Failure::BadInput(error.to_string())
        }
        // A failure this build does not know refuses.
        _ => Failure::Refused(error.to_string()),
    }
}

fn compact(context: &Context) -> Result<u8, Failure> {
    let mut bar = Progress::new("compacting");
    let options = LedgerOptions {
        log: Options {
            must_exist: true,
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    directory_only(
        context,
        "compact",
        "PostgreSQL reclaims its own space (VACUUM)",
    )?;
    let compacted = Ledger::compact_with(&context.data, options, &mut |done, total| match total {
        0 => bar.count(done, "keys copied"),
        _ => bar.update(done, total),
    });
    drop(bar);
    let compacted = compacted.map_err(|error| match error {
        LedgerError::Open(OpenError::NoLog { .. }) => no_ledger(&error),
        error => failure(error),
    })?;
    let json = json!({
        "before": compacted.before,
        "after": compacted.after,
        "keys": compacted.keys,
    });
    print(context.json, &json, || {
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        format!(
            "compacted: the storage files took {:.1} MiB and now take {:.1} MiB ({} keys copied)",
            mib(compacted.before),
            mib(compacted.after),
            compacted.keys
        )
    });
    Ok(0)
}

fn import(context: &Context, file: &Path, expect_head: Option<Head>) -> Result<u8, Failure> {
    File::open(file).map_err(|e| Failure::BadInput(format!("{}: {e}", file.display())))?;
    // The new ledger is made with the keys it will be opened with.
    let options = LedgerOptions {
        checkpoint_key: checkpoint_key(context)?,
        ..LedgerOptions::default()
    };
    let mut bar = Progress::new("importing");
    let mut progress = |done, total| bar.update(done, total);
    let verified = match database_url(context) {
        Some(url) => Ledger::import_postgres(url, file, expect_head, options, &mut progress),
        None => Ledger::import(&context.data, file, expect_head, options, &mut progress),
    }
    .map_err(transfer_failure);
    drop(bar);
    let verified = verified?;
    let json = json!({
        "imported": verified.records,
        "head": { "position": verified.head.position, "hash": hex(&verified.head.hash) },
    });
    print(context.json, &json, || {
        format!(
            "imported {} events; the chain verifies, head at position {} with hash {}",
            verified.records,
            verified.head.position,
            hex(&verified.head.hash)
        )
    });
    Ok(0)
}
