//! Token secrets: their text form, checksum and digest.
//!
//! A secret is `tlk_` followed by 58 characters of lowercase base32 that
//! carry 256 random bits and a 32-bit checksum, in the manner of GitHub's
//! tokens: the fixed prefix lets secret scanners recognise a leaked token,
//! and the checksum rejects a typo or garbage before any lookup. Only the
//! SHA-256 digest of the random bits is ever stored; SHA-256 is enough for
//! 256-bit random secrets, which no one can guess or brute-force, so no
//! slow password hash is needed.
//!
//! The checksum is the digest's first four bytes, so checking a presented
//! secret and finding its token cost one SHA-256 between them. The four
//! bytes reveal nothing that holding the secret does not: the 256 random
//! bits stay unknown to anyone who sees only the digest.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "tlk_";
const RANDOM_BYTES: usize = 32;
const CHECKSUM_BYTES: usize = 4;
const PAYLOAD_BYTES: usize = RANDOM_BYTES + CHECKSUM_BYTES;
/// 36 bytes are 288 bits, which is 58 base32 characters (the last one carries 3 bits).
const BODY_CHARS: usize = (PAYLOAD_BYTES * 8).div_ceil(5);
/// The length of every well-formed secret, in bytes.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + BODY_CHARS;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Short enough that the domain, the random bits and SHA-256's padding (a
/// byte and the 8-byte length) fill one 64-byte block: one compression per
/// presented secret instead of two (`authorize/parse_secret` went from 107
/// to 69 ns). v2 (`tokenledger secret digest v2`, 28 bytes) took two.
const DIGEST_DOMAIN: &[u8] = b"tokenledger secret v3";
const _: () = assert!(DIGEST_DOMAIN.len() + RANDOM_BYTES + 1 + 8 <= 64);

/// A token secret in plain text.
///
/// It is never written to the log and never printed by `Debug`; equality
/// takes the same time wherever two secrets differ, and the text is wiped
/// from memory when the secret is dropped (each clone wipes its own copy).
/// What a caller copies out of [`Secret::expose`] is theirs to wipe: keep
/// it as briefly as possible.
#[derive(Clone)]
pub struct Secret {
    text: String,
    digest: SecretDigest,
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for Secret {}

impl PartialEq for Secret {
    /// In constant time: every well-formed secret has the same length.
    fn eq(&self, other: &Secret) -> bool {
        self.text.as_bytes().ct_eq(other.text.as_bytes()).into()
    }
}

impl Eq for Secret {}

/// Why a presented string is not a well-formed secret. Messages never echo
/// the input: it may be a real secret with a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// Not exactly [`SECRET_LEN`] bytes (checked before anything else).
    Length {
        /// The length that was presented.
        found: usize,
    },
    /// Does not start with [`SECRET_PREFIX`].
    Prefix,
    /// A character outside the secret alphabet.
    Alphabet,
    /// The checksum does not match: a typo, or not a tokenledger secret.
    Checksum,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Length { found } => write!(
                f,
                "a secret is {SECRET_LEN} characters long, this one has {found}"
            ),
            SecretError::Prefix => write!(f, "a secret starts with `{SECRET_PREFIX}`"),
            SecretError::Alphabet => f.write_str(
                "a secret has only lowercase letters and the digits 2 to 7 after its prefix",
            ),
            SecretError::Checksum => f.write_str("the secret's checksum does not match"),
        }
    }
}

impl std::error::Error for SecretError {}

/// The digest of the random bits; its first bytes are the checksum.
fn digest_of_random(random: &[u8]) -> SecretDigest {
    SecretDigest(
        Sha256::new()
            .chain_update(DIGEST_DOMAIN)
            .chain_update(random)
            .finalize()
            .into(),
    )
}

fn checksum(digest: &SecretDigest) -> [u8; CHECKSUM_BYTES] {
    let [a, b, c, d, ..] = digest.0;
    [a, b, c, d]
}

#[expect(
    clippy::indexing_slicing,
    reason = "every index is masked to 0..32, the alphabet's length"
)]
fn encode_base32(bytes: &[u8; PAYLOAD_BYTES], out: &mut String) {
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buffer >> bits) & 31)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::from((buffer << (5 - bits)) & 31)],
        ));
    }
}

/// Each byte's value in the secret alphabet, or [`NOT_BASE32`].
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time, where an index out of range fails the build"
)]
const DECODE: [u8; 256] = {
    let mut table = [NOT_BASE32; 256];
    let mut value = 0;
    while value < ALPHABET.len() {
        table[ALPHABET[value] as usize] = value as u8;
        value += 1;
    }
    table
};
/// Any byte outside the alphabet: its high bit survives an OR of values.
const NOT_BASE32: u8 = 0x80;
/// The body decodes in groups of 8 characters, 40 bits each; 7 groups
/// carry 35 bytes, and the last 2 characters carry the 36th byte and 2
/// bits that must be zero, so each secret has exactly one spelling.
const GROUPS: usize = 7;

