//! The sign-in page: passkey first, password + authenticator code as the fallback, and what a
//! finished sign-in does (session, audit, code or app confirmation).

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::pages_support::{cookie, csrf_ok, realm_context, render};
use super::pending;
use super::session::{SESSION_COOKIE, cookie_path, secure_cookies};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::ACR_PASSWORD_OTP;
use crate::identity::authorize::PendingAuthz;
use crate::identity::{new_token, token_hash};
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::{SessionExtras, SessionRecord, UserRecord};

use super::authorize::*;
use super::common::*;
use crate::identity::fallback::{FallbackFailure, check_fallback};

fn login_page(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let ctx = context! { ..realm_context(realm), ..context! {
        title => "page.sign_in",
        action => format!("{}/login", realm.issuer),
        cancel_url => format!("{}/login/cancel", realm.issuer),
        wait => crate::ratelimit::seconds_until_reset(state.clock.now()),
        csrf => pending.csrf.clone(),
        app => pending.app_name().to_owned(),
        fallback => settings(realm).allow_password_fallback && !pending.require_passkey,
        username => username,
        error => error,
    }};
    let mut res = render(&state.templates, "login.html", ctx, status);
    // The fallback's form is answered with a redirect to the client: allow that one target.
    pending::allow_redirect_to(&mut res, &pending.redirect_uri);
    res
}

