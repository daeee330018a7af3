//! Sealing token secrets so that an admin can reveal them again.
//!
//! A secret is encrypted with XChaCha20-Poly1305 under a key the embedding
//! service supplies and keeps away from the data directory; the log holds
//! only the ciphertext. The associated data binds the token id, its company
//! and its secret's digest, so a sealed secret copied onto another token,
//! into another company or beside another digest does not open; and what
//! opens is checked against the token's digest before it is returned.
//!
//! Each key has an id ([`SealingKeyId`]) recorded with every secret it
//! seals. A reveal picks the key by that id, so a ledger opened with the
//! keys it rotated out beside the current one reveals every token; and
//! opening refuses keys of which none sealed the newest sealed secret,
//! rather than seal new tokens with a key no one may hold (a mistyped key
//! file).
//!
//! Layout, version 2: 2 ‖ 8-byte key id ‖ 24-byte random nonce ‖
//! ciphertext and tag, with associated data `tokenledger sealed secret v2`
//! ‖ key id ‖ token id ‖ company id ‖ digest. Version 1, which earlier
//! releases wrote and which is still read: 1 ‖ nonce ‖ ciphertext and tag,
//! with `tokenledger sealed secret v1` ‖ token id; it names no key, so each
//! key given is tried.

use std::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use tokenledger_events::{CompanyId, SealedSecret, Secret, SecretDigest, TokenId};
use zeroize::{Zeroize, Zeroizing};

use crate::fresh::{self, RandomError};

const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const NONCE_LEN: usize = 24;
const KEY_ID_LEN: usize = 8;
const AAD_DOMAIN_V1: &[u8] = b"tokenledger sealed secret v1";
const AAD_DOMAIN_V2: &[u8] = b"tokenledger sealed secret v2";
/// What a key's id is the keyed hash of.
const KEY_ID_DOMAIN: &[u8] = b"tokenledger sealing key id v1";

/// A sealing key's id: the first 8 bytes of the keyed BLAKE3 hash of a
/// fixed string under the key. It names the key in the log and in
/// messages, and tells nothing of the key itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealingKeyId([u8; KEY_ID_LEN]);

impl fmt::Display for SealingKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for SealingKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKeyId({self})")
    }
}

/// The key secrets are sealed with. Keep it outside the data directory.
///
/// Its bytes are wiped from memory when it is dropped.
#[derive(Clone)]
pub struct SealingKey {
    bytes: [u8; 32],
    id: SealingKeyId,
}

impl Drop for SealingKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for SealingKey {}

impl SealingKey {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SealingKey {
        let hash = blake3::keyed_hash(&bytes, KEY_ID_DOMAIN);
        let mut id = [0; KEY_ID_LEN];
        for (to, from) in id.iter_mut().zip(hash.as_bytes()) {
            *to = *from;
        }
        SealingKey {
            bytes,
            id: SealingKeyId(id),
        }
    }

    /// The key's id, recorded with each secret it seals.
    pub fn id(&self) -> SealingKeyId {
        self.id
    }