fn decode_base32(body: &[u8]) -> Result<[u8; PAYLOAD_BYTES], SecretError> {
    let body: &[u8; BODY_CHARS] = body.try_into().map_err(|_| SecretError::Alphabet)?;
    let values = body.map(|c| DECODE.get(usize::from(c)).copied().unwrap_or(NOT_BASE32));
    if values.iter().fold(0, |seen, value| seen | value) & NOT_BASE32 != 0 {
        return Err(SecretError::Alphabet);
    }
    let (groups, [last_high, last_low]) = values.split_at(GROUPS * 8) else {
        return Err(SecretError::Alphabet);
    };
    let mut out = [0u8; PAYLOAD_BYTES];
    let (whole, [last]) = out.split_at_mut(GROUPS * 5) else {
        return Err(SecretError::Alphabet);
    };
    for (group, bytes) in groups.chunks_exact(8).zip(whole.chunks_exact_mut(5)) {
        let bits = group
            .iter()
            .fold(0u64, |bits, value| (bits << 5) | u64::from(*value));
        let [.., b0, b1, b2, b3, b4] = bits.to_be_bytes();
        bytes.copy_from_slice(&[b0, b1, b2, b3, b4]);
    }
    let tail = (u16::from(*last_high) << 5) | u16::from(*last_low);
    if tail & 0b11 != 0 {
        return Err(SecretError::Alphabet);
    }
    *last = (tail >> 2) as u8;
    Ok(out)
}

impl Secret {
    /// Builds the secret that carries `random`, which must come from a
    /// cryptographically secure source (the OS).
    pub fn from_random(mut random: [u8; RANDOM_BYTES]) -> Secret {
        let digest = digest_of_random(&random);
        let mut payload = [0u8; PAYLOAD_BYTES];
        let (head, tail) = payload.split_at_mut(RANDOM_BYTES);
        head.copy_from_slice(&random);
        tail.copy_from_slice(&checksum(&digest));
        // Written into a string of its final size, so that no copy of the
        // text is left behind by a reallocation.
        let mut text = String::with_capacity(SECRET_LEN);
        text.push_str(SECRET_PREFIX);
        encode_base32(&payload, &mut text);
        payload.zeroize();
        random.zeroize();
        Secret { text, digest }
    }

    /// Checks a presented secret's length, prefix, alphabet and checksum,
    /// in that order, and returns its digest.
    ///
    /// Over-long input is rejected by its length before any work is done.
    ///
    /// ```
    /// use tokenledger_events::{Secret, SecretError};
    ///
    /// let secret = Secret::from_random([7; 32]);
    /// let digest = Secret::digest_of(secret.expose()).unwrap();
    /// assert_eq!(digest, secret.digest());
    /// assert_eq!(Secret::digest_of("tlk_short"), Err(SecretError::Length { found: 9 }));
    /// ```
    pub fn digest_of(presented: &str) -> Result<SecretDigest, SecretError> {
        if presented.len() != SECRET_LEN {
            return Err(SecretError::Length {
                found: presented.len(),
            });
        }
        let body = presented
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        // The decoded bits are not wiped: the presented text, which holds
        // them too, is the caller's, and this runs on every request.
        let payload = decode_base32(body.as_bytes())?;
        let (random, sum) = payload.split_at(RANDOM_BYTES);
        let digest = digest_of_random(random);
        // Not constant-time, and need not be: the checksum is computed from
        // the presented secret alone, so timing tells the presenter only
        // what they could compute themselves.
        if checksum(&digest) == sum {
            Ok(digest)
        } else {
            Err(SecretError::Checksum)
        }
    }

    /// Checks a presented secret as [`Secret::digest_of`] does and keeps it.
    pub fn parse(presented: &str) -> Result<Secret, SecretError> {
        Secret::digest_of(presented).map(|digest| Secret {
            text: presented.to_owned(),
            digest,
        })
    }

    /// The digest kept in the log in place of the secret.
    pub fn digest(&self) -> SecretDigest {
        self.digest
    }

    /// The secret in plain text, to hand to the admin who asked for it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The SHA-256 digest of a secret, which is all the log keeps of it.
///
/// Equality is constant-time, so comparing a presented digest with a stored
/// one leaks nothing through timing.
#[derive(Clone, Copy, Eq)]
pub struct SecretDigest([u8; 32]);

// Encoded as two `u128`s: the same 32 bytes as a `[u8; 32]` in the codec's
// fixed-width big-endian integers (the golden files pin them), read in two
// steps rather than as a tuple of thirty-two, as ids are.
impl Serialize for SecretDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (high, low) = self.0.split_at(16);
        let half = |bytes: &[u8]| <[u8; 16]>::try_from(bytes).map_or(0, u128::from_be_bytes);
        (half(high), half(low)).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SecretDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (high, low) = <(u128, u128)>::deserialize(deserializer)?;
        let mut bytes = [0; 32];
        let (first, second) = bytes.split_at_mut(16);
        first.copy_from_slice(&high.to_be_bytes());
        second.copy_from_slice(&low.to_be_bytes());
        Ok(SecretDigest(bytes))
    }
}

