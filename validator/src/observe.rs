//! Counters through the `metrics` facade (feature `metrics`; without it these compile to
//! nothing). The application installs whatever recorder it exports with (Prometheus, StatsD...):
//!
//! - `sigil_validator_jwks_fetches_total{outcome="ok"|"error"}`: key-set fetches;
//! - `sigil_validator_unknown_kid_refetches_total`: fetches caused by an unknown `kid`;
//! - `sigil_validator_stale_keys_used_total`: tokens verified with keys past their `max-age`
//!   because the last refresh failed (inside the stale period);
//! - `sigil_validator_refusals_total{reason}`: refused requests, by a fixed reason word;
//! - `sigil_validator_authorizations_total{outcome="allow"|"deny"}`: policy decisions.

use crate::error::{Error, ErrorKind};

#[cfg(feature = "metrics")]
pub(crate) fn jwks_fetch(ok: bool) {
    metrics::counter!("sigil_validator_jwks_fetches_total", "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn jwks_fetch(_ok: bool) {}

#[cfg(feature = "metrics")]
pub(crate) fn unknown_kid_refetch() {
    metrics::counter!("sigil_validator_unknown_kid_refetches_total").increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn unknown_kid_refetch() {}

#[cfg(feature = "metrics")]
pub(crate) fn authorization(d: &crate::policy::Decision) {
    let outcome = if d.is_allowed() { "allow" } else { "deny" };
    metrics::counter!("sigil_validator_authorizations_total", "outcome" => outcome).increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn authorization(_d: &crate::policy::Decision) {}

#[cfg(feature = "metrics")]
pub(crate) fn stale_keys_used() {
    metrics::counter!("sigil_validator_stale_keys_used_total").increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn stale_keys_used() {}

#[cfg(feature = "metrics")]
pub(crate) fn refusal(e: &Error) {
    metrics::counter!("sigil_validator_refusals_total", "reason" => reason(e.kind())).increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn refusal(_e: &Error) {}

/// A fixed word per kind of refusal: the label value (never the token or the detail).
pub fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Malformed => "malformed",
        ErrorKind::UnsupportedHeader(_) => "unsupported_header",
        ErrorKind::UnknownKey => "unknown_key",
        ErrorKind::AlgorithmMismatch => "algorithm_mismatch",
        ErrorKind::BadSignature => "bad_signature",
        ErrorKind::Expired => "expired",
        ErrorKind::NotYetValid => "not_yet_valid",
        ErrorKind::WrongIssuer => "wrong_issuer",
        ErrorKind::WrongAudience => "wrong_audience",
        ErrorKind::WrongTokenUse => "wrong_token_use",
        ErrorKind::ClientNotAllowed => "client_not_allowed",
        ErrorKind::MissingClaim(_) => "missing_claim",
        ErrorKind::InsufficientScope(_) => "insufficient_scope",
        ErrorKind::Discovery(_) => "discovery",
        ErrorKind::Jwks(_) => "jwks_unavailable",
        ErrorKind::MissingToken => "missing_token",
        ErrorKind::NotSenderConstrained => "not_sender_constrained",
        ErrorKind::UnsupportedConfirmation => "unsupported_confirmation",
        ErrorKind::CertificateRequired => "certificate_required",
        ErrorKind::CertificateMismatch => "certificate_mismatch",
        ErrorKind::DpopBoundTokenAsBearer => "dpop_bound_as_bearer",
        ErrorKind::NotDpopBound => "not_dpop_bound",
        ErrorKind::DpopKeyMismatch => "dpop_key_mismatch",
        ErrorKind::DpopProof(_) => "dpop_proof",
        ErrorKind::Revoked => "revoked",
        ErrorKind::RevocationsUnavailable => "revocations_unavailable",
        ErrorKind::Feed(_) => "feed",
        ErrorKind::Policies(_) => "policies_unavailable",
        ErrorKind::PolicyDenied => "policy_denied",
        ErrorKind::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
    }
}
