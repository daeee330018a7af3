//! The request headers the layer reads: the bearer, the consistency token
//! and the request id.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

use crate::layer::{CONSISTENCY_HEADER, REQUEST_ID_HEADER};
use crate::rejection::Rejection;

/// How often a header was sent, and its value when it was sent once.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Once<'a> {
    #[default]
    Absent,
    One(&'a HeaderValue),
    Many,
}

impl<'a> Once<'a> {
    fn see(&mut self, value: &'a HeaderValue) {
        *self = match self {
            Once::Absent => Once::One(value),
            _ => Once::Many,
        };
    }
}

/// The headers the layer reads, found in one pass over the request's:
/// comparing the few names a request has costs less than hashing three
/// names to look them up.
#[derive(Debug, Default)]
pub(crate) struct Read<'a> {
    authorization: Once<'a>,
    consistency: Once<'a>,
    pub(crate) request_id: Once<'a>,
}

impl<'a> From<&'a HeaderMap> for Read<'a> {
    fn from(headers: &'a HeaderMap) -> Read<'a> {
        let mut read = Read::default();
        for (name, value) in headers {
            if *name == AUTHORIZATION {
                read.authorization.see(value);
            } else if *name == CONSISTENCY_HEADER {
                read.consistency.see(value);
            } else if *name == REQUEST_ID_HEADER {
                read.request_id.see(value);
            }
        }
        read
    }
}

impl Read<'_> {
    /// The secret of the one `Authorization: Bearer <secret>` header. Two
    /// `Authorization` headers are refused: which one a proxy or the
    /// service would read is not known.
    pub(crate) fn bearer(&self) -> Option<&str> {
        let Once::One(value) = self.authorization else {
            return None;
        };
        let text = value.to_str().ok()?;
        // A short header: a loop beats `split_once`'s `memchr`.
        let space = text.bytes().position(|b| b == b' ')?;
        let (scheme, secret) = (text.get(..space)?, text.get(space + 1..)?);
        let secret = secret.trim_matches(' ');
        (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
    }

    /// The consistency token, if one was sent: one header, a decimal
    /// position.
    pub(crate) fn consistency(&self) -> Result<Option<u64>, Rejection> {
        let value = match self.consistency {
            Once::Absent => return Ok(None),
            Once::One(value) => value,
            Once::Many => return Err(Rejection::BadConsistencyToken),
        };
        value
            .to_str()
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse().ok())
            .map(Some)
            .ok_or(Rejection::BadConsistencyToken)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use http::header::AUTHORIZATION;
    use http::{HeaderMap, HeaderValue};

    use super::Read;
    use crate::layer::{CONSISTENCY_HEADER, REQUEST_ID_HEADER};

    /// What the lookups by name (the layer's before the single pass) make
    /// of the same headers.
    fn looked_up(headers: &HeaderMap) -> (Option<String>, Option<Option<u64>>, Option<String>) {
        let one = |name| {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(value), None) => Some(value.clone()),
                _ => None,
            }
        };
        let bearer = one(AUTHORIZATION).and_then(|value| {
            let (scheme, secret) = value.to_str().ok()?.split_once(' ')?;
            let secret = secret.trim_matches(' ');
            (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then(|| secret.to_owned())
        });
        let consistency = match headers.get_all(CONSISTENCY_HEADER).iter().count() {
            0 => Some(None),
            1 => one(CONSISTENCY_HEADER)
                .and_then(|value| {
                    let text = value.to_str().ok()?;
                    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| text.parse().ok())
                        .flatten()
                })
                .map(Some),
            _ => None,
        };
        let request_id = one(REQUEST_ID_HEADER).map(|value| format!("{value:?}"));
        (bearer, consistency, request_id)
    }

    fn read(headers: &HeaderMap) -> (Option<String>, Option<Option<u64>>, Option<String>) {
        let read = Read::from(headers);
        let request_id = match read.request_id {
            super::Once::One(value) => Some(format!("{value:?}")),
            _ => None,
        };
        (
            read.bearer().map(str::to_owned),
            read.consistency().ok(),
            request_id,
        )
    }

    #[test]
    fn one_pass_reads_what_lookups_by_name_read() {
        let values = [
            "Bearer tlk_x",
            "bearer  tlk_y ",
            "Basic abc",
            "Bearer",
            "Bearer ",
            "12",
            "",
            "1x",
            "req-1",
        ];
        let names = [
            AUTHORIZATION,
            CONSISTENCY_HEADER,
            REQUEST_ID_HEADER,
            http::header::ACCEPT,
        ];
        let mut compared = 0;
        // Every map of up to three headers drawn from these names and values.
        for a in 0..names.len() * values.len() {
            for b in 0..=names.len() * values.len() {
                for c in [0, 1, 5, 13, 22, 31] {
                    let mut headers = HeaderMap::new();
                    for pick in [Some(a), b.checked_sub(1), Some(c)].into_iter().flatten() {
                        let name = names[pick % names.len()].clone();
                        let value =
                            HeaderValue::from_str(values[pick / names.len() % values.len()]);
                        headers.append(name, value.unwrap());
                    }
                    assert_eq!(read(&headers), looked_up(&headers), "{headers:?}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 5_000, "{compared}");
    }
}
