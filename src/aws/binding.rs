//! Which binding, if any, lets a principal have a token: DENY beats ALLOW, no match is refused,
//! among ALLOWs the most specific pattern wins.

use super::arn::Principal;
use crate::store::AwsBindingRecord;

pub use sigil_validator::policy::glob::{glob_match, principal_match};

pub fn matches(b: &AwsBindingRecord, who: &Principal) -> bool {
    b.principal
        .as_deref()
        .is_none_or(|pat| principal_match(pat, &who.canonical))
        && b.account.as_deref().is_none_or(|a| a == who.account)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow(&'a AwsBindingRecord),
    Denied(&'a AwsBindingRecord),
    NoBinding,
}

/// Decides for `who`, optionally restricted to bindings for `audience`.
pub fn decide<'a>(
    bindings: &'a [AwsBindingRecord],
    who: &Principal,
    audience: Option<&str>,
) -> Decision<'a> {
    let matching: Vec<&AwsBindingRecord> = bindings.iter().filter(|b| matches(b, who)).collect();
    if let Some(deny) = matching.iter().find(|b| b.effect == "deny") {
        return Decision::Denied(deny);
    }
    let best = matching
        .into_iter()
        .filter(|b| b.effect == "allow")
        .filter(|b| audience.is_none_or(|a| a == b.audience))
        // Most specific first: the longest literal part of the pattern, then an account pin.
        .max_by_key(|b| {
            let literal = b
                .principal
                .as_deref()
                .map_or(0, |p| p.chars().filter(|c| *c != '*' && *c != '?').count());
            (literal, b.account.is_some())
        });
    match best {
        Some(b) => Decision::Allow(b),
        None => Decision::NoBinding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        id: &str,
        principal: Option<&str>,
        account: Option<&str>,
        effect: &str,
    ) -> AwsBindingRecord {
        AwsBindingRecord {
            realm: "r".into(),
            id: id.into(),
            principal: principal.map(Into::into),
            account: account.map(Into::into),
            effect: effect.into(),
            scopes: "tx:post:ach".into(),
            audience: "ledger".into(),
            access_token_ttl: None,
            created_at: 0,
        }
    }

    fn role(name: &str) -> Principal {
        super::super::arn::canonicalise(&format!("arn:aws:sts::123456789012:assumed-role/{name}/s"))
            .expect("arn")
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "arn:aws:iam::*:role/ledger-*",
            "arn:aws:iam::123456789012:role/ledger-writer"
        ));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "abbc"));
        assert!(!glob_match(
            "arn:aws:iam::1:role/x",
            "arn:aws:iam::1:role/xy"
        ));
        assert!(glob_match("*", ""));
        assert!(!glob_match("abc", "ABC"));
    }

    #[test]
    fn names_compare_without_case_and_the_arn_structure_exactly() {
        let arn = "arn:aws:iam::123456789012:role/Temp-Admin";
        assert!(principal_match(
            "arn:aws:iam::123456789012:role/temp-*",
            arn
        ));
        assert!(principal_match("*:role/TEMP-ADMIN", arn));
        assert!(principal_match("arn:aws:iam::*:ROLE/temp-admin", arn));
        assert!(principal_match(
            "arn:aws:iam::123456789012:user/Ops/*",
            "arn:aws:iam::123456789012:user/ops/alice"
        ));
        // Partition, service and account stay exact.
        assert!(!principal_match(
            "ARN:AWS:IAM::123456789012:role/temp-*",
            arn
        ));
        assert!(!principal_match(
            "arn:aws-US-gov:iam::123456789012:role/*",
            "arn:aws-us-gov:iam::123456789012:role/x"
        ));
        assert!(!principal_match(
            "arn:aws:iam::123456789013:role/temp-admin",
            arn
        ));
    }

    #[test]
    fn a_deny_holds_whatever_the_case_of_the_role_name() {
        let b = vec![
            binding(
                "all",
                Some("arn:aws:iam::123456789012:role/*"),
                None,
                "allow",
            ),
            binding(
                "no-temp",
                Some("arn:aws:iam::123456789012:role/temp-*"),
                None,
                "deny",
            ),
        ];
        for name in ["temp-admin", "Temp-Admin", "TEMP-ADMIN", "tEmP-x"] {
            assert!(
                matches!(decide(&b, &role(name), None), Decision::Denied(x) if x.id == "no-temp"),
                "{name}"
            );
        }
        assert!(matches!(decide(&b, &role("Ledger"), None), Decision::Allow(x) if x.id == "all"));
    }

    #[test]
    fn deny_beats_allow_and_no_match_is_refused() {
        let b = vec![
            binding(
                "all",
                Some("arn:aws:iam::123456789012:role/*"),
                None,
                "allow",
            ),
            binding("no-temp", Some("*:role/temp-*"), None, "deny"),
            binding("acct", None, Some("123456789012"), "allow"),
        ];
        assert!(
            matches!(decide(&b, &role("temp-job"), None), Decision::Denied(x) if x.id == "no-temp")
        );
        assert!(matches!(decide(&b, &role("ledger"), None), Decision::Allow(x) if x.id == "all"));
        let other =
            super::super::arn::canonicalise("arn:aws:iam::999999999999:user/x").expect("arn");
        assert_eq!(decide(&b, &other, None), Decision::NoBinding);
        assert_eq!(
            decide(&b, &role("ledger"), Some("payments")),
            Decision::NoBinding
        );
    }
}
