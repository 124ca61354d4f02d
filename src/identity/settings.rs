//! A realm's sign-in policy: lifetimes, the fallback, and the names of the claims its tokens use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// Unknown fields (written by a newer node) are tolerated; a value of the wrong type is not:
/// `parse` then fails and the realm's sign-in is refused rather than run on defaults.
#[serde(default)]
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
    /// Whether a user's "continue" for a public (native or browser) app is remembered, so the
    /// next sign-in to that app with a live session needs no click (RFC 8252 §8.6 advises against).
    pub remember_consent: bool,
    /// The pages' language when the browser asks for none Sigil speaks (`SUPPORTED_LOCALES`).
    pub default_locale: String,
    /// The pages' time zone (IANA name) when the browser has not told its own.
    pub default_time_zone: String,
    /// The realm's brand colour for the pages' buttons, `#rrggbb`.
    pub primary_color: Option<String>,
}

/// The languages the hosted pages speak (their message catalogues), English first.
pub const SUPPORTED_LOCALES: &[&str] = &["en", "de"];

/// Whether `c` is a `#rrggbb` colour.
pub fn valid_color(c: &str) -> bool {
    c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit())
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
            remember_consent: false,
            default_locale: "en".into(),
            default_time_zone: "UTC".into(),
            primary_color: None,
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
    // The AWS exchange's: a mapped attribute must never pass a user off as an IAM principal
    // (principal policies recognise AWS tokens by them).
    "aws_arn",
    "aws_account",
    "aws_user_id",
];

impl LoginSettings {
    /// The stored settings; an error (malformed JSON, a wrong type, an invalid value) means the
    /// realm's sign-in must be refused: failing open would, for example, turn a disabled password
    /// fallback back on.
    pub fn parse(json: &str) -> Result<LoginSettings, String> {
        let s: LoginSettings =
            serde_json::from_str(json).map_err(|e| format!("stored login settings: {e}"))?;
        s.validate()?;
        Ok(s)
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
        if !SUPPORTED_LOCALES.contains(&self.default_locale.as_str()) {
            return Err(format!(
                "default locale {:?} is not one of {}",
                self.default_locale,
                SUPPORTED_LOCALES.join(", ")
            ));
        }
        if jiff::tz::TimeZone::get(&self.default_time_zone).is_err() {
            return Err(format!(
                "{:?} is not a known time zone (an IANA name such as Europe/Berlin)",
                self.default_time_zone
            ));
        }
        if let Some(u) = &self.logo_url
            && !(u.len() <= 2048 && url::Url::parse(u).is_ok_and(|p| p.scheme() == "https"))
        {
            return Err(format!(
                "logo URL {u:?} must be an https:// URL (the pages' CSP allows no other images)"
            ));
        }
        if let Some(c) = &self.primary_color
            && !valid_color(c)
        {
            return Err(format!("primary colour {c:?} must be #rrggbb"));
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
        assert_eq!(LoginSettings::parse("{}"), Ok(LoginSettings::default()));
    }

    #[test]
    fn parse_fails_closed_but_tolerates_unknown_fields() {
        let strict = r#"{"allow_password_fallback": false, "written_by_a_newer_node": 1}"#;
        assert!(
            !LoginSettings::parse(strict)
                .expect("tolerated")
                .allow_password_fallback
        );
        assert!(LoginSettings::parse(r#"{"allow_password_fallback": "no"}"#).is_err());
        assert!(LoginSettings::parse("{not json").is_err());
        assert!(LoginSettings::parse(r#"{"session_idle_secs": 1}"#).is_err());
        assert!(LoginSettings::parse(r#"{"default_locale": "fr"}"#).is_err());
        assert!(LoginSettings::parse(r#"{"default_time_zone": "Mars/Base"}"#).is_err());
        assert!(LoginSettings::parse(r#"{"primary_color": "red;}"}"#).is_err());
        assert!(LoginSettings::parse(r##"{"primary_color": "#0b57d0", "default_locale": "de", "default_time_zone": "Europe/Berlin"}"##).is_ok());
    }
}
