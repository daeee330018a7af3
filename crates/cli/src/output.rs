//! Output: one JSON document with `--json`, aligned tables for people
//! otherwise.

use std::io::Write;

use serde_json::Value;

/// Prints `json` when asked for JSON, else the text `human` builds.
pub fn print(json_wanted: bool, json: &Value, human: impl FnOnce() -> String) {
    if json_wanted {
        line(&json.to_string());
    } else {
        let text = human();
        if !text.is_empty() {
            line(text.trim_end());
        }
    }
}

/// Writes `text` and a newline to standard output. A reader that has gone
/// (`verify --json | head -c 10`) ends the process quietly with the status
/// a shell gives a process killed by `SIGPIPE` (128 + 13), as other
/// filters end: `println!` would panic, and Rust ignores `SIGPIPE`.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("tokenledger: standard output: {error}");
        std::process::exit(1);
    }
}

/// Aligns `rows` under `header`, two spaces between columns; the last
/// column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// `key: value` lines, the keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(key, value)| format!("{:<width$} {value}\n", format!("{key}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_aligned_and_its_last_column_unpadded() {
        let rows = vec![
            vec!["1".to_owned(), "Ada".to_owned(), "x".to_owned()],
            vec!["10".to_owned(), "B".to_owned(), "yy".to_owned()],
        ];
        assert_eq!(
            table(&["N", "NAME", "Z"], &rows),
            "N   NAME  Z\n1   Ada   x\n10  B     yy\n"
        );
    }

    #[test]
    fn fields_align_their_keys() {
        assert_eq!(
            fields(&[("a", "1".to_owned()), ("long", "2".to_owned())]),
            "a:    1\nlong: 2\n"
        );
    }
}
