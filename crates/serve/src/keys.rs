//! The service's own keys: who may call it at all, and who may change
//! things. Each key is read from a file of its own (never from the command
//! line, where other users see it), kept only as a digest, and compared in
//! constant time, so neither a key's length nor its first differing byte
//! shows in how long a refusal takes.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::routes::App;

/// The shortest key taken: fewer bytes could be guessed.
pub const MIN_KEY_BYTES: usize = 16;
/// The longest key taken: a header line, not a file's worth of bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Ask questions: checks, AuthZEN evaluations, metrics, the API document.
    Check,
    /// Everything: commands and investigations too.
    Admin,
}

/// The check key and the admin key, each kept as a BLAKE3 digest.
#[derive(Clone)]
pub struct ServiceKeys {
    check: [u8; 32],
    admin: [u8; 32],
}

impl fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceKeys { .. }")
    }
}

/// Why a key file was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file does not hold one usable key.
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The check key and the admin key are the same key, so the check
    /// key would be an admin key.
    SameKey,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Unreadable { path, error } => {
                write!(f, "the key file `{}`: {error}", path.display())
            }
            KeyFileError::Malformed { path, problem } => {
                write!(f, "the key file `{}` {problem}", path.display())
            }
            KeyFileError::SameKey => {
                f.write_str("the check key and the admin key are the same: give two different keys")
            }
        }
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyFileError::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl ServiceKeys {
    /// The keys in two files, each holding one key: 16 to 1024 visible
    /// ASCII characters (what a `Bearer` header can carry), with an
    /// optional final newline.
    pub fn from_files(check: &Path, admin: &Path) -> Result<ServiceKeys, KeyFileError> {
        let check = read_key(check)?;
        let admin = read_key(admin)?;
        ServiceKeys::new(&check, &admin)
    }

    /// The keys themselves, as a caller presents them.
    ///
    /// ```
    /// use tokenledger_serve::{Role, ServiceKeys};
    /// let keys = ServiceKeys::new(b"check-key-0123456789", b"admin-key-0123456789").unwrap();
    /// assert_eq!(keys.role(b"admin-key-0123456789"), Some(Role::Admin));
    /// assert_eq!(keys.role(b"admin-key-012345678"), None);
    /// ```
    pub fn new(check: &[u8], admin: &[u8]) -> Result<ServiceKeys, KeyFileError> {
        let (check, admin) = (digest(check), digest(admin));
        if bool::from(check.ct_eq(&admin)) {
            return Err(KeyFileError::SameKey);
        }
        Ok(ServiceKeys { check, admin })
    }

    /// The role a presented key gives, if any. Both keys are compared,
    /// whatever the first comparison found.
    pub fn role(&self, presented: &[u8]) -> Option<Role> {
        let presented = digest(presented);
        let admin = presented.ct_eq(&self.admin);
        let check = presented.ct_eq(&self.check);
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(check) {
            Some(Role::Check)
        } else {
            None
        }
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    *blake3::hash(key).as_bytes()
}

fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let malformed = |problem| KeyFileError::Malformed {
        path: path.to_owned(),
        problem,
    };
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|error| KeyFileError::Unreadable {
            path: path.to_owned(),
            error,
        })?,
    );
    let key = bytes
        .strip_suffix(b"\n")
        .map(|k| k.strip_suffix(b"\r").unwrap_or(k))
        .unwrap_or(&bytes);
    if key.len() < MIN_KEY_BYTES {
        return Err(malformed(
            "holds fewer than 16 bytes: too short to be a key",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(malformed(
            "holds more than 1024 bytes: too long to be a key",
        ));
    }
    if !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(
            "holds a space, a control or a non-ASCII byte: one key of visible ASCII characters is expected",
        ));
    }
    Ok(Zeroizing::new(key.to_vec()))
}

/// The role a request's `Authorization: Bearer` header gives: a missing,
/// repeated or malformed header, or an unknown key, is a 401.
fn presented_role(keys: &ServiceKeys, request: &Request) -> Result<Role, ApiError> {
    let mut headers = request.headers().get_all(AUTHORIZATION).iter();
    let (Some(header), None) = (headers.next(), headers.next()) else {
        return Err(unauthenticated());
    };
    let key = header
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .ok_or_else(unauthenticated)?;
    keys.role(key).ok_or_else(unauthenticated)
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or unknown service key: send `Authorization: Bearer <key>` with the check key or the admin key",
    )
}

/// Lets a request through only with a key of at least `needed`'s role.
pub(crate) async fn require(
    needed: Role,
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    match presented_role(&app.keys, &request) {
        Ok(role) if role >= needed => next.run(request).await,
        Ok(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "the check key may only ask questions: this endpoint needs the admin key",
        )
        .into_response(),
        Err(error) => {
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}
