//! The token table: tokens kept in one vector, in the order they were
//! created, with the id and secret-digest indexes pointing into it.
//!
//! A token is never removed (a deleted one keeps its deletion), so a token
//! keeps its slot for the life of the table, and both copies the projection
//! keeps give it the same slot: they apply the same events in the same
//! order. That is what lets a [`TokenHandle`] skip the hash lookup by id.
//!
//! The two indexes hold nothing but slots (`hashbrown::HashTable<u32>`),
//! hashed by the id or digest of the token in the slot, and compared by
//! reading that token. A map holding the key beside the slot took 33 bytes
//! a bucket for ids (a `u128` is aligned to 16) and 37 for digests, against
//! 5 each now. Opening the scale bench's 5M-event log (1.2 M tokens, 2²¹
//! buckets) went from 1,187 to 1,087 resident bytes per live token.

use std::hash::{BuildHasher, BuildHasherDefault};

use hashbrown::HashTable;
use tokenledger_events::{SecretDigest, TokenId};

use crate::hash::RandomKeyHasher;
use crate::state::Token;

/// A token found by its secret, and where it sits in the state: deciding
/// for a handle reads the token's slot directly, where deciding for a bare
/// [`TokenId`] looks the id up first.
///
/// A handle is only a shortcut, never a credential: the slot is checked
/// against the id, and a handle whose slot does not hold its token (one
/// built from a bare id, or kept from another ledger) is looked up by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHandle {
    id: TokenId,
    slot: u32,
}

/// The slot of a handle made from a bare id: none.
const NO_SLOT: u32 = u32::MAX;

impl TokenHandle {
    /// The token.
    pub fn id(&self) -> TokenId {
        self.id
    }
}

impl From<TokenId> for TokenHandle {
    fn from(id: TokenId) -> TokenHandle {
        TokenHandle { id, slot: NO_SLOT }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    entries: Vec<(TokenId, Token)>,
    /// Slots, hashed by their token's id.
    slots: HashTable<u32>,
    /// Slots, hashed by their token's digest.
    by_digest: HashTable<u32>,
}

fn hash_id(id: &TokenId) -> u64 {
    BuildHasherDefault::<RandomKeyHasher>::default().hash_one(id)
}

fn hash_digest(digest: &SecretDigest) -> u64 {
    BuildHasherDefault::<RandomKeyHasher>::default().hash_one(digest)
}

/// The entry at `slot`.
fn entry(entries: &[(TokenId, Token)], slot: u32) -> Option<&(TokenId, Token)> {
    entries.get(usize::try_from(slot).ok()?)
}

/// The hash of the entry at `slot` for the index `hash` builds, for
/// when a table grows. Every slot in a table holds an entry.
fn rehash(
    entries: &[(TokenId, Token)],
    hash: impl Fn(&(TokenId, Token)) -> u64,
) -> impl Fn(&u32) -> u64 {
    move |slot| entry(entries, *slot).map_or(0, &hash)
}

/// The two indexes of a table, built from the keys of its tokens alone,
/// so that a checkpoint's load can build them while another thread builds
/// the tokens.
pub(crate) struct Indexes {
    len: usize,
    slots: HashTable<u32>,
    by_digest: HashTable<u32>,
}

impl Indexes {
    /// Indexes `len` tokens, the one in slot `i` having the id and digest
    /// `key(i)`; `None` if two share an id or a digest, or there are more
    /// than a slot can number.
    ///
    /// INVARIANT (digest-unique): a table with a repeated digest is refused
    /// whole, as a checkpoint that holds one cannot be trusted.
    pub(crate) fn build(
        len: usize,
        key: impl Fn(usize) -> (TokenId, SecretDigest),
    ) -> Option<Indexes> {
        // Slots run below `len`, so none is `NO_SLOT` once `len` fits.
        u32::try_from(len).ok()?;
        let key = |slot: u32| key(usize::try_from(slot).unwrap_or(usize::MAX));
        let mut slots = HashTable::with_capacity(len);
        let mut by_digest = HashTable::with_capacity(len);
        for slot in (0u32..).take(len) {
            let (id, digest) = key(slot);
            let id_hash = hash_id(&id);
            let digest_hash = hash_digest(&digest);
            if slots.find(id_hash, |held| key(*held).0 == id).is_some()
                || by_digest
                    .find(digest_hash, |held| key(*held).1 == digest)
                    .is_some()
            {
                return None;
            }
            slots.insert_unique(id_hash, slot, |held| hash_id(&key(*held).0));
            by_digest.insert_unique(digest_hash, slot, |held| hash_digest(&key(*held).1));
        }
        Some(Indexes {
            len,
            slots,
            by_digest,
        })
    }
}

impl Tokens {
    /// The table of `entries` with `indexes` built from the same keys:
    /// `None` unless slot `i` of both holds the same id and digest.
    pub(crate) fn assemble(
        entries: Vec<(TokenId, Token)>,
        indexes: Indexes,
        key: impl Fn(usize) -> (TokenId, SecretDigest),
    ) -> Option<Tokens> {
        let matches = entries.len() == indexes.len
            && entries
                .iter()
                .enumerate()
                .all(|(slot, (id, token))| key(slot) == (*id, token.digest));
        matches.then_some(Tokens {
            entries,
            slots: indexes.slots,
            by_digest: indexes.by_digest,
        })
    }

