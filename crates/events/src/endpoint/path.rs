//! Which request paths are checked enough to be matched: the segments a
//! proxy or framework behind the check could read as something else are
//! refused before the catalog is asked.

/// Whether `byte` may stand in a segment, as itself or escaped: ASCII
/// letters and digits, the unreserved `-._~` and the sub-delimiters and
/// `:`/`@` that Front's ids and aliases use (`cnv_123`,
/// `alt:email:ada@example.com`, `alt:phone:+33123`). `;` is left out: Tomcat
/// and others drop what follows it.
const fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// Why a segment of a request path is refused before matching, if it is.
///
/// The check must hold for the path that finally reaches the service, not
/// only for the one checked: a proxy or framework behind the check may
/// decode escapes (also overlong UTF-8 such as `%c0%ae`), fold Unicode
/// (`．` to `.`), trim spaces, drop a `#` fragment or `;` parameters,
/// resolve dot segments or read `\` as `/`, and `GET
/// /comments/x/download/..` (`attachments:read`) would become `GET
/// /comments/x` (`comments:read`). A list of what to refuse always misses
/// one such step, so only what no step changes is let through: the
/// characters of [`allowed`], raw or as an escape, and never a segment of
/// nothing but dots. No catalogued path and no resource id needs more.
pub(super) fn ambiguous(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return Some("nothing (an empty segment)");
    }
    let bytes = segment.as_bytes();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'%' {
            let escaped = bytes
                .get(at + 1..at + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match escaped {
                None => return Some("a `%` not followed by two hex digits"),
                Some(b'.') => return Some("an encoded `.`"),
                Some(b'/' | b'\\') => return Some("an encoded `/` or `\\`"),
                Some(b'%') => return Some("an encoded `%`, which decodes to another escape"),
                Some(value) if !value.is_ascii() => {
                    return Some(
                        "an encoded byte above 0x7f, which a decoder may read as `.` or `/`",
                    );
                }
                Some(value) if !allowed(value) => {
                    return Some(
                        "an encoded character that no id needs (only letters, digits and `-._~!$&'()*+,=:@` are kept)",
                    );
                }
                Some(_) => at += 3,
            }
            continue;
        }
        if !allowed(byte) {
            return Some(match byte {
                b'#' => "a `#`, which a URL parser drops with all that follows",
                b';' => "a `;`, which some servers drop with all that follows",
                b'\\' => "a backslash, which some servers read as `/`",
                byte if byte.is_ascii_whitespace() => "whitespace, which some servers trim",
                byte if byte.is_ascii_control() => "a control character",
                byte if !byte.is_ascii() => {
                    "a character that is not ASCII, which some servers fold to `.` or `/`"
                }
                _ => {
                    "a character that no id needs (only letters, digits and `-._~!$&'()*+,=:@` are kept)"
                }
            });
        }
        at += 1;
    }
    if bytes.iter().all(|&byte| byte == b'.') {
        return Some("only dots (a dot segment)");
    }
    None
}

/// [`allowed`] for every byte, as a table: [`check_segments`] asks it of
/// every byte of every request's path.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time, where an index out of range fails the build"
)]
const ALLOWED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = allowed(byte as u8);
        byte += 1;
    }
    table
};

/// A segment [`ambiguous`] refuses: its number (from 1), the segment, and
/// why.
pub(super) type Refused<'a> = (usize, &'a str, &'static str);

/// Checks each segment of `relative` (a path without its leading `/`) and
/// refuses the first one [`ambiguous`] would.
///
/// In one pass over the bytes: a segment of nothing but [`allowed`] bytes
/// (which leaves `%` out) is refused only when empty or only dots, so only
/// the rest are given to [`ambiguous`], which also names the reason.
pub(super) fn check_segments(relative: &str) -> Result<(), Refused<'_>> {
    let (mut start, mut plain, mut number) = (0, true, 1);
    for (at, &byte) in relative.as_bytes().iter().enumerate() {
        if byte == b'/' {
            check(relative, start..at, plain, number)?;
            (start, plain, number) = (at + 1, true, number + 1);
        } else {
            plain &= is_allowed(byte);
        }
    }
    check(relative, start..relative.len(), plain, number)
}

#[expect(
    clippy::indexing_slicing,
    reason = "a `u8` always indexes a table of 256"
)]
fn is_allowed(byte: u8) -> bool {
    ALLOWED[usize::from(byte)]
}

/// Checks segment `number` of `relative`, at `range`; `plain` says that
/// each of its bytes is [`allowed`].
fn check(
    relative: &str,
    range: std::ops::Range<usize>,
    plain: bool,
    number: usize,
) -> Result<(), Refused<'_>> {
    // The range ends next to a `/` or at an end of `relative`: always at
    // boundaries of characters.
    let segment = relative.get(range).unwrap_or_default();
    let checked = plain && !segment.is_empty() && !segment.bytes().all(|b| b == b'.');
    if !checked && let Some(reason) = ambiguous(segment) {
        return Err((number, segment, reason));
    }
    Ok(())
}
