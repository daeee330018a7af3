//! The Core API's endpoints and the scope each one needs.
//!
//! The catalog is Front's OpenAPI specification boiled down to one line per
//! operation (`front-core-api-scopes.tsv`, compiled into the crate). A
//! request path such as `/conversations/cnv_123/messages` resolves to its
//! template and requirement; anything not in the catalog is an error, so an
//! endpoint nobody listed can never be allowed by accident.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use crate::id::quote_input;
use crate::scope::{Scope, ScopeError};
use crate::token::Feature;

const CATALOG_TSV: &str = include_str!("front-core-api-scopes.tsv");

/// The longest path considered; anything longer is refused before matching.
pub const MAX_PATH_BYTES: usize = 2048;

/// An HTTP method of the Core API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PATCH
    Patch,
    /// PUT
    Put,
    /// DELETE
    Delete,
}

impl Method {
    /// The method in upper case.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Method, EndpointError> {
        [
            Method::Get,
            Method::Post,
            Method::Patch,
            Method::Put,
            Method::Delete,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(input))
        .ok_or_else(|| EndpointError::UnknownMethod {
            found: quote_input(input),
        })
    }
}

/// What a request needs of a token, beyond being live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// A permission on a resource kind (implies the resources feature).
    Scope(Scope),
    /// A feature with no per-resource permission (application triggers).
    Feature(Feature),
    /// Nothing but a live token (`GET /me`, the token's own details).
    LiveToken,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Scope(scope) => fmt::Display::fmt(scope, f),
            Requirement::Feature(Feature::AppTriggers) => f.write_str("feature:app_trigger"),
            Requirement::Feature(feature) => write!(f, "feature:{feature}"),
            Requirement::LiveToken => f.write_str("-"),
        }
    }
}

/// One operation of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The HTTP method.
    pub method: Method,
    /// The path template, such as `/conversations/{conversation_id}/messages`.
    pub template: &'static str,
    /// Front's operation id, such as `list-conversation-messages`.
    pub operation: &'static str,
    /// What the operation needs.
    pub requirement: Requirement,
}

/// Why a method and path do not name an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// The method is not one the Core API uses.
    UnknownMethod {
        /// The method, made printable.
        found: String,
    },
    /// The path is not absolute, or is too long.
    MalformedPath {
        /// The path, made printable and shortened.
        found: String,
    },
    /// A segment of the path that a server or proxy in front of the
    /// service may read as something else (see [`resolve_endpoint`]).
    AmbiguousSegment {
        /// Which segment, counting from 1 after the leading `/`.
        number: usize,
        /// The segment, made printable and shortened.
        segment: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No operation of the catalog has this method and path.
    UnknownEndpoint {
        /// The method.
        method: Method,
        /// The path, made printable and shortened.
        path: String,
    },
    /// The compiled-in catalog is damaged (a build problem, caught by tests).
    Catalog {
        /// The line of the catalog.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::UnknownMethod { found } => write!(
                f,
                "`{found}` is not a method of the Core API; expected GET, POST, PATCH, PUT or DELETE"
            ),
            EndpointError::MalformedPath { found } => write!(
                f,
                "`{found}` is not an endpoint path: expected `/` and segments separated by `/`, at most {MAX_PATH_BYTES} bytes"
            ),
            EndpointError::AmbiguousSegment {
                number,
                segment,
                reason,
            } => write!(
                f,
                "segment {number} of the path, `{segment}`, is refused: it holds {reason}, so a proxy that rewrites the path after this check could send the request to an endpoint that needs another scope"
            ),
            EndpointError::UnknownEndpoint { method, path } => {
                write!(f, "`{method} {path}` is not an endpoint of the Core API")
            }
            EndpointError::Catalog { line, problem } => {
                write!(
                    f,
                    "the endpoint catalog is damaged at line {line}: {problem}"
                )
            }
        }
    }
}

impl std::error::Error for EndpointError {}

/// The most segments a catalogued path has room for (the longest has 6).
const MAX_SEGMENTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    Parameter,
}

#[derive(Debug)]
struct Route {
    endpoint: Endpoint,
    segments: Vec<Segment>,
    /// Bit `31 - i` is set when segment `i` is literal: comparing masks as
    /// numbers prefers literals from the left.
    literal_mask: u32,
}

