//! The account page: sessions, passkeys, the authenticator app, recovery codes, recent security
//! changes and "sign out everywhere". A session cookie alone changes nothing: adding or removing a
//! passkey, replacing the authenticator app and new recovery codes need a sign-in within
//! `RECENT_AUTH_SECS` (else "confirm it's you" here, with a passkey or password + code), and adding
//! a passkey to an account that has passkeys needs a passkey. Each change ends the user's other
//! sessions and refresh tokens in the same transaction, is audited and listed on the page.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::common::*;
use super::i18n::tr;
use super::pages_support::{
    cookie, csrf_ok, lang_for, message, message_with, realm_context, render, when,
};
use super::session::{self, Current, SESSION_COOKIE, cookie_path, secure_cookies};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::CredentialChange;

/// The events the account page lists as "recent security changes".
pub const SECURITY_EVENTS: &[&str] = &[
    "user.passkey_added",
    "user.passkey_removed",
    "user.totp_replaced",
    "user.recovery_codes_replaced",
    "user.signed_out_everywhere",
    "user.reauthenticated",
    "user.enrolled",
    "user.disabled",
    "user.enabled",
];

/// The realm and the signed-in user of an account page, or the page to show instead.
pub(crate) async fn signed_in(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    now: UnixTime,
) -> Result<(std::sync::Arc<LiveRealm>, Current), Response> {
    let realm = realm_or_page(state, name, now).await?;
    match session::current(state, &realm, headers, now).await {
        Some(cur) => Ok((realm, cur)),
        None => Err(message(
            &state.templates,
            Some(&realm),
            StatusCode::UNAUTHORIZED,
            "not_signed_in",
        )),
    }
}

/// Whether `cur` may change credentials now; `need_passkey` for adding a passkey to an account
/// that has one.
pub(crate) fn is_fresh_enough(cur: &Current, need_passkey: bool, now: UnixTime) -> bool {
    crate::identity::sessions::is_recent(&cur.session, now)
        && (!need_passkey || crate::identity::sessions::has_passkey_auth(&cur.session))
}

pub(crate) fn reauth_url(realm: &LiveRealm, need_passkey: bool) -> String {
    format!(
        "{}/account/reauth{}",
        realm.issuer,
        if need_passkey { "?passkey=1" } else { "" }
    )
}

/// The account page's signed-in user after the CSRF check of a form posted to it.
pub(crate) async fn signed_in_form(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    csrf: Option<&str>,
    now: UnixTime,
) -> Result<(std::sync::Arc<LiveRealm>, Current), Response> {
    let (realm, cur) = signed_in(state, name, headers, now).await?;
    if !csrf_ok(&session::session_csrf(&cur.token), csrf) {
        return Err(csrf_refused(state, &realm));
    }
    Ok((realm, cur))
}

/// `signed_in_form`, and a sign-in recent enough to change credentials (else the browser is sent
/// to "confirm it's you").
pub(crate) async fn fresh_form(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    csrf: Option<&str>,
    now: UnixTime,
) -> Result<(std::sync::Arc<LiveRealm>, Current), Response> {
    let (realm, cur) = signed_in_form(state, name, headers, csrf, now).await?;
    if !is_fresh_enough(&cur, false, now) {
        return Err(see_other(&reauth_url(&realm, false)));
    }
    Ok((realm, cur))
}

/// Applies a credential change for the signed-in user (ends their other sessions and refresh
/// tokens, audited as `kind`). `Ok(false)` if there was nothing to change.
pub(crate) async fn apply_change(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    change: &CredentialChange,
    kind: &'static str,
    detail: serde_json::Value,
    now: UnixTime,
) -> Result<bool, crate::store::StoreError> {
    let name = &realm.record.name;
    let rows = [AuditDraft::new(now, Some(name), kind, &cur.user.username)
        .subject(&cur.user.id)
        .detail(detail)];
    let changed = state
        .store
        .change_credentials(name, &cur.user.id, &cur.session.id_hash, change, now, &rows)
        .await;
    if matches!(changed, Ok(true)) {
        // The user's other sessions ended with the change: their apps are told.
        state.logout_outbox.wake();
    }
    changed
}

