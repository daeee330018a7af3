//! The `tokenledger` binary end to end: every command's output and exit
//! code, and a data directory left exactly as it was (same head, same
//! hash) by every refused or malformed command.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::{Path, PathBuf};

mod common;

use common::{CREATE_ACME, Run, add_ada, binary, finish, json_ok, write_key};
use serde_json::Value;

struct Ledger {
    dir: tempfile::TempDir,
    data: PathBuf,
    key: Option<PathBuf>,
}

impl Ledger {
    fn new() -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Ledger {
            dir,
            data,
            key: None,
        }
    }

    /// A ledger with a sealing key, kept beside the data directory.
    fn sealed() -> Ledger {
        let mut ledger = Ledger::new();
        let key = ledger.dir.path().join("sealing.key");
        write_key(&key, "11".repeat(32));
        ledger.key = Some(key);
        ledger
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command = binary();
        command.arg("--data").arg(&self.data);
        if let Some(key) = &self.key {
            command.arg("--sealing-key-file").arg(key);
        }
        command.args(args);
        finish(command, stdin)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    /// Runs a command that must succeed with `--json`; returns its JSON.
    fn ok(&self, args: &[&str]) -> Value {
        json_ok(args, |all| self.run(all))
    }

    fn id(&self, args: &[&str], field: &str) -> String {
        self.ok(args)[field].as_str().unwrap().to_owned()
    }

    /// The head's position and hash, as `verify` reports them.
    fn head(&self) -> (u64, String) {
        let verified = self.ok(&["verify"]);
        assert_eq!(verified["intact"], true);
        (
            verified["head"]["position"].as_u64().unwrap(),
            verified["head"]["hash"].as_str().unwrap().to_owned(),
        )
    }

    /// Runs a command that must fail with `code`, one line on standard
    /// error, and the log exactly as it was.
    fn fails(&self, code: i32, args: &[&str], stdin: Option<&str>) -> String {
        let before = self.head();
        let run = self.run_with(args, stdin);
        assert_eq!(run.code, code, "{args:?}: {} / {}", run.stdout, run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {:?}", run.stderr);
        assert!(run.stderr.starts_with("tokenledger: "), "{:?}", run.stderr);
        assert_eq!(self.head(), before, "{args:?} changed the log");
        run.stderr
    }
}

/// Acme with an admin, a member and a workspace; ids by name.
struct Acme {
    company: String,
    admin: String,
    member: String,
    workspace: String,
}

fn acme(ledger: &Ledger) -> Acme {
    let company = ledger.id(&CREATE_ACME, "company");
    let admin = ledger.id(&add_ada(&company), "teammate");
    let member = ledger.id(
        &[
            "teammate",
            "add",
            "--company",
            &company,
            "--name",
            "Bob",
            "--by",
            &admin,
        ],
        "teammate",
    );
    let workspace = ledger.id(
        &[
            "workspace",
            "create",
            "--company",
            &company,
            "--name",
            "Support",
            "--by",
            &admin,
        ],
        "workspace",
    );
    Acme {
        company,
        admin,
        member,
        workspace,
    }
}

/// A token that reads conversations everywhere; returns its id and secret.
fn wide_token(ledger: &Ledger, acme: &Acme) -> (String, String) {
    let created = ledger.ok(&[
        "token",
        "create",
        "--company",
        &acme.company,
        "--name",
        "Plugin",
        "--by",
        &acme.admin,
        "--feature",
        "resources",
        "--global",
        "--shared",
        "all",
        "--private",
        "--scope",
        "conversations:read",
    ]);
    (
        created["token"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// Checks that the token with `secret` is refused as deleted.
fn assert_deleted(ledger: &Ledger, acme: &Acme, secret: &str) {
    let run = ledger.run_with(
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
            "--global",
            "--company",
            &acme.company,
            "--json",
        ],
        Some(secret),
    );
    assert_eq!(
        (run.code, run.json()["rule"].as_str()),
        (1, Some("token_live"))
    );
}

#[test]
fn administration_commands_print_what_they_created() {
    let ledger = Ledger::sealed();
    let acme = acme(&ledger);
    assert!(acme.company.starts_with("cmp_"));
    assert!(acme.admin.starts_with("tea_"));
    assert!(acme.workspace.starts_with("tim_"));
    let role = ledger.ok(&[
        "teammate",
        "role",
        &acme.member,
        "--admin",
        "--by",
        &acme.admin,
    ]);
    assert_eq!(role["role"], "admin");
    ledger.ok(&[
        "teammate",
        "role",
        &acme.member,
        "--member",
        "--by",
        &acme.admin,
    ]);

    let (token, secret) = wide_token(&ledger, &acme);
    assert!(token.starts_with("tok_") && secret.starts_with("tlk_"));

    let list = ledger.ok(&["token", "list", "--company", &acme.company]);
    assert_eq!(list[0]["token"], token.as_str());
    assert_eq!(list[0]["name"], "Plugin");
    assert_eq!(list[0]["created_by"], acme.admin.as_str());
    assert_eq!(list[0]["deleted_at"], Value::Null);

    let revealed = ledger.ok(&["token", "reveal", &token, "--by", &acme.admin]);
    assert_eq!(revealed["secret"], secret.as_str());

    let show = ledger.ok(&["token", "show", &token]);
    assert_eq!(show["name"], "Plugin");
    assert_eq!(show["kind"], "api_token");
    assert_eq!(show["scope"]["scopes"][0], "conversations:read");
    assert_eq!(show["scope"]["namespaces"]["shared"], "all");
    assert_eq!(show["reveals"][0]["by"], acme.admin.as_str());
    assert_eq!(show["deleted_by"], Value::Null);

    let pref = ledger.ok(&[
        "pref",
        "set",
        &acme.member,
        "--private-api-access",
        "on",
        "--by",
        &acme.member,
    ]);
    assert_eq!(pref["private_api_access"], "on");
    ledger.ok(&[
        "pref",
        "set-all",
        "--company",
        &acme.company,
        "--private-api-access",
        "off",
        "--by",
        &acme.admin,
    ]);

    let deleted = ledger.ok(&["token", "delete", &token, "--by", &acme.admin]);
    assert!(deleted["deleted_at"].is_string());
    let show = ledger.ok(&["token", "show", &token]);
    assert_eq!(show["deleted_by"], acme.admin.as_str());
    ledger.ok(&["teammate", "deactivate", &acme.member, "--by", &acme.admin]);

    // The same for people: a table with its header.
    let table = ledger.run(&["token", "list", "--company", &acme.company]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("TOKEN"), "{}", table.stdout);
    assert!(table.stdout.contains("Ada ("), "{}", table.stdout);
}

#[test]
fn check_reads_the_secret_from_stdin_and_exits_0_allowed_1_refused_2_bad_input() {
    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let (token, secret) = wide_token(&ledger, &acme);
    let global = ["--global", "--company", acme.company.as_str()];
    let check = |extra: &[&str], stdin: &str| {
        let mut args = vec!["check", "--resource", "cnv_1", "--json"];
        args.extend_from_slice(extra);
        ledger.run_with(&args, Some(stdin))
    };

    let allowed = check(
        &[&["--scope", "conversations:read"][..], &global].concat(),
        &secret,
    );
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    let json = allowed.json();
    assert_eq!(json["allowed"], true);
    assert_eq!(json["status"], 200);
    assert_eq!(json["needed_scope"], "conversations:read");
    assert_eq!(json["token"], token.as_str());

    // By endpoint: GET /conversations/{id} needs conversations:read.
    let by_endpoint = check(
        &[&["--endpoint", "GET /conversations/cnv_1"][..], &global].concat(),
        &secret,
    );
    assert_eq!(by_endpoint.code, 0, "{}", by_endpoint.stderr);

    // Bob's private conversation: his preference is off. The forum's 403.
    let private = [
        "--scope",
        "conversations:read",
        "--private",
        acme.member.as_str(),
    ];
    let refused = check(&private, &format!("{secret}\n"));
    assert_eq!(refused.code, 1);
    let json = refused.json();
    assert_eq!(json["allowed"], false);
    assert_eq!(json["rule"], "owner_allows_private_access");
    assert_eq!(json["status"], 403);
    assert_eq!(json["error"]["_error"]["title"], "Forbidden");
    assert_eq!(
        json["error"]["_error"]["message"],
        "This agent is not allowed to read the \"conversation\" with ID: \"cnv_1\""
    );
    assert!(
        json["explanation"].as_str().unwrap().contains("Bob ("),
        "{json}"
    );
    let before_on = json["position"].as_u64().unwrap();

    ledger.ok(&[
        "pref",
        "set",
        &acme.member,
        "--private-api-access",
        "on",
        "--by",
        &acme.member,
    ]);
    assert_eq!(check(&private, &secret).code, 0);
    // As of the position before Bob's change, it is refused still.
    let position = before_on.to_string();
    let as_of = check(
        &[&private[..], &["--position", &position]].concat(),
        &secret,
    );
    assert_eq!(
        (as_of.code, as_of.json()["position"].as_u64()),
        (1, Some(before_on))
    );
    let as_of_time = check(
        &[&private[..], &["--at", "2000-01-01T00:00:00Z"]].concat(),
        &secret,
    );
    assert_eq!(
        (as_of_time.code, as_of_time.json()["position"].as_u64()),
        (1, Some(0))
    );

    // A malformed secret is a refusal (401), not bad input.
    let malformed = check(&private, "tlk_not-a-secret");
    assert_eq!(
        (malformed.code, malformed.json()["status"].as_u64()),
        (1, Some(401))
    );

    // Bad input: exit 2, nothing written.
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
            "--private",
            &acme.member,
        ],
        Some(""),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
            "--private",
            &acme.member,
        ],
        Some(&"x".repeat(5000)),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "not an id",
            "--private",
            &acme.member,
        ],
        Some(&secret),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--endpoint",
            "GET /nowhere",
            "--resource",
            "cnv_1",
            "--private",
            &acme.member,
        ],
        Some(&secret),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "messages:delete",
            "--resource",
            "cnv_1",
            "--private",
            &acme.member,
        ],
        Some(&secret),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
        ],
        Some(&secret),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
            "--global",
        ],
        Some(&secret),
    );
    ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
            "--private",
            &acme.member,
            "--position",
            "999",
        ],
        Some(&secret),
    );
    // The secret as an argument is refused before anything is read.
    let stderr = ledger.fails(
        2,
        &[
            "check",
            "--scope",
            "conversations:read",
            "--resource",
            "cnv_1",
            "--private",
            &acme.member,
            &secret,
        ],
        Some(&secret),
    );
    assert!(stderr.contains("standard input"), "{stderr}");
    let stderr = ledger.fails(
        2,
        &["token", "show", &token, &format!("--secret={secret}")],
        None,
    );
    assert!(
        stderr.contains("never taken from the command line"),
        "{stderr}"
    );
}

