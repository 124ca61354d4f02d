//! Discoverable passkey sign-in (no username typed), with user verification required.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::{DiscoverableAuthentication, Passkey, PublicKeyCredential};

use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::ACR_PASSKEY;
use crate::login::common::*;
use crate::login::pages_support::csrf_ok;
use crate::login::sign_in::NotSignedIn;
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::SessionExtras;

#[allow(unused_imports)]
use super::account::*;
#[allow(unused_imports)]
use super::enrol::*;
use super::*;

#[derive(Deserialize)]
pub struct SignInOptionsBody {
    pub(super) csrf: String,
    /// Conditional UI (autofill) rather than a modal prompt.
    #[serde(default)]
    conditional: bool,
}

/// `POST /realms/{realm}/login/passkey/options`. The ceremony goes to the browser sealed (nothing
/// is written); starts count toward the address's sign-in limit like failures do (30 a minute is
/// far above a person's use, autofill and a button press included).
pub async fn sign_in_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<axum::Json<SignInOptionsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // A malformed body is this handler's own refusal, not the framework's plain-text one.
    let body = body.ok();
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let ip = peer_ip(peer);
    if ip_blocked(&state, ip, now) {
        return json_error(StatusCode::TOO_MANY_REQUESTS, "too many attempts");
    }
    if let Some(ip) = ip {
        state.login_ip_failures.record_failure(ip, now);
    }
    let Some((flow_hash, pending)) =
        crate::login::authorize::pending_flow(&state, &realm, &headers, now)
    else {
        return json_error(StatusCode::BAD_REQUEST, "sign-in expired");
    };
    let Some(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed request");
    };
    if !csrf_ok(&pending.csrf, Some(&body.csrf)) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    // The ceremony goes to the browser sealed: starting a sign-in writes nothing.
    let Some(Ok((mut options, auth))) =
        webauthn_for(&realm).map(|wa| wa.start_discoverable_authentication())
    else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "webauthn");
    };
    if !body.conditional {
        options.mediation = None;
    }
    let Some(sealed) = super::ceremony::seal(&state, &realm, &flow_hash, auth, now) else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    let mut res = ok_json(serde_json::to_value(&options).unwrap_or_default());
    res.headers_mut().append(header::SET_COOKIE, sealed);
    res
}

#[derive(Deserialize)]
pub struct SignInBody {
    pub(super) csrf: String,
    pub(super) credential: PublicKeyCredential,
}

/// Why an assertion was refused; `user` when the credential named a real account.
pub(super) struct AssertionRefused {
    pub(super) reason: &'static str,
    pub(super) user: Option<String>,
}

/// Takes the ceremony under `key` (one winner among concurrent posts of the same assertion),
/// verifies the assertion against the stored passkey and records its use. Returns the user id.
pub(super) async fn verify_assertion(
    state: &AppState,
    realm: &LiveRealm,
    auth: Option<DiscoverableAuthentication>,
    credential: &PublicKeyCredential,
) -> Result<Verified, AssertionRefused> {
    let name = &realm.record.name;
    let refused = |reason, user: Option<&str>| AssertionRefused {
        reason,
        user: user.map(str::to_owned),
    };
    // The ceremony is spent by the caller, in the transaction that opens the session (or
    // confirms it), so of concurrent posts of one assertion exactly one wins.
    let (Some(wa), Some(auth)) = (webauthn_for(realm), auth) else {
        return Err(refused("ceremony_expired", None));
    };
    let Ok((uuid, cred_id)) = wa.identify_discoverable_authentication(credential) else {
        return Err(refused("no_user_handle", None));
    };
    let user_id = uuid.simple().to_string();
    let cred_b64 = B64.encode(cred_id);
    let record = match state.store.passkey(name, &cred_b64).await {
        Ok(Some(r)) if r.user_id == user_id => r,
        _ => return Err(refused("unknown_credential", None)),
    };
    let Ok(mut passkey) = serde_json::from_str::<Passkey>(&record.passkey) else {
        return Err(refused("corrupt_credential", Some(&user_id)));
    };
    let result = match wa.finish_discoverable_authentication_v2(credential, auth, &passkey) {
        Ok(r) => r,
        Err(_) => return Err(refused("bad_assertion", Some(&user_id))),
    };
    if !result.user_verified() {
        return Err(refused("user_not_verified", Some(&user_id)));
    }
    passkey.update_credential(&result);
    Ok(Verified {
        user_id,
        credential_id: cred_b64,
        passkey: serde_json::to_string(&passkey).unwrap_or_default(),
    })
}

