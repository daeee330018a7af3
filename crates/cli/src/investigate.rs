//! The investigations: the audit trail (`history`), a token's timeline,
//! and who can reach a resource (`who-can`).

use serde_json::{Value, json};
use tokenledger_authz::{
    HistoryQuery, Location, State, StoredEvent, Timeline, describe_event, event_json, who,
};

use crate::Failure;
use crate::args::{HistoryArgs, TimelineArgs, WhoCanArgs};
use crate::files;
use crate::output::{print, table};
use crate::run::{Context, failure, location, now, open};

/// The audit trail for people: position, time, who (by name), the event's
/// type and what it did.
pub fn history_rows(state: &State, events: &[StoredEvent]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            let envelope = &e.envelope;
            vec![
                envelope.position.to_string(),
                envelope.recorded_at.to_string(),
                who(state, envelope.actor),
                envelope.event.type_name().to_owned(),
                describe_event(&envelope.event),
            ]
        })
        .collect()
}

pub fn history(context: &Context, args: HistoryArgs) -> Result<u8, Failure> {
    let query = HistoryQuery {
        token: args.token,
        actor: args.actor,
        teammate: args.teammate,
        company: args.company,
        since: args.since,
        until: args.until,
        ..HistoryQuery::default()
    };
    let ledger = open(context)?;
    let events = ledger.history(&query).map_err(failure)?;
    let json = Value::Array(events.iter().map(event_json).collect());
    print(context.json, &json, || {
        let rows = ledger.with_state(|state| history_rows(state, &events));
        table(&["POSITION", "TIME", "ACTOR", "EVENT", "WHAT"], &rows)
    });
    Ok(0)
}

pub fn timeline_json(timeline: &Timeline) -> Value {
    json!({
        "token": timeline.token.to_string(),
        "since": timeline.since.to_string(),
        "until": timeline.until.to_string(),
        "rows": timeline.rows.iter().map(|row| json!({
            "namespace": namespace_json(row.location),
            "label": row.label,
            "permission": row.permission.as_str(),
            "intervals": row.intervals.iter().map(|i| json!({
                "from": i.from.to_string(),
                "to": i.to.to_string(),
                "open": i.open,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "changes": timeline.changes.iter().map(|c| json!({
            "at": c.at.to_string(),
            "position": c.position,
            "actor": c.actor.map(|a| a.to_string()),
            "what": c.what,
        })).collect::<Vec<_>>(),
    })
}

fn namespace_json(location: Location) -> Value {
    match location {
        Location::Global(company) => json!({ "global": company.to_string() }),
        Location::Shared(workspace) => json!({ "shared": workspace.to_string() }),
        Location::Private(teammate) => json!({ "private": teammate.to_string() }),
    }
}

pub fn timeline_text(state: &State, timeline: &Timeline) -> String {
    let mut rows = Vec::new();
    for row in &timeline.rows {
        let intervals: Vec<String> = row
            .intervals
            .iter()
            .map(|i| {
                let end = if i.open {
                    "…".to_owned()
                } else {
                    i.to.to_string()
                };
                format!("{} → {end}", i.from)
            })
            .collect();
        rows.push(vec![
            row.label.clone(),
            row.permission.to_string(),
            intervals.join(", "),
        ]);
    }
    let mut out = format!(
        "what {} could reach from {} to {}\n\n",
        timeline.token, timeline.since, timeline.until
    );
    if rows.is_empty() {
        out.push_str("nothing, at any time in the period\n");
    } else {
        out.push_str(&table(&["NAMESPACE", "PERMISSION", "WHEN"], &rows));
    }
    out.push_str("\nchanges:\n");
    let changes: Vec<Vec<String>> = timeline
        .changes
        .iter()
        .map(|c| {
            vec![
                c.position.map_or("-".to_owned(), |p| p.to_string()),
                c.at.to_string(),
                tokenledger_serve::change_text(state, c),
            ]
        })
        .collect();
    out.push_str(&table(&["POSITION", "TIME", "WHAT"], &changes));
    out
}

pub fn timeline(context: &Context, args: TimelineArgs) -> Result<u8, Failure> {
    let ledger = open(context)?;
    let (since, until) = ledger
        .with_state(|state| {
            tokenledger_serve::period(state, args.token, args.since, args.until, now())
        })
        .map_err(Failure::BadInput)?;
    let timeline = ledger.timeline(args.token, since, until).map_err(failure)?;
    if let Some(path) = &args.html {
        let page = ledger.with_state(|state| tokenledger_serve::timeline_page(state, &timeline));
        files::replace(path, page.as_bytes())
            .map_err(|e| Failure::BadInput(format!("--html {}: {e}", path.display())))?;
    }
    print(context.json, &timeline_json(&timeline), || {
        let mut text = ledger.with_state(|state| timeline_text(state, &timeline));
        if let Some(path) = &args.html {
            text.push_str(&format!("\nwrote {}\n", path.display()));
        }
        text
    });
    Ok(0)
}

pub fn who_can(context: &Context, args: WhoCanArgs) -> Result<u8, Failure> {
    let location = location(&args.namespace)?;
    let at = args.at.unwrap_or_else(now);
    let ledger = open(context)?;
    let answer = ledger.who_can(args.scope, location, at).map_err(failure)?;
    let json = json!({
        "scope": args.scope.to_string(),
        "location": answer.location,
        "at": at.to_string(),
        "position": answer.position,
        "tokens": answer.tokens.iter().map(|a| json!({
            "token": a.token.to_string(),
            "name": a.name.as_str(),
            "created_by": a.created.actor.to_string(),
            "created_at": a.created.at.to_string(),
        })).collect::<Vec<_>>(),
    });
    print(context.json, &json, || {
        let rows: Vec<Vec<String>> = answer
            .tokens
            .iter()
            .map(|a| {
                vec![
                    a.token.to_string(),
                    a.name.to_string(),
                    a.created.at.to_string(),
                ]
            })
            .collect();
        let mut text = format!(
            "tokens that could use {} on {} at {} (log position {}):\n",
            args.scope, answer.location, at, answer.position
        );
        if rows.is_empty() {
            text.push_str("none\n");
        } else {
            text.push_str(&table(&["TOKEN", "NAME", "CREATED_AT"], &rows));
        }
        text
    });
    Ok(0)
}
