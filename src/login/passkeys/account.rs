//! Adding a passkey from the account page.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::login::account::{apply_change, is_fresh_enough, reauth_url};
use crate::login::pages_support::csrf_ok;
use crate::login::session::{self, Current};
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::CredentialChange;

#[allow(unused_imports)]
use super::enrol::*;
#[allow(unused_imports)]
use super::sign_in::*;
use super::*;

/// The signed-in user of the account page's JSON calls, after the CSRF check.
pub(super) async fn account_user(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    csrf: Option<&str>,
    now: UnixTime,
) -> Result<(std::sync::Arc<LiveRealm>, Current), Response> {
    let realm = realm(state, name, now).await?;
    let Some(cur) = session::current(state, &realm, headers, now).await else {
        return Err(json_error(StatusCode::UNAUTHORIZED, "not signed in"));
    };
    if !csrf_ok(&session::session_csrf(&cur.token), csrf) {
        return Err(json_error(StatusCode::FORBIDDEN, "csrf"));
    }
    Ok((realm, cur))
}

/// Adding a passkey needs a recent sign-in, and a passkey sign-in when the account has one.
pub(super) async fn may_add_passkey(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    now: UnixTime,
) -> Result<(), Response> {
    let has_passkeys = match state.store.passkeys(&realm.record.name, &cur.user.id).await {
        Ok(p) => !p.is_empty(),
        Err(_) => return Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")),
    };
    if is_fresh_enough(cur, has_passkeys, now) {
        return Ok(());
    }
    let mut res = (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": "reauth_required", "reauth": reauth_url(realm, has_passkeys)})),
    )
        .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Err(res)
}

pub(super) fn account_reg_key(cur: &Current) -> String {
    format!("{}:reg", cur.session.id_hash)
}

/// `POST /realms/{realm}/account/passkey/options`.
pub async fn account_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Result<axum::Json<CsrfBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // A malformed body is this handler's own refusal, not the framework's plain-text one.
    let body = body.ok();
    let now = state.clock.now();
    let csrf = body.as_ref().map(|b| b.csrf.as_str());
    let (realm, cur) = match account_user(&state, &name, &headers, csrf, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    if let Err(res) = may_add_passkey(&state, &realm, &cur, now).await {
        return res;
    }
    start_registration(&state, &realm, &cur.user.id, &account_reg_key(&cur), now)
        .await
        .unwrap_or_else(|e| e)
}

/// `POST /realms/{realm}/account/passkey`: stores the passkey, ends the user's other sessions and
/// refresh tokens (one transaction, audited).
pub async fn account_finish(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Result<axum::Json<RegisterBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = state.clock.now();
    let Ok(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credential");
    };
    let (realm, cur) = match account_user(&state, &name, &headers, Some(&body.csrf), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    if let Err(res) = may_add_passkey(&state, &realm, &cur, now).await {
        return res;
    }
    let record = match finish_registration(
        &state,
        &realm,
        &cur.user.id,
        &account_reg_key(&cur),
        body,
        now,
    )
    .await
    {
        Ok(r) => r,
        Err(res) => return res,
    };
    let detail = passkey_added_audit(&record);
    match apply_change(
        &state,
        &realm,
        &cur,
        &CredentialChange::AddPasskey(record),
        "user.passkey_added",
        detail,
        now,
    )
    .await
    {
        Ok(_) => ok_json(json!({"done": true})),
        Err(crate::store::StoreError::Conflict(_)) => {
            json_error(StatusCode::CONFLICT, "this passkey is already registered")
        }
        Err(e) => {
            tracing::error!(error = %e, "passkey store failed");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    }
}
