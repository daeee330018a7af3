//! The decision: may this token do this to that resource?
//!
//! Eight rules, checked in the order `docs/RULES.md` gives (in the
//! repository); the first that fails decides,
//! and the refusal says which, what scope would have been needed, and which
//! event put things in the state that caused it. The hot path returns a
//! [`Decision`], never a `Result`, and refuses unless every rule passes.

use std::fmt::{self, Write as _};

use tokenledger_events::{
    CompanyId, Feature, Requirement, ResourceId, Secret, SecretError, TeammateId, Timestamp,
    TokenId, TokenKind, WorkspaceId,
};

use tokenledger_projection::{Provenance, State, Token, TokenHandle};

/// Where a resource lives, as the caller says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// Company-level.
    Global(CompanyId),
    /// In a workspace.
    Shared(WorkspaceId),
    /// A teammate's own.
    Private(TeammateId),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Global(company) => write!(f, "the global namespace of {company}"),
            Location::Shared(workspace) => write!(f, "shared workspace {workspace}"),
            Location::Private(teammate) => write!(f, "the private resources of {teammate}"),
        }
    }
}

/// What is being asked, apart from who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the operation needs (a scope, usually from the endpoint catalog).
    pub requirement: Requirement,
    /// The resource.
    pub resource: ResourceId,
    /// Where it lives.
    pub location: Location,
    /// When the request is made (for expiry).
    pub at: Timestamp,
}

/// The rules, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// 1. The presented secret is well formed.
    SecretWellFormed = 1,
    /// 2. It names a live token: known, not deleted, not expired.
    TokenLive = 2,
    /// 3. The resource belongs to the token's company.
    SameCompany = 3,
    /// 4. The token has the feature the request needs.
    Feature = 4,
    /// 5. The token has the permission on the resource kind.
    Permission = 5,
    /// 6. The token's namespaces cover where the resource lives.
    Namespace = 6,
    /// 7. The owner of a private resource allows API access to it.
    OwnerAllowsPrivateAccess = 7,
}

impl Rule {
    /// The rule's number in `docs/RULES.md`.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// A stable name for the rule, for JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::SecretWellFormed => "secret_well_formed",
            Rule::TokenLive => "token_live",
            Rule::SameCompany => "same_company",
            Rule::Feature => "feature",
            Rule::Permission => "permission",
            Rule::Namespace => "namespace",
            Rule::OwnerAllowsPrivateAccess => "owner_allows_private_access",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused, in detail, with the event behind it where
/// there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Rule 1: the secret is malformed.
    MalformedSecret(SecretError),
    /// Rule 2: no token has this secret.
    UnknownToken,
    /// Rule 2: the token was deleted.
    TokenDeleted {
        /// The deletion.
        deleted: Provenance,
    },
    /// Rule 2: the token has expired.
    TokenExpired {
        /// When it expired.
        expired_at: Timestamp,
    },
    /// Rule 3: the resource's namespace belongs to another company, or to none.
    OtherCompany {
        /// The token's company.
        token_company: CompanyId,
    },
    /// Rule 4: the token lacks a feature.
    MissingFeature {
        /// The feature needed.
        feature: Feature,
        /// The token's creation: its features have not changed since.
        created: Provenance,
    },
    /// Rule 5: the token lacks the scope.
    MissingPermission {
        /// The token's creation: its permissions have not changed since.
        created: Provenance,
    },
    /// Rule 6: the token's namespaces do not cover the location.
    NamespaceNotCovered {
        /// The token's creation: its namespaces have not changed since.
        created: Provenance,
    },
    /// Rule 6: the token is an OAuth grant and the resource is not in a
    /// shared workspace. OAuth grants reach shared resources only, and
    /// `decide` never creates one with the global or private namespace, so
    /// a grant recorded with either came from a forged or damaged log.
    NotForOAuth {
        /// The token's creation, which recorded that scope.
        created: Provenance,
    },
    /// Rule 6: the resource's workspace was deleted.
    WorkspaceDeleted {
        /// The deletion.
        deleted: Provenance,
    },
    /// The ledger has been closed, or, on a ledger shared by several
    /// processes, this replica's lease lapsed (it may have missed a removal
    /// that returned on another): nothing is allowed until it is reopened,
    /// or has renewed its lease and caught up.
    LedgerClosed,
    /// Rule 7: the owner's private API access is off.
    PrivateAccessOff {
        /// The owner.
        owner: TeammateId,
        /// The event that left it off: the owner's or an admin's change,
        /// or the owner's addition (it starts off).
        set: Provenance,
    },
    /// Rule 7: the owner was deactivated, which removes API access to
    /// their individual resources whatever their preference says.
    OwnerDeactivated {
        /// The owner.
        owner: TeammateId,
        /// The deactivation.
        deactivated: Provenance,
    },
}