#[test]
fn refused_and_malformed_commands_write_nothing() {
    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let (token, _) = wide_token(&ledger, &acme);
    let (c, a, m, w) = (
        &acme.company[..],
        &acme.admin[..],
        &acme.member[..],
        &acme.workspace[..],
    );
    let unknown_company = "cmp_0123456789abcdef0123456789abcdef";
    let unknown_token = "tok_0123456789abcdef0123456789abcdef";

    // Refused by the rules: exit 1.
    for args in [
        vec![
            "teammate",
            "add",
            "--company",
            c,
            "--name",
            "Eve",
            "--by",
            m,
        ],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            m,
            "--feature",
            "resources",
            "--global",
            "--scope",
            "tags:read",
        ],
        vec!["token", "reveal", &token, "--by", a],
        vec!["teammate", "role", a, "--member", "--by", a],
        vec!["teammate", "deactivate", a, "--by", a],
        vec!["pref", "set", a, "--private-api-access", "on", "--by", m],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            "system",
            "--feature",
            "resources",
            "--global",
            "--scope",
            "tags:read",
        ],
    ] {
        ledger.fails(1, &args, None);
    }
    ledger.ok(&["token", "delete", &token, "--by", a]);
    ledger.fails(1, &["token", "delete", &token, "--by", a], None);

    // Bad input: exit 2.
    let long_name = "n".repeat(300);
    for args in [
        vec!["company", "create", "--name", ""],
        vec!["company", "create", "--name", &long_name],
        vec!["company", "create", "--name", "bad\u{1b}[31mname"],
        vec!["company", "create"],
        vec![
            "teammate",
            "add",
            "--company",
            unknown_company,
            "--name",
            "Eve",
            "--by",
            "system",
        ],
        vec![
            "teammate",
            "add",
            "--company",
            "cmp_nope",
            "--name",
            "Eve",
            "--by",
            "system",
        ],
        vec![
            "teammate",
            "add",
            "--company",
            w,
            "--name",
            "Eve",
            "--by",
            "system",
        ],
        vec![
            "teammate",
            "add",
            "--company",
            c,
            "--name",
            "Eve",
            "--by",
            "nobody",
        ],
        vec!["teammate", "role", m, "--by", a],
        vec!["token", "show", unknown_token],
        vec!["token", "list", "--company", unknown_company],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            a,
            "--scope",
            "messages:delete",
        ],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            a,
            "--feature",
            "teleport",
        ],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            a,
            "--shared",
            "all",
            "--shared",
            w,
        ],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            a,
            "--expires",
            "yesterday",
        ],
        vec![
            "token",
            "create",
            "--company",
            c,
            "--name",
            "X",
            "--by",
            a,
            "--feature",
            "resources",
            "--global",
            "--scope",
            "tags:read",
            "--expires",
            "2001-01-01T00:00:00Z",
        ],
        vec!["pref", "set", m, "--private-api-access", "maybe", "--by", m],
        vec!["timeline", unknown_token],
        vec!["history", "--since", "last tuesday"],
        vec!["no-such-command"],
    ] {
        ledger.fails(2, &args, None);
    }
}

