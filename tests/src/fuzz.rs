//! The fuzz targets' bodies. Each takes arbitrary bytes and panics only
//! when a property fails; any `Err` from the code under test is the right
//! answer to garbage. `fuzz/fuzz_targets/*.rs` call these under libFuzzer,
//! and `tests/fuzz_corpus.rs` replays the kept corpus under `cargo test`.

use tokenledger_authz::{decode_checkpoint as decode_state, encode_checkpoint};
use tokenledger_events::{
    CompanyId, Method, Name, ResourceId, Scope, Secret, TeammateId, Timestamp, TokenId,
    decode_envelope, encode_envelope, resolve_endpoint, resolve_endpoint_line,
};
use tokenledger_store::ChainCheck;

use crate::model::{self, Check, Op, Presented, TokenSpec, Who};

/// Bytes as a stored record, then as an envelope: never a panic, and
/// whatever decodes encodes to something that decodes to the same.
pub fn decode_record(data: &[u8]) {
    // As the first record of a log: layout, hash, chain, position, time.
    let _ = ChainCheck::new().check(data);
    if let Ok(envelope) = decode_envelope(data) {
        let encoded = match encode_envelope(&envelope) {
            Ok(encoded) => encoded,
            Err(error) => panic!("a decoded envelope does not encode: {error}"),
        };
        assert_eq!(
            decode_envelope(&encoded).as_ref(),
            Ok(&envelope),
            "an envelope does not survive encoding"
        );
    }
}

/// Bytes as a checkpoint of the state: never a panic, and whatever
/// decodes is a state that archives to bytes that decode to it again.
pub fn decode_checkpoint(data: &[u8]) {
    if let Ok(state) = decode_state(data) {
        let bytes = match encode_checkpoint(&state) {
            Ok(bytes) => bytes,
            Err(error) => panic!("a decoded state does not encode: {error}"),
        };
        let again = decode_state(&bytes).unwrap_or_else(|e| panic!("re-decoding failed: {e}"));
        assert_eq!(encode_checkpoint(&again).ok(), Some(bytes));
    }
}

/// Text as a presented secret: the cheap check and the full parse agree,
/// and a secret that parses prints as it was presented.
pub fn parse_secret(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let digest = Secret::digest_of(text);
    match Secret::parse(text) {
        Ok(secret) => {
            assert_eq!(secret.expose(), text);
            assert_eq!(
                digest.ok(),
                Some(secret.digest()),
                "digest_of disagrees with parse"
            );
        }
        Err(error) => assert_eq!(digest.err(), Some(error), "digest_of disagrees with parse"),
    }
}

/// Text as a scope, an endpoint, an id, a name and a time: never a panic,
/// and whatever parses prints as text that parses to the same.
pub fn parse_scope_and_endpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scope) = text.parse::<Scope>() {
        assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
    }
    if let Ok(endpoint) = resolve_endpoint_line(text) {
        // The template, with an id for each parameter, resolves to an
        // endpoint needing the same.
        let path: Vec<&str> = endpoint
            .template
            .split('/')
            .map(|s| if s.starts_with('{') { "x_1" } else { s })
            .collect();
        let again = resolve_endpoint(endpoint.method, &path.join("/"));
        assert_eq!(
            again.map(|e| e.requirement).ok(),
            Some(endpoint.requirement)
        );
    }
    let _ = resolve_endpoint(Method::Get, text);
    if let Ok(id) = text.parse::<TokenId>() {
        assert_eq!(id.to_string().parse::<TokenId>(), Ok(id));
    }
    if let Ok(id) = text.parse::<CompanyId>() {
        assert_eq!(id.to_string().parse::<CompanyId>(), Ok(id));
    }
    let _ = text.parse::<TeammateId>();
    if let Ok(resource) = text.parse::<ResourceId>() {
        assert_eq!(resource.as_str(), text);
    }
    if let Ok(name) = Name::new(text) {
        assert!(!name.as_str().chars().any(char::is_control));
    }
    if let Ok(time) = text.parse::<Timestamp>() {
        assert_eq!(time.to_string().parse::<Timestamp>(), Ok(time));
    }
}