/// `GET /realms/{realm}/login`.
pub async fn login_form(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    match pending_flow(&state, &realm, &headers, now) {
        Some((_, p)) => login_page(&state, &realm, &p, "", None, StatusCode::OK),
        // No sign-in was ever started in this browser (the page was opened directly): say where
        // sign-in starts, rather than that it timed out.
        None if crate::login::pages_support::read_cookie(
            &headers,
            crate::login::session::FLOW_COOKIE,
        )
        .is_none() =>
        {
            crate::login::pages_support::message(
                &state.templates,
                Some(&realm),
                StatusCode::BAD_REQUEST,
                "not_started",
            )
        }
        None => expired(&state, &realm),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

const GENERIC_FAILURE: &str = "error.generic_failure";

/// The fair-share keys of a password check: the address and the account.
pub(crate) fn share_keys(ip: Option<IpAddr>, realm: &str, username: &str) -> Vec<String> {
    let mut keys = vec![format!("acct:{realm}/{username}")];
    if let Some(ip) = ip {
        keys.push(format!("ip:{ip}"));
    }
    keys
}

/// `POST /realms/{realm}/login`.
pub async fn login_submit(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let ip = peer_ip(peer);
    if ip_blocked(&state, ip, now) {
        return too_many(&state, &realm);
    }
    let Some((_, pending)) = pending_flow(&state, &realm, &headers, now) else {
        refused_anonymous(&state, &realm, ip, "no_pending_request", now);
        return expired(&state, &realm);
    };
    let Ok(Form(f)) = form else {
        refused_anonymous(&state, &realm, ip, "malformed_form", now);
        return login_page(
            &state,
            &realm,
            &pending,
            "",
            Some(GENERIC_FAILURE),
            StatusCode::BAD_REQUEST,
        );
    };
    if !csrf_ok(&pending.csrf, f.csrf.as_deref()) {
        refused_anonymous(&state, &realm, ip, "csrf", now);
        return csrf_refused(&state, &realm);
    }
    if !settings(&realm).allow_password_fallback || pending.require_passkey {
        return login_page(
            &state,
            &realm,
            &pending,
            "",
            Some("login.passkey_required"),
            StatusCode::FORBIDDEN,
        );
    }
    let username = f.username.unwrap_or_default();
    let account_key = format!("{name}/{username}");
    if state
        .login_account_failures
        .is_blocked(account_key.clone(), now)
    {
        crate::metrics::rate_limited("sign_in_per_account");
        let mut res = login_page(
            &state,
            &realm,
            &pending,
            &username,
            Some("error.throttled"),
            StatusCode::TOO_MANY_REQUESTS,
        );
        let wait = crate::ratelimit::seconds_until_reset(now);
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    let user = if crate::admin::users::is_valid_username(&username) {
        match state.store.user_by_name(&name, &username).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "user lookup failed");
                return unavailable(&state, Some(&realm));
            }
        }
    } else {
        None
    };
    let result = check_fallback(
        &state,
        &realm,
        user.as_ref(),
        &share_keys(ip, &name, &username),
        &f.password.unwrap_or_default(),
        &f.code.unwrap_or_default(),
        now,
    )
    .await;
    let user = match (result, user) {
        (Ok(()), Some(u)) => u,
        (Err(FallbackFailure::Busy), _) => {
            // A shed attempt counts toward the address's limit, so a flood sheds itself.
            if let Some(ip) = ip {
                state.login_ip_failures.record_failure(ip, now);
            }
            return login_page(
                &state,
                &realm,
                &pending,
                &username,
                Some("error.busy"),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        (outcome, user) => {
            let reason = outcome
                .err()
                .unwrap_or(FallbackFailure::UnknownUser)
                .reason();
            state
                .login_account_failures
                .record_failure(account_key, now);
            match &user {
                // A failure against a real account is written at once.
                Some(u) => {
                    if let Some(ip) = ip {
                        state.login_ip_failures.record_failure(ip, now);
                    }
                    audit(
                        &state,
                        &realm,
                        "login.failed",
                        &u.username,
                        Some(&u.id),
                        json!({"reason": reason, "method": "password+otp"}),
                        now,
                    )
                    .await;
                }
                None => refused_anonymous(&state, &realm, ip, reason, now),
            }
            crate::metrics::sign_in(&realm.record.name, "password_otp", "failed");
            // Disabled is only reported once the password and the code were both right.
            let shown = if reason == FallbackFailure::Disabled.reason() {
                "error.disabled"
            } else {
                GENERIC_FAILURE
            };
            return login_page(
                &state,
                &realm,
                &pending,
                &username,
                Some(shown),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let detail = json!({"method": "password+otp", "client_id": pending.client_id});
    match complete_sign_in(
        &state,
        &realm,
        &pending,
        &user,
        "pwd otp",
        ACR_PASSWORD_OTP,
        detail,
        SessionExtras::default(),
        now,
    )
    .await
    {
        Ok(signed_in) => {
            let mut res = see_other(&signed_in.location);
            for c in signed_in.cookies {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            res
        }
        Err(_) => unavailable(&state, Some(&realm)),
    }
}

/// A finished sign-in: where to send the browser (the client's redirect URI with the code, or
/// the app confirmation page) and the cookies to set.
pub(crate) struct SignedIn {
    pub location: String,
    pub cookies: Vec<HeaderValue>,
}

/// Why a sign-in could not be completed.
pub(crate) enum NotSignedIn {
    /// The ceremony was spent by a concurrent request (one assertion opens one session).
    CeremonySpent,
    /// The store failed.
    Unavailable,
}

/// Opens a session for `user` (audited as `login.succeeded`) and issues the code, or, when the
/// request asks the user to confirm the app, sends the browser to that page first. The session,
/// its audit record, the code and `extras` (a ceremony to spend, a passkey's new state) are one
/// transaction: one commit per sign-in.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn complete_sign_in(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    user: &UserRecord,
    amr: &str,
    acr: &str,
    mut detail: serde_json::Value,
    mut extras: SessionExtras,
    now: UnixTime,
) -> Result<SignedIn, NotSignedIn> {
    let name = &realm.record.name;
    let session_token = new_token();
    let session = SessionRecord {
        id_hash: token_hash(&session_token),
        realm: name.clone(),
        user_id: user.id.clone(),
        sid: new_token()[..22].to_owned(),
        created_at: now,
        last_seen: now,
        auth_time: now,
        amr: amr.into(),
        acr: acr.into(),
    };
    detail["sid"] = json!(session.sid);
    let method = if amr.split(' ').any(|a| a == "pwd") {
        "password_otp"
    } else {
        "passkey"
    };
    crate::metrics::sign_in(name, method, "succeeded");
    let audit_rows = [
        AuditDraft::new(now, Some(name), "login.succeeded", &user.username)
            .subject(&user.id)
            .detail(detail),
    ];
    // The user has just interacted (signed in on a page that names the app); only an explicit
    // `prompt=consent` asks again, and then the code is issued after the confirmation.
    let code = if pending.force_consent {
        None
    } else {
        let (code, row) = new_code(pending, &session, now);
        extras.code = Some(row);
        Some(code)
    };
    match state
        .store
        .open_session(&session, &extras, now, &audit_rows)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(NotSignedIn::CeremonySpent),
        Err(e) => {
            tracing::error!(error = %e, "session store failed");
            return Err(NotSignedIn::Unavailable);
        }
    }
    let session_cookie = cookie(
        SESSION_COOKIE,
        &session_token,
        &cookie_path(realm),
        secure_cookies(realm),
        None,
    );
    Ok(match code {
        None => SignedIn {
            location: format!("{}/consent", realm.issuer),
            cookies: vec![session_cookie],
        },
        Some(code) => SignedIn {
            location: code_location(realm, pending, &code),
            cookies: vec![session_cookie, pending::clear(realm)],
        },
    })
}