    /// Draws a new key from the OS random source and writes it to `path`,
    /// which must not exist, readable by its owner only.
    pub fn create_file(path: &std::path::Path) -> std::io::Result<SealingKey> {
        use std::io::Write;
        let bytes: Zeroizing<[u8; 32]> =
            Zeroizing::new(fresh::random_bytes().map_err(std::io::Error::other)?);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(bytes.as_slice())?;
        file.sync_all()?;
        Ok(SealingKey::from_bytes(*bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey({}, <redacted>)", self.id)
    }
}

/// Why a secret could not be sealed or opened, or the keys do not fit the
/// log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealingError {
    /// No random nonce could be drawn.
    Random(RandomError),
    /// The sealed bytes do not open under the key they name (or, for the
    /// first layout, under any key given) for this token, company and
    /// digest: another key, a record moved or altered, or damage.
    DoesNotOpen,
    /// The secret was sealed with a key this ledger was not given.
    UnknownKey {
        /// The key's id.
        key: SealingKeyId,
    },
    /// What opened is not the token's secret: its digest differs.
    DigestMismatch,
    /// None of the keys given sealed the newest sealed secret in the log,
    /// so the key given is not the one the log was sealed with.
    WrongKey {
        /// The token whose sealed secret was checked.
        token: TokenId,
        /// The key that sealed it, when its layout names one.
        sealed_with: Option<SealingKeyId>,
        /// The keys given, current first.
        given: Vec<SealingKeyId>,
    },
    /// The sealed secret is longer than a record allows.
    TooLong,
}

impl fmt::Display for SealingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealingError::Random(e) => fmt::Display::fmt(e, f),
            SealingError::DoesNotOpen => f.write_str(
                "the sealed secret does not open: another key sealed it, or its record was damaged, altered, or moved from another token or company",
            ),
            SealingError::UnknownKey { key } => write!(
                f,
                "the secret was sealed with key `{key}`, which this ledger was not given; give it as an old sealing key"
            ),
            SealingError::DigestMismatch => f.write_str(
                "the sealed secret is not this token's secret (its digest differs): the record was altered; nothing was revealed",
            ),
            SealingError::WrongKey {
                token,
                sealed_with,
                given,
            } => {
                let given = given
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                match sealed_with {
                    Some(id) => write!(
                        f,
                        "the sealing key does not fit this log: the newest sealed secret (token `{token}`) was sealed with key `{id}`, and the keys given are {given}"
                    ),
                    None => write!(
                        f,
                        "the sealing key does not fit this log: the newest sealed secret (token `{token}`) opens with none of the keys given ({given})"
                    ),
                }?;
                f.write_str("; give the key it was sealed with, or give that key as an old sealing key beside a new one to rotate")
            }
            SealingError::TooLong => f.write_str("the sealed secret is too long"),
        }
    }
}

impl std::error::Error for SealingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SealingError::Random(error) => Some(error),
            _ => None,
        }
    }
}

/// What a sealed secret is bound to: it opens only for this token, of this
/// company, whose secret has this digest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding {
    pub(crate) token: TokenId,
    pub(crate) company: CompanyId,
    pub(crate) digest: SecretDigest,
}

fn aad_v1(token: TokenId) -> Vec<u8> {
    let mut aad = AAD_DOMAIN_V1.to_vec();
    aad.extend_from_slice(&token.as_u128().to_be_bytes());
    aad
}

fn aad_v2(key: SealingKeyId, binding: &Binding) -> Vec<u8> {
    let mut aad = AAD_DOMAIN_V2.to_vec();
    aad.extend_from_slice(&key.0);
    aad.extend_from_slice(&binding.token.as_u128().to_be_bytes());
    aad.extend_from_slice(&binding.company.as_u128().to_be_bytes());
    aad.extend_from_slice(binding.digest.as_bytes());
    aad
}

/// Seals `secret` for `token` of `company` under `key`, in layout 2.
pub(crate) fn seal(
    key: &SealingKey,
    token: TokenId,
    company: CompanyId,
    secret: &Secret,
) -> Result<SealedSecret, SealingError> {
    let nonce: [u8; NONCE_LEN] = fresh::random_bytes().map_err(SealingError::Random)?;
    let binding = Binding {
        token,
        company,
        digest: secret.digest(),
    };
    let aad = aad_v2(key.id, &binding);
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
    let mut sealed = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
    sealed.push(VERSION_2);
    sealed.extend_from_slice(&key.id.0);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    SealedSecret::try_from(sealed).map_err(|_| SealingError::TooLong)
}

/// The plain text of `ciphertext`, wiped when dropped.
fn decrypt(
    key: &SealingKey,
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealingError> {
    key.cipher()
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealingError::DoesNotOpen)
}

/// A sealed secret's parts, as its layout gives them.
enum Layout<'a> {
    V1 {
        nonce: &'a [u8; NONCE_LEN],
        ciphertext: &'a [u8],
    },
    V2 {
        key: SealingKeyId,
        nonce: &'a [u8; NONCE_LEN],
        ciphertext: &'a [u8],
    },
}

