//! Principal policies: what a principal may do to which records.
//!
//! A policy is attached to one principal (a client acting for itself, a user's `sub`, a group,
//! an AWS principal pattern, or a whole issuer), has an effect (`ALLOW` or `DENY`), actions
//! (`db:Insert`, `ledger:PostAch`) and resources (`financial.ledger.document.balance`), both with
//! `*` and `?` wildcards ([`glob`]), and optional CEL assertions ([`assertion`]) over
//! `context.auth.claims` and `context.document`. For a request, every policy whose principal,
//! action and resource match and whose assertions all hold takes part: at least one `ALLOW` is
//! needed and a single `DENY` blocks. An assertion that is false skips its policy; one that
//! cannot be evaluated denies the request (it could have been a `DENY`'s). No matching policy
//! denies.
//!
//! The issuer publishes a realm's policies as a signed bundle (`typ: policies+jwt`); the
//! validator reads it like the revocation feed ([`crate::ValidatorBuilder::policy_bundle`]) and
//! decides with [`crate::Validator::authorize`]. The issuer checks every policy with
//! [`PolicySpec::check`] when it is written, and the validator compiles every bundle it receives
//! again before using it.

pub mod assertion;
pub mod glob;

use serde::{Deserialize, Serialize};

use crate::Claims;
use assertion::{Assertion, Outcome};

/// The media type of a signed bundle.
pub const TYP: &str = "policies+jwt";

/// `ALLOW` or `DENY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "ALLOW",
            Effect::Deny => "DENY",
        }
    }
}

/// Whom a policy is for, and how a token is recognised as that principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Principal {
    /// A client acting for itself (`client_credentials`): `sub` and `client_id` are this id and
    /// the token is not from the AWS exchange.
    Client(String),
    /// A user: the token's `sub`, in a token that is not a client's own.
    User(String),
    /// A user in this group (the realm's groups claim).
    Group(String),
    /// An AWS principal from the STS exchange (`aws_arn` in the token): a glob over its
    /// canonical ARN (the token's `sub`), the role or user name matched without case.
    Aws(String),
    /// Every token of this issuer (`iss`).
    Issuer(String),
}

impl Principal {
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Client(_) => "client",
            Principal::User(_) => "user",
            Principal::Group(_) => "group",
            Principal::Aws(_) => "aws",
            Principal::Issuer(_) => "issuer",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Principal::Client(s)
            | Principal::User(s)
            | Principal::Group(s)
            | Principal::Aws(s)
            | Principal::Issuer(s) => s,
        }
    }

    /// From the kind's name and the id.
    pub fn parse(kind: &str, id: &str) -> Result<Principal, String> {
        let id = id.to_owned();
        Ok(match kind {
            "client" => Principal::Client(id),
            "user" => Principal::User(id),
            "group" => Principal::Group(id),
            "aws" => Principal::Aws(id),
            "issuer" => Principal::Issuer(id),
            other => {
                return Err(format!(
                    "{other:?} is not client, user, group, aws or issuer"
                ));
            }
        })
    }

    /// Whether the token with `claims` is this principal (`groups_claim` names the claim that
    /// lists a user's groups).
    pub fn matches(&self, claims: &Claims, groups_claim: &str) -> bool {
        let own = claims.client_id.as_deref() == Some(claims.sub.as_str());
        let aws = claims.extra.contains_key("aws_arn") && claims.extra.contains_key("aws_account");
        match self {
            Principal::Client(id) => own && !aws && claims.sub == *id,
            Principal::User(sub) => !own && claims.sub == *sub,
            Principal::Group(g) => {
                !own && claims
                    .extra
                    .get(groups_claim)
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|gs| gs.iter().any(|x| x.as_str() == Some(g)))
            }
            Principal::Aws(pattern) => aws && own && glob::principal_match(pattern, &claims.sub),
            Principal::Issuer(iss) => claims.iss == *iss,
        }
    }
}

/// A policy as written and as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub name: String,
    pub principal: Principal,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

pub const MAX_ACTIONS: usize = 32;
pub const MAX_RESOURCES: usize = 32;
pub const MAX_ASSERTIONS: usize = 8;
/// The most policies a bundle may hold (the issuer refuses more in a realm).
pub const MAX_POLICIES: usize = 10_000;
/// The most characters of policy JSON a realm's bundle may hold (the issuer refuses more).
pub const MAX_BUNDLE_SPEC_CHARS: usize = 8 * 1024 * 1024;
/// The largest signed bundle a validator reads: the characters above, up to 4 bytes each in
/// UTF-8 and base64url-encoded, with room for the rest of the payload.
pub const MAX_BUNDLE_BYTES: usize = 48 * 1024 * 1024;

/// What is wrong with a policy: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

/// `*`/`?` patterns of 1-`max` characters from `extra` and ASCII letters and digits.
fn pattern_ok(p: &str, max: usize, extra: &[u8]) -> bool {
    !p.is_empty()
        && p.len() <= max
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*?".contains(&b) || extra.contains(&b))
}

