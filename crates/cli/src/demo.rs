//! `tokenledger demo`: the forum thread's story on a fresh data directory.
//!
//! A plugin's token is refused a teammate's private conversation because
//! the teammate's preference is off (a 403 that names the preference), an
//! admin turns it on for everyone and the same request is allowed, the
//! secret is revealed, the token is deleted and refused at once. Then the
//! decisions with their explanations, the audit trail and `verify`, and
//! the commands to try next on the data it leaves.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokenledger_authz::{
    Command, HistoryQuery, Ledger, LedgerOptions, Location, NewToken, Request, SealingKey, fresh,
    hex,
};
use tokenledger_events::{
    Actor, Feature, Name, Namespaces, Requirement, Role, Secret, SharedNamespace, TokenId,
    TokenKind, TokenScope,
};

use crate::Failure;
use crate::investigate::history_rows;
use crate::keyfiles;
use crate::output::{self, table};
use crate::run::{failure, now};

/// The data directory for the demo: the one given, if it is empty, else
/// the first of `./tokenledger-demo`, `./tokenledger-demo-2`, … that does
/// not exist, so a second run never touches the first one's data.
fn fresh_dir(explicit: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(dir) = explicit {
        let empty = match std::fs::read_dir(&dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
            Err(error) => return Err(Failure::BadInput(format!("{}: {error}", dir.display()))),
        };
        if !empty {
            return Err(Failure::BadInput(format!(
                "the demo needs a fresh data directory, and {} is not empty",
                dir.display()
            )));
        }
        return Ok(dir);
    }
    (1..1000)
        .map(|n| match n {
            1 => PathBuf::from("./tokenledger-demo"),
            n => PathBuf::from(format!("./tokenledger-demo-{n}")),
        })
        // A key path that cannot be made is reported when the demo makes it.
        .find(|dir| !dir.exists() && key_path(dir).map_or(true, |key| !key.exists()))
        .ok_or_else(|| Failure::BadInput("remove some ./tokenledger-demo-* directories".to_owned()))
}

/// The sealing key goes beside the data directory, never inside it: as
/// `DIR.sealing-key` when the path ends in a name, else (`.`, `..`) beside
/// the directory the path resolves to.
fn key_path(dir: &Path) -> Result<PathBuf, Failure> {
    let named = match dir.components().next_back() {
        Some(Component::Normal(_)) => dir.to_owned(),
        _ => keyfiles::resolve(dir)
            .map_err(|e| Failure::BadInput(format!("{}: {e}", dir.display())))?,
    };
    let mut name = named.file_name().unwrap_or_default().to_os_string();
    name.push(".sealing-key");
    let key = named.with_file_name(name);
    keyfiles::refuse_inside("sealing key", &key, dir)?;
    Ok(key)
}

fn name(text: &str) -> Result<Name, Failure> {
    Name::new(text).map_err(|e| Failure::Refused(e.to_string()))
}

/// How to run this binary again from here: its path relative to the
/// current directory (`./target/release/tokenledger` after `cargo run`),
/// else its name, so the commands the demo suggests run as printed.
fn program() -> String {
    let relative = std::env::current_exe().ok().and_then(|exe| {
        let here = std::env::current_dir().ok()?;
        exe.strip_prefix(here)
            .ok()
            .map(|r| format!("./{}", r.display()))
    });
    relative.unwrap_or_else(|| "tokenledger".to_owned())
}

/// A pause between steps, so that the timeline shows them apart.
fn pause() {
    std::thread::sleep(Duration::from_millis(150));
}

struct Story {
    ledger: Ledger,
    decisions: Vec<Value>,
    lines: Vec<String>,
}

impl Story {
    fn run(&self, actor: Actor, command: Command) -> Result<(), Failure> {
        self.ledger.execute(actor, command).map_err(failure)?;
        pause();
        Ok(())
    }