impl Reason {
    /// The event that put the state in the condition that refused, when
    /// one did: a deletion, the token's creation, or the preference change.
    pub fn provenance(&self) -> Option<Provenance> {
        match *self {
            Reason::TokenDeleted { deleted }
            | Reason::WorkspaceDeleted { deleted }
            | Reason::OwnerDeactivated {
                deactivated: deleted,
                ..
            } => Some(deleted),
            Reason::MissingFeature { created, .. }
            | Reason::MissingPermission { created }
            | Reason::NamespaceNotCovered { created }
            | Reason::NotForOAuth { created } => Some(created),
            Reason::PrivateAccessOff { set, .. } => Some(set),
            Reason::MalformedSecret(_)
            | Reason::UnknownToken
            | Reason::TokenExpired { .. }
            | Reason::OtherCompany { .. }
            | Reason::LedgerClosed => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MalformedSecret(error) => write!(f, "the secret is malformed: {error}"),
            Reason::UnknownToken => f.write_str("no token has this secret"),
            Reason::TokenDeleted { deleted } => write!(f, "the token was deleted ({deleted})"),
            Reason::TokenExpired { expired_at } => {
                write!(f, "the token expired at {expired_at}")
            }
            Reason::OtherCompany { token_company } => write!(
                f,
                "the resource does not belong to the token's company {token_company}"
            ),
            Reason::MissingFeature { feature, created } => write!(
                f,
                "the token does not have the `{feature}` feature, and has not since its creation ({created})"
            ),
            Reason::MissingPermission { created } => write!(
                f,
                "the token does not have this permission, and has not since its creation ({created})"
            ),
            Reason::NamespaceNotCovered { created } => write!(
                f,
                "the token's namespaces do not cover where the resource lives, and have not since its creation ({created})"
            ),
            Reason::NotForOAuth { created } => write!(
                f,
                "the token is an OAuth grant, and OAuth grants reach shared resources only, whatever the scope its creation recorded ({created}); no valid log grants one more"
            ),
            Reason::LedgerClosed => f.write_str(
                "the ledger is closed, or its replica's lease lapsed, so nothing is allowed",
            ),
            Reason::WorkspaceDeleted { deleted } => {
                write!(f, "the resource's workspace was deleted ({deleted})")
            }
            Reason::PrivateAccessOff { owner, set } => write!(
                f,
                "the owner's private API access is off: {owner}'s \"Allow access to my individual resources via the API\" is off (last set {set})"
            ),
            Reason::OwnerDeactivated { owner, deactivated } => write!(
                f,
                "the owner {owner} was deactivated ({deactivated}), which removes API access to their individual resources"
            ),
        }
    }
}

/// Front's error body: the same shape for every refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// 401 or 403.
    pub status: u16,
    /// `Unauthenticated` or `Forbidden`.
    pub title: &'static str,
    /// Front's message, which does not say why.
    pub message: String,
}

impl ErrorBody {
    /// Front's 401 body, the same whatever was wrong with the secret (or
    /// when none was sent): `{"_error":{"status":401,"title":"Unauthenticated","message":"Invalid token"}}`.
    pub fn unauthenticated() -> ErrorBody {
        ErrorBody {
            status: 401,
            title: "Unauthenticated",
            message: "Invalid token".to_owned(),
        }
    }