impl PolicySpec {
    /// Checks every field and compiles every assertion; returns the compiled assertions.
    pub fn check(&self) -> Result<Vec<Assertion>, SpecError> {
        if !pattern_ok(&self.name, 64, b"-_.:") || self.name.contains(['*', '?']) {
            return Err(bad("name", "use 1-64 of A-Z a-z 0-9 - _ . :"));
        }
        let id = self.principal.id();
        let printable = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..0x7f).contains(&b))
        };
        match &self.principal {
            Principal::Client(_) | Principal::User(_) | Principal::Group(_)
                if !printable(id, 256) || id.contains(['*', '?']) =>
            {
                return Err(bad(
                    "principal",
                    "a client id, user sub or group name, without wildcards",
                ));
            }
            Principal::Aws(p) if !(printable(p, 512) && p.starts_with("arn:")) => {
                return Err(bad(
                    "principal",
                    "an AWS principal is an ARN or a */? glob over one (arn:...)",
                ));
            }
            Principal::Issuer(url)
                if !(printable(url, 512)
                    && (url.starts_with("https://") || url.starts_with("http://"))) =>
            {
                return Err(bad("principal", "an issuer is its http(s) URL"));
            }
            _ => {}
        }
        if self.actions.is_empty() || self.actions.len() > MAX_ACTIONS {
            return Err(bad("actions", format!("give 1-{MAX_ACTIONS} actions")));
        }
        for a in &self.actions {
            if !pattern_ok(a, 128, b":_-./") {
                return Err(bad(
                    "actions",
                    format!("{a:?}: use 1-128 of A-Z a-z 0-9 : _ - . / and the wildcards * ?"),
                ));
            }
        }
        if self.resources.is_empty() || self.resources.len() > MAX_RESOURCES {
            return Err(bad(
                "resources",
                format!("give 1-{MAX_RESOURCES} resources"),
            ));
        }
        for r in &self.resources {
            if !pattern_ok(r, 256, b":_-./") {
                return Err(bad(
                    "resources",
                    format!("{r:?}: use 1-256 of A-Z a-z 0-9 : _ - . / and the wildcards * ?"),
                ));
            }
        }
        if self.assertions.len() > MAX_ASSERTIONS {
            return Err(bad(
                "assertions",
                format!("at most {MAX_ASSERTIONS} assertions"),
            ));
        }
        if let Some(d) = &self.description
            && (d.len() > 512 || d.chars().any(char::is_control))
        {
            return Err(bad("description", "at most 512 characters, no controls"));
        }
        self.assertions
            .iter()
            .map(|a| assertion::compile(a).map_err(|e| bad("assertions", e)))
            .collect()
    }
}

/// A bundle's payload, as signed by the issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundlePayload {
    pub iss: String,
    /// The resource server it was fetched by.
    pub aud: String,
    pub iat: i64,
    /// Increases with every change to the realm's policies.
    pub version: i64,
    /// The claim that lists a user's groups in this realm's tokens.
    pub groups_claim: String,
    pub policies: Vec<PolicySpec>,
}

struct Compiled {
    spec: PolicySpec,
    assertions: Vec<Assertion>,
}

/// A bundle's policies, compiled once per version.
pub struct PolicySet {
    version: i64,
    groups_claim: String,
    policies: Vec<Compiled>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("version", &self.version)
            .field("policies", &self.policies.len())
            .finish()
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No policy for this principal, action and resource holds.
    NoMatchingPolicy,
    /// A `DENY` policy matched and its assertions held.
    DenyPolicy,
    /// An assertion of a matching policy could not be evaluated.
    AssertionError,
    /// The document is larger or deeper than assertions may read.
    DocumentTooLarge,
    /// The validator holds no bundle young enough to use.
    BundleUnavailable,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoMatchingPolicy => "no policy allows this",
            DenyReason::DenyPolicy => "a policy denies this",
            DenyReason::AssertionError => "a policy's assertion could not be evaluated",
            DenyReason::DocumentTooLarge => "the document is too large to authorize",
            DenyReason::BundleUnavailable => "policies unavailable",
        }
    }
}

/// The outcome of [`PolicySet::evaluate`] (and [`crate::Validator::authorize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this policy (the first `ALLOW` that held).
    Allow { policy: String },
    /// Denied: by this policy, or by none.
    Deny {
        policy: Option<String>,
        reason: DenyReason,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
    /// The deciding policy's name, if a policy decided.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Decision::Allow { policy } => Some(policy),
            Decision::Deny { policy, .. } => policy.as_deref(),
        }
    }
    pub(crate) fn deny(reason: DenyReason) -> Decision {
        Decision::Deny {
            policy: None,
            reason,
        }
    }
}

