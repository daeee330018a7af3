//! The state saved at a log position, so that opening does not replay the
//! whole log: archived with rkyv, validated (bytecheck) before any of it is
//! read, and re-validated as it is rebuilt, as the codec re-validates
//! events. Damaged bytes are an error, never a panic and never a state.
//!
//! The archive lists every map sorted by key, so the same state always
//! archives to the same bytes.

use std::fmt;

use rkyv::rancor;
use rkyv::{Archive, Serialize};
use tokenledger_events::{
    Actor, CompanyId, Feature, Grants, Name, Role, SecretDigest, SharedNamespace, TeammateId,
    Timestamp, TokenId, TokenKind, WorkspaceId,
};

use crate::hash::RandomKeyMap;
use crate::state::{Company, Provenance, Setting, State, Teammate, Workspace};
use crate::tokens::{CompiledScope, Indexes, NewToken, Rows, Token, Tokens};

/// The layout version of the archive.
/// 2: tokens no longer carry their sealed secret.
/// 3: nor their reveals, which the state no longer keeps.
const VERSION: u32 = 3;

#[derive(Archive, Serialize)]
struct Saved {
    version: u32,
    position: u64,
    companies: Vec<SavedCompany>,
    teammates: Vec<SavedTeammate>,
    workspaces: Vec<SavedWorkspace>,
    tokens: Vec<SavedToken>,
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

#[derive(Archive, Serialize)]
struct SavedToken {
    id: Id,
    company: Id,
    name: String,
    oauth: bool,
    /// Bit i: `Feature::ALL[i]`.
    features: u8,
    global: bool,
    private: bool,
    /// 0 none, 1 all, 2 the workspaces listed.
    shared: u8,
    workspaces: Vec<Id>,
    grants: [u8; 16],
    digest: [u8; 32],
    expires_at: Option<u64>,
    created: SavedProvenance,
    deleted: Option<SavedProvenance>,
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

fn save_provenance(p: &Provenance) -> SavedProvenance {
    let (actor_kind, actor) = match p.actor {
        Actor::System => (0, 0),
        Actor::Teammate(id) => (1, id.as_u128()),
        Actor::Token(id) => (2, id.as_u128()),
    };
    SavedProvenance {
        position: p.position,
        at: p.at.as_micros(),
        actor_kind,
        actor: actor.to_be_bytes(),
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
        tokens: {
            let mut tokens: Vec<Token<'_>> = state.tokens.iter().collect();
            tokens.sort_unstable_by_key(Token::id);
            tokens.into_iter().map(save_token).collect()
        },
    };
    rkyv::to_bytes::<rancor::Error>(&saved)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| damaged(format!("it could not be written: {e}")))
}

fn save_token(t: Token<'_>) -> SavedToken {
    let scope = t.scope();
    let namespaces = &scope.namespaces;
    let (shared, workspaces) = match &namespaces.shared {
        SharedNamespace::None => (0, Vec::new()),
        SharedNamespace::All => (1, Vec::new()),
        SharedNamespace::Workspaces(set) => {
            (2, set.iter().map(|w| w.as_u128().to_be_bytes()).collect())
        }
    };
    let features = Feature::ALL
        .iter()
        .enumerate()
        .filter(|(_, f)| scope.features.contains(f))
        .fold(0u8, |bits, (i, _)| bits | (1 << i));
    SavedToken {
        id: t.id().as_u128().to_be_bytes(),
        company: t.company().as_u128().to_be_bytes(),
        name: t.name().as_str().to_owned(),
        oauth: t.kind() == TokenKind::OAuthGrant,
        features,
        global: namespaces.global,
        private: namespaces.private,
        shared,
        workspaces,
        grants: scope.grants.bits().to_be_bytes(),
        digest: *t.digest().as_bytes(),
        expires_at: t.expires_at().map(Timestamp::as_micros),
        created: save_provenance(&t.created()),
        deleted: t.deleted().as_ref().map(save_provenance),
    }
}

fn id(bytes: &Id) -> u128 {
    u128::from_be_bytes(*bytes)
}

fn provenance(p: &ArchivedSavedProvenance) -> Result<Provenance, CheckpointError> {
    let actor = id(&p.actor);
    let actor = match p.actor_kind {
        0 => Actor::System,
        1 => Actor::Teammate(TeammateId::from_u128(actor)),
        2 => Actor::Token(TokenId::from_u128(actor)),
        kind => return Err(damaged(format!("an actor has kind {kind}"))),
    };
    Ok(Provenance {
        position: p.position.to_native(),
        at: Timestamp::from_micros(p.at.to_native()),
        actor,
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
    let tokens = saved.tokens.as_slice();
    let key = |slot: usize| {
        tokens.get(slot).map_or(
            (TokenId::from_u128(0), SecretDigest::from_bytes([0; 32])),
            |t| {
                (
                    TokenId::from_u128(id(&t.id)),
                    SecretDigest::from_bytes(t.digest),
                )
            },
        )
    };
    // The indexes need only each token's id and digest, so a second thread
    // builds them while this one builds the tokens: at a million tokens
    // each half takes hundreds of milliseconds.
    let (rows, indexes) = std::thread::scope(|scope| {
        let indexes = scope.spawn(|| Indexes::build(tokens.len(), key));
        let rows = load_tokens(tokens);
        let indexes = indexes
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (rows, indexes)
    });
    // INVARIANT (digest-unique), as `apply` keeps it.
    let indexes =
        indexes.ok_or_else(|| damaged("two tokens have the same id or the same secret digest"))?;
    state.tokens = Tokens::assemble(rows?, indexes, key)
        .ok_or_else(|| damaged("the tokens read differently the second time"))?;
    Ok(state)
}

fn load_tokens(tokens: &[ArchivedSavedToken]) -> Result<Rows, CheckpointError> {
    let mut rows = Rows::with_capacity(tokens.len());
    let mut listed = Vec::new();
    for t in tokens {
        // A name already in the table is a valid one; only a new one is
        // checked, so that a bad one is reported for what it is.
        if !rows.has_name(&t.name) {
            name(&t.name)?;
        }
        // Sorted and without repeats, as a set would be, rather than
        // trusted to be.
        listed.clear();
        listed.extend(t.workspaces.iter().map(|w| WorkspaceId::from_u128(id(w))));
        listed.sort_unstable();
        listed.dedup();
        if !rows.push(&load_token(t, &listed)?) {
            return Err(damaged("it holds more tokens than a table can number"));
        }
    }
    Ok(rows)
}

fn load_token<'a>(
    t: &'a ArchivedSavedToken,
    listed: &'a [WorkspaceId],
) -> Result<NewToken<'a>, CheckpointError> {
    if t.features >> Feature::ALL.len() != 0 {
        return Err(damaged(format!(
            "a token has feature bits {:#b}",
            t.features
        )));
    }
    let grants = Grants::from_bits(u128::from_be_bytes(t.grants))
        .ok_or_else(|| damaged("a token's grants name no scope"))?;
    let scope =
        CompiledScope::from_parts(t.features, grants, t.global, t.private, t.shared, listed)
            .ok_or_else(|| damaged(format!("a token has shared namespace {}", t.shared)))?;
    Ok(NewToken {
        id: TokenId::from_u128(id(&t.id)),
        company: CompanyId::from_u128(id(&t.company)),
        name: &t.name,
        kind: if t.oauth {
            TokenKind::OAuthGrant
        } else {
            TokenKind::ApiToken
        },
        scope,
        digest: SecretDigest::from_bytes(t.digest),
        expires_at: t
            .expires_at
            .as_ref()
            .map(|micros| Timestamp::from_micros(micros.to_native())),
        created: provenance(&t.created)?,
        deleted: optional(&t.deleted)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tests::{created, varied};
    use tokenledger_events::Secret;

    /// The state's archive with its tokens replaced by `tokens`, as a
    /// forger who can write a valid archive would write it.
    fn archive_with(state: &State, tokens: Vec<SavedToken>) -> Vec<u8> {
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

        let saved: Vec<(TokenId, Token<'_>)> = state.tokens.iter().map(|t| (t.id(), t)).collect();
        let save = |(_, token): (TokenId, Token<'_>)| save_token(token);
        let same_id = {
            let mut second = save(saved[1]);
            second.id = saved[0].0.as_u128().to_be_bytes();
            archive_with(&state, vec![save(saved[0]), second])
        };
        let same_digest = {
            let mut second = save(saved[1]);
            second.digest = *saved[0].1.digest().as_bytes();
            archive_with(&state, vec![save(saved[0]), second])
        };
        for forged in [same_id, same_digest] {
            let error = decode_checkpoint(&forged).err().unwrap();
            assert!(
                error
                    .to_string()
                    .contains("the same id or the same secret digest")
            );
        }
    }

    #[test]
    fn every_field_of_a_token_survives_the_checkpoint() {
        let (state, expected) = varied();
        let decoded = decode_checkpoint(&encode_checkpoint(&state).unwrap()).unwrap();
        for (id, _, _) in &expected {
            assert_eq!(decoded.token(*id), state.token(*id));
            assert!(decoded.token(*id).is_some());
        }
        for company in [1, 2].map(CompanyId::from_u128) {
            let ids = |state: &State| {
                let mut ids: Vec<TokenId> = state.tokens_of(company).map(|(id, _)| id).collect();
                ids.sort();
                ids
            };
            assert_eq!(ids(&decoded), ids(&state));
        }
    }

    #[test]
    fn a_token_name_is_checked_when_it_is_new_to_the_table() {
        let (state, _) = varied();
        let renamed = |names: [&str; 2]| {
            let mut tokens: Vec<SavedToken> = state.tokens.iter().take(2).map(save_token).collect();
            for (token, name) in tokens.iter_mut().zip(names) {
                token.name = name.to_owned();
            }
            archive_with(&state, tokens)
        };
        let shared = decode_checkpoint(&renamed(["Zapier", "Zapier"])).unwrap();
        assert!(shared.tokens.iter().all(|t| t.name().as_str() == "Zapier"));
        let trimmed = decode_checkpoint(&renamed(["Zapier", "  Zapier "])).unwrap();
        assert!(trimmed.tokens.iter().all(|t| t.name().as_str() == "Zapier"));
        for bad in ["   ", "Zap\u{7}ier"] {
            let error = decode_checkpoint(&renamed(["Zapier", bad])).err().unwrap();
            assert!(error.to_string().contains("name"), "{error}");
        }
    }
}
