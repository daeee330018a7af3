//! Events: every change tokenledger records, in the past tense.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::id::{CompanyId, EventId, IdError, TeammateId, TokenId, WorkspaceId, quote_input};
use crate::name::Name;
use crate::secret::SecretDigest;
use crate::token::{TokenKind, TokenScope};

/// A moment, in microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(u64);

/// Why a string is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError {
    found: String,
    /// The year has more than four digits: RFC 3339 cannot write it.
    beyond_year_9999: bool,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an RFC 3339 time in UTC, such as `2026-11-22T17:00:00Z`",
            self.found
        )?;
        if self.beyond_year_9999 {
            write!(f, "; the latest time taken is {}", Timestamp::MAX_RFC3339)?;
        }
        Ok(())
    }
}

impl std::error::Error for TimestampError {}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The last moment RFC 3339 can write, 9999-12-31T23:59:59.999999Z:
    /// the latest time parsed, and the latest expiry a token may be given.
    /// Later times (only a crafted record holds one) print with a wider
    /// year (see [`Timestamp`]'s `Display`).
    pub const MAX_RFC3339: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The moment `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Converts a system time, saturating before the epoch and after year 586 524.
    pub fn from_system_time(time: SystemTime) -> Timestamp {
        let micros = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Timestamp(micros)
    }

    /// The same moment as a system time.
    pub fn to_system_time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.0)
    }
}

/// A moment broken into its calendar fields (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    micros: u64,
}

const MICROS_PER_DAY: u64 = 86_400_000_000;

/// The calendar fields of `micros` after the epoch, for every `u64`: the
/// days-to-civil algorithm of Howard Hinnant's `chrono`-compatible date
/// algorithms, in unsigned arithmetic (days after the epoch are never
/// negative, and 213 million days leave every step far from overflow).
fn civil(micros: u64) -> Civil {
    let (days, of_day) = (micros / MICROS_PER_DAY, micros % MICROS_PER_DAY);
    // Days since 0000-03-01, so that a leap day ends its year.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let seconds = of_day / 1_000_000;
    Civil {
        year,
        month,
        day,
        hour: seconds / 3_600,
        minute: seconds / 60 % 60,
        second: seconds % 60,
        micros: of_day % 1_000_000,
    }
}

/// RFC 3339 with microseconds, `2022-11-21T03:06:40.123456Z`, up to
/// [`Timestamp::MAX_RFC3339`]. A later time, which only a crafted record
/// can hold, prints in ISO 8601's expanded form with a sign and as many
/// year digits as it needs (`+584554-10-05T…Z` for `u64::MAX`
/// microseconds), so printing never fails.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self <= Timestamp::MAX_RFC3339 {
            return write!(
                f,
                "{}",
                humantime::format_rfc3339_micros(self.to_system_time())
            );
        }
        let Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } = civil(self.0);
        write!(
            f,
            "+{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(input: &str) -> Result<Timestamp, TimestampError> {
        humantime::parse_rfc3339(input)
            .map(Timestamp::from_system_time)
            .map_err(|_| TimestampError {
                found: quote_input(input),
                beyond_year_9999: input
                    .trim_start_matches('+')
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count()
                    > 4,
            })
    }
}

/// A teammate's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// May manage tokens, teammates and workspaces.
    Admin,
    /// May manage their own preferences only.
    Member,
}

impl Role {
    /// The role's name (`admin`, `member`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// tokenledger itself or the operator bootstrapping a company.
    System,
    /// A teammate.
    Teammate(TeammateId),
    /// An API token.
    Token(TokenId),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::Teammate(id) => fmt::Display::fmt(id, f),
            Actor::Token(id) => fmt::Display::fmt(id, f),
        }
    }
}

impl FromStr for Actor {
    type Err = IdError;

    /// Parses `system`, a `tea_…` id or a `tok_…` id.
    fn from_str(input: &str) -> Result<Actor, IdError> {
        if input == "system" {
            Ok(Actor::System)
        } else if input.starts_with(TokenId::PREFIX) {
            input.parse().map(Actor::Token)
        } else {
            input.parse().map(Actor::Teammate)
        }
    }
}

/// A token secret encrypted under a key the embedding service holds, so it
/// can be revealed again; the log never holds the plain secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SealedSecret(Vec<u8>);

// Encoded as bytes: the codec writes them as it writes a `Vec<u8>`, a
// length and the bytes (the golden files pin them), but reads them in one
// copy rather than through serde's visitor a byte at a time, which was
// 2.7% of the samples of replaying the scale bench's 1M-event log.
impl Serialize for SealedSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SealedSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = SealedSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a sealed secret")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<SealedSecret, E> {
                SealedSecret::try_from(bytes.to_vec()).map_err(E::custom)
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// Why bytes are not a sealed secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecretError {
    len: usize,
}

impl fmt::Display for SealedSecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a sealed secret is at most {} bytes, this one has {}",
            SealedSecret::MAX_BYTES,
            self.len
        )
    }
}

impl std::error::Error for SealedSecretError {}

impl SealedSecret {
    /// The largest sealed secret accepted, in bytes (nonce, ciphertext, tag and room to spare).
    pub const MAX_BYTES: usize = 256;

    /// The sealed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for SealedSecret {
    type Error = SealedSecretError;

    fn try_from(bytes: Vec<u8>) -> Result<SealedSecret, SealedSecretError> {
        if bytes.len() > SealedSecret::MAX_BYTES {
            Err(SealedSecretError { len: bytes.len() })
        } else {
            Ok(SealedSecret(bytes))
        }
    }
}

impl From<SealedSecret> for Vec<u8> {
    fn from(sealed: SealedSecret) -> Vec<u8> {
        sealed.0
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len())
    }
}

/// Everything that can happen, in the past tense.
///
/// The company an event belongs to is in its [`Envelope`], not repeated here.
/// Each variant has a schema version ([`Event::schema_version`]) that the
/// codec writes beside it; changing a variant's fields means a new version
/// and a migration, and the golden-bytes tests fail until both exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A company (tenant) came into being.
    CompanyCreated {
        /// Its id.
        company: CompanyId,
        /// Its name.
        name: Name,
    },
    /// A teammate joined the company.
    TeammateAdded {
        /// Their id.
        teammate: TeammateId,
        /// Their name.
        name: Name,
        /// Their role.
        role: Role,
    },
    /// A teammate's role changed.
    TeammateRoleChanged {
        /// The teammate.
        teammate: TeammateId,
        /// The new role.
        role: Role,
    },
    /// A teammate was deactivated; they can no longer act.
    TeammateDeactivated {
        /// The teammate.
        teammate: TeammateId,
    },
    /// A workspace was created.
    WorkspaceCreated {
        /// Its id.
        workspace: WorkspaceId,
        /// Its name.
        name: Name,
    },
    /// A workspace was deleted; its resources are no longer reachable.
    WorkspaceDeleted {
        /// The workspace.
        workspace: WorkspaceId,
    },
    /// An admin created a token.
    TokenCreated {
        /// Its public id.
        token: TokenId,
        /// Its descriptive name.
        name: Name,
        /// API token or OAuth grant.
        kind: TokenKind,
        /// What it may do, fixed for its lifetime.
        scope: TokenScope,
        /// The digest of its secret.
        secret_digest: SecretDigest,
        /// The secret sealed under the service's key, when it has one.
        sealed_secret: Option<SealedSecret>,
        /// When it stops working, if ever.
        expires_at: Option<Timestamp>,
    },
    /// An admin was shown a token's secret again.
    TokenRevealed {
        /// The token.
        token: TokenId,
    },
    /// A token was deleted, immediately and for good.
    TokenDeleted {
        /// The token.
        token: TokenId,
    },
    /// A teammate's *Allow access to my individual resources via the API* changed.
    PrivateApiAccessChanged {
        /// The teammate whose preference it is.
        teammate: TeammateId,
        /// Whether tokens may now reach their private resources.
        allowed: bool,
    },
    /// An admin set every current teammate's preference at once.
    PrivateApiAccessSetForAll {
        /// Whether tokens may now reach each teammate's private resources.
        allowed: bool,
    },
}

impl Event {
    /// The event's type, as investigators read it (`TokenCreated`).
    pub const fn type_name(&self) -> &'static str {
        match self {
            Event::CompanyCreated { .. } => "CompanyCreated",
            Event::TeammateAdded { .. } => "TeammateAdded",
            Event::TeammateRoleChanged { .. } => "TeammateRoleChanged",
            Event::TeammateDeactivated { .. } => "TeammateDeactivated",
            Event::WorkspaceCreated { .. } => "WorkspaceCreated",
            Event::WorkspaceDeleted { .. } => "WorkspaceDeleted",
            Event::TokenCreated { .. } => "TokenCreated",
            Event::TokenRevealed { .. } => "TokenRevealed",
            Event::TokenDeleted { .. } => "TokenDeleted",
            Event::PrivateApiAccessChanged { .. } => "PrivateApiAccessChanged",
            Event::PrivateApiAccessSetForAll { .. } => "PrivateApiAccessSetForAll",
        }
    }

    /// The schema version of this event's fields.
    pub const fn schema_version(&self) -> u16 {
        match self {
            Event::CompanyCreated { .. }
            | Event::TeammateAdded { .. }
            | Event::TeammateRoleChanged { .. }
            | Event::TeammateDeactivated { .. }
            | Event::WorkspaceCreated { .. }
            | Event::WorkspaceDeleted { .. }
            | Event::TokenCreated { .. }
            | Event::TokenRevealed { .. }
            | Event::TokenDeleted { .. }
            | Event::PrivateApiAccessChanged { .. }
            | Event::PrivateApiAccessSetForAll { .. } => 1,
        }
    }

    /// The token the event is about, if any.
    pub const fn token(&self) -> Option<TokenId> {
        match self {
            Event::TokenCreated { token, .. }
            | Event::TokenRevealed { token }
            | Event::TokenDeleted { token } => Some(*token),
            _ => None,
        }
    }

    /// The teammate the event is about, if any.
    pub const fn teammate(&self) -> Option<TeammateId> {
        match self {
            Event::TeammateAdded { teammate, .. }
            | Event::TeammateRoleChanged { teammate, .. }
            | Event::TeammateDeactivated { teammate }
            | Event::PrivateApiAccessChanged { teammate, .. } => Some(*teammate),
            _ => None,
        }
    }
}

/// An event as it stands in the log: where, when, by whom, for which company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Its position in the log, contiguous from 1.
    pub position: u64,
    /// Its id, so that a retried append is recognised.
    pub event_id: EventId,
    /// When it was recorded; never earlier than the event before it.
    pub recorded_at: Timestamp,
    /// Who caused it.
    pub actor: Actor,
    /// The company it belongs to.
    pub company: CompanyId,
    /// What happened.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_and_parse_as_rfc3339() {
        let t = Timestamp::from_micros(1_669_000_000_123_456);
        assert_eq!(t.to_string(), "2022-11-21T03:06:40.123456Z");
        assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn times_after_year_9999_print_with_a_wider_year() {
        assert_eq!(
            Timestamp::MAX_RFC3339.to_string(),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Timestamp::MAX_RFC3339.to_string().parse(),
            Ok(Timestamp::MAX_RFC3339)
        );
        let next = Timestamp::from_micros(Timestamp::MAX_RFC3339.as_micros() + 1);
        assert_eq!(next.to_string(), "+10000-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp::from_micros(u64::MAX).to_string(),
            "+586524-01-19T08:01:49.551615Z"
        );
        assert_eq!(
            format!("{:?}", Timestamp::from_micros(u64::MAX)),
            "+586524-01-19T08:01:49.551615Z"
        );
        let error = "10000-01-01T00:00:00Z".parse::<Timestamp>().unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("the latest time taken is 9999-12-31T23:59:59.999999Z"),
            "{error}"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_calendar_agrees_with_rfc3339_up_to_year_9999(
            micros in 0..=Timestamp::MAX_RFC3339.as_micros(),
        ) {
            let Civil { year, month, day, hour, minute, second, micros: fraction } = civil(micros);
            proptest::prop_assert_eq!(
                format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:06}Z"),
                Timestamp::from_micros(micros).to_string()
            );
        }

        #[test]
        fn every_time_prints(micros in proptest::prelude::any::<u64>()) {
            let _ = Timestamp::from_micros(micros).to_string();
        }
    }

    #[test]
    fn actors_parse_from_the_command_line_forms() {
        assert_eq!("system".parse::<Actor>(), Ok(Actor::System));
        let tea = TeammateId::from_u128(1);
        assert_eq!(tea.to_string().parse::<Actor>(), Ok(Actor::Teammate(tea)));
        assert!(
            "tim_00000000000000000000000000000001"
                .parse::<Actor>()
                .is_err()
        );
    }

    #[test]
    fn sealed_secrets_are_bounded() {
        assert!(SealedSecret::try_from(vec![0; 256]).is_ok());
        assert!(SealedSecret::try_from(vec![0; 257]).is_err());
    }

    #[test]
    fn a_sealed_secret_encodes_as_a_vec_of_bytes_and_decodes_only_within_its_bound() {
        let config = bincode::config::standard()
            .with_big_endian()
            .with_fixed_int_encoding();
        let encode = |bytes: &Vec<u8>| bincode::serde::encode_to_vec(bytes, config).unwrap();
        let decode = |bytes: &[u8]| {
            bincode::serde::decode_from_slice::<SealedSecret, _>(bytes, config).map(|(s, _)| s)
        };
        let largest = vec![7; SealedSecret::MAX_BYTES];
        let sealed = SealedSecret::try_from(largest.clone()).unwrap();
        assert_eq!(
            bincode::serde::encode_to_vec(&sealed, config).unwrap(),
            encode(&largest)
        );
        assert_eq!(decode(&encode(&largest)).unwrap(), sealed);
        let error = decode(&encode(&vec![7; SealedSecret::MAX_BYTES + 1])).unwrap_err();
        assert!(
            error.to_string().contains("a sealed secret is at most"),
            "{error}"
        );
    }
}