#[derive(Debug)]
struct Catalog {
    routes: Vec<Route>,
    /// The routes' indexes by method, segment count and first segment, in
    /// the catalog's order, so that a request compares the few routes of its
    /// shape rather than all 244 (half a microsecond, every request).
    by_shape: HashMap<(Method, usize, &'static str), Vec<usize>>,
    /// The same for routes whose first segment is a parameter (none in
    /// Front's catalog), by method and segment count: every request of that
    /// shape compares them too.
    by_shape_open: HashMap<(Method, usize), Vec<usize>>,
}

fn parse_requirement(text: &str) -> Result<Requirement, ScopeError> {
    match text {
        "-" => Ok(Requirement::LiveToken),
        "feature:app_trigger" => Ok(Requirement::Feature(Feature::AppTriggers)),
        scope => scope.parse().map(Requirement::Scope),
    }
}

impl Catalog {
    fn parse(tsv: &'static str) -> Result<Catalog, EndpointError> {
        let mut routes = Vec::new();
        // The first line holds the column names.
        for (index, line) in tsv.lines().enumerate().skip(1) {
            let line_number = index + 1;
            let damaged = |problem: String| EndpointError::Catalog {
                line: line_number,
                problem,
            };
            let fields: Vec<&'static str> = line.split('\t').collect();
            let &[method, template, requirement, operation] = fields.as_slice() else {
                return Err(damaged(format!(
                    "expected 4 fields, found {}",
                    fields.len()
                )));
            };
            let method: Method = method
                .parse()
                .map_err(|e: EndpointError| damaged(e.to_string()))?;
            let requirement = parse_requirement(requirement).map_err(|e| damaged(e.to_string()))?;
            // Two templates of the specification end in `/`; a trailing slash
            // is not significant on either side.
            let segments = template
                .strip_prefix('/')
                .ok_or_else(|| damaged(format!("`{template}` does not start with `/`")))?
                .trim_end_matches('/')
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') && segment.ends_with('}') {
                        Segment::Parameter
                    } else {
                        Segment::Literal(segment)
                    }
                })
                .collect();
            let segments: Vec<Segment> = segments;
            if segments.len() > MAX_SEGMENTS {
                return Err(damaged(format!(
                    "`{template}` has more than {MAX_SEGMENTS} segments"
                )));
            }
            let literal_mask = segments
                .iter()
                .enumerate()
                .filter(|(_, segment)| matches!(segment, Segment::Literal(_)))
                .fold(0u32, |mask, (i, _)| mask | (1 << (31 - i)));
            routes.push(Route {
                endpoint: Endpoint {
                    method,
                    template,
                    operation,
                    requirement,
                },
                segments,
                literal_mask,
            });
        }
        let mut by_shape: HashMap<_, Vec<usize>> = HashMap::new();
        let mut by_shape_open: HashMap<_, Vec<usize>> = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            let (method, count) = (route.endpoint.method, route.segments.len());
            match route.segments.first() {
                Some(Segment::Literal(first)) => {
                    by_shape.entry((method, count, *first)).or_default()
                }
                _ => by_shape_open.entry((method, count)).or_default(),
            }
            .push(index);
        }
        Ok(Catalog {
            routes,
            by_shape,
            by_shape_open,
        })
    }

    /// Finds the route for `path`. Where a literal segment and a parameter
    /// both match (`/accounts/custom_fields` and `/accounts/{account_id}`),
    /// the literal wins, segment by segment from the left, as in Front's API.
    fn find(&self, method: Method, path: &str) -> Option<&Endpoint> {
        // Split once, onto the stack; no route has more than MAX_SEGMENTS.
        let mut given = [""; MAX_SEGMENTS];
        let mut count = 0;
        for segment in path.split('/') {
            *given.get_mut(count)? = segment;
            count += 1;
        }
        let given = given.get(..count)?;
        let first = *given.first()?;
        let literal = self.by_shape.get(&(method, count, first));
        let open = self.by_shape_open.get(&(method, count));
        literal
            .into_iter()
            .chain(open)
            .flatten()
            .filter_map(|&index| self.routes.get(index))
            .filter(|route| {
                route
                    .segments
                    .iter()
                    .zip(given)
                    .all(|(pattern, given)| match pattern {
                        Segment::Literal(literal) => literal == given,
                        Segment::Parameter => true,
                    })
            })
            .max_by_key(|route| route.literal_mask)
            .map(|route| &route.endpoint)
    }
}

