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

use super::account::{apply_change, is_fresh_enough, reauth_url, reauthenticate};
use super::enrol::EnrolFlow;
use super::flow::ACR_PASSKEY;
use super::pages::{audit, ip_blocked, peer_ip, refused_anonymous};
use super::pages_support::{cookie, csrf_ok};
use super::session::{self, Current, ENROL_COOKIE, cookie_path, secure_cookies};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::{CredentialChange, Enrolment, PasskeyRecord};

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
        // An unusable stored sign-in policy refuses sign-in (fail closed).
        Ok(Some(r)) if r.login().is_none() => {
            Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"))
        }
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

/// Verifies a registration started under `key` (taken: one finish per ceremony) and returns the
/// passkey to store; the caller stores it with the enrolment or account change it belongs to.
async fn finish_registration(
    state: &AppState,
    realm: &LiveRealm,
    user_id: &str,
    key: &str,
    body: RegisterBody,
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
        name: body
            .name
            .unwrap_or_else(|| "Passkey".into())
            .chars()
            .take(64)
            .collect(),
        passkey: serde_json::to_string(&passkey).unwrap_or_default(),
        created_at: now,
        last_used_at: None,
    })
}

fn passkey_added_audit(record: &PasskeyRecord) -> serde_json::Value {
    json!({"credential_id": record.credential_id, "name": record.name})
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
/// The invite is spent in the transaction that stores the passkey: of concurrent enrolments
/// through one invite, exactly one stores a passkey.
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
    let record = match finish_registration(
        &state,
        &realm,
        &flow.user_id,
        &format!("{flow_hash}:reg"),
        body,
        now,
    )
    .await
    {
        Ok(r) => r,
        Err(res) => return res,
    };
    let rows = [
        crate::audit::AuditDraft::new(now, Some(&name), "user.passkey_added", &flow.user_id)
            .subject(&flow.user_id)
            .detail(passkey_added_audit(&record)),
        crate::audit::AuditDraft::new(now, Some(&name), "user.enrolled", &flow.user_id)
            .subject(&flow.user_id)
            .detail(json!({"methods": ["passkey"]})),
    ];
    match state
        .store
        .enrol(
            &flow.invite_hash,
            &name,
            &flow.user_id,
            &Enrolment::Passkey(record),
            now,
            &rows,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return json_error(StatusCode::CONFLICT, "enrolment already completed"),
        Err(crate::store::StoreError::Conflict(_)) => {
            return json_error(StatusCode::CONFLICT, "this passkey is already registered");
        }
        Err(e) => {
            tracing::error!(error = %e, "enrolment store failed");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
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

/// The signed-in user of the account page's JSON calls, after the CSRF check.
async fn account_user(
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
async fn may_add_passkey(
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

fn account_reg_key(cur: &Current) -> String {
    format!("{}:reg", cur.session.id_hash)
}

/// `POST /realms/{realm}/account/passkey/options`.
pub async fn account_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Option<axum::Json<CsrfBody>>,
) -> Response {
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

#[derive(Deserialize)]
pub struct SignInOptionsBody {
    csrf: String,
    /// Conditional UI (autofill) rather than a modal prompt.
    #[serde(default)]
    conditional: bool,
}

/// Starts a discoverable authentication; its state is kept (upserted) under `key`.
async fn start_authentication(
    state: &AppState,
    realm: &LiveRealm,
    key: &str,
    conditional: bool,
    now: UnixTime,
) -> Response {
    let Some(Ok((mut options, auth))) =
        webauthn_for(realm).map(|wa| wa.start_discoverable_authentication())
    else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "webauthn");
    };
    if !conditional {
        options.mediation = None;
    }
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

/// `POST /realms/{realm}/login/passkey/options`. Each start stores a ceremony row, so starts count
/// toward the address's sign-in limit like failures do (30 a minute is far above a person's use).
pub async fn sign_in_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Option<axum::Json<SignInOptionsBody>>,
) -> Response {
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
    let Some((flow_hash, pending)) = super::pages::pending_flow(&state, &realm, &headers, now)
    else {
        return json_error(StatusCode::BAD_REQUEST, "sign-in expired");
    };
    let Some(axum::Json(body)) = body else {
        return json_error(StatusCode::BAD_REQUEST, "malformed request");
    };
    if !csrf_ok(&pending.csrf, Some(&body.csrf)) {
        return json_error(StatusCode::FORBIDDEN, "csrf");
    }
    start_authentication(
        &state,
        &realm,
        &format!("{flow_hash}:auth"),
        body.conditional,
        now,
    )
    .await
}

#[derive(Deserialize)]
pub struct SignInBody {
    csrf: String,
    credential: PublicKeyCredential,
}

/// Why an assertion was refused; `user` when the credential named a real account.
struct AssertionRefused {
    reason: &'static str,
    user: Option<String>,
}

/// Takes the ceremony under `key` (one winner among concurrent posts of the same assertion),
/// verifies the assertion against the stored passkey and records its use. Returns the user id.
async fn verify_assertion(
    state: &AppState,
    realm: &LiveRealm,
    key: &str,
    credential: &PublicKeyCredential,
    now: UnixTime,
) -> Result<(String, String), AssertionRefused> {
    let name = &realm.record.name;
    let refused = |reason, user: Option<&str>| AssertionRefused {
        reason,
        user: user.map(str::to_owned),
    };
    let auth_json = state
        .store
        .take_flow(key, name, "passkey-auth", now)
        .await
        .ok()
        .flatten();
    let (Some(wa), Some(auth)) = (
        webauthn_for(realm),
        auth_json.and_then(|s| serde_json::from_str::<DiscoverableAuthentication>(&s).ok()),
    ) else {
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
    let _ = state
        .store
        .update_passkey(
            name,
            &cred_b64,
            &serde_json::to_string(&passkey).unwrap_or_default(),
            now,
        )
        .await;
    Ok((user_id, cred_b64))
}

/// Counts and audits a refused assertion: individually when it named a real account, tallied
/// when anonymous.
async fn assertion_refused(
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
    let Some((flow_hash, pending)) = super::pages::pending_flow(&state, &realm, &headers, now)
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
    let (user_id, cred_b64) = match verify_assertion(
        &state,
        &realm,
        &format!("{flow_hash}:auth"),
        &body.credential,
        now,
    )
    .await
    {
        Ok(x) => x,
        Err(r) if r.reason == "ceremony_expired" => {
            return json_error(StatusCode::BAD_REQUEST, "ceremony expired");
        }
        Err(r) => return assertion_refused(&state, &realm, ip, &r, now).await,
    };
    let user = match state.store.user_by_id(&name, &user_id).await {
        Ok(Some(u)) if u.enabled => u,
        _ => {
            let r = AssertionRefused {
                reason: "user_disabled",
                user: Some(user_id),
            };
            return assertion_refused(&state, &realm, ip, &r, now).await;
        }
    };
    let detail =
        json!({"method": "passkey", "client_id": pending.client_id, "credential_id": cred_b64});
    let Some(signed_in) = super::pages::complete_sign_in(
        &state,
        &realm,
        &pending,
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

fn reauth_key(cur: &Current) -> String {
    format!("{}:reauth", cur.session.id_hash)
}

/// `POST /realms/{realm}/account/reauth/passkey/options`.
pub async fn reauth_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Option<axum::Json<SignInOptionsBody>>,
) -> Response {
    let now = state.clock.now();
    let csrf = body.as_ref().map(|b| b.csrf.as_str());
    let (realm, cur) = match account_user(&state, &name, &headers, csrf, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    start_authentication(&state, &realm, &reauth_key(&cur), false, now).await
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
    match verify_assertion(&state, &realm, &reauth_key(&cur), &body.credential, now).await {
        Ok((user_id, _)) if user_id == cur.user.id => {}
        Ok(_) => {
            let r = AssertionRefused {
                reason: "another_users_passkey",
                user: Some(cur.user.id.clone()),
            };
            return assertion_refused(&state, &realm, ip, &r, now).await;
        }
        Err(r) => return assertion_refused(&state, &realm, ip, &r, now).await,
    }
    match reauthenticate(&state, &realm, &cur, "hwk user", ACR_PASSKEY, now).await {
        Ok(()) => ok_json(json!({"redirect": format!("{}/account", realm.issuer)})),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}
