//! Scope strings (RFC 6749 §3.3): parsing, and the rule that a token's scopes are a subset of
//! what its client may have.

use std::collections::BTreeSet;

/// A `scope-token`: `%x21 / %x23-5B / %x5D-7E`, bounded in length.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is empty")]
    Empty,
    #[error("scope contains a malformed token")]
    Malformed,
    #[error("too many scopes requested")]
    TooMany,
    #[error("scope {0:?} is not allowed for this client")]
    NotAllowed(String),
}

/// Splits a space-delimited scope string; order-preserving, duplicates removed.
pub fn parse(text: &str) -> Result<Vec<&str>, ScopeError> {
    let mut out: Vec<&str> = Vec::new();
    for tok in text.split(' ') {
        if tok.is_empty() {
            continue;
        }
        if !is_scope_token(tok) {
            return Err(ScopeError::Malformed);
        }
        if !out.contains(&tok) {
            out.push(tok);
        }
        if out.len() > 64 {
            return Err(ScopeError::TooMany);
        }
    }
    if out.is_empty() {
        return Err(ScopeError::Empty);
    }
    Ok(out)
}

/// Decides the granted scope: `requested` (or `defaults` when absent) must lie within `allowed`.
/// Returns the space-joined grant.
pub fn grant(requested: Option<&str>, allowed: &str, defaults: &str) -> Result<String, ScopeError> {
    let allowed: BTreeSet<&str> = allowed.split(' ').filter(|s| !s.is_empty()).collect();
    let wanted = parse(requested.unwrap_or(defaults))?;
    if let Some(bad) = wanted.iter().find(|s| !allowed.contains(*s)) {
        return Err(ScopeError::NotAllowed((*bad).to_owned()));
    }
    Ok(wanted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_rule() {
        let allowed = "tx:post:ach balances:read";
        assert_eq!(
            grant(Some("tx:post:ach"), allowed, "").as_deref(),
            Ok("tx:post:ach")
        );
        assert_eq!(
            grant(None, allowed, "balances:read").as_deref(),
            Ok("balances:read")
        );
        assert_eq!(
            grant(Some("balances:read balances:read"), allowed, "").as_deref(),
            Ok("balances:read")
        );
        assert_eq!(
            grant(Some("tx:post:wire"), allowed, ""),
            Err(ScopeError::NotAllowed("tx:post:wire".into()))
        );
        assert_eq!(grant(Some(""), allowed, ""), Err(ScopeError::Empty));
        assert_eq!(grant(None, allowed, ""), Err(ScopeError::Empty));
        assert_eq!(grant(Some("a\"b"), allowed, ""), Err(ScopeError::Malformed));
        // A prefix of an allowed scope is not that scope.
        assert!(grant(Some("tx:post"), allowed, "").is_err());
    }
}
