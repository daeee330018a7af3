//! The state saved at a log position, so that opening does not replay the
//! whole log: archived with rkyv, validated (bytecheck) before any of it is
//! read, and re-validated as it is rebuilt, as the codec re-validates
//! events. Damaged bytes are an error, never a panic and never a state.
//!
//! The archive lists every map sorted by key, and the token table as it
//! is kept (its pools, then its rows slot by slot, both in the order the
//! log's events filled them), so the same state always archives to the
//! same bytes, and loading copies rows rather than rebuilding them.

use std::fmt;

use rkyv::rancor;
use rkyv::{Archive, Serialize};
use tokenledger_events::{
    Actor, CompanyId, Grants, Name, Role, SecretDigest, TeammateId, Timestamp, TokenId, WorkspaceId,
};

use crate::hash::RandomKeyMap;
use crate::state::{Company, Provenance, Setting, State, Teammate, Workspace};
use crate::tokens::{Indexes, Origin, Pools, Row, Rows, Tokens};

/// The layout version of the archive.
/// 2: tokens no longer carry their sealed secret.
/// 3: nor their reveals, which the state no longer keeps.
/// 4: the token table as it is kept: pools, and rows that index them.
/// 5: a row's flags say whether its token was created sealed; a layout 4
///    archive, which never says so, is refused rather than read as
///    holding no sealed token.
const VERSION: u32 = 5;

#[derive(Archive, Serialize)]
struct Saved {
    version: u32,
    position: u64,
    companies: Vec<SavedCompany>,
    teammates: Vec<SavedTeammate>,
    workspaces: Vec<SavedWorkspace>,
    tokens: SavedTokens,
}

/// Ids are kept as bytes: an archived `u128` would force 16-byte alignment
/// and padding into every record.
type Id = [u8; 16];

#[derive(Archive, Serialize)]
struct SavedProvenance {
    position: u64,
    at: u64,
    /// 0 the system, 1 a teammate, 2 a token.
    actor_kind: u8,
    actor: Id,
}

#[derive(Archive, Serialize)]
struct SavedCompany {
    id: Id,
    name: String,
    created: SavedProvenance,
    members: Vec<Id>,
}

#[derive(Archive, Serialize)]
struct SavedTeammate {
    id: Id,
    company: Id,
    name: String,
    admin: bool,
    role_set: SavedProvenance,
    deactivated: Option<SavedProvenance>,
    private_access: bool,
    private_access_set: SavedProvenance,
}

#[derive(Archive, Serialize)]
struct SavedWorkspace {
    id: Id,
    company: Id,
    name: String,
    created: SavedProvenance,
    deleted: Option<SavedProvenance>,
}

/// The token table: its pools, each value at its index, and its rows.
#[derive(Archive, Serialize)]
struct SavedTokens {
    companies: Vec<Id>,
    names: Vec<String>,
    actors: Vec<SavedActor>,
    /// Each sorted, without repeats.
    lists: Vec<Vec<Id>>,
    deletions: Vec<SavedProvenance>,
    rows: Vec<SavedRow>,
}

#[derive(Archive, Serialize)]
struct SavedActor {
    /// As [`SavedProvenance::actor_kind`].
    kind: u8,
    id: Id,
}

/// A token's row and origin, field for field (see `tokens::Row`).
#[derive(Archive, Serialize)]
struct SavedRow {
    id: Id,
    digest: [u8; 32],
    grants: [u8; 16],
    created_position: u64,
    created_at: u64,
    expires_at: u64,
    company: u32,
    name: u32,
    created_by: u32,
    workspaces: u32,
    deleted: u32,
    features: u8,
    flags: u8,
}

/// Why a checkpoint's bytes are not a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointError {
    problem: String,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the checkpoint is damaged: {}", self.problem)
    }
}

impl std::error::Error for CheckpointError {}

fn damaged(problem: impl Into<String>) -> CheckpointError {
    CheckpointError {
        problem: problem.into(),
    }
}