static CATALOG: LazyLock<Result<Catalog, EndpointError>> =
    LazyLock::new(|| Catalog::parse(CATALOG_TSV));

/// Every operation of the catalog, in the catalog's order.
pub fn endpoints() -> Result<impl Iterator<Item = &'static Endpoint>, EndpointError> {
    match &*CATALOG {
        Ok(catalog) => Ok(catalog.routes.iter().map(|route| &route.endpoint)),
        Err(error) => Err(error.clone()),
    }
}

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
fn ambiguous(segment: &str) -> Option<&'static str> {
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

/// Resolves a method and a request path to the operation it names.
///
/// A query string and one trailing `/` are ignored. The path must start with
/// `/`, and each segment may hold only ASCII letters, digits and
/// `-._~!$&'()*+,=:@`, raw or as a `%` escape (but `.` only raw), and must
/// not be empty or only dots: anything else (`#`, `;`, `\`, whitespace, a
/// character that is not ASCII, an escape of a byte above 0x7f or of
/// another character) is one whose meaning a proxy could change
/// ([`EndpointError::AmbiguousSegment`], naming the segment).
///
/// ```
/// use tokenledger_events::{resolve_endpoint, Method, Requirement};
///
/// let endpoint = resolve_endpoint(Method::Get, "/conversations/cnv_123/messages").unwrap();
/// assert_eq!(endpoint.template, "/conversations/{conversation_id}/messages");
/// assert_eq!(endpoint.requirement, Requirement::Scope("messages:read".parse().unwrap()));
/// assert!(resolve_endpoint(Method::Delete, "/conversations/cnv_123/messages").is_err());
/// ```
pub fn resolve_endpoint(method: Method, path: &str) -> Result<&'static Endpoint, EndpointError> {
    let catalog = match &*CATALOG {
        Ok(catalog) => catalog,
        Err(error) => return Err(error.clone()),
    };
    let malformed = || EndpointError::MalformedPath {
        found: quote_input(path),
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(malformed());
    }
    let without_query = path.split_once('?').map_or(path, |(before, _)| before);
    let relative = without_query.strip_prefix('/').ok_or_else(malformed)?;
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    for (index, segment) in relative.split('/').enumerate() {
        if let Some(reason) = ambiguous(segment) {
            return Err(EndpointError::AmbiguousSegment {
                number: index + 1,
                segment: quote_input(segment),
                reason,
            });
        }
    }
    catalog
        .find(method, relative)
        .ok_or_else(|| EndpointError::UnknownEndpoint {
            method,
            path: quote_input(path),
        })
}

