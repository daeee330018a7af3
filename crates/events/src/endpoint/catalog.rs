//! The catalog's routes, and the tree a request path is matched in.

use super::{Endpoint, EndpointError, Method, Requirement};
use crate::scope::ScopeError;
use crate::token::Feature;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Segment {
    Literal(&'static str),
    Parameter,
}

#[derive(Debug)]
pub(super) struct Route {
    pub(super) endpoint: Endpoint,
    pub(super) segments: Vec<Segment>,
}

/// One node of the routes' tree: the paths that share the segments leading
/// to it. `ends` holds the route that ends here, by method.
#[derive(Debug, Default)]
struct Node {
    /// The literal segments that go on from here, with their nodes, sorted
    /// by [`by_length`].
    literals: Vec<(&'static str, usize)>,
    /// The node a parameter leads to, if a route has one here.
    parameter: Option<usize>,
    ends: [Option<usize>; METHODS],
}

const METHODS: usize = 5;

/// Where a method's route is kept in [`Node::ends`].
const fn slot(method: Method) -> usize {
    match method {
        Method::Get => 0,
        Method::Post => 1,
        Method::Patch => 2,
        Method::Put => 3,
        Method::Delete => 4,
    }
}

#[derive(Debug)]
pub(super) struct Catalog {
    pub(super) routes: Vec<Route>,
    /// The routes as a tree of segments, its root first, so that a request
    /// follows its own path (a few comparisons per segment) rather than
    /// compare routes: the lookup is paid on every request.
    nodes: Vec<Node>,
}

fn parse_requirement(text: &str) -> Result<Requirement, ScopeError> {
    match text {
        "-" => Ok(Requirement::LiveToken),
        "feature:app_trigger" => Ok(Requirement::Feature(Feature::AppTriggers)),
        scope => scope.parse().map(Requirement::Scope),
    }
}

impl Catalog {
    pub(super) fn parse(tsv: &'static str) -> Result<Catalog, EndpointError> {
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
            let segments: Vec<Segment> = template
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
            routes.push(Route {
                endpoint: Endpoint {
                    method,
                    template,
                    operation,
                    requirement,
                },
                segments,
            });
        }
        let nodes = tree(&routes);
        Ok(Catalog { routes, nodes })
    }

    /// Finds the route for `relative`, a path without its leading `/`
    /// whose segments were checked. Where a literal segment and a parameter
    /// both match (`/accounts/custom_fields` and `/accounts/{account_id}`),
    /// the literal wins, segment by segment from the left, as in Front's
    /// API.
    pub(super) fn find(&self, method: Method, relative: &str) -> Option<&Endpoint> {
        self.search(0, method, Some(relative))
            .and_then(|index| self.routes.get(index))
            .map(|route| &route.endpoint)
    }

    /// Depth first, the literal before the parameter at each segment: the
    /// first route found is the one whose literals come earliest, which is
    /// the rule [`Catalog::find`] states. `rest` is what is left of the
    /// path after this node's segment, if anything is; the path is split
    /// as the tree is walked, so no deeper than the tree goes.
    fn search(&self, node: usize, method: Method, rest: Option<&str>) -> Option<usize> {
        let node = self.nodes.get(node)?;
        let Some(rest) = rest else {
            return node.ends.get(slot(method)).copied().flatten();
        };
        let (segment, after) = match rest.bytes().position(|b| b == b'/') {
            Some(at) => (rest.get(..at)?, Some(rest.get(at + 1..)?)),
            None => (rest, None),
        };
        let literal = node
            .literals
            .binary_search_by(|(literal, _)| by_length(literal, segment))
            .ok()
            .and_then(|at| node.literals.get(at))
            .and_then(|&(_, child)| self.search(child, method, after));
        literal.or_else(|| {
            node.parameter
                .and_then(|child| self.search(child, method, after))
        })
    }
}

/// Shorter first, then by bytes: most comparisons of a lookup are settled
/// by the lengths alone.
fn by_length(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The routes' tree. Two routes of one method and one shape would end at
/// the same node; the later one is kept, as the lookup before the tree did
/// (the catalog has no such pair: a test says so).
fn tree(routes: &[Route]) -> Vec<Node> {
    let mut nodes = vec![Node::default()];
    for (index, route) in routes.iter().enumerate() {
        let mut at = 0;
        for segment in &route.segments {
            let next = nodes.len();
            let Some(node) = nodes.get_mut(at) else {
                break;
            };
            at = match segment {
                Segment::Literal(literal) => {
                    match node
                        .literals
                        .binary_search_by(|(known, _)| by_length(known, literal))
                    {
                        Ok(found) => node.literals.get(found).map_or(next, |&(_, child)| child),
                        Err(insert) => {
                            node.literals.insert(insert, (literal, next));
                            next
                        }
                    }
                }
                Segment::Parameter => *node.parameter.get_or_insert(next),
            };
            if at == next {
                nodes.push(Node::default());
            }
        }
        if let Some(end) = nodes
            .get_mut(at)
            .and_then(|node| node.ends.get_mut(slot(route.endpoint.method)))
        {
            *end = Some(index);
        }
    }
    nodes
}