fn save_actor(actor: Actor) -> SavedActor {
    let (kind, id) = match actor {
        Actor::System => (0, 0),
        Actor::Teammate(id) => (1, id.as_u128()),
        Actor::Token(id) => (2, id.as_u128()),
    };
    SavedActor {
        kind,
        id: id.to_be_bytes(),
    }
}

fn save_provenance(p: &Provenance) -> SavedProvenance {
    let actor = save_actor(p.actor);
    SavedProvenance {
        position: p.position,
        at: p.at.as_micros(),
        actor_kind: actor.kind,
        actor: actor.id,
    }
}

fn sorted<K: Ord + Copy, V>(map: &RandomKeyMap<K, V>) -> Vec<(K, &V)> {
    let mut entries: Vec<(K, &V)> = map.iter().map(|(k, v)| (*k, v)).collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    entries
}

/// The state as checkpoint bytes.
pub fn encode_checkpoint(state: &State) -> Result<Vec<u8>, CheckpointError> {
    let saved = Saved {
        version: VERSION,
        position: state.position,
        companies: sorted(&state.companies)
            .into_iter()
            .map(|(id, c)| SavedCompany {
                id: id.as_u128().to_be_bytes(),
                name: c.name.as_str().to_owned(),
                created: save_provenance(&c.created),
                members: c
                    .members
                    .iter()
                    .map(|m| m.as_u128().to_be_bytes())
                    .collect(),
            })
            .collect(),
        teammates: sorted(&state.teammates)
            .into_iter()
            .map(|(id, t)| SavedTeammate {
                id: id.as_u128().to_be_bytes(),
                company: t.company.as_u128().to_be_bytes(),
                name: t.name.as_str().to_owned(),
                admin: t.role.value == Role::Admin,
                role_set: save_provenance(&t.role.set),
                deactivated: t.deactivated.as_ref().map(save_provenance),
                private_access: t.private_access.value,
                private_access_set: save_provenance(&t.private_access.set),
            })
            .collect(),
        workspaces: sorted(&state.workspaces)
            .into_iter()
            .map(|(id, w)| SavedWorkspace {
                id: id.as_u128().to_be_bytes(),
                company: w.company.as_u128().to_be_bytes(),
                name: w.name.as_str().to_owned(),
                created: save_provenance(&w.created),
                deleted: w.deleted.as_ref().map(save_provenance),
            })
            .collect(),
        tokens: save_tokens(state.tokens.rows()),
    };
    rkyv::to_bytes::<rancor::Error>(&saved)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| damaged(format!("it could not be written: {e}")))
}

fn save_tokens(rows: &Rows) -> SavedTokens {
    let bytes = |id: u128| id.to_be_bytes();
    SavedTokens {
        companies: rows
            .companies()
            .iter()
            .map(|c| bytes(c.as_u128()))
            .collect(),
        names: rows.names().iter().map(|n| n.as_str().to_owned()).collect(),
        actors: rows.actors().iter().map(|a| save_actor(*a)).collect(),
        lists: rows
            .lists()
            .iter()
            .map(|list| list.iter().map(|w| bytes(w.as_u128())).collect())
            .collect(),
        deletions: rows.deletions().iter().map(save_provenance).collect(),
        rows: rows
            .kept()
            .map(|(row, origin)| SavedRow {
                id: bytes(row.id.as_u128()),
                digest: *origin.digest.as_bytes(),
                grants: row.grants.bits().to_be_bytes(),
                created_position: origin.created_position,
                created_at: origin.created_at.as_micros(),
                expires_at: row.expires_at.as_micros(),
                company: row.company,
                name: row.name,
                created_by: row.created_by,
                workspaces: row.workspaces,
                deleted: row.deleted,
                features: row.features,
                flags: row.flags,
            })
            .collect(),
    }
}

fn id(bytes: &Id) -> u128 {
    u128::from_be_bytes(*bytes)
}

fn actor(kind: u8, actor: &Id) -> Result<Actor, CheckpointError> {
    let actor = id(actor);
    Ok(match kind {
        0 => Actor::System,
        1 => Actor::Teammate(TeammateId::from_u128(actor)),
        2 => Actor::Token(TokenId::from_u128(actor)),
        kind => return Err(damaged(format!("an actor has kind {kind}"))),
    })
}

