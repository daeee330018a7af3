//! Where a resource lives: the embedder's answer, asked once per request.
//!
//! tokenledger stores no resources, so the service says where the resource
//! a request names lives (a teammate's private inbox, a workspace, the
//! company). That usually means reading the service's own database, so the
//! question is asynchronous.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::future::Future;

use tokenledger_authz::Location;
use tokenledger_events::{CompanyId, Endpoint, ResourceId};

/// The request being located: its endpoint in the catalog, its path and
/// the company of the token it carries.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    endpoint: &'static Endpoint,
    path: &'a str,
    company: CompanyId,
}

impl<'a> Target<'a> {
    pub(crate) fn new(
        endpoint: &'static Endpoint,
        path: &'a str,
        company: CompanyId,
    ) -> Target<'a> {
        Target {
            endpoint,
            path,
            company,
        }
    }

    /// The company of the request's token (authenticated, live). A locator
    /// that answers `None` for another company's resources gives them the
    /// 404 of a resource that does not exist: otherwise a token learns
    /// which ids exist elsewhere from a 403 (rule 3) where others get 404.
    pub fn company(&self) -> CompanyId {
        self.company
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
    /// (`/conversations/{conversation_id}/messages`), `cnv_1`. Escapes are
    /// decoded, as axum's `Path` decodes them for the handler, so that the
    /// locator places the very resource the handler is given
    /// (`cnv_%66orum` is `cnv_forum` to both). The catalog checked every
    /// segment before the locator is asked, so a parameter holds only the
    /// characters ids use, raw or escaped, and decodes to them.
    pub fn parameters(&self) -> impl Iterator<Item = Cow<'a, str>> + use<'a> {
        let path = self.path.trim_end_matches('/');
        self.endpoint
            .template
            .trim_end_matches('/')
            .split('/')
            .zip(path.split('/'))
            .filter(|(template, _)| template.starts_with('{'))
            .map(|(_, given)| decoded(given))
    }

    /// The first parameter, decoded: the resource most operations are
    /// about.
    pub fn first_parameter(&self) -> Option<Cow<'a, str>> {
        self.first_segment_parameter().map(decoded)
    }

    /// The first parameter as the path has it.
    fn first_segment_parameter(&self) -> Option<&'a str> {
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

/// `segment` with its escapes decoded; borrowed when it has none (most
/// ids). An escape that does not decode is kept as it is, as axum's `Path`
/// keeps it; the catalog refuses such paths before any locator sees them.
fn decoded(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(value) => {
                out.push(value);
                at += 3;
            }
            None => {
                out.push(byte);
                at += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        // Bytes above 0x7f that are not UTF-8: the catalog refuses them,
        // and axum's `Path` would refuse the request.
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
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

    use tokenledger_events::{CompanyId, endpoints};

    use super::Target;

    /// Escapes are decoded as axum's `Path` decodes them (percent-encoding's
    /// `percent_decode`), so the locator and the handler name one resource.
    #[test]
    fn parameters_are_decoded_as_the_handler_gets_them() {
        let endpoint = endpoints()
            .unwrap()
            .find(|e| e.template == "/conversations/{conversation_id}/messages")
            .unwrap();
        let company = CompanyId::from_u128(1);
        for (path, want) in [
            ("/conversations/cnv_1/messages", "cnv_1"),
            ("/conversations/cnv_%66orum/messages", "cnv_forum"),
            (
                "/conversations/alt:email:a%2Bb@x.com/messages",
                "alt:email:a+b@x.com",
            ),
            ("/conversations/%7e%7E/messages", "~~"),
            // Not an escape: kept, as `percent_decode` keeps it.
            ("/conversations/a%2/messages", "a%2"),
            ("/conversations/a%zz/messages", "a%zz"),
        ] {
            let target = Target::new(endpoint, path, company);
            assert_eq!(target.first_parameter().as_deref(), Some(want), "{path}");
            assert_eq!(target.parameters().next().as_deref(), Some(want), "{path}");
        }
    }

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
                let target = Target::new(endpoint, &path, CompanyId::from_u128(1));
                assert_eq!(
                    target.first_parameter(),
                    target.parameters().next(),
                    "{path}"
                );
            }
        }
    }
}
