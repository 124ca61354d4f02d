//! "Confirm it's you" with a passkey before a credential change.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::identity::ACR_PASSKEY;
use crate::login::common::*;
use crate::login::reauth::reauthenticate;
use crate::login::session::Current;
use crate::oidc::RealmPath;
use crate::state::AppState;

#[allow(unused_imports)]
use super::account::*;
#[allow(unused_imports)]
use super::enrol::*;
#[allow(unused_imports)]
use super::sign_in::*;
use super::*;

pub(super) fn reauth_key(cur: &Current) -> String {
    format!("{}:reauth", cur.session.id_hash)
}

/// `POST /realms/{realm}/account/reauth/passkey/options`.
pub async fn reauth_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Result<axum::Json<SignInOptionsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // A malformed body is this handler's own refusal, not the framework's plain-text one.
    let body = body.ok();
    let now = state.clock.now();
    let csrf = body.as_ref().map(|b| b.csrf.as_str());
    let (realm, cur) = match account_user(&state, &name, &headers, csrf, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    start_authentication(&state, &realm, &reauth_key(&cur), now).await
}

/// `POST /realms/{realm}/account/reauth/passkey`: a passkey of this user confirms the session.
pub async fn reauth_finish(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<axum::Json<SignInBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = state.clock.now();
    let Ok(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credential");
    };
    let (realm, cur) = match account_user(&state, &name, &headers, Some(&body.csrf), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let ip = peer_ip(peer);
    if ip_blocked(&state, ip, now) {
        return json_error(StatusCode::TOO_MANY_REQUESTS, "too many attempts");
    }
    let key = reauth_key(&cur);
    let auth = state
        .store
        .flow(&key, &name, "passkey-auth", now)
        .await
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok());
    let verified = match verify_assertion(&state, &realm, auth, &body.credential).await {
        Ok(v) if v.user_id == cur.user.id => v,
        Ok(_) => {
            let r = AssertionRefused {
                reason: "another_users_passkey",
                user: Some(cur.user.id.clone()),
            };
            return assertion_refused(&state, &realm, ip, &r, now).await;
        }
        Err(r) => return assertion_refused(&state, &realm, ip, &r, now).await,
    };
    // One confirmation per ceremony: of concurrent posts of one assertion, one spends it.
    if !matches!(
        state
            .store
            .take_flow(&key, &name, "passkey-auth", now)
            .await,
        Ok(Some(_))
    ) {
        return json_error(StatusCode::BAD_REQUEST, "ceremony expired");
    }
    let _ = state
        .store
        .update_passkey(&name, &verified.credential_id, &verified.passkey, now)
        .await;
    match reauthenticate(&state, &realm, &cur, "hwk user", ACR_PASSKEY, now).await {
        Ok(()) => ok_json(json!({"redirect": format!("{}/account", realm.issuer)})),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// Starts a discoverable authentication (a modal prompt); its state is kept (upserted) under
/// `key`, spent by `reauth_finish`.
async fn start_authentication(
    state: &AppState,
    realm: &LiveRealm,
    key: &str,
    now: UnixTime,
) -> Response {
    let Some(Ok((mut options, auth))) =
        webauthn_for(realm).map(|wa| wa.start_discoverable_authentication())
    else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "webauthn");
    };
    options.mediation = None;
    let data = serde_json::to_string(&auth).unwrap_or_default();
    if state
        .store
        .put_flow(
            key,
            &realm.record.name,
            "passkey-auth",
            &data,
            now + CEREMONY_TTL,
            now,
        )
        .await
        .is_err()
    {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    ok_json(serde_json::to_value(&options).unwrap_or_default())
}
