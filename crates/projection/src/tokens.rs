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
//!
//! A token is kept in 112 bytes and no heap block of its own, where it
//! took 192 and two (its name and its list of workspaces): what many
//! tokens share (their company, name, creator and list) is kept once in a
//! pool and named by its index, a deletion, which few tokens have, sits in
//! a list of its own, and what a decision reads sits in one cache line (a
//! `Row`) apart from the rest (an `Origin`). Readers get a [`Token`], a
//! view that resolves the indexes. Opening the 5M-event log from its
//! checkpoint went from 404 and 404 resident bytes per live token to 260
//! and 262, with this table and the checkpoint that keeps it as it is
//! (two runs of each, alternating).

use std::borrow::Borrow;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, RandomState};

use hashbrown::HashTable;
use tokenledger_events::{
    Actor, CompanyId, Feature, Grants, Name, Namespaces, SecretDigest, SharedNamespace, Timestamp,
    TokenId, TokenKind, TokenScope, WorkspaceId,
};

use crate::hash::RandomKeyHasher;
use crate::state::Provenance;

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

/// A token's scope in the form a decision reads: a handful of loads and
/// bit tests, and no pointer to chase unless the token names workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledScope<'a> {
    features: u8,
    grants: Grants,
    global: bool,
    private: bool,
    shared: Shared,
    /// The workspaces of [`Shared::Listed`], sorted for a binary search;
    /// empty otherwise.
    workspaces: &'a [WorkspaceId],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    None,
    All,
    Listed,
}

impl<'a> CompiledScope<'a> {
    /// Whether the token has `feature`.
    #[inline]
    pub fn has_feature(&self, feature: Feature) -> bool {
        self.features & feature_bit(feature) != 0
    }

    /// The token's permissions.
    #[inline]
    pub fn grants(&self) -> Grants {
        self.grants
    }

    /// Whether the token reaches company-level resources.
    #[inline]
    pub fn global(&self) -> bool {
        self.global
    }

    /// Whether the token reaches teammates' private resources (each owner
    /// must also allow it).
    #[inline]
    pub fn private(&self) -> bool {
        self.private
    }

    /// The scope as it was chosen: compiling loses nothing.
    pub fn scope(&self) -> TokenScope {
        TokenScope {
            features: Feature::ALL
                .iter()
                .copied()
                .filter(|feature| self.has_feature(*feature))
                .collect(),
            namespaces: Namespaces {
                global: self.global,
                shared: match self.shared {
                    Shared::None => SharedNamespace::None,
                    Shared::All => SharedNamespace::All,
                    Shared::Listed => {
                        SharedNamespace::Workspaces(self.workspaces.iter().copied().collect())
                    }
                },
                private: self.private,
            },
            grants: self.grants,
        }
    }

    /// Whether the token reaches the resources of `workspace`.
    #[inline]
    pub fn covers_workspace(&self, workspace: WorkspaceId) -> bool {
        match self.shared {
            Shared::None => false,
            Shared::All => true,
            Shared::Listed => self.workspaces.binary_search(&workspace).is_ok(),
        }
    }
}

const fn feature_bit(feature: Feature) -> u8 {
    1 << (feature as u8)
}

/// A token: what decisions, commands and listings read. A view of the
/// table's row, with what the row names by index looked up.
///
/// Its reveals are not kept: no decision or command reads them, and a
/// million tokens would carry them in memory for the rare investigation
/// that asks. They are read from the token's events in the log.
#[derive(Clone, Copy)]
pub struct Token<'a> {
    row: &'a Row,
    origin: &'a Origin,
    company: CompanyId,
    name: &'a Name,
    created_by: &'a Actor,
    workspaces: &'a [WorkspaceId],
    deleted: Option<&'a Provenance>,
}

// The accessors are `#[inline]`: a decision in authz calls several of them,
// and where a field was read in place each would be a call across crates.
impl<'a> Token<'a> {
    /// Its id.
    #[inline]
    pub fn id(&self) -> TokenId {
        self.row.id
    }

    /// Its company.
    #[inline]
    pub fn company(&self) -> CompanyId {
        self.company
    }

