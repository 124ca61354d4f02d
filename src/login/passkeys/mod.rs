//! Passkeys (WebAuthn, `webauthn-rs`): registration while enrolling, and discoverable sign-in
//! (no username typed) with user verification required. Ceremony state lives server-side in the
//! flows table with an expiry, never in a client-held cookie. The relying party id and origin
//! follow the realm's public URL.

mod account;
mod ceremony;
mod enrol;
mod reauth;
mod sign_in;

pub use account::{account_finish, account_options};
pub use enrol::{enrol_finish, enrol_options};
pub use reauth::{reauth_finish, reauth_options};
pub use sign_in::{sign_in, sign_in_options};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::json;
use url::Url;
use webauthn_rs::prelude::{Passkey, PasskeyRegistration, Uuid, Webauthn, WebauthnBuilder};
use webauthn_rs_proto::{ResidentKeyRequirement, UserVerificationPolicy};

use super::enrol::EnrolFlow;
use super::session::ENROL_COOKIE;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;
use crate::store::login::PasskeyRecord;

const CEREMONY_TTL: i64 = 300;

/// The realm's relying party: id = the public URL's host, origin = its scheme://host[:port].
pub fn webauthn_for(realm: &LiveRealm) -> Option<Webauthn> {
    let url = Url::parse(&realm.issuer).ok()?;
    let host = url.host_str()?.to_owned();
    let origin = Url::parse(&url.origin().ascii_serialization()).ok()?;
    let name = realm
        .record
        .display_name
        .clone()
        .unwrap_or_else(|| realm.record.name.clone());
    WebauthnBuilder::new(&host, &origin)
        .ok()?
        .rp_name(&name)
        .build()
        .ok()
}

pub(super) fn json_error(status: StatusCode, error: &str) -> Response {
    let mut res = (status, axum::Json(json!({ "error": error }))).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

pub(super) fn ok_json(value: serde_json::Value) -> Response {
    let mut res = axum::Json(value).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

pub(super) async fn realm(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<std::sync::Arc<LiveRealm>, Response> {
    match state.directory.realm(name, now).await {
        // An unusable stored sign-in policy refuses sign-in (fail closed).
        Ok(Some(r)) if r.login().is_none() => {
            Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"))
        }
        Ok(Some(r)) => Ok(r),
        _ => Err(json_error(StatusCode::NOT_FOUND, "unknown realm")),
    }
}

pub(super) fn user_uuid(user_id: &str) -> Option<Uuid> {
    Uuid::parse_str(user_id).ok()
}

#[derive(Deserialize)]
pub struct CsrfBody {
    csrf: String,
}

pub(super) async fn enrol_flow(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    now: UnixTime,
) -> Option<(String, EnrolFlow)> {
    super::session::read_flow(state, realm, headers, ENROL_COOKIE, "enrol", now).await
}

/// `POST /realms/{realm}/enrol/passkey/options`.
/// Starts a registration for `user_id`; the ceremony state is kept under `key` for five minutes.
pub(super) async fn start_registration(
    state: &AppState,
    realm: &LiveRealm,
    user_id: &str,
    key: &str,
    now: UnixTime,
) -> Result<Response, Response> {
    let name = &realm.record.name;
    let (Some(wa), Some(uuid), Ok(Some(user))) = (
        webauthn_for(realm),
        user_uuid(user_id),
        state.store.user_by_id(name, user_id).await,
    ) else {
        return Err(json_error(StatusCode::BAD_REQUEST, "expired"));
    };
    let existing: Vec<_> = state
        .store
        .passkeys(name, &user.id)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|p| serde_json::from_str::<Passkey>(&p.passkey).ok())
        .map(|p| p.cred_id().clone())
        .collect();
    let Ok((mut options, reg)) =
        wa.start_passkey_registration(uuid, &user.username, &user.username, Some(existing))
    else {
        return Err(json_error(StatusCode::INTERNAL_SERVER_ERROR, "webauthn"));
    };
    // A discoverable credential, so sign-in needs no username.
    if let Some(sel) = options.public_key.authenticator_selection.as_mut() {
        sel.resident_key = Some(ResidentKeyRequirement::Required);
        sel.require_resident_key = true;
        sel.user_verification = UserVerificationPolicy::Required;
    }
    let data = serde_json::to_string(&reg).unwrap_or_default();
    state
        .store
        .put_flow(key, name, "passkey-reg", &data, now + CEREMONY_TTL, now)
        .await
        .map_err(|_| json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"))?;
    Ok(ok_json(serde_json::to_value(&options).unwrap_or_default()))
}

/// Verifies a registration started under `key` (taken: one finish per ceremony) and returns the
/// passkey to store; the caller stores it with the enrolment or account change it belongs to.
pub(super) async fn finish_registration(
    state: &AppState,
    realm: &LiveRealm,
    user_id: &str,
    key: &str,
    body: enrol::RegisterBody,
    now: UnixTime,
) -> Result<PasskeyRecord, Response> {
    let name = &realm.record.name;
    let state_json = state
        .store
        .take_flow(key, name, "passkey-reg", now)
        .await
        .ok()
        .flatten();
    let (Some(wa), Some(reg)) = (
        webauthn_for(realm),
        state_json.and_then(|s| serde_json::from_str::<PasskeyRegistration>(&s).ok()),
    ) else {
        return Err(json_error(StatusCode::BAD_REQUEST, "ceremony expired"));
    };
    let passkey = wa
        .finish_passkey_registration(&body.credential, &reg)
        .map_err(|e| {
            tracing::info!(error = %e, "passkey registration refused");
            json_error(StatusCode::BAD_REQUEST, "the passkey could not be verified")
        })?;
    Ok(PasskeyRecord {
        realm: name.clone(),
        user_id: user_id.to_owned(),
        credential_id: B64.encode::<&[u8]>(passkey.cred_id().as_ref()),
        name: passkey_name(body.name.as_deref(), &body.credential),
        passkey: serde_json::to_string(&passkey).unwrap_or_default(),
        created_at: now,
        last_used_at: None,
    })
}

pub(super) fn passkey_added_audit(record: &PasskeyRecord) -> serde_json::Value {
    json!({"credential_id": record.credential_id, "name": record.name})
}

/// The name a new passkey is listed under: the one the user gave (trimmed, at most 64
/// characters), else its provider's from the AAGUID, else "Passkey".
fn passkey_name(
    given: Option<&str>,
    credential: &webauthn_rs::prelude::RegisterPublicKeyCredential,
) -> String {
    let given: String = given
        .map(str::trim)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if !given.is_empty() {
        return given;
    }
    crate::identity::authenticators::aaguid(credential.response.attestation_object.as_ref())
        .and_then(|a| crate::identity::authenticators::name_for(&a))
        .unwrap_or("Passkey")
        .to_owned()
}