/// The claims as a JSON object, for assertions: every claim the token carried.
fn claims_value(c: &Claims) -> cel::Value {
    use cel::Value;
    use std::sync::Arc;
    let s = |v: &str| Value::String(Arc::new(v.to_owned()));
    let mut entries: Vec<(String, Value)> = vec![
        ("iss".into(), s(&c.iss)),
        ("sub".into(), s(&c.sub)),
        ("exp".into(), Value::Int(c.exp)),
        (
            "aud".into(),
            match &c.aud {
                crate::Audience::One(a) => s(a),
                crate::Audience::Many(v) => Value::List(Arc::new(v.iter().map(|a| s(a)).collect())),
            },
        ),
    ];
    let opt = [
        ("jti", &c.jti),
        ("client_id", &c.client_id),
        ("azp", &c.azp),
        ("scope", &c.scope),
        ("token_use", &c.token_use),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            entries.push((k.into(), s(v)));
        }
    }
    for (k, v) in [("nbf", c.nbf), ("iat", c.iat)] {
        if let Some(v) = v {
            entries.push((k.into(), Value::Int(v)));
        }
    }
    if let Some(cnf) = &c.cnf {
        let mut m: Vec<(String, Value)> = Vec::new();
        if let Some(x) = &cnf.x5t_s256 {
            m.push(("x5t#S256".into(), s(x)));
        }
        if let Some(j) = &cnf.jkt {
            m.push(("jkt".into(), s(j)));
        }
        for (k, v) in &cnf.extra {
            m.push((k.clone(), assertion::to_cel(v)));
        }
        entries.push((
            "cnf".into(),
            Value::Map(assertion::object(m.iter().map(|(k, v)| (k, v.clone())))),
        ));
    }
    for (k, v) in &c.extra {
        entries.push((k.clone(), assertion::to_cel(v)));
    }
    Value::Map(assertion::object(
        entries.iter().map(|(k, v)| (k, v.clone())),
    ))
}

impl PolicySet {
    /// Compiles every policy; one that does not check refuses the whole bundle.
    pub fn new(
        version: i64,
        groups_claim: impl Into<String>,
        specs: Vec<PolicySpec>,
    ) -> Result<PolicySet, SpecError> {
        if specs.len() > MAX_POLICIES {
            return Err(bad("policies", format!("more than {MAX_POLICIES}")));
        }
        let policies = specs
            .into_iter()
            .map(|spec| {
                let assertions = spec.check().map_err(|e| SpecError {
                    field: e.field,
                    message: format!("policy {:?}: {}", spec.name, e.message),
                })?;
                Ok(Compiled { spec, assertions })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        Ok(PolicySet {
            version,
            groups_claim: groups_claim.into(),
            policies,
        })
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn groups_claim(&self) -> &str {
        &self.groups_claim
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides whether the token with `claims` may do `action` to `resource`, a record whose
    /// content is `document` (`Value::Null` when there is none).
    pub fn evaluate(
        &self,
        claims: &Claims,
        action: &str,
        resource: &str,
        document: &serde_json::Value,
    ) -> Decision {
        if assertion::check_document(document).is_err() {
            return Decision::deny(DenyReason::DocumentTooLarge);
        }
        // Built on the first assertion, again only if a later one reads what it lacks.
        let mut context: Option<(cel::Context<'static, 'static>, bool, bool)> = None;
        let mut allowed: Option<&str> = None;
        for p in &self.policies {
            let spec = &p.spec;
            if !(spec.principal.matches(claims, &self.groups_claim)
                && spec.actions.iter().any(|a| glob::glob_match(a, action))
                && spec.resources.iter().any(|r| glob::glob_match(r, resource)))
            {
                continue;
            }
            let mut holds = true;
            for a in &p.assertions {
                let (has_claims, has_doc) = context.as_ref().map_or((false, false), |c| (c.1, c.2));
                if context.is_none()
                    || (a.uses_claims && !has_claims)
                    || (a.uses_document && !has_doc)
                {
                    let (want_claims, want_doc) =
                        (has_claims || a.uses_claims, has_doc || a.uses_document);
                    let ctx = assertion::context(
                        want_claims.then(|| claims_value(claims)),
                        want_doc.then(|| assertion::to_cel(document)),
                    );
                    context = Some((ctx, want_claims, want_doc));
                }
                let Some((ctx, _, _)) = &context else {
                    continue;
                };
                match a.evaluate(ctx) {
                    Outcome::Holds => {}
                    Outcome::Fails => {
                        holds = false;
                        break;
                    }
                    Outcome::Error(e) => {
                        tracing::debug!(policy = %spec.name, error = %e, "assertion failed to evaluate");
                        return Decision::Deny {
                            policy: Some(spec.name.clone()),
                            reason: DenyReason::AssertionError,
                        };
                    }
                }
            }
            if !holds {
                continue;
            }
            match spec.effect {
                Effect::Deny => {
                    return Decision::Deny {
                        policy: Some(spec.name.clone()),
                        reason: DenyReason::DenyPolicy,
                    };
                }
                Effect::Allow => {
                    allowed.get_or_insert(&spec.name);
                }
            }
        }
        match allowed {
            Some(name) => Decision::Allow {
                policy: name.to_owned(),
            },
            None => Decision::deny(DenyReason::NoMatchingPolicy),
        }
    }
}

#[cfg(test)]
mod tests;