/// Reads operations from bytes, a few bytes each.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    fn below(&mut self, n: usize) -> Option<usize> {
        self.byte().map(|b| usize::from(b) % n)
    }

    fn flag(&mut self) -> Option<bool> {
        self.byte().map(|b| b & 1 == 1)
    }

    fn who(&mut self) -> Option<Who> {
        let b = self.byte()?;
        Some(match b % 4 {
            0 | 1 => Who::NaturalAdmin,
            _ => Who::Anyone(usize::from(b / 4) % (model::TEAMMATES + 2)),
        })
    }

    fn set(&mut self, n: usize) -> Option<std::collections::BTreeSet<usize>> {
        let bits = self.byte()?;
        Some((0..n.min(8)).filter(|i| bits & (1 << i) != 0).collect())
    }

    fn op(&mut self) -> Option<Op> {
        use model::{COMPANIES as C, SCOPES, TEAMMATES as T, TOKENS as K, WORKSPACES as W};
        Some(match self.byte()? % 13 {
            0 => Op::CreateCompany { c: self.below(C)? },
            1 => Op::AddTeammate {
                c: self.below(C)?,
                t: self.below(T)?,
                admin: self.flag()?,
            },
            2 => Op::ChangeRole {
                t: self.below(T)?,
                admin: self.flag()?,
            },
            3 => Op::Deactivate { t: self.below(T)? },
            4 => Op::CreateWorkspace {
                c: self.below(C)?,
                w: self.below(W)?,
            },
            5 => Op::DeleteWorkspace { w: self.below(W)? },
            6 => {
                let flags = self.byte()?;
                let bit = |i: u8| flags & (1 << i) != 0;
                Op::CreateToken(TokenSpec {
                    c: self.below(C)?,
                    k: self.below(K)?,
                    oauth: bit(0),
                    resources: bit(1),
                    provisioning: bit(2),
                    triggers: bit(3),
                    global: bit(4),
                    shared: (flags >> 5) % 3,
                    workspaces: self.set(W)?,
                    private: self.flag()?,
                    scopes: self.set(SCOPES.len())?,
                    expires_in: match self.byte()? {
                        0..=200 => None,
                        n => Some(u64::from(n - 200)),
                    },
                })
            }
            7 => Op::Reveal { k: self.below(K)? },
            8 => Op::Delete { k: self.below(K)? },
            9 => Op::SetPref {
                t: self.below(T)?,
                on: self.flag()?,
            },
            10 => Op::SetAll {
                c: self.below(C)?,
                on: self.flag()?,
            },
            11 => Op::Tick {
                seconds: u64::from(self.byte()? % 20) + 1,
            },
            _ => Op::Check(Check {
                presented: match self.byte()? % 10 {
                    8 => Presented::Garbage,
                    9 => Presented::UnknownSecret,
                    k => Presented::Token(usize::from(k) % K),
                },
                scope: match self.below(SCOPES.len() + 1)? {
                    s if s == SCOPES.len() => None,
                    s => Some(s),
                },
                namespace: self.byte()? % 3,
                at: self.below(T)?,
                own_company: self.flag()?,
            }),
        })
    }
}

/// Bytes as a sequence of commands and requests, run beside the reference
/// model twice: through the real rules with a clock the model moves, and
/// through a real `Ledger` on disk. Any disagreement is a crash.
pub fn command_sequence(data: &[u8]) {
    let mut reader = Reader { data };
    let mut ops = Vec::new();
    while let (Some(who), Some(op)) = (reader.who(), reader.op()) {
        ops.push((who, op));
    }
    if let Err(disagreement) = model::run(&ops, &mut [0; 8]) {
        panic!("the real rules and the model disagree: {disagreement}");
    }
    if let Err(disagreement) = model::run_on_ledger(&ops) {
        panic!("the ledger and the model disagree: {disagreement}");
    }
}
