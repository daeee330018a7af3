//! The resolver checked against a plain restatement of it: the path split
//! with `str::split`, every segment given to `ambiguous`, and every route
//! of the catalog compared, the most literals from the left winning (the
//! lookup before the tree). Both must give the same answer, error included,
//! for every operation of the catalog and for paths that are not in it.

use proptest::prelude::*;

use super::catalog::{Catalog, Segment};
use super::path::ambiguous;
use super::*;

/// More segments than any route has (the longest has 6).
const DEEPER: usize = 18;

const METHODS: [Method; 5] = [
    Method::Get,
    Method::Post,
    Method::Patch,
    Method::Put,
    Method::Delete,
];

fn catalog() -> &'static Catalog {
    CATALOG.as_ref().unwrap()
}

/// Bit `31 - i` set when segment `i` is literal: the greater mask has its
/// literals further left.
fn literal_mask(segments: &[Segment]) -> u32 {
    segments
        .iter()
        .enumerate()
        .filter(|(_, segment)| matches!(segment, Segment::Literal(_)))
        .fold(0, |mask, (i, _)| mask | (1 << (31 - i)))
}

fn reference(method: Method, path: &str) -> Result<&'static Endpoint, EndpointError> {
    let malformed = || EndpointError::MalformedPath {
        found: quote_input(path),
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(malformed());
    }
    let without_query = path.split_once('?').map_or(path, |(before, _)| before);
    let relative = without_query.strip_prefix('/').ok_or_else(malformed)?;
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    let given: Vec<&str> = relative.split('/').collect();
    for (index, segment) in given.iter().enumerate() {
        if let Some(reason) = ambiguous(segment) {
            return Err(EndpointError::AmbiguousSegment {
                number: index + 1,
                segment: quote_input(segment),
                reason,
            });
        }
    }
    catalog()
        .routes
        .iter()
        .filter(|route| route.endpoint.method == method && route.segments.len() == given.len())
        .filter(|route| {
            route
                .segments
                .iter()
                .zip(&given)
                .all(|(pattern, given)| match pattern {
                    Segment::Literal(literal) => literal == given,
                    Segment::Parameter => true,
                })
        })
        .max_by_key(|route| literal_mask(&route.segments))
        .map(|route| &route.endpoint)
        .ok_or_else(|| EndpointError::UnknownEndpoint {
            method,
            path: quote_input(path),
        })
}

fn agree(method: Method, path: &str) {
    let found = resolve_endpoint(method, path);
    let expected = reference(method, path);
    assert_eq!(found, expected, "{method} {path}");
    if let (Ok(found), Ok(expected)) = (found, expected) {
        assert!(std::ptr::eq(found, expected), "{method} {path}");
    }
}

/// Every literal of the catalog's templates, and segments that no template
/// has, well formed or refused.
fn pool() -> Vec<String> {
    let mut pool: Vec<String> = catalog()
        .routes
        .iter()
        .flat_map(|route| &route.segments)
        .filter_map(|segment| match segment {
            Segment::Literal(literal) => Some((*literal).to_owned()),
            Segment::Parameter => None,
        })
        .collect();
    pool.sort();
    pool.dedup();
    for extra in [
        "x_1",
        "cnv_123",
        "alt:email:ada%40example.com",
        "a.b",
        "",
        ".",
        "..",
        "%2F",
        "%2e",
        "%zz",
        "a;b",
        "a b",
        "\u{ff0e}",
        "Conversations",
        "conversation",
    ] {
        pool.push(extra.to_owned());
    }
    pool
}

#[test]
fn the_catalog_has_no_two_routes_of_one_method_and_shape() {
    let mut shapes: Vec<_> = catalog()
        .routes
        .iter()
        .map(|route| (route.endpoint.method.as_str(), route.segments.clone()))
        .collect();
    let count = shapes.len();
    shapes.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    shapes.dedup();
    assert_eq!(shapes.len(), count);
}

/// Each template with its parameters filled by `x_1` or by the literals of
/// another template of its length (so that literals and parameters
/// compete), with and without a trailing `/` or a query, for each method.
#[test]
fn every_operation_resolves_as_the_reference_does() {
    let routes = &catalog().routes;
    let mut compared = 0;
    for route in routes {
        for other in routes
            .iter()
            .filter(|other| other.segments.len() == route.segments.len())
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
            let path = format!("/{}", path.join("/"));
            for path in [path.clone(), format!("{path}/"), format!("{path}?a=b/c")] {
                for method in METHODS {
                    agree(method, &path);
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 30_000, "{compared}");
}

/// Paths that are not operations: too short, too long, unknown segments,
/// refused segments, more segments than any route, malformed.
#[test]
fn paths_outside_the_catalog_are_refused_as_the_reference_refuses_them() {
    let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    let deep = format!("/conversations{}", "/x_1".repeat(DEEPER));
    let deep_refused = format!("/conversations{}/..", "/x_1".repeat(DEEPER));
    let mut paths = vec![
        "",
        "/",
        "//",
        "conversations",
        "?/conversations",
        "/?",
        "/nowhere",
        "/conversations//",
        "//conversations",
        "/conversations/cnv_1/nowhere",
        "/conversations/cnv_1/messages/msg_1/x/y",
        "/me/x",
        "/CONVERSATIONS",
        "/conversations/..",
        "/conversations/%2e%2e/messages",
        "/conversations/cnv_1/messages;x",
        "/accounts/custom_fields/x",
        long.as_str(),
        deep.as_str(),
        deep_refused.as_str(),
    ];
    for route in &catalog().routes {
        // The template's own text, braces and all, is not a path.
        paths.push(route.endpoint.template);
    }
    for path in paths {
        for method in METHODS {
            agree(method, path);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Paths made of the catalog's literals and of other segments, of up to
    /// more segments than any route has.
    #[test]
    fn any_path_resolves_as_the_reference_does(
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..=DEEPER),
        method in prop::sample::select(METHODS.to_vec()),
        trailing in any::<bool>(),
    ) {
        let pool = pool();
        let segments: Vec<&str> = picks.iter().map(|pick| pick.get(&pool).as_str()).collect();
        let mut path = format!("/{}", segments.join("/"));
        if trailing {
            path.push('/');
        }
        agree(method, &path);
    }
}