    fn slot_of(&self, id: TokenId) -> Option<u32> {
        self.slots
            .find(hash_id(&id), |slot| {
                entry(&self.entries, *slot).is_some_and(|(held, _)| *held == id)
            })
            .copied()
    }

    fn slot_by_digest(&self, digest: &SecretDigest) -> Option<u32> {
        self.by_digest
            .find(hash_digest(digest), |slot| {
                entry(&self.entries, *slot).is_some_and(|(_, token)| token.digest == *digest)
            })
            .copied()
    }

    /// Adds `token` unless its id or its digest is taken.
    ///
    /// INVARIANT (digest-unique): a digest maps to one token, the first
    /// that claimed it; a second claim is not trusted. Returns whether the
    /// token was added.
    pub(crate) fn insert(&mut self, id: TokenId, token: Token) -> bool {
        // A table of four billion tokens is far beyond what a process can
        // hold; refusing the token is what `apply` does with anything it
        // cannot trust.
        let Ok(slot) = u32::try_from(self.entries.len()) else {
            return false;
        };
        if slot == NO_SLOT
            || self.slot_of(id).is_some()
            || self.slot_by_digest(&token.digest).is_some()
        {
            return false;
        }
        let (id_hash, digest_hash) = (hash_id(&id), hash_digest(&token.digest));
        self.entries.push((id, token));
        let Tokens {
            entries,
            slots,
            by_digest,
        } = self;
        slots.insert_unique(id_hash, slot, rehash(entries, |(id, _)| hash_id(id)));
        by_digest.insert_unique(
            digest_hash,
            slot,
            rehash(entries, |(_, token)| hash_digest(&token.digest)),
        );
        true
    }

    pub(crate) fn get(&self, id: TokenId) -> Option<&Token> {
        let slot = self.slot_of(id)?;
        self.at(slot, id)
    }

    /// The token, to record a reveal or a deletion. Its digest must not
    /// change: the digest index is hashed by it.
    pub(crate) fn get_mut(&mut self, id: TokenId) -> Option<&mut Token> {
        let slot = usize::try_from(self.slot_of(id)?).ok()?;
        self.entries.get_mut(slot).map(|(_, token)| token)
    }

    /// The token behind `handle`: at its slot if the slot holds it, else
    /// by its id.
    pub(crate) fn by_handle(&self, handle: TokenHandle) -> Option<&Token> {
        self.at(handle.slot, handle.id)
            .or_else(|| self.get(handle.id))
    }

