//! Passkeys (WebAuthn, `webauthn-rs`): registration while enrolling, and discoverable sign-in
//! (no username typed) with user verification required. Ceremony state lives server-side in the
//! flows table with an expiry, never in a client-held cookie. The relying party id and origin
//! follow the realm's public URL.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::json;
use url::Url;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::{ResidentKeyRequirement, UserVerificationPolicy};

use super::flow::ACR_PASSKEY;
use super::pages::EnrolFlow;
use super::pages_support::{cookie, csrf_ok};
use super::session::{ENROL_COOKIE, cookie_path, secure_cookies};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oidc::RealmPath;
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

fn json_error(status: StatusCode, error: &str) -> Response {
    let mut res = (status, axum::Json(json!({ "error": error }))).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

fn ok_json(value: serde_json::Value) -> Response {
    let mut res = axum::Json(value).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

async fn realm(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<std::sync::Arc<LiveRealm>, Response> {
    match state.directory.realm(name, now).await {
        Ok(Some(r)) => Ok(r),
        _ => Err(json_error(StatusCode::NOT_FOUND, "unknown realm")),
    }
}

fn user_uuid(user_id: &str) -> Option<Uuid> {
    Uuid::parse_str(user_id).ok()
}

#[derive(Deserialize)]
pub struct CsrfBody {
    csrf: String,
}

async fn enrol_flow(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    now: UnixTime,
) -> Option<(String, EnrolFlow)> {
    super::session::read_flow(state, realm, headers, ENROL_COOKIE, "enrol", now).await
}

/// `POST /realms/{realm}/enrol/passkey/options`.
/// Starts a registration for `user_id`; the ceremony state is kept under `key` for five minutes.
async fn start_registration(
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

/// Verifies a registration started under `key` and stores the passkey (audited).
async fn finish_registration(
    state: &AppState,
    realm: &LiveRealm,
    user_id: &str,
    key: &str,
    body: RegisterBody,
    now: UnixTime,
) -> Result<(), Response> {
    let name = &realm.record.name;
    let state_json = state
        .store
        .flow(key, name, "passkey-reg", now)
        .await
        .ok()
        .flatten();
    let _ = state.store.delete_flow(key).await;
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
    let record = PasskeyRecord {
        realm: name.clone(),
        user_id: user_id.to_owned(),
        credential_id: B64.encode::<&[u8]>(passkey.cred_id().as_ref()),
        name: body
            .name
            .unwrap_or_else(|| "Passkey".into())
            .chars()
            .take(64)
            .collect(),
        passkey: serde_json::to_string(&passkey).unwrap_or_default(),
        created_at: now,
        last_used_at: None,
    };
    let audit = [
        AuditDraft::new(now, Some(name), "user.passkey_added", user_id)
            .subject(user_id)
            .detail(json!({"credential_id": record.credential_id})),
    ];
    state
        .store
        .add_passkey(&record, &audit)
        .await
        .map_err(|_| json_error(StatusCode::CONFLICT, "this passkey is already registered"))
}

/// `POST /realms/{realm}/enrol/passkey/options`.
pub async fn enrol_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Option<axum::Json<CsrfBody>>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some((flow_hash, flow)) = enrol_flow(&state, &realm, &headers, now).await else {
        return json_error(StatusCode::BAD_REQUEST, "enrolment expired");
    };
    if !csrf_ok(&flow.csrf, body.as_ref().map(|b| b.csrf.as_str())) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    start_registration(
        &state,
        &realm,
        &flow.user_id,
        &format!("{flow_hash}:reg"),
        now,
    )
    .await
    .unwrap_or_else(|e| e)
}

#[derive(Deserialize)]
pub struct RegisterBody {
    csrf: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /realms/{realm}/enrol/passkey`: finishes registration; the enrolment is then complete.
pub async fn enrol_finish(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Result<axum::Json<RegisterBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some((flow_hash, flow)) = enrol_flow(&state, &realm, &headers, now).await else {
        return json_error(StatusCode::BAD_REQUEST, "enrolment expired");
    };
    let Ok(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credential");
    };
    if !csrf_ok(&flow.csrf, Some(&body.csrf)) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    if state
        .store
        .invite(&flow.invite_hash, &name, now)
        .await
        .ok()
        .flatten()
        .as_deref()
        != Some(flow.user_id.as_str())
    {
        return json_error(StatusCode::BAD_REQUEST, "enrolment expired");
    }
    if let Err(res) = finish_registration(
        &state,
        &realm,
        &flow.user_id,
        &format!("{flow_hash}:reg"),
        body,
        now,
    )
    .await
    {
        return res;
    }
    if !state
        .store
        .consume_invite(&flow.invite_hash, &name)
        .await
        .unwrap_or(false)
    {
        return json_error(StatusCode::CONFLICT, "enrolment already completed");
    }
    let _ = state.store.delete_flow(&flow_hash).await;
    let mut res = ok_json(json!({"done": true}));
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            ENROL_COOKIE,
            "",
            &cookie_path(&realm),
            secure_cookies(&realm),
            Some(0),
        ),
    );
    res
}

/// `POST /realms/{realm}/account/passkey/options`: a signed-in user adds a passkey.
pub async fn account_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Option<axum::Json<CsrfBody>>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some(cur) = super::session::current(&state, &realm, &headers, now).await else {
        return json_error(StatusCode::UNAUTHORIZED, "not signed in");
    };
    if !csrf_ok(
        &super::session::session_csrf(&cur.token),
        body.as_ref().map(|b| b.csrf.as_str()),
    ) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    start_registration(
        &state,
        &realm,
        &cur.user.id,
        &format!("{}:reg", cur.session.id_hash),
        now,
    )
    .await
    .unwrap_or_else(|e| e)
}

/// `POST /realms/{realm}/account/passkey`.
pub async fn account_finish(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Result<axum::Json<RegisterBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some(cur) = super::session::current(&state, &realm, &headers, now).await else {
        return json_error(StatusCode::UNAUTHORIZED, "not signed in");
    };
    let Ok(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credential");
    };
    if !csrf_ok(&super::session::session_csrf(&cur.token), Some(&body.csrf)) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    match finish_registration(
        &state,
        &realm,
        &cur.user.id,
        &format!("{}:reg", cur.session.id_hash),
        body,
        now,
    )
    .await
    {
        Ok(()) => ok_json(json!({"done": true})),
        Err(res) => res,
    }
}

#[derive(Deserialize)]
pub struct SignInOptionsBody {
    csrf: String,
    /// Conditional UI (autofill) rather than a modal prompt.
    #[serde(default)]
    conditional: bool,
}

/// `POST /realms/{realm}/login/passkey/options`.
pub async fn sign_in_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Option<axum::Json<SignInOptionsBody>>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some((flow_hash, pending)) =
        super::pages::pending_flow(&state, &realm, &headers, now).await
    else {
        return json_error(StatusCode::BAD_REQUEST, "sign-in expired");
    };
    let Some(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed request");
    };
    if !csrf_ok(&pending.csrf, Some(&body.csrf)) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    let Some(Ok((mut options, auth))) =
        webauthn_for(&realm).map(|wa| wa.start_discoverable_authentication())
    else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "webauthn");
    };
    if !body.conditional {
        options.mediation = None;
    }
    let data = serde_json::to_string(&auth).unwrap_or_default();
    if state
        .store
        .put_flow(
            &format!("{flow_hash}:auth"),
            &name,
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

#[derive(Deserialize)]
pub struct SignInBody {
    csrf: String,
    credential: PublicKeyCredential,
}

/// `POST /realms/{realm}/login/passkey`: verifies the assertion, opens a session, answers with
/// the redirect (code and state) for the page's script to follow.
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
    let Some((flow_hash, pending)) =
        super::pages::pending_flow(&state, &realm, &headers, now).await
    else {
        return json_error(StatusCode::BAD_REQUEST, "sign-in expired");
    };
    let Ok(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credential");
    };
    if !csrf_ok(&pending.csrf, Some(&body.csrf)) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    let ip = peer.map(|Extension(ConnectInfo(a))| a.ip());
    if ip.is_some_and(|ip| state.login_ip_failures.is_blocked(ip, now)) {
        return json_error(StatusCode::TOO_MANY_REQUESTS, "too many attempts");
    }
    let auth_key = format!("{flow_hash}:auth");
    let auth_json = state
        .store
        .flow(&auth_key, &name, "passkey-auth", now)
        .await
        .ok()
        .flatten();
    let _ = state.store.delete_flow(&auth_key).await;
    let failed = |reason: &'static str, user: Option<String>| {
        let state = state.clone();
        let realm = realm.clone();
        async move {
            if let Some(ip) = ip {
                state.login_ip_failures.record_failure(ip, now);
            }
            let d = AuditDraft::new(
                now,
                Some(&realm.record.name),
                "login.failed",
                user.as_deref().unwrap_or("(passkey)"),
            )
            .detail(json!({"reason": reason, "method": "passkey"}));
            let _ = state.audit.record(d).await;
            json_error(StatusCode::UNAUTHORIZED, "the passkey was not accepted")
        }
    };
    let (Some(wa), Some(auth)) = (
        webauthn_for(&realm),
        auth_json.and_then(|s| serde_json::from_str::<DiscoverableAuthentication>(&s).ok()),
    ) else {
        return json_error(StatusCode::BAD_REQUEST, "ceremony expired");
    };
    let Ok((uuid, cred_id)) = wa.identify_discoverable_authentication(&body.credential) else {
        return failed("no_user_handle", None).await;
    };
    let user_id = uuid.simple().to_string();
    let cred_b64 = B64.encode(cred_id);
    let record = match state.store.passkey(&name, &cred_b64).await {
        Ok(Some(r)) if r.user_id == user_id => r,
        _ => return failed("unknown_credential", Some(user_id)).await,
    };
    let Ok(mut passkey) = serde_json::from_str::<Passkey>(&record.passkey) else {
        return failed("corrupt_credential", Some(user_id)).await;
    };
    let result = match wa.finish_discoverable_authentication_v2(&body.credential, auth, &passkey) {
        Ok(r) => r,
        Err(_) => return failed("bad_assertion", Some(user_id)).await,
    };
    if !result.user_verified() {
        return failed("user_not_verified", Some(user_id)).await;
    }
    passkey.update_credential(&result);
    let _ = state
        .store
        .update_passkey(
            &name,
            &cred_b64,
            &serde_json::to_string(&passkey).unwrap_or_default(),
            now,
        )
        .await;
    let user = match state.store.user_by_id(&name, &user_id).await {
        Ok(Some(u)) if u.enabled => u,
        _ => return failed("user_disabled", Some(user_id)).await,
    };
    let detail =
        json!({"method": "passkey", "client_id": pending.client_id, "credential_id": cred_b64});
    let Some(signed_in) = super::pages::complete_sign_in(
        &state,
        &realm,
        &pending,
        &flow_hash,
        &user,
        "hwk user",
        ACR_PASSKEY,
        detail,
        now,
    )
    .await
    else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    let mut res = ok_json(json!({ "redirect": signed_in.location }));
    for c in signed_in.cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}
