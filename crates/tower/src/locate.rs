//! Where a resource lives: the embedder's answer, asked once per request.
//!
//! tokenledger stores no resources, so the service says where the resource
//! a request names lives (a teammate's private inbox, a workspace, the
//! company). That usually means reading the service's own database, so the
//! question is asynchronous.

use std::error::Error;
use std::fmt;
use std::future::Future;

use tokenledger_authz::Location;
use tokenledger_events::{Endpoint, ResourceId};

/// The request being located: its endpoint in the catalog and its path.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    endpoint: &'static Endpoint,
    path: &'a str,
}

impl<'a> Target<'a> {
    pub(crate) fn new(endpoint: &'static Endpoint, path: &'a str) -> Target<'a> {
        Target { endpoint, path }
    }

    /// The operation the catalog resolved the method and path to.
    pub fn endpoint(&self) -> &'static Endpoint {
        self.endpoint
    }

    /// The request's path, without its query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The path's parameters in order: for `/conversations/cnv_1/messages`
    /// (`/conversations/{conversation_id}/messages`), `cnv_1`. The catalog
    /// checked every segment before the locator is asked, so a parameter
    /// holds only the characters ids use.
    pub fn parameters(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let path = self.path.trim_end_matches('/');
        self.endpoint
            .template
            .trim_end_matches('/')
            .split('/')
            .zip(path.split('/'))
            .filter(|(template, _)| template.starts_with('{'))
            .map(|(_, given)| given)
    }

    /// The first parameter: the resource most operations are about.
    pub fn first_parameter(&self) -> Option<&'a str> {
        // Loops over the bytes rather than `parameters`, `str::find` or
        // iterator chains: it is asked on every request, the template's
        // literals before it were matched, and the strings are short.
        let mut slashes = 0;
        let mut parameter = false;
        for &b in self.endpoint.template.as_bytes() {
            if b == b'{' {
                parameter = true;
                break;
            }
            slashes += usize::from(b == b'/');
        }
        if !parameter {
            return None;
        }
        let mut start = None;
        let mut seen = 0;
        for (at, &b) in self.path.as_bytes().iter().enumerate() {
            seen += usize::from(b == b'/');
            if b == b'/' && seen == slashes {
                start = Some(at + 1);
                break;
            }
        }
        let rest = self.path.get(start?..)?;
        let given = rest.get(..rest.bytes().position(|b| b == b'/').unwrap_or(rest.len()))?;
        (!given.is_empty()).then_some(given)
    }
}

/// A resource and where it lives, as the locator found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The resource the decision is about (named in Front's 403 message).
    pub resource: ResourceId,
    /// Where it lives.
    pub location: Location,
}

/// Why the locator could not answer (its database is down, say). The
/// layer answers 503 and never allows.
#[derive(Debug)]
pub struct LocateError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl LocateError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> LocateError {
        LocateError {
            message: message.into(),
            source: None,
        }
    }

    /// A failure caused by `source`.
    pub fn caused_by(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> LocateError {
        LocateError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for LocateError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

/// Says where the resource of a request lives.
///
/// `Ok(None)` means there is no such resource: the layer answers as Front
/// answers an unknown resource (404), after authenticating the caller, so
/// that no one without a live token learns what exists. An error is a 503.
pub trait Locator: Send + Sync + 'static {
    /// Locates the resource `target` names.
    fn locate(
        &self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Option<Located>, LocateError>> + Send;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use tokenledger_events::endpoints;

    use super::Target;

    /// The fast path finds what walking every segment finds, for every
    /// operation of the catalog, with and without a trailing slash.
    #[test]
    fn the_first_parameter_is_the_first_of_the_parameters() {
        for endpoint in endpoints().unwrap() {
            let mut n = 0;
            let path: Vec<String> = endpoint
                .template
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        n += 1;
                        format!("x_{n}")
                    } else {
                        segment.to_owned()
                    }
                })
                .collect();
            let path = path.join("/");
            for path in [path.clone(), format!("{path}/")] {
                let target = Target::new(endpoint, &path);
                assert_eq!(
                    target.first_parameter(),
                    target.parameters().next(),
                    "{path}"
                );
            }
        }
    }
}
