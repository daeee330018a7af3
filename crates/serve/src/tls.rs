//! TLS with rustls, when the server is given a certificate and its key
//! (PEM files). The key file is private: read, used, and not kept beyond
//! the acceptor's own copy.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Accepts TLS connections; cheap to clone.
pub type TlsAcceptor = tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// rustls refused the certificate and key.
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, problem } => write!(f, "`{}`: {problem}", path.display()),
            TlsError::Config(error) => write!(f, "the certificate and key: {error}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Config(error) => Some(error),
            TlsError::File { .. } => None,
        }
    }
}

/// An acceptor for the certificate chain in `cert` and the private key in
/// `key`, both PEM; TLS 1.2 and 1.3, HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let file = |path: &Path, problem: String| TlsError::File {
        path: path.to_owned(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file(cert, "holds no certificate".to_owned()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file(key, e.to_string()))?;
    #[expect(
        deprecated,
        reason = "ring has no post-quantum key exchange; aws-lc-rs, which has, needs cmake and minutes to build"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
