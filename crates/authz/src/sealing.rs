//! Sealing token secrets so that an admin can reveal them again.
//!
//! A secret is encrypted with XChaCha20-Poly1305 under a key the embedding
//! service supplies and keeps away from the data directory; the log holds
//! only the ciphertext. The token id is bound in as associated data, so a
//! sealed secret copied onto another token does not open.
//!
//! Layout: version (1) ‖ 24-byte random nonce ‖ ciphertext and tag.

use std::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use tokenledger_events::{SealedSecret, Secret, TokenId};

use crate::fresh::{self, RandomError};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const AAD_DOMAIN: &[u8] = b"tokenledger sealed secret v1";

/// The key secrets are sealed with. Keep it outside the data directory.
#[derive(Clone)]
pub struct SealingKey([u8; 32]);

impl SealingKey {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SealingKey {
        SealingKey(bytes)
    }

    /// Draws a new key from the OS random source and writes it to `path`,
    /// which must not exist, readable by its owner only.
    pub fn create_file(path: &std::path::Path) -> std::io::Result<SealingKey> {
        use std::io::Write;
        let bytes: [u8; 32] = fresh::random_bytes().map_err(std::io::Error::other)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        Ok(SealingKey(bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealingError {
    /// No random nonce could be drawn.
    Random(RandomError),
    /// The sealed bytes do not open under this key for this token: another
    /// key, another token, or damage.
    DoesNotOpen,
    /// The sealed secret is longer than a record allows.
    TooLong,
}

impl fmt::Display for SealingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealingError::Random(e) => fmt::Display::fmt(e, f),
            SealingError::DoesNotOpen => f.write_str(
                "the sealed secret does not open with this key: the key changed, or the record is damaged",
            ),
            SealingError::TooLong => f.write_str("the sealed secret is too long"),
        }
    }
}

impl std::error::Error for SealingError {}

fn aad(token: TokenId) -> Vec<u8> {
    let mut aad = AAD_DOMAIN.to_vec();
    aad.extend_from_slice(&token.as_u128().to_be_bytes());
    aad
}

pub(crate) fn seal(
    key: &SealingKey,
    token: TokenId,
    secret: &Secret,
) -> Result<SealedSecret, SealingError> {
    let nonce: [u8; NONCE_LEN] = fresh::random_bytes().map_err(SealingError::Random)?;
    let aad = aad(token);
    let ciphertext = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.expose().as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SealingError::TooLong)?;
    let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    sealed.push(VERSION);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    SealedSecret::try_from(sealed).map_err(|_| SealingError::TooLong)
}

pub(crate) fn open(
    key: &SealingKey,
    token: TokenId,
    sealed: &SealedSecret,
) -> Result<Secret, SealingError> {
    let (&version, rest) = sealed
        .as_bytes()
        .split_first()
        .ok_or(SealingError::DoesNotOpen)?;
    if version != VERSION {
        return Err(SealingError::DoesNotOpen);
    }
    let (nonce, ciphertext) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(SealingError::DoesNotOpen)?;
    let aad = aad(token);
    let plain = key
        .cipher()
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SealingError::DoesNotOpen)?;
    let text = String::from_utf8(plain).map_err(|_| SealingError::DoesNotOpen)?;
    Secret::parse(&text).map_err(|_| SealingError::DoesNotOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_token() {
        let key = SealingKey::from_bytes([1; 32]);
        let token = TokenId::from_u128(5);
        let secret = fresh::secret().unwrap();
        let sealed = seal(&key, token, &secret).unwrap();
        assert!(
            !sealed.as_bytes().windows(8).any(|w| secret
                .expose()
                .as_bytes()
                .windows(8)
                .any(|s| s == w))
        );
        assert_eq!(open(&key, token, &sealed).unwrap(), secret);
        let other_key = SealingKey::from_bytes([2; 32]);
        assert_eq!(
            open(&other_key, token, &sealed),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(
            open(&key, TokenId::from_u128(6), &sealed),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(format!("{key:?}"), "SealingKey(<redacted>)");
    }
}