    /// Asks the live authorizer, and records the answer with its explanation.
    fn ask(
        &mut self,
        what: &str,
        secret: &Secret,
        scope: &str,
        resource: &str,
        location: Location,
    ) -> Result<(), Failure> {
        let request = Request {
            requirement: Requirement::Scope(
                scope
                    .parse()
                    .map_err(|e| Failure::Refused(format!("{e}")))?,
            ),
            resource: resource
                .parse()
                .map_err(|e| Failure::Refused(format!("{e}")))?,
            location,
            at: now(),
        };
        let decision = self.ledger.authorizer().check(secret.expose(), &request);
        let explanation = match decision.refusal {
            Some(refusal) => Some(
                self.ledger
                    .with_state(|state| self.ledger.explain(state, &refusal))
                    .map_err(failure)?,
            ),
            None => None,
        };
        let body = decision.refusal.map(|r| r.body(&request));
        let outcome = match &body {
            Some(body) => format!("{} {}: {}", body.status, body.title, body.message),
            None => "200 allowed".to_owned(),
        };
        let mut line = format!(
            "{}. {what}\n   → {outcome} (decided at log position {})\n",
            self.decisions.len() + 1,
            decision.position
        );
        if let Some(explanation) = &explanation {
            line.push_str(&format!("   why: {}\n", explanation.text));
        }
        self.lines.push(line);
        self.decisions.push(json!({
            "request": what,
            "allowed": decision.is_allowed(),
            "status": decision.status(),
            "rule": decision.refusal.map(|r| r.rule.as_str()),
            "position": decision.position,
            "explanation": explanation.map(|e| e.text),
        }));
        Ok(())
    }
}