/// Parses `"GET /conversations/cnv_123"`, a method and a path separated by
/// one space, as the command line takes it.
pub fn resolve_endpoint_line(line: &str) -> Result<&'static Endpoint, EndpointError> {
    let (method, path) =
        line.trim()
            .split_once(' ')
            .ok_or_else(|| EndpointError::MalformedPath {
                found: quote_input(line),
            })?;
    resolve_endpoint(method.parse()?, path.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_catalog_compiles_in() {
        let endpoints: Vec<_> = endpoints().unwrap().collect();
        assert_eq!(endpoints.len(), 244);
        for endpoint in endpoints {
            let path = endpoint
                .template
                .split('/')
                .map(|s| if s.starts_with('{') { "x_1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let found = resolve_endpoint(endpoint.method, &path).unwrap();
            assert_eq!(found, endpoint, "{} {path}", endpoint.method);
        }
    }

    /// The index finds what a scan of every route finds (the catalog's
    /// lookup before it had one): for each method, each template with its
    /// parameters filled by `x_1` or by another template's literals, so
    /// that literals and parameters compete.
    #[test]
    fn the_index_finds_what_a_scan_of_every_route_finds() {
        let catalog = Catalog::parse(CATALOG_TSV).unwrap();
        let scan = |method: Method, path: &str| {
            let given: Vec<&str> = path.split('/').collect();
            catalog
                .routes
                .iter()
                .filter(|r| r.endpoint.method == method && r.segments.len() == given.len())
                .filter(|r| {
                    r.segments.iter().zip(&given).all(|(p, g)| match p {
                        Segment::Literal(l) => l == g,
                        Segment::Parameter => true,
                    })
                })
                .max_by_key(|r| r.literal_mask)
                .map(|r| &r.endpoint)
        };
        let mut compared = 0;
        for route in &catalog.routes {
            for other in catalog
                .routes
                .iter()
                .filter(|o| o.segments.len() == route.segments.len())
            {
                let path: Vec<&str> = route
                    .segments
                    .iter()
                    .zip(&other.segments)
                    .map(|(mine, theirs)| match (mine, theirs) {
                        (Segment::Literal(l), _) | (Segment::Parameter, Segment::Literal(l)) => *l,
                        (Segment::Parameter, Segment::Parameter) => "x_1",
                    })
                    .collect();
                let path = path.join("/");
                for method in [
                    Method::Get,
                    Method::Post,
                    Method::Patch,
                    Method::Put,
                    Method::Delete,
                ] {
                    assert_eq!(
                        catalog.find(method, &path),
                        scan(method, &path),
                        "{method} {path}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 10_000, "{compared}");
    }

    #[test]
    fn nested_lists_need_the_scope_of_what_they_return() {
        let e = resolve_endpoint(Method::Get, "/conversations/cnv_123/messages").unwrap();
        assert_eq!(e.requirement.to_string(), "messages:read");
        let e = resolve_endpoint_line("POST /conversations/cnv_1/messages").unwrap();
        assert_eq!(e.requirement.to_string(), "messages:send");
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        let e = resolve_endpoint(Method::Get, "/accounts/custom_fields").unwrap();
        assert_eq!(e.requirement.to_string(), "custom_fields:read");
        let e = resolve_endpoint(Method::Get, "/accounts/acc_1").unwrap();
        assert_eq!(e.requirement.to_string(), "accounts:read");
    }

    #[test]
    fn features_and_live_token_requirements() {
        let e = resolve_endpoint(Method::Post, "/applications/app_1/events").unwrap();
        assert_eq!(e.requirement, Requirement::Feature(Feature::AppTriggers));
        let e = resolve_endpoint(Method::Get, "/me").unwrap();
        assert_eq!(e.requirement, Requirement::LiveToken);
    }

    /// The segment number a path is refused at, if it is refused for an
    /// ambiguous segment.
    fn refused_segment(path: &str) -> Option<(usize, String)> {
        match resolve_endpoint(Method::Get, path) {
            Err(EndpointError::AmbiguousSegment {
                number, segment, ..
            }) => Some((number, segment)),
            _ => None,
        }
    }

    #[test]
    fn a_dot_segment_cannot_stand_for_a_parameter() {
        // The request a proxy would normalise to `GET /comments/x`.
        assert_eq!(
            resolve_endpoint(Method::Get, "/comments/x/download/y")
                .unwrap()
                .requirement
                .to_string(),
            "attachments:read"
        );
        for (path, number, segment) in [
            ("/comments/x/download/..", 4, ".."),
            ("/comments/x/download/../", 4, ".."),
            ("/comments/x/download/.", 4, "."),
            ("/comments/../download/y", 2, ".."),
            ("/comments/x/download/..;y", 4, "..;y"),
            ("/comments/x/download/...", 4, "..."),
            ("/comments/;x/download/y", 2, ";x"),
            ("/comments//download/y", 2, ""),
            ("/comments/x/download/..?a=b", 4, ".."),
        ] {
            assert_eq!(
                refused_segment(path),
                Some((number, segment.to_owned())),
                "{path}"
            );
        }
        let error = resolve_endpoint(Method::Get, "/comments/x/download/..").unwrap_err();
        assert_eq!(
            error.to_string(),
            "segment 4 of the path, `..`, is refused: it holds only dots (a dot segment), so a proxy that rewrites the path after this check could send the request to an endpoint that needs another scope"
        );
    }

    #[test]
    fn encoded_separators_and_dots_cannot_stand_for_a_parameter() {
        for parameter in [
            "%2F",
            "%2f",
            "x%2Fy",
            "%5C",
            "%5c",
            "a\\b",
            "%2E",
            "%2e",
            "%2E%2E",
            ".%2e",
            "%2e.",
            "%252F",
            "%252E%252E",
            "%25",
            "%3F",
            "%23",
            "%3B",
            "..%3B",
            "%00",
            "%7F",
            "%",
            "%2",
            "%zz",
            "%%32%65",
            "%u002e",
        ] {
            let path = format!("/comments/x/download/{parameter}");
            assert_eq!(
                refused_segment(&path),
                Some((4, quote_input(parameter))),
                "{path}"
            );
        }
        // Escapes that no decoding turns into a separator or a dot stay
        // usable, as in Front's contact aliases.
        let e = resolve_endpoint(Method::Get, "/contacts/alt:email:ada%40example.com").unwrap();
        assert_eq!(e.requirement.to_string(), "contacts:read");
        let e = resolve_endpoint(Method::Get, "/comments/x/download/a.b").unwrap();
        assert_eq!(e.requirement.to_string(), "attachments:read");
    }

    #[test]
    fn what_a_parser_or_decoder_could_turn_into_a_dot_segment_is_refused() {
        for parameter in [
            // A URL parser drops the fragment, then resolves `..`.
            "..#",
            "..#a",
            "#",
            // Overlong UTF-8 for `.`, and other escapes of non-ASCII bytes.
            "%c0%ae%c0%ae",
            "%C0%AE",
            "%e0%80%ae",
            "%ef%bc%8e%ef%bc%8e",
            "a%80",
            // Characters that Unicode folding reads as `.`.
            "\u{ff0e}\u{ff0e}",
            "\u{2024}\u{2024}",
            "x\u{e9}",
            // Spaces a server trims, raw or escaped.
            ".. ",
            " ..",
            "..%20",
            "..%09",
            "..\t",
            "a b",
            // Escapes of characters no id needs.
            "..%3c",
            "%22",
            "%7B",
            "..;",
            "a;b",
            "..<",
            "{x}",
            "..|",
        ] {
            let path = format!("/comments/x/download/{parameter}");
            assert_eq!(
                refused_segment(&path),
                Some((4, quote_input(parameter))),
                "{path}"
            );
        }
        let error = resolve_endpoint(Method::Get, "/comments/x/download/..#").unwrap_err();
        assert_eq!(
            error.to_string(),
            "segment 4 of the path, `..#`, is refused: it holds a `#`, which a URL parser drops with all that follows, so a proxy that rewrites the path after this check could send the request to an endpoint that needs another scope"
        );
    }

    #[test]
    fn ids_and_aliases_still_resolve() {
        for (path, requirement) in [
            ("/contacts/alt:email:ada%40example.com", "contacts:read"),
            ("/contacts/alt:email:ada@example.com", "contacts:read"),
            (
                "/contacts/alt:email:ada%40example.com/notes",
                "contacts:read",
            ),
            ("/contacts/alt:phone:+33123456789", "contacts:read"),
            ("/contacts/alt:phone:%2B33123456789", "contacts:read"),
            ("/contacts/alt:twitter:ada_lovelace", "contacts:read"),
            ("/contacts/crd_1a2B3c", "contacts:read"),
            ("/conversations/cnv_123", "conversations:read"),
            ("/conversations/alt:ref:a-b.c~d", "conversations:read"),
            ("/conversations/search/is:open", "conversations:read"),
            ("/comments/x/download/a.b", "attachments:read"),
            ("/comments/x/download/.x", "attachments:read"),
            ("/teammates/alt:email:ada%40example.com", "teammates:read"),
        ] {
            let endpoint = resolve_endpoint(Method::Get, path);
            assert_eq!(
                endpoint.map(|e| e.requirement.to_string()).ok().as_deref(),
                Some(requirement),
                "{path}"
            );
        }
    }

    #[test]
    fn query_strings_are_ignored_and_unknown_endpoints_refused() {
        assert!(resolve_endpoint(Method::Get, "/conversations?limit=5").is_ok());
        assert!(resolve_endpoint(Method::Get, "/conversations/").is_ok());
        assert!(resolve_endpoint(Method::Patch, "/comments/com_1").is_ok());
        for (method, path) in [
            (Method::Put, "/conversations"),
            (Method::Get, "/nowhere"),
            (Method::Get, "conversations"),
            (Method::Get, "/conversations//"),
            (Method::Get, "/"),
            (Method::Get, "//conversations"),
            (Method::Get, ""),
        ] {
            assert!(resolve_endpoint(method, path).is_err(), "{method} {path}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(matches!(
            resolve_endpoint(Method::Get, &long),
            Err(EndpointError::MalformedPath { .. })
        ));
        assert!(matches!(
            "FETCH".parse::<Method>(),
            Err(EndpointError::UnknownMethod { .. })
        ));
    }
}