    /// Its descriptive name.
    #[inline]
    pub fn name(&self) -> &'a Name {
        self.name
    }

    /// API token or OAuth grant.
    #[inline]
    pub fn kind(&self) -> TokenKind {
        if self.row.flags & OAUTH == 0 {
            TokenKind::ApiToken
        } else {
            TokenKind::OAuthGrant
        }
    }

    /// What it may do, compiled for decisions.
    #[inline]
    pub fn compiled(&self) -> CompiledScope<'a> {
        let flags = self.row.flags;
        CompiledScope {
            features: self.row.features,
            grants: self.row.grants,
            global: flags & GLOBAL != 0,
            private: flags & PRIVATE != 0,
            shared: if flags & SHARED_LISTED != 0 {
                Shared::Listed
            } else if flags & SHARED_ALL != 0 {
                Shared::All
            } else {
                Shared::None
            },
            workspaces: self.workspaces,
        }
    }

    /// What it may do, as it was chosen.
    #[inline]
    pub fn scope(&self) -> TokenScope {
        self.compiled().scope()
    }

    /// The digest of its secret.
    #[inline]
    pub fn digest(&self) -> SecretDigest {
        self.origin.digest
    }

    /// When it stops working, if ever.
    #[inline]
    pub fn expires_at(&self) -> Option<Timestamp> {
        (self.row.flags & EXPIRES != 0).then_some(self.row.expires_at)
    }

    /// The token's expiry, if it has passed at `now`.
    #[inline]
    pub fn expired_by(&self, now: Timestamp) -> Option<Timestamp> {
        self.expires_at().filter(|expiry| now >= *expiry)
    }

    /// Whether its creation recorded a sealed secret, which the log keeps.
    #[inline]
    pub fn sealed(&self) -> bool {
        self.row.flags & SEALED != 0
    }

    /// When and by whom it was created.
    #[inline]
    pub fn created(&self) -> Provenance {
        Provenance {
            position: self.origin.created_position,
            at: self.origin.created_at,
            actor: *self.created_by,
        }
    }

    /// When and by whom it was deleted, if it was.
    #[inline]
    pub fn deleted(&self) -> Option<Provenance> {
        self.deleted.copied()
    }
}

impl PartialEq for Token<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
            && self.company == other.company
            && self.name == other.name
            && self.kind() == other.kind()
            && self.compiled() == other.compiled()
            && self.digest() == other.digest()
            && self.expires_at() == other.expires_at()
            && self.sealed() == other.sealed()
            && self.created() == other.created()
            && self.deleted() == other.deleted()
    }
}

impl Eq for Token<'_> {}

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id())
            .field("company", &self.company)
            .field("name", self.name)
            .field("kind", &self.kind())
            .field("compiled", &self.compiled())
            .field("digest", &self.digest())
            .field("expires_at", &self.expires_at())
            .field("sealed", &self.sealed())
            .field("created", &self.created())
            .field("deleted", &self.deleted())
            .finish()
    }
}

/// A token to add to the table, as its creation event gives it.
pub(crate) struct NewToken<'a> {
    pub(crate) id: TokenId,
    pub(crate) company: CompanyId,
    /// Its name's text, a [`Name`]'s (the pool makes one of it only if it
    /// has none with that text).
    pub(crate) name: &'a str,
    pub(crate) kind: TokenKind,
    pub(crate) scope: &'a TokenScope,
    pub(crate) digest: SecretDigest,
    pub(crate) expires_at: Option<Timestamp>,
    /// Whether its creation recorded a sealed secret.
    pub(crate) sealed: bool,
    pub(crate) created: Provenance,
}

/// What a decision reads of a token, together in one cache line (the row
/// is aligned to it), apart from what only authentication and
/// explanations read. No pointer; what it names by index is in the pools.
///
/// A checkpoint keeps rows as they are, so their fields are the crate's.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub(crate) struct Row {
    pub(crate) id: TokenId,
    pub(crate) grants: Grants,
    /// 0 unless [`EXPIRES`] is set.
    pub(crate) expires_at: Timestamp,
    pub(crate) company: u32,
    pub(crate) name: u32,
    pub(crate) created_by: u32,
    /// 0 unless [`SHARED_LISTED`] is set.
    pub(crate) workspaces: u32,
    /// One more than its index in the deletions; 0 while it is live.
    pub(crate) deleted: u32,
    /// `feature_bit`s.
    pub(crate) features: u8,
    pub(crate) flags: u8,
}

/// The rest of a token, read to authenticate it (the digest) and to
/// explain a refusal (when it was created), in a vector of its own beside
/// the rows.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) digest: SecretDigest,
    pub(crate) created_position: u64,
    pub(crate) created_at: Timestamp,
}

const OAUTH: u8 = 1;
const GLOBAL: u8 = 1 << 1;
const PRIVATE: u8 = 1 << 2;
const SHARED_ALL: u8 = 1 << 3;
const SHARED_LISTED: u8 = 1 << 4;
const EXPIRES: u8 = 1 << 5;
/// Its creation recorded a sealed secret. No decision reads it: opening
/// reads it to find the newest sealed secret, which the sealing keys must
/// open.
const SEALED: u8 = 1 << 6;
const FLAGS: u8 = OAUTH | GLOBAL | PRIVATE | SHARED_ALL | SHARED_LISTED | EXPIRES | SEALED;
const FEATURES: u8 = feature_bit(Feature::Resources)
    | feature_bit(Feature::Provisioning)
    | feature_bit(Feature::AppTriggers);