fn layout(sealed: &SealedSecret) -> Result<Layout<'_>, SealingError> {
    let (&version, rest) = sealed
        .as_bytes()
        .split_first()
        .ok_or(SealingError::DoesNotOpen)?;
    match version {
        VERSION_1 => {
            let (nonce, ciphertext) = rest
                .split_first_chunk::<NONCE_LEN>()
                .ok_or(SealingError::DoesNotOpen)?;
            Ok(Layout::V1 { nonce, ciphertext })
        }
        VERSION_2 => {
            let (key, rest) = rest
                .split_first_chunk::<KEY_ID_LEN>()
                .ok_or(SealingError::DoesNotOpen)?;
            let (nonce, ciphertext) = rest
                .split_first_chunk::<NONCE_LEN>()
                .ok_or(SealingError::DoesNotOpen)?;
            Ok(Layout::V2 {
                key: SealingKeyId(*key),
                nonce,
                ciphertext,
            })
        }
        _ => Err(SealingError::DoesNotOpen),
    }
}

/// Opens `sealed` with the key it names among `keys` (layout 2), or the
/// first of `keys` it opens with (layout 1), for `binding`'s token and
/// company, and returns the secret only if its digest is `binding`'s.
pub(crate) fn open<'k>(
    mut keys: impl Iterator<Item = &'k SealingKey>,
    binding: &Binding,
    sealed: &SealedSecret,
) -> Result<Secret, SealingError> {
    let plain = match layout(sealed)? {
        Layout::V1 { nonce, ciphertext } => {
            let aad = aad_v1(binding.token);
            keys.find_map(|key| decrypt(key, nonce, ciphertext, &aad).ok())
                .ok_or(SealingError::DoesNotOpen)?
        }
        Layout::V2 {
            key: id,
            nonce,
            ciphertext,
        } => {
            let key = keys
                .find(|key| key.id == id)
                .ok_or(SealingError::UnknownKey { key: id })?;
            decrypt(key, nonce, ciphertext, &aad_v2(id, binding))?
        }
    };
    let text = std::str::from_utf8(&plain).map_err(|_| SealingError::DoesNotOpen)?;
    let secret = Secret::parse(text).map_err(|_| SealingError::DoesNotOpen)?;
    // INVARIANT (reveal-matches-digest): only the secret that
    // authenticates as this token is ever revealed for it.
    if secret.digest() != binding.digest {
        return Err(SealingError::DigestMismatch);
    }
    Ok(secret)
}

