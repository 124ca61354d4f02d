//! The password + authenticator code sign-in check.

use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::{recovery, totp};
use crate::state::AppState;
use crate::store::login::UserRecord;

/// Why a password + code sign-in failed (for the audit log; the user sees one generic message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FallbackFailure {
    Busy,
    UnknownUser,
    BadPassword,
    BadCode,
    BadRecoveryCode,
    Disabled,
}

impl FallbackFailure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            FallbackFailure::Busy => "busy",
            FallbackFailure::UnknownUser => "unknown_user",
            FallbackFailure::BadPassword => "bad_password",
            FallbackFailure::BadCode => "bad_or_replayed_code",
            FallbackFailure::BadRecoveryCode => "bad_recovery_code",
            FallbackFailure::Disabled => "user_disabled",
        }
    }
}

/// Checks password and one-time (or recovery) code. An unknown user, a wrong password and a wrong
/// code do the same work (argon2, then a read-only code check) and get the same answer; the code
/// or recovery code is spent only when the password is right too, so a wrong password never
/// burns the user's second factor.
pub(crate) async fn check_fallback(
    state: &AppState,
    realm: &LiveRealm,
    user: Option<&UserRecord>,
    share: &[String],
    pw: &str,
    code: &str,
    now: UnixTime,
) -> Result<(), FallbackFailure> {
    let name = &realm.record.name;
    let stored = user.and_then(|u| u.password_hash.clone());
    let password_ok = state
        .passwords
        .verify(share, stored, pw.to_owned())
        .await
        .map_err(|_| FallbackFailure::Busy)?;
    let secret = match user.and_then(|u| u.totp_sealed.as_ref().map(|s| (u, s))) {
        Some((u, sealed)) => state.kek.open(&super::totp::aad(name, &u.id), sealed).ok(),
        None => None,
    };
    let is_totp = code.trim().len() == 6;
    // First, without spending anything: would the code pass?
    let step = if is_totp {
        totp::matching_step(secret.as_deref().unwrap_or(&[0u8; 20]), code, now)
            .filter(|s| secret.is_some() && user.is_some_and(|u| *s > u.totp_last_step))
    } else {
        None
    };
    let recovery_hash = (!is_totp).then(|| recovery::hash(code));
    let code_ok = match (user, step, &recovery_hash) {
        (Some(_), Some(_), _) => true,
        (Some(u), None, Some(h)) => state
            .store
            .has_recovery_code(name, &u.id, h)
            .await
            .unwrap_or(false),
        _ => false,
    };
    let bad_code = if is_totp {
        FallbackFailure::BadCode
    } else {
        FallbackFailure::BadRecoveryCode
    };
    let u = match user {
        None => return Err(FallbackFailure::UnknownUser),
        Some(_) if !password_ok => return Err(FallbackFailure::BadPassword),
        Some(_) if !code_ok => return Err(bad_code),
        Some(u) if !u.enabled => return Err(FallbackFailure::Disabled),
        Some(u) => u,
    };
    // Both factors are right: spend the code, once (a concurrent use of the same code loses).
    let spent = match (step, recovery_hash) {
        (Some(step), _) => state.store.use_totp_step(name, &u.id, step).await,
        (None, Some(h)) => state.store.use_recovery_code(name, &u.id, &h, now).await,
        (None, None) => Ok(false),
    };
    if spent.unwrap_or(false) {
        Ok(())
    } else {
        Err(bad_code)
    }
}