/// A verified assertion: whose, which passkey, and the passkey's new state (its counter) to store
/// with whatever the assertion opens.
pub(super) struct Verified {
    pub(super) user_id: String,
    pub(super) credential_id: String,
    pub(super) passkey: String,
}

/// Counts and audits a refused assertion: individually when it named a real account, tallied
/// when anonymous.
pub(super) async fn assertion_refused(
    state: &AppState,
    realm: &LiveRealm,
    ip: Option<std::net::IpAddr>,
    r: &AssertionRefused,
    now: UnixTime,
) -> Response {
    match &r.user {
        Some(user) => {
            if let Some(ip) = ip {
                state.login_ip_failures.record_failure(ip, now);
            }
            audit(
                state,
                realm,
                "login.failed",
                user,
                Some(user),
                json!({"reason": r.reason, "method": "passkey"}),
                now,
            )
            .await;
        }
        None => refused_anonymous(state, realm, ip, r.reason, now),
    }
    crate::metrics::sign_in(&realm.record.name, "passkey", "failed");
    json_error(StatusCode::UNAUTHORIZED, "the passkey was not accepted")
}

/// `POST /realms/{realm}/login/passkey`: verifies the assertion, opens a session, answers with
/// the redirect (code and state, or the app confirmation) for the page's script to follow.
pub async fn sign_in(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<axum::Json<SignInBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let ip = peer_ip(peer);
    let Some((flow_hash, pending)) =
        crate::login::authorize::pending_flow(&state, &realm, &headers, now)
    else {
        return json_error(StatusCode::BAD_REQUEST, "sign-in expired");
    };
    let Ok(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credential");
    };
    if !csrf_ok(&pending.csrf, Some(&body.csrf)) {
        refused_anonymous(&state, &realm, ip, "csrf", now);
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    if ip_blocked(&state, ip, now) {
        return json_error(StatusCode::TOO_MANY_REQUESTS, "too many attempts");
    }
    let ceremony = super::ceremony::read(&state, &realm, &headers, &flow_hash, now);
    let claim = ceremony.as_ref().map(super::ceremony::claim);
    let auth = ceremony.map(|c| c.state);
    let verified = match verify_assertion(&state, &realm, auth, &body.credential).await {
        Ok(x) => x,
        Err(r) if r.reason == "ceremony_expired" => {
            return json_error(StatusCode::BAD_REQUEST, "ceremony expired");
        }
        Err(r) => return assertion_refused(&state, &realm, ip, &r, now).await,
    };
    let Verified {
        user_id,
        credential_id: cred_b64,
        passkey,
    } = verified;
    let user = match state.store.user_by_id(&name, &user_id).await {
        Ok(Some(u)) if u.enabled => u,
        _ => {
            let r = AssertionRefused {
                reason: "user_disabled",
                user: Some(user_id),
            };
            // The passkey itself was verified: saying the account is disabled tells its holder
            // only what an attacker without it cannot learn.
            let _ = assertion_refused(&state, &realm, ip, &r, now).await;
            return json_error(StatusCode::FORBIDDEN, "account disabled");
        }
    };
    let detail =
        json!({"method": "passkey", "client_id": pending.client_id, "credential_id": cred_b64});
    let signed_in = match crate::login::sign_in::complete_sign_in(
        &state,
        &realm,
        &pending,
        &user,
        "hwk user",
        ACR_PASSKEY,
        detail,
        SessionExtras {
            claim,
            passkey: Some((cred_b64, passkey)),
            ..SessionExtras::default()
        },
        now,
    )
    .await
    {
        Ok(s) => s,
        // Another post of the same assertion opened the session.
        Err(NotSignedIn::CeremonySpent) => {
            return json_error(StatusCode::BAD_REQUEST, "ceremony expired");
        }
        Err(NotSignedIn::Unavailable) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
    };
    let mut res = ok_json(json!({ "redirect": signed_in.location }));
    for c in signed_in.cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res.headers_mut()
        .append(header::SET_COOKIE, super::ceremony::clear(&realm));
    res
}