pub fn run(explicit: Option<PathBuf>, json_wanted: bool) -> Result<u8, Failure> {
    let dir = fresh_dir(explicit)?;
    let key_file = key_path(&dir)?;
    let key = SealingKey::create_file(&key_file)
        .map_err(|e| Failure::BadInput(format!("{}: {e}", key_file.display())))?;
    let ledger = Ledger::open_with(
        &dir,
        LedgerOptions {
            sealing_key: Some(key),
            ..LedgerOptions::default()
        },
    )
    .map_err(failure)?;
    let random = |e: tokenledger_authz::fresh::RandomError| Failure::Refused(e.to_string());
    let company = fresh::company_id().map_err(random)?;
    let [ada, grace, bob, linus] = [(); 4].map(|()| fresh::teammate_id());
    let (ada, grace, bob, linus) = (
        ada.map_err(random)?,
        grace.map_err(random)?,
        bob.map_err(random)?,
        linus.map_err(random)?,
    );
    let mut story = Story {
        ledger,
        decisions: Vec::new(),
        lines: Vec::new(),
    };
    let system = Actor::System;
    story.run(
        system,
        Command::CreateCompany {
            company,
            name: name("Acme Support")?,
        },
    )?;
    for (teammate, who, role) in [
        (ada, "Ada Lovelace", Role::Admin),
        (grace, "Grace Hopper", Role::Admin),
        (bob, "Bob Marley", Role::Member),
        (linus, "Linus Torvalds", Role::Member),
    ] {
        story.run(
            system,
            Command::AddTeammate {
                company,
                teammate,
                name: name(who)?,
                role,
            },
        )?;
    }
    let by_ada = Actor::Teammate(ada);
    let by_grace = Actor::Teammate(grace);
    let mut workspaces = Vec::new();
    for title in ["Support", "Sales"] {
        let workspace = fresh::workspace_id().map_err(random)?;
        story.run(
            by_ada,
            Command::CreateWorkspace {
                company,
                workspace,
                name: name(title)?,
            },
        )?;
        workspaces.push(workspace);
    }
    let sales = workspaces
        .last()
        .copied()
        .ok_or_else(|| Failure::Refused("no workspace".to_owned()))?;
    let create = |story: &Story,
                  title: &str,
                  namespaces: Namespaces|
     -> Result<(TokenId, Secret), Failure> {
        let created = story
            .ledger
            .create_token(
                by_ada,
                NewToken {
                    company,
                    name: name(title)?,
                    kind: TokenKind::ApiToken,
                    scope: TokenScope {
                        features: [Feature::Resources].into(),
                        namespaces,
                        grants: ["conversations:read", "messages:send"]
                            .into_iter()
                            .filter_map(|s| s.parse().ok())
                            .collect(),
                    },
                    expires_at: None,
                },
            )
            .map_err(failure)?;
        pause();
        Ok((created.token, created.secret))
    };
    let (plugin, plugin_secret) = create(
        &story,
        "Forum plugin",
        Namespaces {
            global: false,
            shared: SharedNamespace::All,
            private: true,
        },
    )?;
    let (report, report_secret) = create(
        &story,
        "Weekly report",
        Namespaces {
            global: true,
            ..Namespaces::none()
        },
    )?;

    let bobs = Location::Private(bob);
    story.ask(
        "Forum plugin reads Bob's private conversation cnv_forum",
        &plugin_secret,
        "conversations:read",
        "cnv_forum",
        bobs,
    )?;
    story.ask(
        "Forum plugin reads a Sales conversation cnv_sales",
        &plugin_secret,
        "conversations:read",
        "cnv_sales",
        Location::Shared(sales),
    )?;
    story.run(
        by_grace,
        Command::SetPrivateApiAccessForAll {
            company,
            allowed: true,
        },
    )?;
    story.ask(
        "the same, after Grace turned private access on for all",
        &plugin_secret,
        "conversations:read",
        "cnv_forum",
        bobs,
    )?;
    story.ask(
        "Weekly report reads Bob's private conversation",
        &report_secret,
        "conversations:read",
        "cnv_forum",
        bobs,
    )?;
    let revealed = story.ledger.reveal(by_ada, plugin).map_err(failure)?;
    pause();
    let reveal_matches = revealed.expose() == plugin_secret.expose();
    story.run(by_grace, Command::DeleteToken { token: plugin })?;
    story.ask(
        "Forum plugin, right after Grace deleted it",
        &plugin_secret,
        "conversations:read",
        "cnv_forum",
        bobs,
    )?;
    story.ask(
        "Weekly report reads a global conversation",
        &report_secret,
        "conversations:read",
        "cnv_global",
        Location::Global(company),
    )?;

    let ledger = &story.ledger;
    let events = ledger.history(&HistoryQuery::default()).map_err(failure)?;
    let verified = ledger
        .verify()
        .map_err(|d| Failure::Refused(d.to_string()))?;
    let data = dir.display().to_string();
    let key = key_file.display().to_string();
    let program = program();
    let next = [
        format!("{program} --data {data} history --token {plugin}"),
        format!("{program} --data {data} token show {plugin}"),
        format!("{program} --data {data} timeline {plugin} --html timeline.html"),
        format!("{program} --data {data} who-can --scope conversations:read --private {bob}"),
        format!(
            "{program} --data {data} --sealing-key-file {key} token reveal {report} --by {ada}"
        ),
        format!(
            "echo <that secret> | {program} --data {data} check --scope conversations:read --resource cnv_1 --global --company {company}"
        ),
        format!("{program} --data {data} verify"),
    ];
    if json_wanted {
        let json = json!({
            "data": data,
            "sealing_key_file": key,
            "company": company.to_string(),
            "tokens": { "forum_plugin": plugin.to_string(), "weekly_report": report.to_string() },
            "teammates": { "ada": ada.to_string(), "grace": grace.to_string(), "bob": bob.to_string() },
            "decisions": story.decisions,
            "reveal_matches": reveal_matches,
            "events": events.len(),
            "verify": { "intact": true, "records": verified.records, "head": hex(&verified.head.hash) },
            "try_next": next,
        });
        output::line(&json.to_string());
        return Ok(0);
    }
    let trail = ledger.with_state(|state| history_rows(state, &events));
    let mut text = String::new();
    text.push_str(&format!(
        "tokenledger demo: the forum thread's story, in {data}\n\n"
    ));
    text.push_str("Acme Support: admins Ada and Grace, members Bob and Linus, workspaces Support and Sales.\n");
    text.push_str("Ada created two tokens: \"Forum plugin\" (shared: all, private; conversations:read, messages:send)\n");
    text.push_str("and \"Weekly report\" (global; the same scopes). Teammates start with private API access off.\n\n");
    text.push_str("Decisions, as the service would get them:\n\n");
    for line in &story.lines {
        text.push_str(&format!("{line}\n"));
    }
    text.push_str(&format!(
        "Ada revealed the Forum plugin's secret (recorded before it was shown): {}\n\n",
        if reveal_matches {
            "it matches the one created"
        } else {
            "IT DOES NOT MATCH"
        }
    ));
    text.push_str("The audit trail:\n\n");
    text.push_str(&format!(
        "{}\n",
        table(&["POSITION", "TIME", "ACTOR", "EVENT", "WHAT"], &trail)
    ));
    text.push_str(&format!(
        "verify: intact, {} records, head hash {}\n\n",
        verified.records,
        hex(&verified.head.hash)
    ));
    text.push_str(&format!(
        "The sealing key is in {key} (outside the data directory). Try next:\n\n"
    ));
    for command in next {
        text.push_str(&format!("  {command}\n"));
    }
    output::line(text.trim_end());
    Ok(0)
}