/// A session's sign-in method in words (`amr` values: `hwk` for a passkey, `pwd otp`).
fn method_words(lang: &str, amr: &str) -> String {
    let key = if amr.split(' ').any(|a| a == "hwk") {
        "method.passkey"
    } else if amr.split(' ').any(|a| a == "pwd") {
        "method.password_otp"
    } else {
        "method.unknown"
    };
    tr(lang, key, &[])
}

/// A security event in words.
fn event_words(lang: &str, kind: &str) -> String {
    if SECURITY_EVENTS.contains(&kind) {
        tr(lang, &format!("event.{kind}"), &[])
    } else {
        tr(lang, "event.other", &[])
    }
}

#[derive(Deserialize, Default)]
pub struct AccountQuery {
    /// The app that linked here (`/account?client_id=...`): the page offers the way back to it.
    client_id: Option<String>,
}

/// "Back to {app}": the registered home page of the app named by `client_id`, if it has one.
/// Only a registered `client_uri` is ever linked, so the parameter is no open redirect.
pub(crate) async fn back_to_app(
    state: &AppState,
    realm: &LiveRealm,
    client_id: Option<&str>,
    now: UnixTime,
) -> Option<(String, String)> {
    let id = client_id.filter(|id| crate::clients::is_valid_client_id(id))?;
    let client = state
        .directory
        .client(&realm.record.name, id, now)
        .await
        .ok()??;
    let uri = client.client_uri.clone()?;
    Some((uri, client.display_name().to_owned()))
}

/// `GET /realms/{realm}/account`.
pub async fn account(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    query: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let (realm, cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let back = back_to_app(&state, &realm, q.client_id.as_deref(), now).await;
    let lang = lang_for(Some(&realm));
    let sessions = state
        .store
        .sessions_of(&name, &cur.user.id)
        .await
        .unwrap_or_default();
    let list: Vec<_> = sessions
        .iter()
        .map(|s| context! { when => when(&realm, s.auth_time), method => method_words(lang, &s.amr), current => s.id_hash == cur.session.id_hash })
        .collect();
    let passkeys: Vec<_> = state
        .store
        .passkeys(&name, &cur.user.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            context! {
                name => p.name,
                added => when(&realm, p.created_at),
                last_used => p.last_used_at.map(|t| when(&realm, t)),
                credential_id => p.credential_id,
            }
        })
        .collect();
    let events: Vec<_> = state
        .store
        .user_events(&name, &cur.user.id, SECURITY_EVENTS, 10)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| context! { what => event_words(lang, &e.kind), when => when(&realm, e.ts), kind => e.kind })
        .collect();
    let ctx = context! { ..realm_context(&realm), ..context! {
        title => "page.account",
        username => cur.user.username.clone(),
        has_totp => cur.user.totp_sealed.is_some(),
        back_url => back.as_ref().map(|b| b.0.clone()),
        back_name => back.as_ref().map(|b| b.1.clone()),
        client_id => q.client_id.clone().filter(|_| back.is_some()),
        sessions => list,
        passkeys => passkeys,
        events => events,
        recent => crate::identity::sessions::is_recent(&cur.session, now),
        reauth_url => reauth_url(&realm, false),
        fallback => settings(&realm).allow_password_fallback,
        csrf => session::session_csrf(&cur.token),
        passkey_action => format!("{}/account/passkey", realm.issuer),
        remove_action => format!("{}/account/passkeys/remove", realm.issuer),
        totp_action => format!("{}/account/totp", realm.issuer),
        recovery_action => format!("{}/account/recovery-codes", realm.issuer),
        sign_out_action => format!("{}/account/sign-out-everywhere", realm.issuer),
        sign_out_here_action => format!("{}/account/sign-out", realm.issuer),
    }};
    render(&state.templates, "account.html", ctx, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
    /// The app the account page was opened from (sign-out pages link back to it).
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `POST /realms/{realm}/account/sign-out-everywhere`.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let (csrf, client_id) = form
        .ok()
        .map(|Form(f)| (f.csrf, f.client_id))
        .unwrap_or_default();
    let (realm, cur) = match signed_in_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let audit_rows = [AuditDraft::new(
        now,
        Some(&name),
        "user.signed_out_everywhere",
        &cur.user.username,
    )
    .subject(&cur.user.id)];
    if state
        .store
        .sign_out_everywhere(&name, &cur.user.id, now, &audit_rows)
        .await
        .is_err()
    {
        return unavailable(&state, Some(&realm));
    }
    state.logout_outbox.wake();
    signed_out_page(
        &state,
        &realm,
        "signed_out_everywhere",
        client_id.as_deref(),
        now,
    )
    .await
}