    pub(crate) fn handle_by_digest(&self, digest: &SecretDigest) -> Option<TokenHandle> {
        let slot = self.slot_by_digest(digest)?;
        let (id, _) = entry(&self.entries, slot)?;
        Some(TokenHandle { id: *id, slot })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (TokenId, &Token)> {
        self.entries.iter().map(|(id, token)| (*id, token))
    }

    fn at(&self, slot: u32, id: TokenId) -> Option<&Token> {
        let (held, token) = entry(&self.entries, slot)?;
        (*held == id).then_some(token)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::State;
    use tokenledger_events::{
        Actor, CompanyId, Envelope, Event, EventId, Grants, Name, Namespaces, Secret, Timestamp,
        TokenKind, TokenScope,
    };

    /// The event that creates `token` with `secret`, at `position`.
    pub(crate) fn created(position: u64, token: TokenId, secret: &Secret) -> Envelope {
        Envelope {
            position,
            event_id: EventId::from_u128(u128::from(position)),
            recorded_at: Timestamp::from_micros(position),
            actor: Actor::System,
            company: CompanyId::from_u128(1),
            event: Event::TokenCreated {
                token,
                name: Name::new("Zapier").unwrap(),
                kind: TokenKind::ApiToken,
                scope: TokenScope {
                    features: Default::default(),
                    namespaces: Namespaces::none(),
                    grants: Grants::default(),
                },
                secret_digest: secret.digest(),
                sealed_secret: None,
                expires_at: None,
            },
        }
    }

    fn state_with(tokens: &[(TokenId, &Secret)]) -> State {
        let mut state = State::new();
        for (position, (token, secret)) in (1..).zip(tokens) {
            state.apply(&created(position, *token, secret));
        }
        state
    }

    #[test]
    fn a_handle_finds_its_token_and_a_stale_slot_falls_back_to_the_id() {
        let (a, b) = (TokenId::from_u128(10), TokenId::from_u128(20));
        let (sa, sb) = (Secret::from_random([1; 32]), Secret::from_random([2; 32]));
        let one = state_with(&[(a, &sa), (b, &sb)]);
        let other = state_with(&[(b, &sb), (a, &sa)]);

        let handle = one.token_by_digest(&sa.digest()).unwrap();
        assert_eq!(handle.id(), a);
        assert_eq!(one.token_by_handle(handle), one.token(a));
        // In `other`, the handle's slot holds b: the slot is not trusted.
        assert_eq!(other.token_by_handle(handle).unwrap().digest, sa.digest());
        assert_eq!(one.token_by_handle(TokenHandle::from(b)), one.token(b));
        let unknown = TokenHandle::from(TokenId::from_u128(30));
        assert!(one.token_by_handle(unknown).is_none());
    }

    #[test]
    fn a_second_claim_on_an_id_or_a_digest_is_refused() {
        let (a, b) = (TokenId::from_u128(10), TokenId::from_u128(20));
        let (sa, sb) = (Secret::from_random([1; 32]), Secret::from_random([2; 32]));
        let state = state_with(&[(a, &sa), (a, &sb), (b, &sa)]);
        assert_eq!(state.token(a).unwrap().digest, sa.digest());
        assert!(state.token(b).is_none());
        assert!(state.token_by_digest(&sb.digest()).is_none());
        assert_eq!(state.tokens_of(CompanyId::from_u128(1)).count(), 1);
    }

    #[test]
    fn indexes_built_apart_refuse_a_repeated_id_or_digest_and_keys_that_differ() {
        let (a, b) = (TokenId::from_u128(10), TokenId::from_u128(20));
        let (sa, sb) = (Secret::from_random([1; 32]), Secret::from_random([2; 32]));
        let keys = |list: Vec<(TokenId, SecretDigest)>| move |slot: usize| list[slot];
        let both = vec![(a, sa.digest()), (b, sb.digest())];
        assert!(Indexes::build(2, keys(vec![(a, sa.digest()), (a, sb.digest())])).is_none());
        assert!(Indexes::build(2, keys(vec![(a, sa.digest()), (b, sa.digest())])).is_none());

        let built = state_with(&[(a, &sa), (b, &sb)]).tokens;
        let indexes = Indexes::build(2, keys(both.clone())).unwrap();
        let tokens = Tokens::assemble(built.entries.clone(), indexes, keys(both.clone())).unwrap();
        assert_eq!(tokens.handle_by_digest(&sb.digest()).unwrap().id(), b);
        assert!(tokens.get(a).is_some_and(|t| t.digest == sa.digest()));

        let swapped = vec![(b, sb.digest()), (a, sa.digest())];
        let indexes = Indexes::build(2, keys(swapped.clone())).unwrap();
        assert!(Tokens::assemble(built.entries, indexes, keys(swapped)).is_none());
    }
}
