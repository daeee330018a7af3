//! A token's timeline as a page (`timeline --html`, and the service's
//! `timeline.html`): one self-contained page, inline SVG, no script and
//! nothing fetched, drawing a token's reach over time: one row per
//! namespace and permission, a bar while it was reachable, and a marked
//! line for each event that changed it.

use tokenledger_authz::{Change, Location, State, Timeline, who};
use tokenledger_events::{Timestamp, TokenId};

/// A change for people: who did what.
pub fn change_text(state: &State, change: &Change) -> String {
    match change.actor {
        Some(actor) => format!("{} {}", who(state, actor), change.what),
        None => change.what.clone(),
    }
}

/// Escapes text for HTML and SVG, names included: they may hold `<` or `&`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const LABEL_WIDTH: f64 = 250.0;
const PLOT_WIDTH: f64 = 760.0;
const ROW_HEIGHT: f64 = 26.0;
const TOP: f64 = 30.0;

fn colour(permission: &str) -> &'static str {
    match permission {
        "read" => "#2f7ed8",
        "write" => "#8bbc21",
        "delete" => "#c42525",
        _ => "#f28f43",
    }
}

/// A row's name, short enough for the left margin: the full label, with
/// ids, is the row's tooltip.
fn short_label(state: &State, location: Location) -> String {
    match location {
        Location::Global(_) => "global".to_owned(),
        Location::Shared(id) => match state.workspace(id) {
            Some(w) => format!("shared: {}", w.name),
            None => format!("shared: {id}"),
        },
        Location::Private(id) => match state.teammate(id) {
            Some(t) => format!("private: {}", t.name),
            None => format!("private: {id}"),
        },
    }
}

/// Cuts `text` to `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(max - 1).collect();
        format!("{kept}…")
    }
}

/// The page for `timeline`, naming people and workspaces from `state`.
pub fn timeline_page(state: &State, timeline: &Timeline) -> String {
    let since = timeline.since.as_micros() as f64;
    let span = (timeline.until.as_micros() as f64 - since).max(1.0);
    let x = |micros: u64| LABEL_WIDTH + (micros as f64 - since) / span * PLOT_WIDTH;
    let rows = timeline.rows.len().max(1) as f64;
    let axis = TOP + rows * ROW_HEIGHT;
    let height = axis + 30.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 30.0;
    let name = state
        .token(timeline.token)
        .map_or(String::new(), |t| format!(" “{}”", t.name()));

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    svg.push_str(&format!(
        "<line x1=\"{LABEL_WIDTH}\" y1=\"{axis}\" x2=\"{}\" y2=\"{axis}\" stroke=\"#444\"/>\n",
        LABEL_WIDTH + PLOT_WIDTH
    ));
    svg.push_str(&format!(
        "<text x=\"{LABEL_WIDTH}\" y=\"{}\">{}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
        axis + 16.0,
        escape(&timeline.since.to_string()),
        LABEL_WIDTH + PLOT_WIDTH,
        axis + 16.0,
        escape(&timeline.until.to_string())
    ));
    for change in &timeline.changes {
        let at = x(change.at.as_micros());
        let mark = change
            .position
            .map_or("expiry".to_owned(), |p| format!("#{p}"));
        svg.push_str(&format!(
            "<line x1=\"{at:.1}\" y1=\"{}\" x2=\"{at:.1}\" y2=\"{axis}\" stroke=\"#999\" \
             stroke-dasharray=\"3,3\"/>\n<circle cx=\"{at:.1}\" cy=\"{axis}\" r=\"4\" fill=\"#222\"/>\n\
             <text x=\"{at:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{mark}</text>\n",
            TOP - 14.0,
            TOP - 18.0,
        ));
    }
    for (i, row) in timeline.rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW_HEIGHT;
        let permission = row.permission.as_str();
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{} · {permission}</text>\n",
            LABEL_WIDTH - 8.0,
            y + 17.0,
            escape(&row.label),
            escape(&cut(&short_label(state, row.location), 32)),
        ));
        for interval in &row.intervals {
            let (from, to) = (x(interval.from.as_micros()), x(interval.to.as_micros()));
            svg.push_str(&format!(
                "<rect x=\"{from:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\" rx=\"3\">\
                 <title>{} {permission}: {} → {}</title></rect>\n",
                y + 5.0,
                (to - from).max(2.0),
                ROW_HEIGHT - 10.0,
                colour(permission),
                escape(&row.label),
                interval.from,
                if interval.open {
                    "still".to_owned()
                } else {
                    interval.to.to_string()
                }
            ));
        }
    }
    svg.push_str("</svg>\n");

    let changes: String = timeline
        .changes
        .iter()
        .map(|change| {
            let mark = change
                .position
                .map_or("expiry".to_owned(), |p| format!("#{p}"));
            format!(
                "<li><b>{mark}</b> {} — {}</li>\n",
                escape(&change.at.to_string()),
                escape(&change_text(state, change))
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>tokenledger timeline of {token}</title>\n\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}h1{{font-size:18px}}\
         p,li{{color:#444;font-size:13px}}ul{{list-style:none;padding-left:0}}</style>\n</head>\n<body>\n\
         <h1>What {token}{name} could reach</h1>\n\
         <p>From {since} to {until}. A bar: a request with that permission on that namespace \
         would have been allowed. A dashed line: an event that changed it, by log position.</p>\n\
         {svg}<ul>\n{changes}</ul>\n</body>\n</html>\n",
        token = escape(&timeline.token.to_string()),
        name = escape(&name),
        since = escape(&timeline.since.to_string()),
        until = escape(&timeline.until.to_string()),
    )
}

/// A timeline's period, `since` and `until` where given: by default from
/// the token's creation until now, or, for a deleted token, until a tenth
/// of its life after its deletion (so the page is not mostly empty).
/// Refused for an unknown token or an empty period.
pub fn period(
    state: &State,
    token: TokenId,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), String> {
    let found = state
        .token(token)
        .ok_or_else(|| format!("token `{token}` does not exist"))?;
    let (created, deleted) = (found.created().at, found.deleted().map(|d| d.at));
    let since = since.unwrap_or(created);
    let until = until.unwrap_or_else(|| match deleted {
        Some(deleted) => {
            let margin = deleted.as_micros().saturating_sub(since.as_micros()) / 10;
            // Saturating: a crafted record may put the deletion at the
            // end of time.
            now.min(Timestamp::from_micros(
                deleted.as_micros().saturating_add(margin.max(1)),
            ))
        }
        None => now,
    });
    if since >= until {
        return Err(format!(
            "the period is empty: since {since} is not before until {until}"
        ));
    }
    Ok((since, until))
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