/// Checks that `keys` include the one that sealed `sealed`, the newest
/// sealed secret: by the id it names (layout 2), or by opening it (layout
/// 1, which names none).
pub(crate) fn check_keys<'k>(
    keys: impl Iterator<Item = &'k SealingKey> + Clone,
    binding: &Binding,
    sealed: &SealedSecret,
) -> Result<(), SealingError> {
    let wrong = |sealed_with| SealingError::WrongKey {
        token: binding.token,
        sealed_with,
        given: keys.clone().map(SealingKey::id).collect(),
    };
    match layout(sealed) {
        Ok(Layout::V2 { key, .. }) if keys.clone().any(|given| given.id == key) => Ok(()),
        Ok(Layout::V2 { key, .. }) => Err(wrong(Some(key))),
        // A key that opens it is the right one, whatever it holds (a
        // reveal checks the digest).
        Ok(Layout::V1 { .. }) => match open(keys.clone(), binding, sealed) {
            Ok(_) | Err(SealingError::DigestMismatch) => Ok(()),
            Err(_) => Err(wrong(None)),
        },
        // Neither layout: no key can be checked against it, so none is
        // trusted.
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals as version 1 did, for the tests of reading it.
    fn seal_v1(key: &SealingKey, token: TokenId, secret: &Secret) -> SealedSecret {
        let nonce = [9u8; NONCE_LEN];
        let ciphertext = key
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &aad_v1(token),
                },
            )
            .unwrap();
        let mut sealed = vec![VERSION_1];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        SealedSecret::try_from(sealed).unwrap()
    }

    fn binding(token: u128, company: u128, secret: &Secret) -> Binding {
        Binding {
            token: TokenId::from_u128(token),
            company: CompanyId::from_u128(company),
            digest: secret.digest(),
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_token_company_and_digest() {
        let key = SealingKey::from_bytes([1; 32]);
        let secret = fresh::secret().unwrap();
        let bound = binding(5, 7, &secret);
        let sealed = seal(&key, bound.token, bound.company, &secret).unwrap();
        assert!(
            !sealed.as_bytes().windows(8).any(|w| secret
                .expose()
                .as_bytes()
                .windows(8)
                .any(|s| s == w))
        );
        assert_eq!(sealed.as_bytes()[0], VERSION_2);
        assert_eq!(sealed.as_bytes()[1..9], key.id().0);
        assert_eq!(open([&key].into_iter(), &bound, &sealed).unwrap(), secret);

        let other_key = SealingKey::from_bytes([2; 32]);
        assert_eq!(
            open([&other_key].into_iter(), &bound, &sealed),
            Err(SealingError::UnknownKey { key: key.id() })
        );
        let other_token = binding(6, 7, &secret);
        let other_company = binding(5, 8, &secret);
        let other_digest = Binding {
            digest: fresh::secret().unwrap().digest(),
            ..bound
        };
        for moved in [other_token, other_company, other_digest] {
            assert_eq!(
                open([&key].into_iter(), &moved, &sealed),
                Err(SealingError::DoesNotOpen),
                "{moved:?}"
            );
        }
        // The key id is bound too: a sealed secret relabelled with another
        // key's id does not open under that key.
        let mut relabelled = sealed.as_bytes().to_vec();
        relabelled[1..9].copy_from_slice(&other_key.id().0);
        let relabelled = SealedSecret::try_from(relabelled).unwrap();
        assert_eq!(
            open([&other_key].into_iter(), &bound, &relabelled),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(
            format!("{key:?}"),
            format!("SealingKey({}, <redacted>)", key.id())
        );
    }

    #[test]
    fn a_reveal_picks_the_key_by_its_id() {
        let old = SealingKey::from_bytes([1; 32]);
        let new = SealingKey::from_bytes([2; 32]);
        assert_ne!(old.id(), new.id());
        let secret = fresh::secret().unwrap();
        let bound = binding(5, 7, &secret);
        let sealed = seal(&old, bound.token, bound.company, &secret).unwrap();
        assert_eq!(
            open([&new, &old].into_iter(), &bound, &sealed).unwrap(),
            secret
        );
    }

    #[test]
    fn the_first_layout_still_opens_and_is_checked_against_the_digest() {
        let old = SealingKey::from_bytes([1; 32]);
        let new = SealingKey::from_bytes([2; 32]);
        let secret = fresh::secret().unwrap();
        let bound = binding(5, 7, &secret);
        let sealed = seal_v1(&old, bound.token, &secret);
        assert_eq!(
            open([&new, &old].into_iter(), &bound, &sealed).unwrap(),
            secret
        );
        assert_eq!(
            open([&new].into_iter(), &bound, &sealed),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(
            open([&old].into_iter(), &binding(6, 7, &secret), &sealed),
            Err(SealingError::DoesNotOpen)
        );
        // Layout 1 binds only the token: a record whose digest was changed
        // still opens, and the digest check refuses it.
        let other_digest = Binding {
            digest: fresh::secret().unwrap().digest(),
            ..bound
        };
        assert_eq!(
            open([&old].into_iter(), &other_digest, &sealed),
            Err(SealingError::DigestMismatch)
        );
    }

    #[test]
    fn the_newest_sealed_secret_tells_whether_the_keys_fit() {
        let right = SealingKey::from_bytes([1; 32]);
        let wrong = SealingKey::from_bytes([2; 32]);
        let secret = fresh::secret().unwrap();
        let bound = binding(5, 7, &secret);
        for sealed in [
            seal(&right, bound.token, bound.company, &secret).unwrap(),
            seal_v1(&right, bound.token, &secret),
        ] {
            assert_eq!(check_keys([&right].into_iter(), &bound, &sealed), Ok(()));
            assert_eq!(
                check_keys([&wrong, &right].into_iter(), &bound, &sealed),
                Ok(())
            );
            let error = check_keys([&wrong].into_iter(), &bound, &sealed).unwrap_err();
            assert!(
                matches!(&error, SealingError::WrongKey { given, .. } if *given == [wrong.id()]),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_key_is_wiped_when_dropped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<SealingKey>();
    }

    #[test]
    fn key_ids_are_keyed_fingerprints() {
        let key = SealingKey::from_bytes([3; 32]);
        let hash = blake3::keyed_hash(&[3; 32], KEY_ID_DOMAIN);
        assert_eq!(key.id().0, hash.as_bytes()[..8]);
        assert_eq!(key.id().to_string().len(), 16);
        assert_ne!(key.id(), SealingKey::from_bytes([4; 32]).id());
    }
}