// The sizes the module's docs and the memory figures rely on.
const _: () = assert!(std::mem::size_of::<Row>() == 64);
const _: () = assert!(std::mem::size_of::<Origin>() == 48);

/// The value at `index`.
fn at<T>(values: &[T], index: u32) -> Option<&T> {
    values.get(usize::try_from(index).ok()?)
}

/// Values kept once and named by their index.
#[derive(Debug, Clone)]
struct Pool<T, S> {
    values: Vec<T>,
    index: HashTable<u32>,
    hasher: S,
}

impl<T, S: Default> Default for Pool<T, S> {
    fn default() -> Self {
        Pool {
            values: Vec::new(),
            index: HashTable::new(),
            hasher: S::default(),
        }
    }
}

/// The hasher for ids and digests, keyed per process (see
/// [`RandomKeyHasher`]).
type ById = BuildHasherDefault<RandomKeyHasher>;

impl<T: Hash + Eq + Clone, S: BuildHasher> Pool<T, S> {
    fn find<Q: Hash + Eq + ?Sized>(&self, value: &Q) -> Option<u32>
    where
        T: Borrow<Q>,
    {
        let values = &self.values;
        self.index
            .find(self.hasher.hash_one(value), |held| {
                at(values, *held).is_some_and(|held| held.borrow() == value)
            })
            .copied()
    }

    /// The index of `value`, added if it is new; `None` if the pool already
    /// numbers four billion values.
    fn intern(&mut self, value: &T) -> Option<u32> {
        match self.find(value) {
            Some(found) => Some(found),
            None => self.add(value.clone()),
        }
    }

    /// As [`Pool::intern`], keeping `value` itself if it is new.
    fn intern_owned(&mut self, value: T) -> Option<u32> {
        match self.find(&value) {
            Some(found) => Some(found),
            None => self.add(value),
        }
    }

    /// Adds `value`, which the pool lacks, at the next index.
    fn add(&mut self, value: T) -> Option<u32> {
        let index = u32::try_from(self.values.len()).ok()?;
        let hash = self.hasher.hash_one(&value);
        self.values.push(value);
        let Pool {
            values,
            index: table,
            hasher,
        } = self;
        table.insert_unique(hash, index, |held| {
            at(values, *held).map_or(0, |v| hasher.hash_one(v))
        });
        Some(index)
    }

    /// The index of what `make` makes of `value`, found by `value` alone
    /// when it is in the pool already, so that nothing is made: most new
    /// tokens share a name and a list with an older one. `None` if `make`
    /// refuses `value`, or the pool is full.
    fn intern_by<Q: Hash + Eq + ?Sized>(
        &mut self,
        value: &Q,
        make: impl FnOnce(&Q) -> Option<T>,
    ) -> Option<u32>
    where
        T: Borrow<Q>,
    {
        match self.find(value) {
            Some(found) => Some(found),
            // Made and then looked for again: what is made need not be
            // `value` (a name is trimmed).
            None => self.intern(&make(value)?),
        }
    }

    fn get(&self, index: u32) -> Option<&T> {
        at(&self.values, index)
    }

    /// The pool of `values`, each at its index; `None` if one repeats, as
    /// interning would never have made it.
    fn of(values: Vec<T>) -> Option<Pool<T, S>>
    where
        S: Default,
    {
        let mut pool = Pool::default();
        for value in values {
            if pool.find(&value).is_some() {
                return None;
            }
            pool.add(value)?;
        }
        Some(pool)
    }
}

/// The pools of a table, each value at its index, as a checkpoint keeps
/// them.
pub(crate) struct Pools {
    pub(crate) companies: Vec<CompanyId>,
    pub(crate) names: Vec<Name>,
    pub(crate) actors: Vec<Actor>,
    pub(crate) lists: Vec<Box<[WorkspaceId]>>,
    pub(crate) deletions: Vec<Provenance>,
}

/// Records a deletion, giving the number a row keeps for it: one more than
/// its index.
fn record_deletion(deletions: &mut Vec<Provenance>, by: Provenance) -> Option<u32> {
    let number = u32::try_from(deletions.len()).ok()?.checked_add(1)?;
    deletions.push(by);
    Some(number)
}

