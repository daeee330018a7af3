//! The investigator's questions, on a ledger with a known history: what
//! happened, why a request was refused, what a token could reach and when,
//! who could do something at a time, and an export that imports whole.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use std::io::Write;

mod common;

use common::ledger::{a_company, add_teammate, name};
use tokenledger_authz::*;
use tokenledger_events::*;

struct Story {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    company: CompanyId,
    ada: TeammateId,
    bob: TeammateId,
    support: WorkspaceId,
    token: TokenId,
    secret: Secret,
    /// A token with the global namespace only.
    narrow: TokenId,
    /// The positions of the story's steps.
    bob_on: u64,
    all_off: u64,
    support_deleted: u64,
    token_deleted: u64,
}

fn scope(namespaces: Namespaces) -> TokenScope {
    TokenScope {
        features: [Feature::Resources].into(),
        namespaces,
        grants: ["conversations:read", "messages:send"]
            .into_iter()
            .map(|s| s.parse().unwrap())
            .collect(),
    }
}

/// Acme, with Ada (admin), Bob, the Support workspace and a token that
/// reaches everything; then Bob allows private access, Ada turns it off for
/// all, Support is deleted, and the token is deleted.
fn story() -> Story {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, ada) = a_company(&ledger);
    let bob = add_teammate(&ledger, Actor::System, company, "Bob", Role::Member);
    let support = fresh::workspace_id().unwrap();
    let by = Actor::Teammate(ada);
    ledger
        .execute(
            by,
            Command::CreateWorkspace {
                company,
                workspace: support,
                name: name("Support"),
            },
        )
        .unwrap();
    let new_token = |token_name: &str, namespaces| NewToken {
        company,
        name: name(token_name),
        kind: TokenKind::ApiToken,
        scope: scope(namespaces),
        expires_at: None,
    };
    let wide = ledger
        .create_token(
            by,
            new_token(
                "Zapier",
                Namespaces {
                    global: true,
                    shared: SharedNamespace::All,
                    private: true,
                },
            ),
        )
        .unwrap();
    let narrow = ledger
        .create_token(
            by,
            new_token(
                "Reports",
                Namespaces {
                    global: true,
                    ..Namespaces::none()
                },
            ),
        )
        .unwrap();
    let step = |actor, command| ledger.execute(actor, command).unwrap().position();
    let bob_on = step(
        Actor::Teammate(bob),
        Command::SetPrivateApiAccess {
            teammate: bob,
            allowed: true,
        },
    );
    let all_off = step(
        by,
        Command::SetPrivateApiAccessForAll {
            company,
            allowed: false,
        },
    );
    let support_deleted = step(by, Command::DeleteWorkspace { workspace: support });
    let token_deleted = step(by, Command::DeleteToken { token: wide.token });
    Story {
        _dir: dir,
        ledger,
        company,
        ada,
        bob,
        support,
        token: wide.token,
        secret: wide.secret,
        narrow: narrow.token,
        bob_on,
        all_off,
        support_deleted,
        token_deleted,
    }
}

impl Story {
    fn time_of(&self, position: u64) -> Timestamp {
        self.ledger
            .history(&HistoryQuery {
                from_position: Some(position),
                to_position: Some(position),
                ..HistoryQuery::default()
            })
            .unwrap()[0]
            .envelope
            .recorded_at
    }

    fn read_bobs_conversation(&self, at: Timestamp) -> Request {
        Request {
            requirement: Requirement::Scope("conversations:read".parse().unwrap()),
            resource: "cnv_1".parse().unwrap(),
            location: Location::Private(self.bob),
            at,
        }
    }
}

fn types(events: &[StoredEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| e.envelope.event.type_name())
        .collect()
}

