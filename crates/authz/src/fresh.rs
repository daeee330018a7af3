//! New ids and secrets, from the operating system's random source.
//!
//! The only I/O of this crate, kept apart so that `decide` and the decision
//! stay pure: callers draw what a command needs here, then pass it in.

use std::fmt;

use tokenledger_events::{CompanyId, EventId, Secret, TeammateId, TokenId, WorkspaceId};

/// The OS random source failed. Nothing can be created safely without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomError(String);

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the operating system's random source failed: {}", self.0)
    }
}

impl std::error::Error for RandomError {}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(bytes)
}

fn random_u128() -> Result<u128, RandomError> {
    random_bytes().map(u128::from_be_bytes)
}

/// A new, random company id.
pub fn company_id() -> Result<CompanyId, RandomError> {
    random_u128().map(CompanyId::from_u128)
}

/// A new, random teammate id.
pub fn teammate_id() -> Result<TeammateId, RandomError> {
    random_u128().map(TeammateId::from_u128)
}

/// A new, random workspace id.
pub fn workspace_id() -> Result<WorkspaceId, RandomError> {
    random_u128().map(WorkspaceId::from_u128)
}

/// A new, random token id.
pub fn token_id() -> Result<TokenId, RandomError> {
    random_u128().map(TokenId::from_u128)
}

/// A new, random event id.
pub fn event_id() -> Result<EventId, RandomError> {
    random_u128().map(EventId::from_u128)
}

/// A new secret carrying 256 random bits.
pub fn secret() -> Result<Secret, RandomError> {
    let mut random = random_bytes()?;
    let secret = Secret::from_random(random);
    zeroize::Zeroize::zeroize(&mut random);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_not_sequential() {
        let a = token_id().unwrap().as_u128();
        let b = token_id().unwrap().as_u128();
        assert_ne!(a, b);
        assert_ne!(a.abs_diff(b), 1);
    }

    #[test]
    fn secrets_are_well_formed() {
        let s = secret().unwrap();
        assert!(Secret::parse(s.expose()).is_ok());
        assert_ne!(s.expose(), secret().unwrap().expose());
    }
}