    fn forbidden(request: &Request) -> ErrorBody {
        let (verb, kind) = match request.requirement {
            Requirement::Scope(scope) => (scope.permission().as_str(), scope.kind().singular()),
            Requirement::Feature(Feature::AppTriggers) => ("trigger", "application"),
            Requirement::Feature(_) | Requirement::LiveToken => ("use", "resource"),
        };
        let resource_type = request.resource.resource_type().unwrap_or(kind);
        let resource = request.resource.as_str();
        // Pushed rather than `format!`ted: a refusal answers on the hot path.
        let mut message = String::with_capacity(
            FORBIDDEN_MESSAGE_BYTES + verb.len() + resource_type.len() + resource.len(),
        );
        for part in [
            "This agent is not allowed to ",
            verb,
            " the \"",
            resource_type,
            "\" with ID: \"",
            resource,
            "\"",
        ] {
            message.push_str(part);
        }
        ErrorBody {
            status: 403,
            title: "Forbidden",
            message,
        }
    }

    /// The body as Front sends it:
    /// `{"_error":{"status":403,"title":"Forbidden","message":"…"}}`.
    pub fn to_json(&self) -> String {
        let mut out =
            String::with_capacity(JSON_FRAME_BYTES + self.title.len() + self.message.len());
        out.push_str("{\"_error\":{\"status\":");
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{}", self.status);
        out.push_str(",\"title\":");
        push_json_string(&mut out, self.title);
        out.push_str(",\"message\":");
        push_json_string(&mut out, &self.message);
        out.push_str("}}");
        out
    }
}

/// The bytes of Front's 403 message around its three parts.
const FORBIDDEN_MESSAGE_BYTES: usize = 48;
/// The bytes of the JSON body around its title and message, with room for
/// the status and the quotes.
const JSON_FRAME_BYTES: usize = 48;

/// Appends `text` quoted as a JSON string: `"` and `\` escaped, control
/// characters as `\u00XX`.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    // Most messages hold only printable ASCII without quotes: copied whole.
    let plain = text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push_str(text);
    } else {
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

/// A refusal: the rule, why, and what was needed. Small and `Copy`, so a
/// refusal costs no allocation; Front's body is built by [`Refusal::body`]
/// when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The first rule that failed.
    pub rule: Rule,
    /// Why, with the event behind it.
    pub reason: Reason,
    /// The requirement that would have been needed, when one was known.
    pub needed: Option<Requirement>,
}

impl Refusal {
    /// 401 for rules 1 and 2 (no live token), 403 for the rest, and 503
    /// when the ledger is closed or its lease lapsed (which says nothing
    /// about the token).
    pub fn status(&self) -> u16 {
        if self.reason == Reason::LedgerClosed {
            503
        } else if self.rule <= Rule::TokenLive {
            401
        } else {
            403
        }
    }

    /// Front's error body for `request`, ready to send.
    pub fn body(&self, request: &Request) -> ErrorBody {
        match self.status() {
            503 => ErrorBody {
                status: 503,
                title: "Service Unavailable",
                message: "The service is unavailable".to_owned(),
            },
            401 => ErrorBody::unauthenticated(),
            _ => ErrorBody::forbidden(request),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: rule {} ({}) failed: {}",
            self.status(),
            self.rule.number(),
            self.rule,
            self.reason
        )?;
        if let Some(needed) = self.needed {
            write!(f, "; needed: {needed}")?;
        }
        Ok(())
    }
}

/// The answer to one request, made against the state at `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The log position of the state the decision was made against, so an
    /// investigation can replay that exact state.
    pub position: u64,
    /// The token, once the secret named one.
    pub token: Option<TokenId>,
    /// `None` when allowed; otherwise why not.
    pub refusal: Option<Refusal>,
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.refusal.is_none()
    }

    /// 200 when allowed, else the refusal's status.
    pub fn status(&self) -> u16 {
        self.refusal.as_ref().map_or(200, Refusal::status)
    }
}

/// Rules 1 and 2 (as far as the secret goes): checks the presented secret
/// and finds its token. Whether the token is deleted or expired is checked by
/// [`authorize`], so a handle kept across a deletion is refused too.
pub fn authenticate(state: &State, presented: &str) -> Result<TokenHandle, Refusal> {
    let unauthenticated = |rule, reason| Refusal {
        rule,
        reason,
        needed: None,
    };
    let digest = Secret::digest_of(presented)
        .map_err(|error| unauthenticated(Rule::SecretWellFormed, Reason::MalformedSecret(error)))?;
    state
        .token_by_digest(&digest)
        .ok_or_else(|| unauthenticated(Rule::TokenLive, Reason::UnknownToken))
}