/// The rows and the pools they index, without the indexes by id and
/// digest: what a checkpoint's load builds while another thread builds
/// those.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    rows: Vec<Row>,
    /// Slot for slot with `rows`.
    origins: Vec<Origin>,
    companies: Pool<CompanyId, ById>,
    /// Names are chosen by callers, so they are hashed with a keyed hash
    /// that a chosen set of names cannot make collide.
    names: Pool<Name, RandomState>,
    actors: Pool<Actor, ById>,
    lists: Pool<Box<[WorkspaceId]>, ById>,
    deletions: Vec<Provenance>,
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table of no tokens yet over `pools`, with room for `tokens`;
    /// `None` if a pool repeats a value.
    pub(crate) fn over(pools: Pools, tokens: usize) -> Option<Rows> {
        Some(Rows {
            rows: Vec::with_capacity(tokens),
            origins: Vec::with_capacity(tokens),
            companies: Pool::of(pools.companies)?,
            names: Pool::of(pools.names)?,
            actors: Pool::of(pools.actors)?,
            lists: Pool::of(pools.lists)?,
            deletions: pools.deletions,
        })
    }

    /// Adds a row as a checkpoint kept it, in the next slot, without
    /// looking at the others; `false` unless everything it names is in
    /// the pools, and its flags, features and unused fields are as `row`
    /// writes them.
    pub(crate) fn push_kept(&mut self, row: Row, origin: Origin) -> bool {
        let flags = row.flags;
        let listed = flags & SHARED_LISTED != 0;
        let sound = flags & !FLAGS == 0
            && !(listed && flags & SHARED_ALL != 0)
            && row.features & !FEATURES == 0
            && (flags & EXPIRES != 0 || row.expires_at == Timestamp::default())
            && (if listed {
                self.lists.get(row.workspaces).is_some()
            } else {
                row.workspaces == 0
            })
            && self.companies.get(row.company).is_some()
            && self.names.get(row.name).is_some()
            && self.actors.get(row.created_by).is_some()
            && row
                .deleted
                .checked_sub(1)
                .is_none_or(|index| at(&self.deletions, index).is_some());
        if sound {
            self.rows.push(row);
            self.origins.push(origin);
        }
        sound
    }

    /// Every row and its origin, slot by slot.
    pub(crate) fn kept(&self) -> impl Iterator<Item = (&Row, &Origin)> {
        self.rows.iter().zip(&self.origins)
    }

    /// The pools, each value at its index.
    pub(crate) fn companies(&self) -> &[CompanyId] {
        &self.companies.values
    }

    pub(crate) fn names(&self) -> &[Name] {
        &self.names.values
    }

    pub(crate) fn actors(&self) -> &[Actor] {
        &self.actors.values
    }

    pub(crate) fn lists(&self) -> &[Box<[WorkspaceId]>] {
        &self.lists.values
    }

    pub(crate) fn deletions(&self) -> &[Provenance] {
        &self.deletions
    }

    /// Adds `token` in the next slot, without looking at the others;
    /// `false` if a pool is full.
    fn push(&mut self, token: &NewToken<'_>) -> bool {
        let Some((row, origin)) = self.row(token) else {
            return false;
        };
        self.rows.push(row);
        self.origins.push(origin);
        true
    }

    fn row(&mut self, token: &NewToken<'_>) -> Option<(Row, Origin)> {
        let scope = token.scope;
        let namespaces = &scope.namespaces;
        let (shared, workspaces) = match &namespaces.shared {
            SharedNamespace::None => (0, 0),
            SharedNamespace::All => (SHARED_ALL, 0),
            // A set iterates in order, so the list is sorted for a
            // decision's binary search.
            SharedNamespace::Workspaces(set) => (
                SHARED_LISTED,
                self.lists.intern_owned(set.iter().copied().collect())?,
            ),
        };
        let company = self.companies.intern(&token.company)?;
        let name = self
            .names
            .intern_by(token.name, |text| Name::new(text).ok())?;
        let created_by = self.actors.intern(&token.created.actor)?;
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let origin = Origin {
            digest: token.digest,
            created_position: token.created.position,
            created_at: token.created.at,
        };
        let row = Row {
            id: token.id,
            grants: scope.grants,
            expires_at: token.expires_at.unwrap_or_default(),
            company,
            name,
            created_by,
            workspaces,
            deleted: 0,
            features: scope
                .features
                .iter()
                .fold(0, |bits, feature| bits | feature_bit(*feature)),
            flags: flag(token.kind == TokenKind::OAuthGrant, OAUTH)
                | flag(namespaces.global, GLOBAL)
                | flag(namespaces.private, PRIVATE)
                | flag(token.expires_at.is_some(), EXPIRES)
                | flag(token.sealed, SEALED)
                | shared,
        };
        Some((row, origin))
    }

    fn at(&self, slot: u32) -> Option<&Row> {
        at(&self.rows, slot)
    }

    fn origin(&self, slot: u32) -> Option<&Origin> {
        at(&self.origins, slot)
    }

    /// The token in `slot`: `None` only if there is none, or its row names
    /// something the pools lack, which `row` never writes.
    fn view(&self, slot: u32) -> Option<Token<'_>> {
        let row = self.at(slot)?;
        Some(Token {
            row,
            origin: self.origin(slot)?,
            company: *self.companies.get(row.company)?,
            name: self.names.get(row.name)?,
            created_by: self.actors.get(row.created_by)?,
            workspaces: if row.flags & SHARED_LISTED == 0 {
                &[]
            } else {
                self.lists.get(row.workspaces)?
            },
            deleted: match row.deleted.checked_sub(1) {
                None => None,
                Some(index) => Some(at(&self.deletions, index)?),
            },
        })
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    rows: Rows,
    /// Slots, hashed by their token's id.
    slots: HashTable<u32>,
    /// Slots, hashed by their token's digest.
    by_digest: HashTable<u32>,
}

