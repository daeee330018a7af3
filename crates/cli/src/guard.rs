//! Secrets kept off the command line, and out of what it prints.
//!
//! A secret in an argument ends up in shell history and in every process
//! listing, so an argument that holds one anywhere (`"Bearer tlk_…"`,
//! `--resource=tlk_…`, a secret with a typo or a trailing space) is refused
//! before anything else is read. And no message is printed with one in it:
//! clap's own errors quote the value they could not parse.

use std::ffi::OsString;
use std::ops::Range;

use tokenledger_events::SECRET_PREFIX;

use crate::Failure;

/// How many letters and digits after the prefix make a fragment a secret
/// for the guard: 16 carry 80 of a secret's bits, which no name or id has
/// reason to hold after `tlk_`. Letters and digits of either case are
/// counted, not only the secret alphabet, so that a secret with a typo or
/// in capitals is caught too: it is still most of a secret.
const MIN_BODY: usize = 16;

/// What a secret is replaced by in a message.
const REDACTED: &str = "tlk_…";

/// The byte ranges of `text` that look like secrets: the prefix (in any
/// case) followed by at least [`MIN_BODY`] ASCII letters and digits.
fn secret_runs(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let prefix = SECRET_PREFIX.as_bytes();
    let mut runs = Vec::new();
    let mut at = 0;
    while let Some(rest) = bytes.get(at..) {
        let Some(found) = rest
            .windows(prefix.len())
            .position(|window| window.eq_ignore_ascii_case(prefix))
        else {
            break;
        };
        let start = at + found;
        let body_start = start + prefix.len();
        let body = bytes
            .get(body_start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if body >= MIN_BODY {
            runs.push(start..body_start + body);
        }
        at = body_start + body;
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
    fn names_and_ids_are_not_secrets() {
        for text in [
            "tlk_",
            "tlk_short",
            "tlk_integration_for_zendesk",
            "cmp_0123456789abcdef0123456789abcdef",
            "Ünïcode tlk_ ✓",
        ] {
            assert!(!holds_secret(text), "{text}");
            assert_eq!(redact(text), text);
        }
    }
}