/// Rules 2 to 8 for a token already authenticated: by the handle
/// [`authenticate`] gave, or by a bare [`TokenId`].
pub fn authorize(state: &State, token: impl Into<TokenHandle>, request: &Request) -> Decision {
    let handle = token.into();
    Decision {
        position: state.position(),
        token: Some(handle.id()),
        refusal: refusal(state, handle, request).err(),
    }
}

/// Rules 1 and 2 in full: the presented secret names a token that is
/// neither deleted nor expired at `at`. What [`authorize`] would answer for
/// [`Requirement::LiveToken`] in the token's own company, without a request
/// to build: for a service that refuses a dead token before it looks at
/// anything else. The token's company comes with its handle.
pub fn authenticate_live(
    state: &State,
    presented: &str,
    at: Timestamp,
) -> Result<(TokenHandle, CompanyId), (Option<TokenId>, Refusal)> {
    let handle = authenticate(state, presented).map_err(|refusal| (None, refusal))?;
    let token = live(state, handle, at, Some(Requirement::LiveToken))
        .map_err(|refusal| (Some(handle.id()), refusal))?;
    Ok((handle, token.company()))
}

/// Rule 2 for a token found: known, not deleted, not expired at `at`.
fn live(
    state: &State,
    handle: TokenHandle,
    at: Timestamp,
    needed: Option<Requirement>,
) -> Result<Token<'_>, Refusal> {
    let refuse = |reason| Refusal {
        rule: Rule::TokenLive,
        reason,
        needed,
    };
    let token = state
        .token_by_handle(handle)
        .ok_or_else(|| refuse(Reason::UnknownToken))?;
    if let Some(deleted) = token.deleted() {
        return Err(refuse(Reason::TokenDeleted { deleted }));
    }
    if let Some(expired_at) = token.expired_by(at) {
        return Err(refuse(Reason::TokenExpired { expired_at }));
    }
    Ok(token)
}

/// Rules 1 to 8: authenticates the secret and authorizes the request.
///
/// ```
/// use tokenledger_authz::{decide_request, Location, Request, Rule, State};
/// use tokenledger_events::{CompanyId, Requirement};
///
/// let request = Request {
///     requirement: Requirement::Scope("conversations:read".parse().unwrap()),
///     resource: "cnv_1".parse().unwrap(),
///     location: Location::Global(CompanyId::from_u128(1)),
///     at: tokenledger_events::Timestamp::EPOCH,
/// };
/// let decision = decide_request(&State::new(), "not a secret", &request);
/// assert_eq!(decision.status(), 401);
/// assert_eq!(decision.refusal.unwrap().rule, Rule::SecretWellFormed);
/// ```
pub fn decide_request(state: &State, presented: &str, request: &Request) -> Decision {
    match authenticate(state, presented) {
        Ok(token) => authorize(state, token, request),
        Err(refusal) => Decision {
            position: state.position(),
            token: None,
            refusal: Some(refusal),
        },
    }
}