fn hash_id(id: &TokenId) -> u64 {
    ById::default().hash_one(id)
}

fn hash_digest(digest: &SecretDigest) -> u64 {
    ById::default().hash_one(digest)
}

/// The hash of the value at `slot` for the index `hash` builds, for when a
/// table grows. Every slot in a table holds a row and its origin.
fn rehash<T>(values: &[T], hash: impl Fn(&T) -> u64) -> impl Fn(&u32) -> u64 {
    move |slot| at(values, *slot).map_or(0, &hash)
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
        // One pair of buffers for both: each is 16 MB at a million
        // tokens, and a fresh one costs its page faults.
        let mut buffers = (Vec::with_capacity(len), Vec::with_capacity(len));
        let slots = index(
            len,
            |slot| hash_id(&key(slot).0),
            |a, b| key(a).0 == key(b).0,
            &mut buffers,
        )?;
        let by_digest = index(
            len,
            |slot| hash_digest(&key(slot).1),
            |a, b| key(a).1 == key(b).1,
            &mut buffers,
        )?;
        Some(Indexes {
            len,
            slots,
            by_digest,
        })
    }
}

/// A slot and its hash.
type Hashed = (u64, u32);

/// A table of the slots below `len`, each under its `hash`; `None` if two
/// are `same`. `buffers` are scratch space.
///
/// The slots go in in the order of the buckets they land in, not their
/// own: a million in slot order hit a random cache line of a 10 MB table
/// each, and building the two indexes of a checkpoint took 330 to 380 ms,
/// twice as long as its rows; in bucket order, 178 to 229 ms (six runs,
/// a throwaway program).
fn index(
    len: usize,
    hash: impl Fn(u32) -> u64,
    same: impl Fn(u32, u32) -> bool,
    buffers: &mut (Vec<Hashed>, Vec<Hashed>),
) -> Option<HashTable<u32>> {
    let mut table = HashTable::with_capacity(len);
    // hashbrown starts looking for a hash's place at the bucket its low
    // bits name, among a power of two of buckets kept at most 7/8 full.
    let buckets = (table.capacity().saturating_mul(8) / 7).next_power_of_two();
    let (hashed, sorted) = buffers;
    hashed.clear();
    hashed.extend((0u32..).take(len).map(|slot| (hash(slot), slot)));
    in_bucket_order(hashed, buckets.trailing_zeros(), sorted);
    for &(held_hash, slot) in sorted.iter() {
        if table.find(held_hash, |held| same(*held, slot)).is_some() {
            return None;
        }
        table.insert_unique(held_hash, slot, |held| hash(*held));
    }
    Some(table)
}

/// `items` into `sorted` in 256 runs, by the top 8 of the low `bits` bits
/// of their hash (a counting sort): each run's places lie in a 256th of
/// the table, which the caches hold while its slots go in.
fn in_bucket_order(items: &[Hashed], bits: u32, sorted: &mut Vec<Hashed>) {
    let low = 1u64
        .checked_shl(bits)
        .map_or(u64::MAX, |buckets| buckets - 1);
    let shift = bits.saturating_sub(8);
    let run = |hash: u64| ((hash & low) >> shift) as usize;
    let mut starts = [0usize; 256];
    for (hash, _) in items {
        if let Some(count) = starts.get_mut(run(*hash)) {
            *count += 1;
        }
    }
    let mut next = 0;
    for start in &mut starts {
        (*start, next) = (next, next + *start);
    }
    sorted.clear();
    sorted.resize(items.len(), (0, 0));
    for item in items {
        if let Some(start) = starts.get_mut(run(item.0))
            && let Some(place) = sorted.get_mut(*start)
        {
            *place = *item;
            *start += 1;
        }
    }
}

impl Tokens {
    /// The table of `rows` with `indexes` built from the same keys, slot
    /// for slot; `None` if they hold different numbers of tokens.
    ///
    /// That slot `i` of both holds the same id and digest is the caller's
    /// to keep, by taking both from one function of each kept token (a
    /// checkpoint's `key_of`): comparing a million of them again took 32
    /// to 36 ms at the end of an open, after both threads were done.
    pub(crate) fn assemble(rows: Rows, indexes: Indexes) -> Option<Tokens> {
        (rows.len() == indexes.len).then_some(Tokens {
            rows,
            slots: indexes.slots,
            by_digest: indexes.by_digest,
        })
    }

