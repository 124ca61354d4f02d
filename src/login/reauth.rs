//! "Confirm it's you": a fresh password + code (or passkey, in `passkeys`) within the session
//! before a credential change.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::common::*;
use super::pages_support::{realm_context, render};
use super::session::{self, Current};
use super::sign_in::*;
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::ACR_PASSWORD_OTP;
use crate::oidc::RealmPath;
use crate::state::AppState;

use super::account::*;
use crate::identity::fallback::{FallbackFailure, check_fallback};

#[derive(Deserialize)]
pub struct ReauthQuery {
    passkey: Option<String>,
}

fn reauth_page(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    passkey_only: bool,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let ctx = context! { ..realm_context(realm), ..context! {
        title => "page.reauth",
        account_url => format!("{}/account", realm.issuer),
        wait => crate::ratelimit::seconds_until_reset(state.clock.now()),
        action => format!("{}/account/reauth", realm.issuer),
        csrf => session::session_csrf(&cur.token),
        username => cur.user.username.clone(),
        passkey_only => passkey_only,
        fallback => !passkey_only
            && settings(realm).allow_password_fallback
            && cur.user.password_hash.is_some()
            && cur.user.totp_sealed.is_some(),
        error => error,
    }};
    render(&state.templates, "reauth.html", ctx, status)
}

/// `GET /realms/{realm}/account/reauth`: confirm it's you before a credential change.
pub async fn reauth_form(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    query: Result<Query<ReauthQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let (realm, cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let passkey_only = query.is_ok_and(|Query(q)| q.passkey.is_some());
    reauth_page(&state, &realm, &cur, passkey_only, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct ReauthForm {
    csrf: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

/// `POST /realms/{realm}/account/reauth`: password + code within the session.
pub async fn reauth_submit(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<ReauthForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let f = form.ok().map(|Form(f)| f);
    let csrf = f.as_ref().and_then(|f| f.csrf.clone());
    let (realm, cur) = match signed_in_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let ip = peer_ip(peer);
    let account_key = format!("{name}/{}", cur.user.username);
    if ip_blocked(&state, ip, now)
        || state
            .login_account_failures
            .is_blocked(account_key.clone(), now)
    {
        return too_many(&state, &realm);
    }
    if !settings(&realm).allow_password_fallback {
        return reauth_page(
            &state,
            &realm,
            &cur,
            true,
            Some("reauth.passkey_only"),
            StatusCode::FORBIDDEN,
        );
    }
    let f = f.unwrap_or(ReauthForm {
        csrf: None,
        password: None,
        code: None,
    });
    let result = check_fallback(
        &state,
        &realm,
        Some(&cur.user),
        &share_keys(ip, &name, &cur.user.username),
        &f.password.unwrap_or_default(),
        &f.code.unwrap_or_default(),
        now,
    )
    .await;
    match result {
        Ok(()) => {}
        Err(FallbackFailure::Busy) => {
            return reauth_page(
                &state,
                &realm,
                &cur,
                false,
                Some("error.busy"),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        Err(why) => {
            if let Some(ip) = ip {
                state.login_ip_failures.record_failure(ip, now);
            }
            state
                .login_account_failures
                .record_failure(account_key, now);
            audit(
                &state,
                &realm,
                "login.failed",
                &cur.user.username,
                Some(&cur.user.id),
                json!({"reason": why.reason(), "method": "password+otp", "reauth": true}),
                now,
            )
            .await;
            crate::metrics::sign_in(&realm.record.name, "password_otp", "failed");
            return reauth_page(
                &state,
                &realm,
                &cur,
                false,
                Some("error.generic_failure"),
                StatusCode::UNAUTHORIZED,
            );
        }
    }
    match reauthenticate(&state, &realm, &cur, "pwd otp", ACR_PASSWORD_OTP, now).await {
        Ok(()) => see_other(&format!("{}/account", realm.issuer)),
        Err(res) => res,
    }
}

/// Records a fresh authentication in the user's current session (audited).
pub(crate) async fn reauthenticate(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    amr: &str,
    acr: &str,
    now: UnixTime,
) -> Result<(), Response> {
    let rows = [AuditDraft::new(
        now,
        Some(&realm.record.name),
        "user.reauthenticated",
        &cur.user.username,
    )
    .subject(&cur.user.id)
    .detail(json!({"amr": amr, "sid": cur.session.sid}))];
    match state
        .store
        .reauthenticate_session(&cur.session.id_hash, now, amr, acr, &rows)
        .await
    {
        Ok(true) => Ok(()),
        _ => Err(unavailable(state, Some(realm))),
    }
}