/// "Signed out" with the ways forward: back to the app it was opened from, or the account page.
async fn signed_out_page(
    state: &AppState,
    realm: &LiveRealm,
    key: &str,
    client_id: Option<&str>,
    now: UnixTime,
) -> Response {
    let links = match back_to_app(state, realm, client_id, now).await {
        Some((href, app)) => vec![app_link(
            realm,
            href,
            "common.back_to_app",
            &app,
            "back-to-app",
        )],
        None => account_links(realm),
    };
    let mut res = message_with(
        &state.templates,
        Some(realm),
        StatusCode::OK,
        key,
        context! { links => links },
    );
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            SESSION_COOKIE,
            "",
            &cookie_path(realm),
            secure_cookies(realm),
            Some(0),
        ),
    );
    res
}

/// `POST /realms/{realm}/account/sign-out`: ends this browser's session only (its refresh tokens
/// die with it: a refresh needs a live session).
pub async fn sign_out_here(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let (csrf, client_id) = form
        .ok()
        .map(|Form(f)| (f.csrf, f.client_id))
        .unwrap_or_default();
    let (realm, cur) = match signed_in_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    // Ended with its audit record and its entry in the revocation feed, in one transaction.
    let audit_rows = [
        AuditDraft::new(now, Some(&name), "user.signed_out", &cur.user.username)
            .subject(&cur.user.id)
            .detail(serde_json::json!({"sid": cur.session.sid})),
    ];
    if state
        .store
        .end_session(&cur.session.id_hash, &name, now, &audit_rows)
        .await
        .is_err()
    {
        return unavailable(&state, Some(&realm));
    }
    state.logout_outbox.wake();
    signed_out_page(&state, &realm, "signed_out", client_id.as_deref(), now).await
}

#[derive(Deserialize)]
pub struct RemovePasskeyForm {
    csrf: Option<String>,
    credential_id: Option<String>,
}

/// `POST /realms/{realm}/account/passkeys/remove`.
pub async fn remove_passkey(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<RemovePasskeyForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let f = form.ok().map(|Form(f)| f);
    let csrf = f.as_ref().and_then(|f| f.csrf.clone());
    let (realm, cur) = match fresh_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let cred = f.and_then(|f| f.credential_id).unwrap_or_default();
    let change = CredentialChange::RemovePasskey {
        credential_id: cred.clone(),
    };
    match apply_change(
        &state,
        &realm,
        &cur,
        &change,
        "user.passkey_removed",
        json!({"credential_id": cred}),
        now,
    )
    .await
    {
        Ok(true) => see_other(&format!("{}/account", realm.issuer)),
        Ok(false) => message(
            &state.templates,
            Some(&realm),
            StatusCode::NOT_FOUND,
            "passkey_gone",
        ),
        Err(e) => {
            tracing::error!(error = %e, "passkey removal failed");
            unavailable(&state, Some(&realm))
        }
    }
}

/// The way back to the account page, as a message page's link.
pub(crate) fn account_links(realm: &LiveRealm) -> Vec<minijinja::Value> {
    vec![context! {
        href => format!("{}/account", realm.issuer),
        label => tr(lang_for(Some(realm)), "common.go_to_account", &[]),
        id => "go-to-account",
    }]
}

/// A page's link to an app (`key`: "Back to {app}", "Continue to {app}").
pub(crate) fn app_link(
    realm: &LiveRealm,
    href: String,
    key: &str,
    app: &str,
    id: &str,
) -> minijinja::Value {
    context! {
        href => href,
        label => tr(lang_for(Some(realm)), key, &[("app", app)]),
        id => id,
    }
}