fn provenance(p: &ArchivedSavedProvenance) -> Result<Provenance, CheckpointError> {
    Ok(Provenance {
        position: p.position.to_native(),
        at: Timestamp::from_micros(p.at.to_native()),
        actor: actor(p.actor_kind, &p.actor)?,
    })
}

fn optional(
    p: &rkyv::option::ArchivedOption<ArchivedSavedProvenance>,
) -> Result<Option<Provenance>, CheckpointError> {
    p.as_ref().map(provenance).transpose()
}

fn name(text: &str) -> Result<Name, CheckpointError> {
    Name::new(text).map_err(|e| damaged(e.to_string()))
}

/// What `load` makes of every item, or the first error.
fn each<A, T>(
    items: &[A],
    load: impl Fn(&A) -> Result<T, CheckpointError>,
) -> Result<Vec<T>, CheckpointError> {
    items.iter().map(load).collect()
}

/// A name of the tokens' pool, which holds names as `Name::new` made them:
/// one it would change (trim) is not the one saved.
fn pooled_name(text: &str) -> Result<Name, CheckpointError> {
    let made = name(text)?;
    if made.as_str() == text {
        Ok(made)
    } else {
        Err(damaged(format!(
            "the token name {text:?} is not as it was made"
        )))
    }
}

/// A list of the tokens' pool, sorted and without repeats as a set
/// iterates, for the binary search a decision makes.
fn pooled_list(ids: &[Id]) -> Result<Box<[WorkspaceId]>, CheckpointError> {
    let list: Box<[WorkspaceId]> = ids.iter().map(|w| WorkspaceId::from_u128(id(w))).collect();
    if list.windows(2).all(|pair| pair.first() < pair.get(1)) {
        Ok(list)
    } else {
        Err(damaged("a token's list of workspaces is not in order"))
    }
}

/// Rebuilds the state from checkpoint bytes, checking the archive's layout
/// first and then every value as the codec checks events.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<State, CheckpointError> {
    // rkyv reads in place and needs its alignment; a misaligned buffer is
    // copied once.
    let aligned;
    let bytes = if bytes.as_ptr().align_offset(16) == 0 {
        bytes
    } else {
        let mut copy = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        copy.extend_from_slice(bytes);
        aligned = copy;
        aligned.as_slice()
    };
    let saved = rkyv::access::<ArchivedSaved, rancor::Error>(bytes)
        .map_err(|e| damaged(format!("its layout does not validate: {e}")))?;
    if saved.version.to_native() != VERSION {
        return Err(damaged(format!(
            "it has layout {}, this build reads {VERSION}",
            saved.version
        )));
    }
    let mut state = State::new();
    state.position = saved.position.to_native();
    state.companies.reserve(saved.companies.len());
    for c in saved.companies.iter() {
        let company = Company {
            name: name(&c.name)?,
            created: provenance(&c.created)?,
            active_admins: 0,
            members: c
                .members
                .iter()
                .map(|m| TeammateId::from_u128(id(m)))
                .collect(),
        };
        state
            .companies
            .insert(CompanyId::from_u128(id(&c.id)), company);
    }
    state.teammates.reserve(saved.teammates.len());
    for t in saved.teammates.iter() {
        let company = CompanyId::from_u128(id(&t.company));
        let teammate = Teammate {
            company,
            name: name(&t.name)?,
            role: Setting {
                value: if t.admin { Role::Admin } else { Role::Member },
                set: provenance(&t.role_set)?,
            },
            deactivated: optional(&t.deactivated)?,
            private_access: Setting {
                value: t.private_access,
                set: provenance(&t.private_access_set)?,
            },
        };
        // INVARIANT (admin-count): recounted rather than trusted.
        if teammate.is_active_admin()
            && let Some(owner) = state.companies.get_mut(&company)
        {
            owner.active_admins += 1;
        }
        state
            .teammates
            .insert(TeammateId::from_u128(id(&t.id)), teammate);
    }
    state.workspaces.reserve(saved.workspaces.len());
    for w in saved.workspaces.iter() {
        let workspace = Workspace {
            company: CompanyId::from_u128(id(&w.company)),
            name: name(&w.name)?,
            created: provenance(&w.created)?,
            deleted: optional(&w.deleted)?,
        };
        state
            .workspaces
            .insert(WorkspaceId::from_u128(id(&w.id)), workspace);
    }
    let tokens = &saved.tokens;
    let pools = Pools {
        companies: tokens
            .companies
            .iter()
            .map(|c| CompanyId::from_u128(id(c)))
            .collect(),
        names: each(&tokens.names, |n| pooled_name(n))?,
        actors: each(&tokens.actors, |a| actor(a.kind, &a.id))?,
        lists: each(&tokens.lists, |l| pooled_list(l))?,
        deletions: each(&tokens.deletions, provenance)?,
    };
    let saved_rows = tokens.rows.as_slice();
    let key = |slot: usize| {
        saved_rows.get(slot).map_or(
            (TokenId::from_u128(0), SecretDigest::from_bytes([0; 32])),
            key_of,
        )
    };
    // The indexes need only each token's id and digest, so a second thread
    // builds them while this one copies the rows: at a million tokens the
    // indexes take hundreds of milliseconds.
    let (rows, indexes) = std::thread::scope(|scope| {
        let indexes = scope.spawn(|| Indexes::build(saved_rows.len(), key));
        let rows = load_rows(pools, saved_rows);
        let indexes = indexes
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (rows, indexes)
    });
    // INVARIANT (digest-unique), as `apply` keeps it.
    let indexes =
        indexes.ok_or_else(|| damaged("two tokens have the same id or the same secret digest"))?;
    state.tokens = Tokens::assemble(rows?, indexes)
        .ok_or_else(|| damaged("the token table and its indexes differ in length"))?;
    Ok(state)
}