impl SecretDigest {
    /// The digest's bytes, for a checkpoint.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A digest from [`SecretDigest::as_bytes`].
    pub const fn from_bytes(bytes: [u8; 32]) -> SecretDigest {
        SecretDigest(bytes)
    }

    fn words(&self) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (word, bytes) in words.iter_mut().zip(self.0.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(bytes);
            *word = u64::from_le_bytes(le);
        }
        words
    }
}

impl PartialEq for SecretDigest {
    /// Every word is compared, and only the folded difference goes through
    /// `subtle`, so the time taken does not depend on where two digests
    /// differ (`subtle` on the bytes takes one opaque step per byte).
    fn eq(&self, other: &SecretDigest) -> bool {
        let difference = self
            .words()
            .iter()
            .zip(other.words())
            .fold(0, |difference, (a, b)| difference | (a ^ b));
        difference.ct_eq(&0).into()
    }
}

impl std::hash::Hash for SecretDigest {
    /// All 32 bytes, as two `u128`s: a digest made from a secret is
    /// uniformly random, but one in an edited log or a crafted import is
    /// whatever its author chose, and a hash of fewer bytes lets them make
    /// any number of digests that collide under every key.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c, d] = self.words();
        state.write_u128(u128::from(a) | (u128::from(b) << 64));
        state.write_u128(u128::from(c) | (u128::from(d) << 64));
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretDigest(")?;
        for byte in self.0.iter().take(4) {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_secret_has_its_prefix_and_length() {
        let secret = Secret::from_random([0xab; 32]);
        assert_eq!(secret.expose().len(), SECRET_LEN);
        assert!(secret.expose().starts_with("tlk_"));
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn a_secret_is_wiped_when_dropped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
    }

    #[test]
    fn secrets_are_equal_exactly_when_their_text_is() {
        let secret = Secret::from_random([0xab; 32]);
        assert_eq!(secret, Secret::parse(secret.expose()).unwrap());
        assert_eq!(secret, secret.clone());
        assert_ne!(secret, Secret::from_random([0xac; 32]));
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let secret = Secret::from_random([0x5a; 32]);
        let text = secret.expose();
        for index in SECRET_PREFIX.len()..text.len() {
            for &replacement in ALPHABET {
                let mut bytes = text.as_bytes().to_vec();
                if bytes[index] == replacement {
                    continue;
                }
                bytes[index] = replacement;
                let typo = String::from_utf8(bytes).unwrap();
                assert!(Secret::parse(&typo).is_err(), "{index}");
            }
        }
    }

    #[test]
    fn errors_name_the_first_check_that_failed() {
        let good = Secret::from_random([1; 32]).expose().to_owned();
        assert_eq!(
            Secret::parse(&"x".repeat(10_000)),
            Err(SecretError::Length { found: 10_000 })
        );
        assert_eq!(
            Secret::parse(&good.replacen("tlk_", "ghp_", 1)),
            Err(SecretError::Prefix)
        );
        let mut upper = good.clone().into_bytes();
        upper[4] = b'A';
        assert_eq!(
            Secret::parse(&String::from_utf8(upper).unwrap()),
            Err(SecretError::Alphabet)
        );
        let mut wrong_sum = good.into_bytes();
        let last = wrong_sum.len() - 2;
        wrong_sum[last] = if wrong_sum[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            Secret::parse(&String::from_utf8(wrong_sum).unwrap()),
            Err(SecretError::Checksum)
        );
    }

    proptest! {
        #[test]
        fn secrets_round_trip(random in any::<[u8; 32]>()) {
            let secret = Secret::from_random(random);
            let parsed = Secret::parse(secret.expose()).unwrap();
            prop_assert_eq!(parsed.digest(), secret.digest());
        }

        #[test]
        fn a_body_decodes_exactly_when_its_spare_bits_are_zero(
            body in "[a-z2-7]{58}",
        ) {
            let spare_bits = DECODE[usize::from(body.as_bytes()[BODY_CHARS - 1])] & 0b11;
            match decode_base32(body.as_bytes()) {
                Ok(payload) => {
                    let mut text = String::new();
                    encode_base32(&payload, &mut text);
                    prop_assert_eq!(text, body);
                }
                Err(error) => {
                    prop_assert_eq!(error, SecretError::Alphabet);
                    prop_assert_ne!(spare_bits, 0);
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = Secret::parse(&text);
        }
    }
}
