//! `timeline --html`: one self-contained page, inline SVG, no script and
//! nothing fetched, drawing a token's reach over time: one row per
//! namespace and permission, a bar while it was reachable, and a marked
//! line for each event that changed it.

use tokenledger_authz::{State, Timeline};

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

const LABEL_WIDTH: f64 = 330.0;
const PLOT_WIDTH: f64 = 760.0;
const ROW_HEIGHT: f64 = 26.0;
const TOP: f64 = 40.0;

fn colour(permission: &str) -> &'static str {
    match permission {
        "read" => "#2f7ed8",
        "write" => "#8bbc21",
        "delete" => "#c42525",
        _ => "#f28f43",
    }
}

/// The page for `timeline`, naming the token from `state`.
pub fn timeline_page(state: &State, timeline: &Timeline) -> String {
    let since = timeline.since.as_micros() as f64;
    let span = (timeline.until.as_micros() as f64 - since).max(1.0);
    let x = |micros: u64| LABEL_WIDTH + (micros as f64 - since) / span * PLOT_WIDTH;
    let rows = timeline.rows.len().max(1) as f64;
    let height = TOP + rows * ROW_HEIGHT + 40.0 + timeline.changes.len() as f64 * 18.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 20.0;
    let name = state
        .token(timeline.token)
        .map_or(String::new(), |t| format!(" “{}”", t.name));

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    let axis = TOP + rows * ROW_HEIGHT;
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
    for (i, row) in timeline.rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW_HEIGHT;
        let permission = row.permission.as_str();
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} · {permission}</text>\n",
            LABEL_WIDTH - 8.0,
            y + 17.0,
            escape(&row.label)
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
    for (i, change) in timeline.changes.iter().enumerate() {
        let at = x(change.at.as_micros());
        let label_y = axis + 36.0 + i as f64 * 18.0;
        let position = change.position.map_or("-".to_owned(), |p| p.to_string());
        svg.push_str(&format!(
            "<line x1=\"{at:.1}\" y1=\"{}\" x2=\"{at:.1}\" y2=\"{label_y}\" stroke=\"#999\" \
             stroke-dasharray=\"3,3\"/>\n<circle cx=\"{at:.1}\" cy=\"{axis}\" r=\"4\" fill=\"#222\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">#{position} {}</text>\n",
            TOP - 6.0,
            at + 4.0,
            label_y + 4.0,
            escape(&change.what)
        ));
    }
    svg.push_str("</svg>\n");

    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>tokenledger timeline of {token}</title>\n\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}h1{{font-size:18px}}\
         p{{color:#555}}</style>\n</head>\n<body>\n\
         <h1>What {token}{name} could reach</h1>\n\
         <p>From {since} to {until}. A bar: a request with that permission on that namespace \
         would have been allowed. A dashed line: an event that changed it (#log position).</p>\n\
         {svg}</body>\n</html>\n",
        token = escape(&timeline.token.to_string()),
        name = escape(&name),
        since = escape(&timeline.since.to_string()),
        until = escape(&timeline.until.to_string()),
    )
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