    fn slot_of(&self, id: TokenId) -> Option<u32> {
        self.slots
            .find(hash_id(&id), |slot| {
                self.rows.at(*slot).is_some_and(|row| row.id == id)
            })
            .copied()
    }

    fn slot_by_digest(&self, digest: &SecretDigest) -> Option<u32> {
        self.by_digest
            .find(hash_digest(digest), |slot| {
                self.rows
                    .origin(*slot)
                    .is_some_and(|origin| origin.digest == *digest)
            })
            .copied()
    }

    /// Adds `token` unless its id or its digest is taken.
    ///
    /// INVARIANT (digest-unique): a digest maps to one token, the first
    /// that claimed it; a second claim is not trusted. Returns whether the
    /// token was added.
    pub(crate) fn insert(&mut self, token: &NewToken<'_>) -> bool {
        // A table of four billion tokens is far beyond what a process can
        // hold; refusing the token is what `apply` does with anything it
        // cannot trust.
        let Ok(slot) = u32::try_from(self.rows.len()) else {
            return false;
        };
        if slot == NO_SLOT
            || self.slot_of(token.id).is_some()
            || self.slot_by_digest(&token.digest).is_some()
            || !self.rows.push(token)
        {
            return false;
        }
        let (id_hash, digest_hash) = (hash_id(&token.id), hash_digest(&token.digest));
        let Rows { rows, origins, .. } = &self.rows;
        self.slots
            .insert_unique(id_hash, slot, rehash(rows, |row| hash_id(&row.id)));
        self.by_digest.insert_unique(
            digest_hash,
            slot,
            rehash(origins, |origin| hash_digest(&origin.digest)),
        );
        true
    }

    /// The rows and their pools.
    pub(crate) fn rows(&self) -> &Rows {
        &self.rows
    }

