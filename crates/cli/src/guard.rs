//! Secrets kept off the command line, and out of what it prints.
//!
//! A secret in an argument ends up in shell history and in every process
//! listing, so an argument that holds one anywhere (`"Bearer tlk_…"`,
//! `--resource=tlk_…`, a secret with a typo, a mistyped `_` such as
//! `tlk-…` or `TLK%5F…`, or a trailing space) is refused
//! before anything else is read. And no message is printed with one in it:
//! clap's own errors quote the value they could not parse.

use std::ffi::OsString;
use std::ops::Range;

use crate::Failure;

/// How many letters and digits after the prefix make a fragment a secret
/// for the guard: 16 carry 80 of a secret's bits, which no name or id has
/// reason to hold after `tlk_`. Letters and digits of either case are
/// counted, not only the secret alphabet, so that a secret with a typo or
/// in capitals is caught too: it is still most of a secret.
const MIN_BODY: usize = 16;

/// What a secret is replaced by in a message.
const REDACTED: &str = "tlk_…";

/// The letters of a secret's prefix (`tlk_`) before its `_`, matched in any
/// case.
const STEM: &[u8] = b"tlk";

/// The `_` of the prefix percent-encoded, as a secret pasted from a URL has it.
const ENCODED_SEPARATOR: &[u8] = b"%5f";

/// How many bytes at the start of `rest` stand for the `_` of a prefix
/// whose stem was just found: `%5F` (in either case), or any one character
/// that is not an ASCII letter or digit (`-`, `.`, a space, `‐`), since a
/// secret whose `_` was mistyped is still most of a secret.
fn separator_len(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    if bytes
        .get(..ENCODED_SEPARATOR.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(ENCODED_SEPARATOR))
    {
        return Some(ENCODED_SEPARATOR.len());
    }
    rest.chars()
        .next()
        .filter(|c| !c.is_ascii_alphanumeric())
        .map(char::len_utf8)
}

/// The byte ranges of `text` that look like secrets: `tlk` (in any case),
/// a separator (see [`separator_len`]), then at least [`MIN_BODY`] ASCII
/// letters and digits.
fn secret_runs(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut at = 0;
    while let Some(rest) = bytes.get(at..) {
        let Some(found) = rest
            .windows(STEM.len())
            .position(|window| window.eq_ignore_ascii_case(STEM))
        else {
            break;
        };
        let start = at + found;
        let after_stem = start + STEM.len();
        // The stem is ASCII, so what follows it starts on a char boundary.
        let separator = text.get(after_stem..).and_then(separator_len);
        let run = separator.and_then(|separator| {
            let body_start = after_stem + separator;
            let body = bytes
                .get(body_start..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            (body >= MIN_BODY).then_some(start..body_start + body)
        });
        match run {
            Some(run) => {
                at = run.end;
                runs.push(run);
            }
            // A stem inside what looked like a separator or a short body
            // may start a secret of its own.
            None => at = start + 1,
        }
    }
    runs
}

/// Whether `text` holds something that looks like a secret.
pub fn holds_secret(text: &str) -> bool {
    !secret_runs(text).is_empty()
}

/// `text` with every secret in it cut down to [`REDACTED`].
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for run in secret_runs(text) {
        // Each run starts and ends at an ASCII byte, so on a char boundary.
        out.push_str(text.get(from..run.start).unwrap_or_default());
        out.push_str(REDACTED);
        from = run.end;
    }
    out.push_str(text.get(from..).unwrap_or_default());
    out
}

/// Refuses the arguments if any holds a secret; the message names none.
pub fn refuse_secret_arguments(
    arguments: impl IntoIterator<Item = OsString>,
) -> Result<(), Failure> {
    let found = arguments
        .into_iter()
        .any(|argument| holds_secret(&argument.to_string_lossy()));
    if found {
        return Err(Failure::BadInput(
            "a secret is never taken from the command line: give it on standard input".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use tokenledger_events::SECRET_PREFIX;

    use super::*;

    const SECRET: &str = "tlk_abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx";

    #[test]
    fn a_secret_is_found_anywhere_in_a_text_and_cut_out_of_it() {
        for text in [
            SECRET.to_owned(),
            format!("Bearer {SECRET}"),
            format!("{SECRET} "),
            format!("--resource={SECRET}"),
            format!("GET /x/{SECRET}/y"),
            SECRET.to_uppercase(),
            SECRET.replacen('c', "1", 1),
            SECRET.replacen('_', "-", 1),
            SECRET.replacen('_', ".", 1),
            SECRET.replacen('_', " ", 1),
            SECRET.replacen('_', "\u{2010}", 1),
            SECRET.replacen('_', "%5F", 1).to_uppercase(),
            SECRET.replacen('_', "%5f", 1),
            format!("tlk-{SECRET}"),
            format!("tlk_tlk-{}", &SECRET[4..]),
        ] {
            assert!(holds_secret(&text), "{text}");
            let redacted = redact(&text);
            assert!(!redacted.contains("abcdefghijklmnop"), "{redacted}");
            assert!(!holds_secret(&redacted), "{redacted}");
        }
        assert_eq!(
            redact(&format!("invalid value '{SECRET}' for '--company <CMP>'")),
            "invalid value 'tlk_…' for '--company <CMP>'"
        );
        assert_eq!(redact(&format!("{SECRET}+{SECRET}")), "tlk_…+tlk_…");
    }

    #[test]
    fn the_stem_is_the_prefix_before_its_separator() {
        assert_eq!(SECRET_PREFIX.as_bytes(), [STEM, b"_"].concat());
    }

    #[test]
    fn names_and_ids_are_not_secrets() {
        for text in [
            "tlk_",
            "tlk_short",
            "tlk_integration_for_zendesk",
            "cmp_0123456789abcdef0123456789abcdef",
            "Ünïcode tlk_ ✓",
            "tlk-short",
            "tlk integration for zendesk",
            "tlk%5Fshort",
            "tok_0123456789abcdef0123456789abcdef",
            "tea_0123456789abcdef0123456789abcdef",
            "atlkb0123456789abcdef0123456789abcdef",
        ] {
            assert!(!holds_secret(text), "{text}");
            assert_eq!(redact(text), text);
        }
    }
}
