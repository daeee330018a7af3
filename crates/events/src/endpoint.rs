//! The Core API's endpoints and the scope each one needs.
//!
//! The catalog is Front's OpenAPI specification boiled down to one line per
//! operation (`front-core-api-scopes.tsv`, compiled into the crate). A
//! request path such as `/conversations/cnv_123/messages` resolves to its
//! template and requirement; anything not in the catalog is an error, so an
//! endpoint nobody listed can never be allowed by accident.

mod catalog;
mod path;
#[cfg(test)]
mod reference;

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use crate::id::quote_input;
use crate::scope::Scope;
use crate::token::Feature;
use catalog::Catalog;

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

static CATALOG: LazyLock<Result<Catalog, EndpointError>> =
    LazyLock::new(|| Catalog::parse(CATALOG_TSV));

/// Every operation of the catalog, in the catalog's order.
pub fn endpoints() -> Result<impl Iterator<Item = &'static Endpoint>, EndpointError> {
    match &*CATALOG {
        Ok(catalog) => Ok(catalog.routes.iter().map(|route| &route.endpoint)),
        Err(error) => Err(error.clone()),
    }
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
    path::check_segments(relative).map_err(|(number, segment, reason)| {
        EndpointError::AmbiguousSegment {
            number,
            segment: quote_input(segment),
            reason,
        }
    })?;
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