    pub(crate) fn get(&self, id: TokenId) -> Option<Token<'_>> {
        let slot = self.slot_of(id)?;
        self.at(slot, id)
    }

    /// Records the token's deletion, unless it has one already: a
    /// deletion is for good, and the first one is what it keeps.
    pub(crate) fn delete(&mut self, id: TokenId, by: Provenance) {
        let Some(slot) = self.slot_of(id).and_then(|slot| usize::try_from(slot).ok()) else {
            return;
        };
        let Rows {
            rows, deletions, ..
        } = &mut self.rows;
        if let Some(row) = rows.get_mut(slot)
            && row.deleted == 0
            && let Some(deleted) = record_deletion(deletions, by)
        {
            row.deleted = deleted;
        }
    }

    /// The token behind `handle`: at its slot if the slot holds it, else
    /// by its id.
    pub(crate) fn by_handle(&self, handle: TokenHandle) -> Option<Token<'_>> {
        self.at(handle.slot, handle.id)
            .or_else(|| self.get(handle.id))
    }

    pub(crate) fn handle_by_digest(&self, digest: &SecretDigest) -> Option<TokenHandle> {
        let slot = self.slot_by_digest(digest)?;
        let row = self.rows.at(slot)?;
        Some(TokenHandle { id: row.id, slot })
    }

    /// The tokens of `company`, in the order they were created.
    pub(crate) fn of(&self, company: CompanyId) -> impl Iterator<Item = Token<'_>> {
        let index = self.rows.companies.find(&company);
        self.rows
            .rows
            .iter()
            .zip(0..)
            .filter(move |(row, _)| Some(row.company) == index)
            .filter_map(|(_, slot)| self.rows.view(slot))
    }

    /// The token created last whose creation recorded a sealed secret:
    /// found by walking back from the newest, as only opening asks.
    pub(crate) fn newest_sealed(&self) -> Option<Token<'_>> {
        let slot = self
            .rows
            .rows
            .iter()
            .rposition(|row| row.flags & SEALED != 0)?;
        self.rows.view(u32::try_from(slot).ok()?)
    }

    fn at(&self, slot: u32, id: TokenId) -> Option<Token<'_>> {
        if self.rows.at(slot)?.id != id {
            return None;
        }
        self.rows.view(slot)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::State;
    use tokenledger_events::{
        Actor, CompanyId, Envelope, Event, EventId, Grants, Name, Namespaces, Secret, TeammateId,
        Timestamp, TokenKind, TokenScope,
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

    #[test]
    fn digests_and_ids_chosen_to_collide_spread_over_buckets() {
        use crate::hash::tests::fullest_bucket;
        // Each word of a digest after the first, varied in its low bits
        // and in its high bits, the others fixed.
        for word in 1..4 {
            for shift in [0, 52] {
                let digests = (0u64..4096).map(|i| {
                    let mut bytes = [0xab; 32];
                    bytes[word * 8..word * 8 + 8].copy_from_slice(&(i << shift).to_le_bytes());
                    hash_digest(&SecretDigest::from_bytes(bytes))
                });
                assert!(fullest_bucket(digests) <= 16, "word {word}, shift {shift}");
            }
        }
        // Ids sharing either half.
        let shared = 0xfeed_f00d_dead_beef_u128;
        let halves: [fn(u128, u128) -> u128; 2] = [
            |shared, i| (shared << 64) | (i << 52),
            |shared, i| (i << 116) | shared,
        ];
        for id in halves {
            let ids = (0u128..4096).map(|i| hash_id(&TokenId::from_u128(id(shared, i))));
            assert!(fullest_bucket(ids) <= 16);
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
        assert_eq!(other.token_by_handle(handle).unwrap().digest(), sa.digest());
        assert_eq!(one.token_by_handle(TokenHandle::from(b)), one.token(b));
        let unknown = TokenHandle::from(TokenId::from_u128(30));
        assert!(one.token_by_handle(unknown).is_none());
    }

    #[test]
    fn a_second_claim_on_an_id_or_a_digest_is_refused() {
        let (a, b) = (TokenId::from_u128(10), TokenId::from_u128(20));
        let (sa, sb) = (Secret::from_random([1; 32]), Secret::from_random([2; 32]));
        let state = state_with(&[(a, &sa), (a, &sb), (b, &sa)]);
        assert_eq!(state.token(a).unwrap().digest(), sa.digest());
        assert!(state.token(b).is_none());
        assert!(state.token_by_digest(&sb.digest()).is_none());
        assert_eq!(state.tokens_of(CompanyId::from_u128(1)).count(), 1);
    }

    #[test]
    fn indexes_built_in_bucket_order_find_every_token_and_any_repeat() {
        let tokens: Vec<(TokenId, Secret)> = (1..=3_000u32)
            .map(|i| {
                let mut random = [0; 32];
                random[..4].copy_from_slice(&i.to_be_bytes());
                (
                    TokenId::from_u128(u128::from(i) << 64),
                    Secret::from_random(random),
                )
            })
            .collect();
        let listed: Vec<(TokenId, &Secret)> = tokens.iter().map(|(t, s)| (*t, s)).collect();
        let built = state_with(&listed).tokens;
        let keys: Vec<(TokenId, SecretDigest)> =
            tokens.iter().map(|(t, s)| (*t, s.digest())).collect();
        let key = |slot: usize| keys[slot];
        let indexes = Indexes::build(keys.len(), key).unwrap();
        let table = Tokens::assemble(built.rows, indexes).unwrap();
        for (slot, (id, digest)) in keys.iter().enumerate() {
            assert_eq!(table.slot_of(*id), Some(slot as u32));
            assert_eq!(table.slot_by_digest(digest), Some(slot as u32));
        }
        // A repeat is found wherever it falls in the order of insertion.
        for (first, again) in [(0, 2_999), (1_500, 7), (42, 43)] {
            let mut ids = keys.clone();
            ids[again].0 = ids[first].0;
            assert!(Indexes::build(ids.len(), |slot| ids[slot]).is_none());
            let mut digests = keys.clone();
            digests[again].1 = digests[first].1;
            assert!(Indexes::build(digests.len(), |slot| digests[slot]).is_none());
        }
    }

    #[test]
    fn bucket_order_keeps_every_item_and_sorts_by_the_top_of_the_low_bits() {
        let items: Vec<(u64, u32)> = (0..10_000u32)
            .map(|i| (u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i))
            .collect();
        for bits in [0, 3, 8, 21] {
            let mut sorted = Vec::new();
            in_bucket_order(&items, bits, &mut sorted);
            let run = |hash: u64| (hash & ((1 << bits) - 1)) >> bits.saturating_sub(8);
            assert!(
                sorted.is_sorted_by_key(|(hash, _)| run(*hash)),
                "bits {bits}"
            );
            let mut slots: Vec<u32> = sorted.iter().map(|(_, slot)| *slot).collect();
            slots.sort_unstable();
            assert!(slots.iter().copied().eq(0..10_000), "bits {bits}");
        }
    }

    #[test]
    fn indexes_built_apart_refuse_a_repeated_id_or_digest_and_another_length() {
        let (a, b) = (TokenId::from_u128(10), TokenId::from_u128(20));
        let (sa, sb) = (Secret::from_random([1; 32]), Secret::from_random([2; 32]));
        let keys = |list: Vec<(TokenId, SecretDigest)>| move |slot: usize| list[slot];
        let both = vec![(a, sa.digest()), (b, sb.digest())];
        assert!(Indexes::build(2, keys(vec![(a, sa.digest()), (a, sb.digest())])).is_none());
        assert!(Indexes::build(2, keys(vec![(a, sa.digest()), (b, sa.digest())])).is_none());

        let built = state_with(&[(a, &sa), (b, &sb)]).tokens;
        let indexes = Indexes::build(2, keys(both.clone())).unwrap();
        let tokens = Tokens::assemble(built.rows.clone(), indexes).unwrap();
        assert_eq!(tokens.handle_by_digest(&sb.digest()).unwrap().id(), b);
        assert!(tokens.get(a).is_some_and(|t| t.digest() == sa.digest()));

        let indexes = Indexes::build(1, keys(both)).unwrap();
        assert!(Tokens::assemble(built.rows, indexes).is_none());
    }

    /// The token that `created` makes, with `scope` and the other fields
    /// changed to values of their own.
    fn created_with(position: u64, token: TokenId, scope: TokenScope) -> Envelope {
        let mut envelope = created(position, token, &Secret::from_random([position as u8; 32]));
        envelope.actor = Actor::Teammate(TeammateId::from_u128(u128::from(position)));
        if let Event::TokenCreated {
            scope: kept,
            kind,
            expires_at,
            name,
            ..
        } = &mut envelope.event
        {
            *kept = scope;
            *kind = TokenKind::OAuthGrant;
            *expires_at = Some(Timestamp::from_micros(position * 1_000));
            *name = Name::new(&format!("Token {}", position % 3)).unwrap();
        }
        envelope
    }

    /// The token a scope test expects: its id, the event that created it,
    /// and its scope.
    pub(crate) type Expected = (TokenId, Envelope, TokenScope);

    /// A state whose tokens differ in every field a row keeps, two
    /// companies and three names among them, the fifth deleted twice.
    pub(crate) fn varied() -> (State, Vec<Expected>) {
        let workspaces = |ids: &[u128]| {
            SharedNamespace::Workspaces(ids.iter().map(|id| WorkspaceId::from_u128(*id)).collect())
        };
        let shared = [
            SharedNamespace::None,
            SharedNamespace::All,
            workspaces(&[]),
            workspaces(&[3, 1, 2]),
            workspaces(&[1, 2, 3]),
        ];
        let feature_sets: [std::collections::BTreeSet<Feature>; 3] = [
            Feature::ALL.iter().copied().collect(),
            [Feature::Resources].into(),
            Default::default(),
        ];
        let mut state = State::new();
        let mut expected = Vec::new();
        for shared in shared {
            for features in &feature_sets {
                let position = expected.len() as u64 + 1;
                let scope = TokenScope {
                    features: features.clone(),
                    namespaces: Namespaces {
                        global: position.is_multiple_of(2),
                        shared: shared.clone(),
                        private: position.is_multiple_of(3),
                    },
                    grants: ["conversations:read", "tags:write"]
                        .into_iter()
                        .take(position as usize % 3)
                        .map(|s| s.parse().unwrap())
                        .collect(),
                };
                let token = TokenId::from_u128(u128::from(position) * 7);
                let mut envelope = created_with(position, token, scope.clone());
                envelope.company = CompanyId::from_u128(1 + u128::from(position % 2));
                state.apply(&envelope);
                expected.push((token, envelope, scope));
            }
        }
        let deleted = Envelope {
            position: 100,
            event: Event::TokenDeleted {
                token: expected[4].0,
            },
            ..expected[0].1.clone()
        };
        state.apply(&deleted);
        state.apply(&Envelope {
            position: 101,
            ..deleted.clone()
        });
        (state, expected)
    }

    #[test]
    fn a_token_reads_back_as_it_was_created_whatever_its_neighbours_share() {
        let (state, expected) = varied();
        for (i, (token, envelope, scope)) in expected.iter().enumerate() {
            let found = state.token(*token).unwrap();
            let Event::TokenCreated { name, .. } = &envelope.event else {
                unreachable!()
            };
            assert_eq!(found.id(), *token);
            assert_eq!(found.scope(), *scope, "token {i}");
            assert_eq!(found.name(), name);
            assert_eq!(found.kind(), TokenKind::OAuthGrant);
            assert_eq!(found.company(), envelope.company);
            assert_eq!(
                found.expires_at(),
                Some(Timestamp::from_micros(envelope.position * 1_000))
            );
            assert_eq!(found.created().actor, envelope.actor);
            assert_eq!(found.created().position, envelope.position);
            // The first deletion is the one kept.
            let deletion = (i == 4).then_some(100);
            assert_eq!(found.deleted().map(|d| d.position), deletion);
        }
        for company in [1, 2].map(CompanyId::from_u128) {
            let listed: Vec<TokenId> = state.tokens_of(company).map(|(id, _)| id).collect();
            let created: Vec<TokenId> = expected
                .iter()
                .filter(|(_, envelope, _)| envelope.company == company)
                .map(|(id, _, _)| *id)
                .collect();
            assert_eq!(listed, created);
        }
        assert_eq!(state.tokens_of(CompanyId::from_u128(3)).count(), 0);
    }
}
