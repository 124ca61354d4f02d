//! A realm's sign-in policy: lifetimes, the fallback, and the names of the claims its tokens use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSettings {
    /// Refresh token lifetime (customers: 30 days; staff: 8 h).
    pub refresh_token_ttl: i64,
    /// A session unused this long ends.
    pub session_idle_secs: i64,
    /// A session ends this long after sign-in, however active (staff: daily re-authentication).
    pub session_absolute_secs: i64,
    /// Whether password + TOTP may be used instead of a passkey.
    pub allow_password_fallback: bool,
    /// Claim that carries the user's groups (`groups`, `cognito:groups`, ...).
    pub groups_claim: String,
    /// User attribute → claim name (`party_id` → `custom:party_id`). Unmapped attributes stay out.
    pub attribute_claims: BTreeMap<String, String>,
    pub logo_url: Option<String>,
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            refresh_token_ttl: 30 * 86_400,
            session_idle_secs: 3600,
            session_absolute_secs: 12 * 3600,
            allow_password_fallback: true,
            groups_claim: "groups".into(),
            attribute_claims: BTreeMap::new(),
            logo_url: None,
        }
    }
}

/// Claims the token layer owns; a mapping may never produce one of these.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "azp",
    "scope",
    "token_use",
    "auth_time",
    "acr",
    "amr",
    "sid",
    "nonce",
    "at_hash",
    "cnf",
];

impl LoginSettings {
    pub fn parse(json: &str) -> LoginSettings {
        serde_json::from_str(json).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), String> {
        let bounded = |name: &str, v: i64, lo: i64, hi: i64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be within {lo}..={hi} seconds"))
            }
        };
        bounded(
            "refresh token lifetime",
            self.refresh_token_ttl,
            300,
            90 * 86_400,
        )?;
        bounded(
            "session idle timeout",
            self.session_idle_secs,
            60,
            30 * 86_400,
        )?;
        bounded(
            "session absolute timeout",
            self.session_absolute_secs,
            300,
            90 * 86_400,
        )?;
        let claim_ok = |c: &str| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":_-.".contains(&b))
                && !RESERVED_CLAIMS.contains(&c)
        };
        if !claim_ok(&self.groups_claim) {
            return Err(format!(
                "{:?} cannot be the groups claim",
                self.groups_claim
            ));
        }
        for (attr, claim) in &self.attribute_claims {
            if !claim_ok(claim) || claim == &self.groups_claim || attr.is_empty() {
                return Err(format!("attribute {attr:?} cannot map to claim {claim:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_claims_cannot_be_mapped() {
        let mut s = LoginSettings::default();
        s.attribute_claims
            .insert("party_id".into(), "custom:party_id".into());
        s.groups_claim = "cognito:groups".into();
        assert!(s.validate().is_ok());
        s.attribute_claims.insert("x".into(), "sub".into());
        assert!(s.validate().is_err());
        assert_eq!(LoginSettings::parse("{}"), LoginSettings::default());
    }
}