#[test]
fn history_filters_by_token_actor_teammate_company_and_period_oldest_first() {
    let story = story();
    let ledger = &story.ledger;
    let everything = ledger.history(&HistoryQuery::default()).unwrap();
    assert_eq!(everything.len() as u64, ledger.head().position);
    assert!(
        everything
            .windows(2)
            .all(|w| w[0].envelope.position < w[1].envelope.position)
    );
    assert_eq!(everything.last().unwrap().hash, ledger.head().hash);

    let of_token = ledger
        .history(&HistoryQuery {
            token: Some(story.token),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(types(&of_token), ["TokenCreated", "TokenDeleted"]);

    let by_bob = ledger
        .history(&HistoryQuery {
            actor: Some(Actor::Teammate(story.bob)),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(types(&by_bob), ["PrivateApiAccessChanged"]);

    let by_system = ledger
        .history(&HistoryQuery {
            actor: Some(Actor::System),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(
        types(&by_system),
        ["CompanyCreated", "TeammateAdded", "TeammateAdded"]
    );

    let about_bob = ledger
        .history(&HistoryQuery {
            teammate: Some(story.bob),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(
        types(&about_bob),
        ["TeammateAdded", "PrivateApiAccessChanged"]
    );

    // Two filters at once: events by Ada about the wide token.
    let ada_on_token = ledger
        .history(&HistoryQuery {
            token: Some(story.token),
            actor: Some(Actor::Teammate(story.ada)),
            company: Some(story.company),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(ada_on_token.len(), 2);

    // A period, by time: from Bob's change to the workspace's deletion.
    let period = ledger
        .history(&HistoryQuery {
            since: Some(story.time_of(story.bob_on)),
            until: Some(story.time_of(story.support_deleted)),
            ..HistoryQuery::default()
        })
        .unwrap();
    let positions: Vec<u64> = period.iter().map(|e| e.envelope.position).collect();
    assert_eq!(
        positions,
        (story.bob_on..=story.support_deleted).collect::<Vec<_>>()
    );

    let other_company = ledger
        .history(&HistoryQuery {
            company: Some(fresh::company_id().unwrap()),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert!(other_company.is_empty());
}

#[test]
fn the_state_as_of_a_position_or_time_is_the_state_then() {
    let story = story();
    let ledger = &story.ledger;
    let before = ledger.state_at(story.bob_on - 1).unwrap();
    assert!(!before.teammate(story.bob).unwrap().private_access.value);
    let after = ledger.state_at(story.bob_on).unwrap();
    assert!(after.teammate(story.bob).unwrap().private_access.value);
    assert_eq!(
        ledger.position_at(story.time_of(story.bob_on)).unwrap(),
        story.bob_on
    );
    assert_eq!(ledger.position_at(Timestamp::EPOCH).unwrap(), 0);
    assert_eq!(ledger.state_at(0).unwrap().position(), 0);
    let head = ledger.head().position;
    assert!(matches!(
        ledger.state_at(head + 1),
        Err(LedgerError::BeyondHead { position, head: h }) if position == head + 1 && h == head
    ));
}

#[test]
fn the_state_for_a_secret_decides_as_the_whole_state_does() {
    let story = story();
    let ledger = &story.ledger;
    let unknown = fresh::secret().unwrap();
    for position in [0, story.bob_on - 1, story.bob_on, story.token_deleted] {
        let whole = ledger.state_at(position).unwrap();
        let at = story.time_of(position.max(1));
        for presented in [story.secret.expose(), unknown.expose(), "tlk_garbage"] {
            for location in [
                Location::Private(story.bob),
                Location::Global(story.company),
                Location::Global(fresh::company_id().unwrap()),
            ] {
                let request = Request {
                    location,
                    ..story.read_bobs_conversation(at)
                };
                let narrow = ledger.state_for_secret_at(presented, position).unwrap();
                assert_eq!(
                    decide_request(&narrow, presented, &request),
                    decide_request(&whole, presented, &request),
                    "{presented} at {position} on {location:?}"
                );
            }
        }
    }
}

#[test]
fn a_refusal_is_explained_by_the_event_behind_it_with_who_and_when() {
    let story = story();
    let ledger = &story.ledger;

    // Before Bob allowed it: off since he was added, by the system.
    let state = ledger.state_at(story.bob_on - 1).unwrap();
    let request = story.read_bobs_conversation(story.time_of(story.bob_on - 1));
    let refusal = decide_request(&state, story.secret.expose(), &request)
        .refusal
        .unwrap();
    assert_eq!(refusal.rule, Rule::OwnerAllowsPrivateAccess);
    let explanation = ledger.explain(&state, &refusal).unwrap();
    assert_eq!(
        explanation.event.unwrap().envelope.event.type_name(),
        "TeammateAdded"
    );

    // After Ada turned it off for everyone: her event, by her name.
    let state = ledger.state_at(story.all_off).unwrap();
    let request = story.read_bobs_conversation(story.time_of(story.all_off));
    let refusal = decide_request(&state, story.secret.expose(), &request)
        .refusal
        .unwrap();
    let explanation = ledger.explain(&state, &refusal).unwrap();
    let event = explanation.event.unwrap();
    assert_eq!(event.envelope.position, story.all_off);
    assert_eq!(event.envelope.actor, Actor::Teammate(story.ada));
    assert!(explanation.text.contains("rule 7"), "{}", explanation.text);
    assert!(
        explanation.text.contains(&format!("Ada ({})", story.ada)),
        "{}",
        explanation.text
    );
    assert!(
        explanation
            .text
            .contains("turned private API access off for every teammate"),
        "{}",
        explanation.text
    );
    assert!(
        explanation.text.contains("needed: conversations:read"),
        "{}",
        explanation.text
    );

    // After the deletion: who deleted it.
    let state = ledger.state_at(story.token_deleted).unwrap();
    let refusal = decide_request(&state, story.secret.expose(), &request)
        .refusal
        .unwrap();
    let explanation = ledger.explain(&state, &refusal).unwrap();
    assert_eq!(
        explanation.event.unwrap().envelope.position,
        story.token_deleted
    );
    assert!(explanation.text.contains("deleted"), "{}", explanation.text);

    // A scope the token never had: its creation is the event behind it.
    let request = Request {
        requirement: Requirement::Scope("tags:write".parse().unwrap()),
        ..story.read_bobs_conversation(story.time_of(story.bob_on))
    };
    let state = ledger.state_at(story.bob_on).unwrap();
    let refusal = decide_request(&state, story.secret.expose(), &request)
        .refusal
        .unwrap();
    assert_eq!(refusal.rule, Rule::Permission);
    let explanation = ledger.explain(&state, &refusal).unwrap();
    assert_eq!(
        explanation.event.unwrap().envelope.event.type_name(),
        "TokenCreated"
    );
    assert!(
        explanation.text.contains("needed: tags:write"),
        "{}",
        explanation.text
    );
}

fn row(timeline: &Timeline, location: Location, permission: Permission) -> Option<&Reach> {
    timeline
        .rows
        .iter()
        .find(|r| r.location == location && r.permission == permission)
}

#[test]
fn a_timeline_shows_when_each_namespace_and_permission_was_reachable() {
    let story = story();
    let ledger = &story.ledger;
    let created = story.time_of(story.bob_on - 2);
    let until = Timestamp::from_micros(story.time_of(story.token_deleted).as_micros() + 1_000_000);
    let timeline = ledger
        .timeline(story.token, Timestamp::EPOCH, until)
        .unwrap();
    let at = |p| story.time_of(p);

    let global = row(&timeline, Location::Global(story.company), Permission::Read).unwrap();
    assert_eq!(global.intervals.len(), 1);
    assert_eq!(global.intervals[0].from, created);
    assert_eq!(global.intervals[0].to, at(story.token_deleted));
    assert!(!global.intervals[0].open);

    let shared = row(&timeline, Location::Shared(story.support), Permission::Send).unwrap();
    assert_eq!(shared.intervals[0].to, at(story.support_deleted));
    assert!(shared.label.contains("Support"), "{}", shared.label);

    let bob = row(&timeline, Location::Private(story.bob), Permission::Read).unwrap();
    assert_eq!(bob.intervals.len(), 1);
    assert_eq!(
        (bob.intervals[0].from, bob.intervals[0].to),
        (at(story.bob_on), at(story.all_off))
    );
    assert!(bob.label.contains("Bob"), "{}", bob.label);

    // Ada never allowed it, and the token had no delete permission.
    assert!(row(&timeline, Location::Private(story.ada), Permission::Read).is_none());
    assert!(
        timeline
            .rows
            .iter()
            .all(|r| matches!(r.permission, Permission::Read | Permission::Send))
    );

    let changed: Vec<Option<u64>> = timeline.changes.iter().map(|c| c.position).collect();
    assert_eq!(
        changed,
        [
            Some(story.bob_on - 2),
            Some(story.bob_on),
            Some(story.all_off),
            Some(story.support_deleted),
            Some(story.token_deleted)
        ]
    );

    // A period that starts while Bob's access was on cuts the interval there.
    let since = Timestamp::from_micros(at(story.bob_on).as_micros() + 1);
    let cut = ledger
        .timeline(story.token, since, at(story.all_off))
        .unwrap();
    let bob = row(&cut, Location::Private(story.bob), Permission::Read).unwrap();
    assert_eq!(bob.intervals[0].from, since);

    let unknown = fresh::token_id().unwrap();
    assert!(matches!(
        ledger.timeline(unknown, Timestamp::EPOCH, until),
        Err(LedgerError::NotFound(Missing::Token(token))) if token == unknown
    ));
}

#[test]
fn a_timeline_ends_at_the_tokens_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (company, ada) = a_company(&ledger);
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let expires_at = Timestamp::from_micros(now.as_micros() + 50_000);
    let created = ledger
        .create_token(
            Actor::Teammate(ada),
            NewToken {
                company,
                name: name("Short-lived"),
                kind: TokenKind::ApiToken,
                scope: scope(Namespaces {
                    global: true,
                    ..Namespaces::none()
                }),
                expires_at: Some(expires_at),
            },
        )
        .unwrap();
    let until = Timestamp::from_micros(expires_at.as_micros() + 10_000_000);
    let timeline = ledger
        .timeline(created.token, Timestamp::EPOCH, until)
        .unwrap();
    let global = row(&timeline, Location::Global(company), Permission::Read).unwrap();
    assert_eq!(global.intervals[0].to, expires_at);
    let last = timeline.changes.last().unwrap();
    assert_eq!((last.at, last.position), (expires_at, None));
}

#[test]
fn who_can_lists_the_tokens_the_rules_allow_at_that_time() {
    let story = story();
    let ledger = &story.ledger;
    let read: Scope = "conversations:read".parse().unwrap();
    let at = |p| story.time_of(p);

    let global = ledger
        .who_can(read, Location::Global(story.company), at(story.bob_on))
        .unwrap();
    let tokens: Vec<TokenId> = global.tokens.iter().map(|a| a.token).collect();
    assert_eq!(tokens, [story.token, story.narrow]);
    assert_eq!(global.position, story.bob_on);

    let bob = Location::Private(story.bob);
    let while_on = ledger.who_can(read, bob, at(story.bob_on)).unwrap();
    assert_eq!(while_on.tokens.len(), 1);
    assert_eq!(while_on.tokens[0].token, story.token);
    assert_eq!(while_on.tokens[0].name.as_str(), "Zapier");
    assert!(
        ledger
            .who_can(read, bob, at(story.all_off))
            .unwrap()
            .tokens
            .is_empty()
    );
    let tags: Scope = "tags:read".parse().unwrap();
    assert!(
        ledger
            .who_can(tags, bob, at(story.bob_on))
            .unwrap()
            .tokens
            .is_empty()
    );

    // Before Support existed, it is not found.
    let support = Location::Shared(story.support);
    assert!(matches!(
        ledger.who_can(read, support, Timestamp::EPOCH),
        Err(LedgerError::NotFound(Missing::Location { location, at }))
            if location == support && at == Timestamp::EPOCH
    ));
}

#[test]
fn an_export_imports_whole_into_an_empty_ledger_and_decides_the_same() {
    let story = story();
    let out_dir = tempfile::tempdir().unwrap();
    let path = out_dir.path().join("export.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let exported = story
        .ledger
        .export(&mut file, &path, &mut |_, _| {})
        .unwrap();
    drop(file);
    assert_eq!(exported, story.ledger.head().position);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(story.secret.expose()));
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "CompanyCreated");
    assert_eq!(first["fields"]["name"], "Acme");
    assert_eq!(first["position"], 1);

    let copy_dir = tempfile::tempdir().unwrap();
    let verified = Ledger::import(
        copy_dir.path(),
        &path,
        Some(story.ledger.head()),
        LedgerOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(verified.head, story.ledger.head());
    let copy = Ledger::open(copy_dir.path()).unwrap();
    assert_eq!(
        copy.history(&HistoryQuery::default()).unwrap(),
        story.ledger.history(&HistoryQuery::default()).unwrap()
    );
    // The deleted token stays refused in the copy, now and after reopening.
    let request =
        story.read_bobs_conversation(Timestamp::from_system_time(std::time::SystemTime::now()));
    let refusal = copy
        .authorizer()
        .check(story.secret.expose(), &request)
        .refusal
        .unwrap();
    assert!(matches!(refusal.reason, Reason::TokenDeleted { .. }));
    drop(copy);
    let reopened = Ledger::open(copy_dir.path()).unwrap();
    assert!(
        !reopened
            .authorizer()
            .check(story.secret.expose(), &request)
            .is_allowed()
    );

    // Into a ledger that holds events: refused.
    assert!(matches!(
        Ledger::import(
            copy_dir.path(),
            &path,
            None,
            LedgerOptions::default(),
            &mut |_, _| {}
        ),
        Err(TransferError::NotEmpty { .. })
    ));
}

fn import_fails(lines: &[String]) -> (TransferError, Head) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    drop(file);
    let data = dir.path().join("data");
    let error =
        Ledger::import(&data, &path, None, LedgerOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(!data.exists(), "a refused import made the data directory");
    (error, Head::EMPTY)
}

#[test]
fn an_edited_reordered_or_truncated_export_imports_nothing() {
    let story = story();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    story
        .ledger
        .export(&mut file, &path, &mut |_, _| {})
        .unwrap();
    drop(file);
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();

    let line_of = |error: &TransferError| match error {
        TransferError::Line { line, .. } => *line,
        other => panic!("not a line error: {other}"),
    };

    // A readable field edited: Bob renamed.
    let mut renamed = lines.clone();
    renamed[2] = renamed[2].replace("\"Bob\"", "\"Eve\"");
    assert_ne!(renamed[2], lines[2]);
    let (error, head) = import_fails(&renamed);
    assert_eq!((line_of(&error), head), (3, Head::EMPTY));
    assert!(error.to_string().contains("edited"), "{error}");

    // The record's bytes edited: its hash no longer matches.
    let mut flipped = lines.clone();
    let at = flipped[4].find("\"record\":\"").unwrap() + 200;
    let digit = if &flipped[4][at..=at] == "0" {
        "1"
    } else {
        "0"
    };
    flipped[4].replace_range(at..=at, digit);
    let (error, head) = import_fails(&flipped);
    assert_eq!((line_of(&error), head), (5, Head::EMPTY));

    // Two lines swapped: the chain breaks at the first.
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    let (error, head) = import_fails(&swapped);
    assert_eq!((line_of(&error), head), (4, Head::EMPTY));

    // A line missing in the middle.
    let mut missing = lines.clone();
    missing.remove(2);
    let (error, _) = import_fails(&missing);
    assert_eq!(line_of(&error), 3);

    // Not JSON at all.
    let (error, head) = import_fails(&["\u{1b}[31mnot json".to_owned()]);
    assert_eq!((line_of(&error), head), (1, Head::EMPTY));
}