fn refusal(state: &State, handle: TokenHandle, request: &Request) -> Result<(), Refusal> {
    let needed = Some(request.requirement);
    let refuse = |rule, reason| Refusal {
        rule,
        reason,
        needed,
    };

    let token = live(state, handle, request.at, needed)?;

    // Rule 3. Where the resource lives is looked up once, for rules 3, 6
    // and 7. A workspace or teammate the state does not know belongs to no
    // company, so it is refused here without saying whose it might be.
    let (location_company, workspace, owner) = match request.location {
        Location::Global(company) => (Some(company), None, None),
        Location::Shared(id) => {
            let workspace = state.workspace(id);
            (workspace.map(|w| w.company), workspace, None)
        }
        Location::Private(id) => {
            let owner = state.teammate(id);
            (owner.map(|t| t.company), None, owner)
        }
    };
    if location_company != Some(token.company()) {
        return Err(refuse(
            Rule::SameCompany,
            Reason::OtherCompany {
                token_company: token.company(),
            },
        ));
    }

    // Rule 4.
    let feature = match request.requirement {
        Requirement::Scope(_) => Some(Feature::Resources),
        Requirement::Feature(feature) => Some(feature),
        Requirement::LiveToken => None,
    };
    let compiled = token.compiled();
    if let Some(feature) = feature
        && !compiled.has_feature(feature)
    {
        return Err(refuse(
            Rule::Feature,
            Reason::MissingFeature {
                feature,
                created: token.created(),
            },
        ));
    }

    // Rules 5 to 7 concern resources reached through a scope; a feature
    // such as application triggers, or a live token for `GET /me`, has no
    // per-resource permission or namespace.
    let Requirement::Scope(scope) = request.requirement else {
        return Ok(());
    };

    // Rule 5.
    if !compiled.grants().contains(scope) {
        return Err(refuse(
            Rule::Permission,
            Reason::MissingPermission {
                created: token.created(),
            },
        ));
    }

    // Rule 6. An OAuth grant reaches shared resources only. `decide`
    // refuses to create one with another namespace, but the state is folded
    // from the log, and a log can be forged: what no valid log holds is
    // refused here too, whatever the recorded scope says.
    let covered = match request.location {
        Location::Global(_) | Location::Private(_) if token.kind() == TokenKind::OAuthGrant => {
            return Err(refuse(
                Rule::Namespace,
                Reason::NotForOAuth {
                    created: token.created(),
                },
            ));
        }
        Location::Global(_) => compiled.global(),
        Location::Shared(id) => {
            if let Some(deleted) = workspace.and_then(|w| w.deleted) {
                return Err(refuse(
                    Rule::Namespace,
                    Reason::WorkspaceDeleted { deleted },
                ));
            }
            compiled.covers_workspace(id)
        }
        Location::Private(_) => compiled.private(),
    };
    if !covered {
        return Err(refuse(
            Rule::Namespace,
            Reason::NamespaceNotCovered {
                created: token.created(),
            },
        ));
    }

    // Rule 7. Rule 3 found the owner, so `owner` is set for a private resource.
    // A deactivation removes access as a deletion does (DOMAIN.md), whatever
    // the preference was left at.
    if let (Location::Private(id), Some(owner)) = (request.location, owner)
        && let Some(deactivated) = owner.deactivated
    {
        return Err(refuse(
            Rule::OwnerAllowsPrivateAccess,
            Reason::OwnerDeactivated {
                owner: id,
                deactivated,
            },
        ));
    }
    if let (Location::Private(id), Some(owner)) = (request.location, owner)
        && !owner.private_access.value
    {
        return Err(refuse(
            Rule::OwnerAllowsPrivateAccess,
            Reason::PrivateAccessOff {
                owner: id,
                set: owner.private_access.set,
            },
        ));
    }

    // Rule 8.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ErrorBody;

    /// The body as `format!` wrote it before it was built by hand.
    fn formatted(body: &ErrorBody) -> String {
        let quoted = |text: &str| {
            let mut out = String::from("\"");
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        };
        format!(
            "{{\"_error\":{{\"status\":{},\"title\":{},\"message\":{}}}}}",
            body.status,
            quoted(body.title),
            quoted(&body.message)
        )
    }

    #[test]
    fn the_body_is_written_as_format_wrote_it() {
        for (status, message) in [
            (401, "Invalid token"),
            (
                403,
                "This agent is not allowed to read the \"conversation\" with ID: \"cnv_X\"",
            ),
            (0, "back\\slash"),
            (9, "tab\tnew\nline\u{0}"),
            (65535, "del\u{7f} c1\u{85} \u{9f} é ✓ \u{ff0e}"),
            (503, ""),
            (403, "only ascii, and a del\u{7f}"),
            (403, "only ascii, and a quote\""),
        ] {
            let body = ErrorBody {
                status,
                title: "Forbidden",
                message: message.to_owned(),
            };
            assert_eq!(body.to_json(), formatted(&body), "{message}");
        }
    }
}