/// A kept token's id and digest: the rows and the indexes both take them
/// from here, so slot `i` of each holds the same token.
fn key_of(r: &ArchivedSavedRow) -> (TokenId, SecretDigest) {
    (
        TokenId::from_u128(id(&r.id)),
        SecretDigest::from_bytes(r.digest),
    )
}

fn load_rows(pools: Pools, saved: &[ArchivedSavedRow]) -> Result<Rows, CheckpointError> {
    let mut rows = Rows::over(pools, saved.len())
        .ok_or_else(|| damaged("a pool of the token table holds a value twice"))?;
    for (slot, r) in saved.iter().enumerate() {
        let grants = Grants::from_bits(u128::from_be_bytes(r.grants))
            .ok_or_else(|| damaged(format!("the token in slot {slot} has grants for no scope")))?;
        let (token, digest) = key_of(r);
        let row = Row {
            id: token,
            grants,
            expires_at: Timestamp::from_micros(r.expires_at.to_native()),
            company: r.company.to_native(),
            name: r.name.to_native(),
            created_by: r.created_by.to_native(),
            workspaces: r.workspaces.to_native(),
            deleted: r.deleted.to_native(),
            features: r.features,
            flags: r.flags,
        };
        let origin = Origin {
            digest,
            created_position: r.created_position.to_native(),
            created_at: Timestamp::from_micros(r.created_at.to_native()),
        };
        if !rows.push_kept(row, origin) {
            return Err(damaged(format!(
                "the token in slot {slot} names what the table's pools lack, \
                 or has flags or features no token has"
            )));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tests::{created, varied};
    use tokenledger_events::Secret;

    /// The state's archive with its token table replaced by `tokens`, as a
    /// forger who can write a valid archive would write it.
    fn archive_with(state: &State, tokens: SavedTokens) -> Vec<u8> {
        let saved = Saved {
            version: VERSION,
            position: state.position,
            companies: Vec::new(),
            teammates: Vec::new(),
            workspaces: Vec::new(),
            tokens,
        };
        rkyv::to_bytes::<rancor::Error>(&saved).unwrap().to_vec()
    }

    /// The archive of `state` with its token table changed by `change`,
    /// decoded.
    fn forged(state: &State, change: impl FnOnce(&mut SavedTokens)) -> Result<State, String> {
        let mut tokens = save_tokens(state.tokens.rows());
        change(&mut tokens);
        decode_checkpoint(&archive_with(state, tokens)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_checkpoint_of_the_layout_before_sealed_flags_is_refused_not_misread() {
        let (state, _) = varied();
        let saved = Saved {
            version: 4,
            position: state.position,
            companies: Vec::new(),
            teammates: Vec::new(),
            workspaces: Vec::new(),
            tokens: save_tokens(state.tokens.rows()),
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&saved).unwrap();
        let error = decode_checkpoint(&bytes).err().unwrap().to_string();
        assert!(error.contains("has layout 4"), "{error}");
    }

    #[test]
    fn a_checkpoint_that_repeats_a_token_id_or_digest_is_refused() {
        let mut state = State::new();
        for (position, secret) in [(1, 1), (2, 2)] {
            let token = TokenId::from_u128(u128::from(position) * 10);
            state.apply(&created(
                position,
                token,
                &Secret::from_random([secret; 32]),
            ));
        }
        let decoded = decode_checkpoint(&encode_checkpoint(&state).unwrap()).unwrap();
        assert_eq!(
            encode_checkpoint(&decoded).unwrap(),
            encode_checkpoint(&state).unwrap()
        );
        let same_id = forged(&state, |t| t.rows[1].id = t.rows[0].id);
        let same_digest = forged(&state, |t| t.rows[1].digest = t.rows[0].digest);
        for forged in [same_id, same_digest] {
            let error = forged.err().unwrap();
            assert!(
                error.contains("the same id or the same secret digest"),
                "{error}"
            );
        }
    }

    #[test]
    fn every_field_of_a_token_survives_the_checkpoint_in_its_slot() {
        let (state, expected) = varied();
        let bytes = encode_checkpoint(&state).unwrap();
        let decoded = decode_checkpoint(&bytes).unwrap();
        assert_eq!(encode_checkpoint(&decoded).unwrap(), bytes);
        for (id, _, _) in &expected {
            assert!(decoded.token(*id).is_some());
            assert_eq!(decoded.token(*id), state.token(*id));
            // A handle from before the restart still finds its slot.
            let digest = state.token(*id).unwrap().digest();
            assert_eq!(
                decoded.token_by_digest(&digest),
                state.token_by_digest(&digest)
            );
        }
        for company in [1, 2].map(CompanyId::from_u128) {
            let ids = |state: &State| -> Vec<TokenId> {
                state.tokens_of(company).map(|(id, _)| id).collect()
            };
            assert_eq!(ids(&decoded), ids(&state));
        }
    }

    #[test]
    fn a_damaged_token_table_is_refused_with_what_is_wrong() {
        let (state, _) = varied();
        type Change = Box<dyn FnOnce(&mut SavedTokens)>;
        let cases: [(&str, Change); 9] = [
            ("twice", Box::new(|t| t.names.push(t.names[0].clone()))),
            (
                "not as it was made",
                Box::new(|t| t.names[0].insert(0, ' ')),
            ),
            ("control", Box::new(|t| t.names[0].push('\u{7}'))),
            (
                "not in order",
                Box::new(|t| t.lists.iter_mut().for_each(|l| l.reverse())),
            ),
            ("actor has kind 7", Box::new(|t| t.actors[0].kind = 7)),
            ("slot 2 names", Box::new(|t| t.rows[2].company = 2)),
            ("slot 0 names", Box::new(|t| t.rows[0].deleted = 2)),
            ("slot 1 names", Box::new(|t| t.rows[1].flags |= 1 << 7)),
            (
                "slot 3 has grants",
                Box::new(|t| t.rows[3].grants = [0xff; 16]),
            ),
        ];
        for (expected, change) in cases {
            let error = forged(&state, change).err().unwrap();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