#[test]
fn history_timeline_and_who_can_answer_from_the_log() {
    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let (token, _) = wide_token(&ledger, &acme);
    ledger.ok(&[
        "pref",
        "set",
        &acme.member,
        "--private-api-access",
        "on",
        "--by",
        &acme.member,
    ]);
    ledger.ok(&["token", "delete", &token, "--by", &acme.admin]);

    let all = ledger.ok(&["history"]);
    assert_eq!(all.as_array().unwrap().len(), 7);
    assert_eq!(all[0]["type"], "CompanyCreated");
    assert_eq!(all[0]["position"], 1);
    assert_eq!(all[0]["hash"].as_str().unwrap().len(), 64);
    let of_token = ledger.ok(&["history", "--token", &token]);
    let types: Vec<&str> = of_token
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["TokenCreated", "TokenDeleted"]);
    let by_member = ledger.ok(&["history", "--actor", &acme.member]);
    assert_eq!(by_member[0]["fields"]["allowed"], true);
    let about_member = ledger.ok(&[
        "history",
        "--teammate",
        &acme.member,
        "--company",
        &acme.company,
    ]);
    assert_eq!(about_member.as_array().unwrap().len(), 2);
    let none = ledger.ok(&["history", "--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(none.as_array().unwrap().len(), 0);
    let text = ledger.run(&["history"]);
    assert!(text.stdout.starts_with("POSITION"), "{}", text.stdout);

    let page = ledger.dir.path().join("timeline.html");
    let timeline = ledger.ok(&["timeline", &token, "--html", page.to_str().unwrap()]);
    let rows = timeline["rows"].as_array().unwrap();
    let private: Vec<&Value> = rows
        .iter()
        .filter(|r| r["namespace"]["private"] == acme.member.as_str())
        .collect();
    assert_eq!(private.len(), 1);
    assert_eq!(private[0]["permission"], "read");
    assert_eq!(private[0]["intervals"][0]["open"], false);
    assert!(
        rows.iter()
            .any(|r| r["namespace"]["global"] == acme.company.as_str())
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("Bob"), "{html}");
    assert!(!html.contains("http-equiv") && !html.contains("<script"));

    let who = ledger.ok(&[
        "who-can",
        "--scope",
        "conversations:read",
        "--global",
        "--company",
        &acme.company,
    ]);
    assert_eq!(
        who["tokens"].as_array().unwrap().len(),
        0,
        "deleted, so none now"
    );
    let created_at = of_token[0]["recorded_at"].as_str().unwrap();
    let then = ledger.ok(&[
        "who-can",
        "--scope",
        "conversations:read",
        "--global",
        "--company",
        &acme.company,
        "--at",
        created_at,
    ]);
    assert_eq!(then["tokens"][0]["token"], token.as_str());
    ledger.fails(
        2,
        &[
            "who-can",
            "--scope",
            "conversations:read",
            "--shared",
            "tim_0123456789abcdef0123456789abcdef",
        ],
        None,
    );
}

#[test]
fn export_then_import_rebuilds_the_same_log_and_a_tampered_export_imports_nothing() {
    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let (token, secret) = wide_token(&ledger, &acme);
    ledger.ok(&["token", "delete", &token, "--by", &acme.admin]);
    let export = ledger.dir.path().join("export.jsonl");
    let exported = ledger.ok(&["export", "--out", export.to_str().unwrap()]);
    assert_eq!(exported["exported"], 6);
    let text = std::fs::read_to_string(&export).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(!text.contains(&secret));
    // An existing file is not overwritten.
    ledger.fails(2, &["export", "--out", export.to_str().unwrap()], None);

    let copy = Ledger::new();
    let imported = copy.ok(&["import", export.to_str().unwrap()]);
    assert_eq!(imported["imported"], 6);
    assert_eq!(copy.head(), ledger.head());
    // The deleted token stays refused in the copy.
    assert_deleted(&copy, &acme, &secret);
    // Not into a ledger that holds events.
    copy.fails(2, &["import", export.to_str().unwrap()], None);

    let tampered = ledger.dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("\"Acme\"", "\"Evil\"", 1)).unwrap();
    let fresh = Ledger::new();
    let run = fresh.run(&["import", tampered.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("line 1"), "{}", run.stderr);
    assert!(
        !fresh.data.exists(),
        "a refused import made the data directory"
    );
    let run = fresh.run(&["import", "/nonexistent/export.jsonl"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        !fresh.data.exists(),
        "a refused import made the data directory"
    );
}

#[test]
fn import_replays_the_rules_and_checks_the_expected_head() {
    use tokenledger_events::{
        Actor, CompanyId, Event, EventId, Feature, Name, Namespaces, Role, Secret, TeammateId,
        TokenId, TokenKind, TokenScope,
    };
    use tokenledger_store::{EventLog, Expectation, NewEvent, Options, SledLog};

    let dir = tempfile::tempdir().unwrap();
    // An OAuth grant with the global namespace, written through the store.
    let (company, admin) = (CompanyId::from_u128(1), TeammateId::from_u128(2));
    let event = |n: u128, actor, event| NewEvent {
        event_id: EventId::from_u128(n),
        actor,
        company,
        event,
    };
    let forged = dir.path().join("forged");
    let log = SledLog::open(&forged, Options::default()).unwrap();
    let events = vec![
        event(
            1,
            Actor::System,
            Event::CompanyCreated {
                company,
                name: Name::new("Acme").unwrap(),
            },
        ),
        event(
            2,
            Actor::System,
            Event::TeammateAdded {
                teammate: admin,
                name: Name::new("Ada").unwrap(),
                role: Role::Admin,
            },
        ),
        event(
            3,
            Actor::Teammate(admin),
            Event::TokenCreated {
                token: TokenId::from_u128(3),
                name: Name::new("App").unwrap(),
                kind: TokenKind::OAuthGrant,
                scope: TokenScope {
                    features: [Feature::Resources].into(),
                    namespaces: Namespaces {
                        global: true,
                        ..Namespaces::none()
                    },
                    grants: ["conversations:read".parse().unwrap()]
                        .into_iter()
                        .collect(),
                },
                secret_digest: Secret::from_random([7; 32]).digest(),
                sealed_secret: None,
                expires_at: None,
            },
        ),
    ];
    log.append(events, Expectation::Head(0)).unwrap();
    drop(log);
    let export = dir.path().join("forged.jsonl");
    let run = binary()
        .arg("--data")
        .arg(&forged)
        .args(["export", "--out", export.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let copy = Ledger::new();
    let run = copy.run(&["import", export.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    assert!(run.stderr.contains("OAuth grant"), "{}", run.stderr);
    assert!(!copy.data.exists());

    // A genuine export, with the head it must end at.
    let ledger = Ledger::new();
    acme(&ledger);
    let export = ledger.dir.path().join("export.jsonl");
    ledger.ok(&["export", "--out", export.to_str().unwrap()]);
    let (position, hash) = ledger.head();
    let file = export.to_str().unwrap();
    let other = format!("{position}:{}", "0".repeat(64));
    let copy = Ledger::new();
    let run = copy.run(&["import", file, "--expect-head", &other]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("not at the expected head"),
        "{}",
        run.stderr
    );
    assert!(!copy.data.exists());
    let run = copy.run(&["import", file, "--expect-head", "4"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("POSITION:HASH"), "{}", run.stderr);
    assert!(!copy.data.exists());
    let imported = copy.ok(&[
        "import",
        file,
        "--expect-head",
        &format!("{position}:{hash}"),
    ]);
    assert_eq!(imported["imported"], position);
    assert_eq!(copy.head(), (position, hash));
}

#[test]
fn compact_rewrites_the_storage_and_keeps_the_log() {
    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let (token, secret) = wide_token(&ledger, &acme);
    ledger.ok(&["token", "delete", &token, "--by", &acme.admin]);
    let before = ledger.head();
    let compacted = ledger.ok(&["compact"]);
    assert!(compacted["keys"].as_u64().unwrap() > 0, "{compacted}");
    assert!(compacted["after"].as_u64().unwrap() > 0, "{compacted}");
    assert_eq!(ledger.head(), before);
    // The deleted token stays refused, and the ledger goes on.
    assert_deleted(&ledger, &acme, &secret);
    ledger.ok(&["company", "create", "--name", "Later"]);
    assert_eq!(ledger.head().0, before.0 + 1);
    let run = ledger.run(&["compact"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("MiB"), "{}", run.stdout);
}

#[test]
fn verify_reports_the_first_damaged_position() {
    let ledger = Ledger::new();
    acme(&ledger);
    let run = ledger.run(&["verify"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.starts_with("intact: 4 records"),
        "{}",
        run.stdout
    );

    // One byte of the last record of a page changed through sled, as an
    // attacker with write access to the directory could. A page is stored
    // under its last record's position, and ends with that record's bytes
    // (crates/store/src/page.rs).
    let changed = {
        let db = sled::open(ledger.data.join("sled")).unwrap();
        let events = db.open_tree("events").unwrap();
        let (key, page) = events.scan_prefix(b"L").next().unwrap().unwrap();
        let mut page = page.to_vec();
        let end = page.len() - 1;
        page[end] ^= 1;
        events.insert(&key, page).unwrap();
        db.flush().unwrap();
        u64::from_be_bytes(key[1..].try_into().unwrap())
    };
    let run = ledger.run(&["verify", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json = run.json();
    assert_eq!(
        (json["intact"].as_bool(), json["position"].as_u64()),
        (Some(false), Some(changed))
    );
    assert!(
        run.stderr.contains(&format!("position {changed}")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn an_unusable_data_directory_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let run = Run::from(
        binary()
            .arg("--data")
            .arg(&file)
            .args(["verify"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn a_log_in_another_layout_is_refused_and_left_as_it_was() {
    let ledger = Ledger::new();
    acme(&ledger);
    // The layout version key, as crates/store/src/sled_log.rs lays it out,
    // set to one this build does not read.
    let set_layout = |version: u32| {
        let db = sled::open(ledger.data.join("sled")).unwrap();
        let events = db.open_tree("events").unwrap();
        let old = events.insert(b"V", &version.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
        old.unwrap().to_vec()
    };
    let current = set_layout(99);
    for args in [&["verify"][..], &["company", "create", "--name", "Rival"]] {
        let run = ledger.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("layout version 99"), "{}", run.stderr);
    }
    set_layout(u32::from_be_bytes(current.try_into().unwrap()));
    let verified = ledger.ok(&["verify"]);
    assert_eq!(verified["head"]["position"], 4, "{verified}");
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    let ledger = Ledger::new();
    acme(&ledger);
    let before = ledger.head();
    let held = tokenledger_authz::Ledger::open(&ledger.data).unwrap();
    let run = ledger.run(&["company", "create", "--name", "Rival"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("in use") || run.stderr.contains("lock"),
        "{}",
        run.stderr
    );
    drop(held);
    assert_eq!(ledger.head(), before);
}

#[test]
fn a_key_file_must_hold_32_bytes_or_64_hex_digits() {
    let ledger = Ledger::new();
    acme(&ledger);
    let before = ledger.head();
    let short = ledger.dir.path().join("short.key");
    std::fs::write(&short, "abc").unwrap();
    for flag in ["--sealing-key-file", "--checkpoint-key-file"] {
        let run = ledger.run(&[
            flag,
            short.to_str().unwrap(),
            "company",
            "create",
            "--name",
            "X",
        ]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("64 hex digits"), "{}", run.stderr);
    }
    let good = ledger.dir.path().join("good.key");
    write_key(&good, [5u8; 32]);
    // The log was written without a key: it takes one explicitly.
    ledger.ok(&["--checkpoint-key-file", good.to_str().unwrap(), "sign-head"]);
    ledger.ok(&[
        "--checkpoint-key-file",
        good.to_str().unwrap(),
        "company",
        "create",
        "--name",
        "X",
    ]);
    assert_eq!(ledger.head().0, before.0 + 1);
}

#[test]
fn a_name_that_is_not_utf8_is_bad_input() {
    use std::os::unix::ffi::OsStrExt;
    let ledger = Ledger::new();
    acme(&ledger);
    let before = ledger.head();
    let name = std::ffi::OsStr::from_bytes(b"Ac\xffme");
    let output = binary()
        .arg("--data")
        .arg(&ledger.data)
        .args(["company", "create", "--name"])
        .arg(name)
        .output()
        .unwrap();
    let run = Run::from(output);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(ledger.head(), before);
}

#[test]
fn the_data_directory_comes_from_the_environment_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-env");
    let run = Run::from(
        binary()
            .env("TOKENLEDGER_DATA", &data)
            .args(["company", "create", "--name", "Acme", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(data.join("sled").is_dir());
}

fn demo(data: &Path) -> Run {
    Run::from(
        binary()
            .arg("--data")
            .arg(data)
            .arg("demo")
            .output()
            .unwrap(),
    )
}

#[test]
fn the_demo_tells_the_forum_story_and_leaves_data_to_explore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let run = demo(&data);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in [
        "403 Forbidden: This agent is not allowed to read the \"conversation\" with ID: \"cnv_forum\"",
        "rule 7 (owner_allows_private_access)",
        "200 allowed",
        "401 Unauthenticated",
        "the token was deleted",
        "verify: intact",
        "Try next",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
    // The key is beside the data, not in it.
    assert!(dir.path().join("demo.sealing-key").is_file());
    let ledger = Ledger {
        dir,
        data: data.clone(),
        key: None,
    };
    assert_eq!(ledger.head().0, 12);
    // A second demo refuses a directory that holds data.
    let again = demo(&data);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_eq!(ledger.head().0, 12);
}

#[test]
fn a_second_demo_without_data_uses_a_new_directory_and_leaves_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let demo_here = || {
        Run::from(
            binary()
                .current_dir(dir.path())
                .arg("demo")
                .output()
                .unwrap(),
        )
    };
    let first = demo_here();
    assert_eq!(first.code, 0, "{}", first.stderr);
    let head = Ledger {
        dir: tempfile::tempdir().unwrap(),
        data: dir.path().join("tokenledger-demo"),
        key: None,
    }
    .head();
    let second = demo_here();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("./tokenledger-demo-2"),
        "{}",
        second.stdout
    );
    assert!(dir.path().join("tokenledger-demo-2.sealing-key").is_file());
    let first_again = Ledger {
        dir: tempfile::tempdir().unwrap(),
        data: dir.path().join("tokenledger-demo"),
        key: None,
    };
    assert_eq!(first_again.head(), head, "the first demo's data changed");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The head as `verify` prints it for people: `POSITION:HASH`.
fn printed_head(ledger: &Ledger) -> String {
    let run = ledger.run(&["verify"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let head = run
        .stdout
        .trim()
        .rsplit_once(", head ")
        .unwrap()
        .1
        .to_owned();
    let (position, hash) = ledger.head();
    assert_eq!(head, format!("{position}:{hash}"));
    assert_eq!(ledger.ok(&["verify"])["known_head"], head.as_str());
    head
}

#[test]
fn a_known_head_is_checked_at_open_and_a_malformed_one_refused_before() {
    // Malformed, from the flag or the environment: bad input, and the data
    // directory is not even created.
    let fresh = Ledger::new();
    for value in ["12", "x:00", &format!("3:{}", "g".repeat(64)), "3:abcd"] {
        let run = fresh.run(&["verify", "--known-head", value]);
        assert_eq!(run.code, 2, "{value}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("--known-head"), "{}", run.stderr);
        let run = Run::from(
            binary()
                .arg("--data")
                .arg(&fresh.data)
                .env("TOKENLEDGER_KNOWN_HEAD", value)
                .arg("verify")
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 2, "{value}: {}", run.stderr);
        assert!(!fresh.data.exists(), "{value}");
    }

    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let older = ledger.dir.path().join("older");
    copy_dir(&ledger.data, &older);
    ledger.ok(&["token", "list", "--company", &acme.company]);
    ledger.ok(&["company", "create", "--name", "Later"]);
    let known = printed_head(&ledger);
    // The log holds it: every command runs, given it either way.
    ledger.ok(&["verify", "--known-head", &known]);
    let run = Run::from(
        binary()
            .arg("--data")
            .arg(&ledger.data)
            .env("TOKENLEDGER_KNOWN_HEAD", &known)
            .args(["token", "list", "--company", &acme.company])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    // The older copy, as an attacker could restore it, does not hold it.
    let rolled_back = Ledger {
        dir: tempfile::tempdir().unwrap(),
        data: older,
        key: None,
    };
    let run = rolled_back.run(&["verify", "--known-head", &known, "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.json()["intact"], false);
    assert!(
        run.stderr.contains("does not contain the known head"),
        "{}",
        run.stderr
    );
    let refused = rolled_back.fails(
        2,
        &[
            "--known-head",
            &known,
            "token",
            "list",
            "--company",
            &acme.company,
        ],
        None,
    );
    assert!(refused.contains("rolled back"), "{refused}");
}

#[test]
fn a_log_written_without_a_checkpoint_key_takes_one_only_through_sign_head() {
    let ledger = Ledger::new();
    let acme = acme(&ledger);
    let key = ledger.dir.path().join("checkpoint.key");
    write_key(&key, "22".repeat(32));
    let key = key.to_str().unwrap();
    let head = printed_head(&ledger);

    // With the key, the unsigned log is refused: a failed check for
    // `verify`, and nothing is signed by refusing.
    let run = ledger.run(&["verify", "--checkpoint-key-file", key]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("signed head"), "{}", run.stderr);
    assert!(!ledger.data.join("signed-head").exists());
    // Without the key, or on a directory that does not exist, sign-head
    // is bad input and creates nothing.
    ledger.fails(2, &["sign-head"], None);
    let missing = ledger.dir.path().join("missing");
    let run = Run::from(
        binary()
            .arg("--data")
            .arg(&missing)
            .args(["sign-head", "--checkpoint-key-file", key])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!missing.exists());

    // Signed once verified, it opens with the key.
    let run = ledger.run(&["sign-head", "--checkpoint-key-file", key]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&head), "{}", run.stdout);
    let run = ledger.run(&[
        "token",
        "list",
        "--company",
        &acme.company,
        "--checkpoint-key-file",
        key,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Only once.
    let again = ledger.fails(2, &["sign-head", "--checkpoint-key-file", key], None);
    assert!(again.contains("signed head already"), "{again}");
    // Another key is refused as a forgery.
    let other = ledger.dir.path().join("other.key");
    write_key(&other, "33".repeat(32));
    let run = ledger.run(&["verify", "--checkpoint-key-file", other.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("wrong key"), "{}", run.stderr);
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly_not_with_a_panic() {
    let ledger = Ledger::new();
    acme(&ledger);
    for args in [&["verify", "--json"][..], &["history"][..]] {
        let mut child = binary()
            .arg("--data")
            .arg(&ledger.data)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command has opened the ledger.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
