//! The hosted pages: `/authorize`, the sign-in form (password + TOTP fallback), enrolment through
//! an invite link, and the account page with "sign out everywhere". Errors are pages; nothing
//! redirects to a `redirect_uri` before it has been matched exactly against the client's.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::flow::{self, ACR_PASSWORD_OTP, AuthorizeQuery, CodeData, PendingAuthz};
use super::pages_support::{cookie, csrf_ok, message, realm_context, render};
use super::session::{
    self, ENROL_COOKIE, FLOW_COOKIE, SESSION_COOKIE, cookie_path, secure_cookies,
};
use super::settings::LoginSettings;
use super::{new_token, password, recovery, token_hash, totp};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::{SessionRecord, UserRecord};

async fn realm_or_page(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<std::sync::Arc<LiveRealm>, Response> {
    match state.directory.realm(name, now).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(message(
            &state.templates,
            None,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such sign-in page.",
        )),
        Err(e) => {
            tracing::error!(error = %e, "realm unavailable");
            Err(message(
                &state.templates,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Sign-in is unavailable; try again shortly.",
            ))
        }
    }
}

/// The realm and the signed-in user of an account page, or the page to show instead.
async fn signed_in(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    now: UnixTime,
) -> Result<(std::sync::Arc<LiveRealm>, session::Current), Response> {
    let realm = realm_or_page(state, name, now).await?;
    match session::current(state, &realm, headers, now).await {
        Some(cur) => Ok((realm, cur)),
        None => Err(message(
            &state.templates,
            Some(&realm),
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "Sign in through your application first.",
        )),
    }
}

fn csrf_refused(state: &AppState, realm: &LiveRealm) -> Response {
    message(
        &state.templates,
        Some(realm),
        StatusCode::FORBIDDEN,
        "Request refused",
        "The form could not be verified. Go back and try again.",
    )
}

fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    super::pages_support::secure_page_headers(res.headers_mut());
    res
}

async fn audit(
    state: &AppState,
    realm: &LiveRealm,
    kind: &'static str,
    actor: &str,
    subject: Option<&str>,
    detail: serde_json::Value,
    now: UnixTime,
) {
    let mut d = AuditDraft::new(now, Some(&realm.record.name), kind, actor).detail(detail);
    if let Some(s) = subject {
        d = d.subject(s);
    }
    if state.audit.record(d).await.is_err() {
        tracing::error!(kind, "audit record lost");
    }
}

/// `GET /realms/{realm}/oauth2/authorize`.
pub async fn authorize(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    query: Result<Query<AuthorizeQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Ok(Query(q)) = query else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Invalid sign-in request",
            "The application sent a malformed sign-in request.",
        );
    };
    let client = match q.client_id.as_deref() {
        Some(id) if crate::oauth::client_auth::is_valid_client_id(id) => {
            state.directory.client(&name, id, now).await.ok().flatten()
        }
        _ => None,
    };
    let pending = match flow::validate(&q, client.as_deref(), new_token(), now) {
        Err(why) => {
            audit(
                &state,
                &realm,
                "login.refused",
                "(browser)",
                None,
                json!({"reason": format!("{why:?}")}),
                now,
            )
            .await;
            return message(
                &state.templates,
                Some(&realm),
                StatusCode::BAD_REQUEST,
                "Invalid sign-in request",
                "The application's sign-in link is not valid. Return to the application and try again.",
            );
        }
        Ok(Err((uri, e))) => {
            let mut params = vec![("error", e.error), ("error_description", e.description)];
            if let Some(s) = q.state.as_deref() {
                params.push(("state", s));
            }
            params.push(("iss", &realm.issuer));
            return see_other(&flow::redirect_with(&uri, &params));
        }
        Ok(Ok(p)) => p,
    };
    if !pending.force_login
        && let Some(cur) = session::current(&state, &realm, &headers, now).await
        && pending
            .max_age
            .is_none_or(|m| now - cur.session.auth_time <= m)
        && (!pending.require_passkey || cur.session.amr.split(' ').any(|a| a == "hwk"))
    {
        return issue_code(&state, &realm, &pending, &cur.session, now).await;
    }
    let flow_token = new_token();
    let data = serde_json::to_string(&pending).unwrap_or_default();
    if let Err(e) = state
        .store
        .put_flow(
            &token_hash(&flow_token),
            &name,
            "authz",
            &data,
            now + flow::FLOW_TTL,
            now,
        )
        .await
    {
        tracing::error!(error = %e, "flow store failed");
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Sign-in is unavailable; try again shortly.",
        );
    }
    let mut res = see_other(&format!("{}/login", realm.issuer));
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            FLOW_COOKIE,
            &flow_token,
            &cookie_path(&realm),
            secure_cookies(&realm),
            Some(flow::FLOW_TTL),
        ),
    );
    res
}

/// A code for `pending`, delivered by redirect.
pub(crate) async fn issue_code(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    session: &SessionRecord,
    now: UnixTime,
) -> Response {
    let code = new_token();
    let family = new_token();
    let data = CodeData {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        scope: pending.scope.clone(),
        nonce: pending.nonce.clone(),
        user_id: session.user_id.clone(),
        sid: session.sid.clone(),
        auth_time: session.auth_time,
        amr: session.amr.split(' ').map(str::to_owned).collect(),
        acr: session.acr.clone(),
        family: family.clone(),
    };
    if let Err(e) = state
        .store
        .put_code(
            &token_hash(&code),
            &realm.record.name,
            &serde_json::to_string(&data).unwrap_or_default(),
            &family,
            now + flow::CODE_TTL,
        )
        .await
    {
        tracing::error!(error = %e, "code store failed");
        return message(
            &state.templates,
            Some(realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Sign-in is unavailable; try again shortly.",
        );
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = pending.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", &realm.issuer));
    see_other(&flow::redirect_with(&pending.redirect_uri, &params))
}

pub(crate) async fn pending_flow(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    now: UnixTime,
) -> Option<(String, PendingAuthz)> {
    session::read_flow(state, realm, headers, FLOW_COOKIE, "authz", now).await
}

fn expired(state: &AppState, realm: &LiveRealm) -> Response {
    message(
        &state.templates,
        Some(realm),
        StatusCode::BAD_REQUEST,
        "Sign-in expired",
        "This sign-in has expired or was already used. Return to the application and start again.",
    )
}

fn login_page(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let settings = LoginSettings::parse(&realm.record.login_settings);
    let ctx = context! { ..realm_context(realm), ..context! {
        title => "Sign in",
        action => format!("{}/login", realm.issuer),
        csrf => pending.csrf.clone(),
        fallback => settings.allow_password_fallback && !pending.require_passkey,
        username => username,
        error => error,
    }};
    render(&state.templates, "login.html", ctx, status)
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
    match pending_flow(&state, &realm, &headers, now).await {
        Some((_, p)) => login_page(&state, &realm, &p, "", None, StatusCode::OK),
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

const GENERIC_FAILURE: &str = "The username, password or code is not right.";

/// Checks password and one-time (or recovery) code together, so an unknown user, a wrong
/// password and a wrong code all do the same work and get the same answer.
async fn check_fallback(
    state: &AppState,
    realm: &LiveRealm,
    user: Option<&UserRecord>,
    pw: &str,
    code: &str,
    now: UnixTime,
) -> Result<(), &'static str> {
    let stored = user.and_then(|u| u.password_hash.clone());
    let password_ok = state
        .passwords
        .verify(stored, pw.to_owned())
        .await
        .map_err(|_| "busy")?;
    let secret = match user.and_then(|u| u.totp_sealed.as_ref().map(|s| (u, s))) {
        Some((u, sealed)) => state
            .kek
            .open(&totp_aad(&realm.record.name, &u.id), sealed)
            .ok(),
        None => None,
    };
    let is_totp = code.trim().len() == 6;
    let code_ok = if is_totp {
        let step = totp::matching_step(secret.as_deref().unwrap_or(&[0u8; 20]), code, now);
        match (user, step, &secret) {
            (Some(u), Some(step), Some(_)) => state
                .store
                .use_totp_step(&realm.record.name, &u.id, step)
                .await
                .unwrap_or(false),
            _ => false,
        }
    } else {
        let h = recovery::hash(code);
        match user {
            Some(u) => state
                .store
                .use_recovery_code(&realm.record.name, &u.id, &h, now)
                .await
                .unwrap_or(false),
            None => false,
        }
    };
    match user {
        None => Err("unknown_user"),
        Some(_) if !password_ok => Err("bad_password"),
        Some(_) if !code_ok => Err(if is_totp {
            "bad_or_replayed_code"
        } else {
            "bad_recovery_code"
        }),
        Some(u) if !u.enabled => Err("user_disabled"),
        Some(_) => Ok(()),
    }
}

pub fn totp_aad(realm: &str, user_id: &str) -> Vec<u8> {
    format!("sigil-totp/{realm}/{user_id}").into_bytes()
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
    let Some((flow_hash, pending)) = pending_flow(&state, &realm, &headers, now).await else {
        return expired(&state, &realm);
    };
    let Ok(Form(f)) = form else {
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
        audit(
            &state,
            &realm,
            "login.refused",
            "(browser)",
            None,
            json!({"reason": "csrf"}),
            now,
        )
        .await;
        return csrf_refused(&state, &realm);
    }
    let settings = LoginSettings::parse(&realm.record.login_settings);
    if !settings.allow_password_fallback || pending.require_passkey {
        return login_page(
            &state,
            &realm,
            &pending,
            "",
            Some("This sign-in requires a passkey."),
            StatusCode::FORBIDDEN,
        );
    }
    let username = f.username.unwrap_or_default();
    let ip = peer.map(|Extension(ConnectInfo(a))| a.ip());
    let account_key = format!("{name}/{username}");
    if ip.is_some_and(|ip| state.login_ip_failures.is_blocked(ip, now))
        || state
            .login_account_failures
            .is_blocked(account_key.clone(), now)
    {
        return login_page(
            &state,
            &realm,
            &pending,
            &username,
            Some("Too many attempts. Wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = if crate::admin::users::is_valid_username(&username) {
        state
            .store
            .user_by_name(&name, &username)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let result = check_fallback(
        &state,
        &realm,
        user.as_ref(),
        &f.password.unwrap_or_default(),
        &f.code.unwrap_or_default(),
        now,
    )
    .await;
    let user = match (result, user) {
        (Ok(()), Some(u)) => u,
        (Err("busy"), _) => {
            return login_page(
                &state,
                &realm,
                &pending,
                &username,
                Some("Sign-in is busy. Try again in a moment."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        (outcome, user) => {
            let reason = outcome.err().unwrap_or("unknown_user");
            if let Some(ip) = ip {
                state.login_ip_failures.record_failure(ip, now);
            }
            state
                .login_account_failures
                .record_failure(account_key, now);
            let actor = if crate::admin::users::is_valid_username(&username) {
                username.as_str()
            } else {
                "(malformed)"
            };
            audit(
                &state,
                &realm,
                "login.failed",
                actor,
                user.as_ref().map(|u| u.id.as_str()),
                json!({"reason": reason, "method": "password+otp"}),
                now,
            )
            .await;
            return login_page(
                &state,
                &realm,
                &pending,
                &username,
                Some(GENERIC_FAILURE),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let detail = json!({"method": "password+otp", "client_id": pending.client_id});
    match complete_sign_in(
        &state,
        &realm,
        &pending,
        &flow_hash,
        &user,
        "pwd otp",
        ACR_PASSWORD_OTP,
        detail,
        now,
    )
    .await
    {
        Some(signed_in) => {
            let mut res = see_other(&signed_in.location);
            for c in signed_in.cookies {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            res
        }
        None => message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Sign-in is unavailable; try again shortly.",
        ),
    }
}

/// A finished sign-in: where to send the browser (the client's redirect URI with the code) and
/// the cookies to set (the new session; the spent flow cleared).
pub(crate) struct SignedIn {
    pub location: String,
    pub cookies: [HeaderValue; 2],
}

/// Opens a session for `user` (audited as `login.succeeded`), ends the pending flow and issues the
/// code. `None` if the session could not be stored.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn complete_sign_in(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    flow_hash: &str,
    user: &UserRecord,
    amr: &str,
    acr: &str,
    mut detail: serde_json::Value,
    now: UnixTime,
) -> Option<SignedIn> {
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
    let audit_rows = [
        AuditDraft::new(now, Some(name), "login.succeeded", &user.username)
            .subject(&user.id)
            .detail(detail),
    ];
    if let Err(e) = state.store.create_session(&session, &audit_rows).await {
        tracing::error!(error = %e, "session store failed");
        return None;
    }
    let _ = state.store.delete_flow(flow_hash).await;
    let redirect = issue_code(state, realm, pending, &session, now).await;
    let location = redirect
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())?
        .to_owned();
    let path = cookie_path(realm);
    let secure = secure_cookies(realm);
    Some(SignedIn {
        location,
        cookies: [
            cookie(SESSION_COOKIE, &session_token, &path, secure, None),
            cookie(FLOW_COOKIE, "", &path, secure, Some(0)),
        ],
    })
}

/// An enrolment in progress (kind `enrol`, named by the enrolment cookie).
#[derive(Serialize, Deserialize)]
pub(crate) struct EnrolFlow {
    pub user_id: String,
    pub invite_hash: String,
    /// The TOTP secret being set up, sealed under the KEK (base64).
    pub totp_sealed: String,
    pub csrf: String,
}

/// `GET /realms/{realm}/enrol/{token}`: set up password + TOTP from an invite.
pub async fn enrol_form(
    State(state): State<AppState>,
    Path((name, token)): Path<(String, String)>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let invite_hash = token_hash(&token);
    let Some(user_id) = state
        .store
        .invite(&invite_hash, &name, now)
        .await
        .ok()
        .flatten()
    else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::NOT_FOUND,
            "Link not valid",
            "This enrolment link has expired or was already used. Ask for a new one.",
        );
    };
    let Some(user) = state.store.user_by_id(&name, &user_id).await.ok().flatten() else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::NOT_FOUND,
            "Link not valid",
            "This enrolment link has expired or was already used. Ask for a new one.",
        );
    };
    let secret = totp::new_secret();
    let Ok(sealed) = state.kek.seal(&totp_aad(&name, &user_id), &secret) else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    };
    let flow_token = new_token();
    let data = EnrolFlow {
        user_id,
        invite_hash,
        totp_sealed: STANDARD.encode(sealed),
        csrf: new_token(),
    };
    if state
        .store
        .put_flow(
            &token_hash(&flow_token),
            &name,
            "enrol",
            &serde_json::to_string(&data).unwrap_or_default(),
            now + 1800,
            now,
        )
        .await
        .is_err()
    {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    }
    let settings = LoginSettings::parse(&realm.record.login_settings);
    let label = realm
        .record
        .display_name
        .clone()
        .unwrap_or_else(|| realm.record.name.clone());
    let ctx = context! { ..realm_context(&realm), ..context! {
        title => "Set up sign-in",
        action => format!("{}/enrol", realm.issuer),
        passkey_action => format!("{}/enrol/passkey", realm.issuer),
        csrf => data.csrf,
        username => user.username.clone(),
        fallback => settings.allow_password_fallback,
        totp_secret => totp::secret_base32(&secret),
        otpauth_url => totp::otpauth_url(&secret, &label, &user.username),
    }};
    let mut res = render(&state.templates, "enrol.html", ctx, StatusCode::OK);
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            ENROL_COOKIE,
            &flow_token,
            &cookie_path(&realm),
            secure_cookies(&realm),
            Some(1800),
        ),
    );
    res
}

#[derive(Deserialize)]
pub struct EnrolForm {
    csrf: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

/// `POST /realms/{realm}/enrol`.
pub async fn enrol_submit(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<EnrolForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let gone = || {
        message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "This enrolment has expired. Open your enrolment link again.",
        )
    };
    let Some((flow_hash, flow)) =
        session::read_flow::<EnrolFlow>(&state, &realm, &headers, ENROL_COOKIE, "enrol", now).await
    else {
        return gone();
    };
    let Ok(Form(f)) = form else { return gone() };
    if !csrf_ok(&flow.csrf, f.csrf.as_deref()) {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::FORBIDDEN,
            "Request refused",
            "The form could not be verified. Open your enrolment link again.",
        );
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
        return gone();
    }
    let Some(mut user) = state
        .store
        .user_by_id(&name, &flow.user_id)
        .await
        .ok()
        .flatten()
    else {
        return gone();
    };
    let pw = f.password.unwrap_or_default();
    let again = |error: &str| {
        message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Not set up yet",
            &format!("{error} Open your enrolment link again to retry."),
        )
    };
    if let Some(problem) = password::policy_error(&pw) {
        return again(&format!("The password is too weak: {problem}."));
    }
    let Ok(sealed) = STANDARD.decode(&flow.totp_sealed) else {
        return gone();
    };
    let Ok(secret) = state.kek.open(&totp_aad(&name, &user.id), &sealed) else {
        return gone();
    };
    let Some(step) = totp::matching_step(&secret, &f.code.unwrap_or_default(), now) else {
        return again("The code from the authenticator app did not match.");
    };
    let Ok(hash) = state.passwords.hash(pw).await else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Try again in a moment.",
        );
    };
    user.password_hash = Some(hash);
    user.totp_sealed = Some(sealed);
    user.updated_at = now;
    let codes = recovery::generate();
    let hashes: Vec<String> = codes.iter().map(|c| recovery::hash(c)).collect();
    let audit_rows = [
        AuditDraft::new(now, Some(&name), "user.enrolled", &user.username)
            .subject(&user.id)
            .detail(json!({"methods": ["password", "totp"]})),
    ];
    if !state
        .store
        .consume_invite(&flow.invite_hash, &name)
        .await
        .unwrap_or(false)
    {
        return gone();
    }
    let stored = state.store.update_user(&user, &audit_rows).await.is_ok()
        && state
            .store
            .replace_recovery_codes(&name, &user.id, &hashes, &[])
            .await
            .is_ok()
        && state
            .store
            .use_totp_step(&name, &user.id, step)
            .await
            .is_ok();
    let _ = state.store.delete_flow(&flow_hash).await;
    if !stored {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    }
    let ctx = context! { ..realm_context(&realm), ..context! { title => "Recovery codes", codes => codes } };
    let mut res = render(&state.templates, "recovery.html", ctx, StatusCode::OK);
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

/// `GET /realms/{realm}/account`: the user's sessions and the global sign-out.
pub async fn account(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let (realm, cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let sessions = state
        .store
        .sessions_of(&name, &cur.user.id)
        .await
        .unwrap_or_default();
    let list: Vec<_> = sessions
        .iter()
        .map(|s| context! { auth_time => s.auth_time, amr => s.amr.clone(), current => s.id_hash == cur.session.id_hash })
        .collect();
    let passkeys: Vec<_> = state
        .store
        .passkeys(&name, &cur.user.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| context! { name => p.name, created_at => p.created_at, credential_id => p.credential_id })
        .collect();
    let settings = LoginSettings::parse(&realm.record.login_settings);
    let ctx = context! { ..realm_context(&realm), ..context! {
        title => "Your account",
        username => cur.user.username.clone(),
        sessions => list,
        passkeys => passkeys,
        fallback => settings.allow_password_fallback,
        csrf => session::session_csrf(&cur.token),
        passkey_action => format!("{}/account/passkey", realm.issuer),
        remove_action => format!("{}/account/passkeys/remove", realm.issuer),
        totp_action => format!("{}/account/totp", realm.issuer),
        sign_out_action => format!("{}/account/sign-out-everywhere", realm.issuer),
    }};
    render(&state.templates, "account.html", ctx, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /realms/{realm}/account/sign-out-everywhere`.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let (realm, cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let presented = form.ok().and_then(|Form(f)| f.csrf);
    if !csrf_ok(&session::session_csrf(&cur.token), presented.as_deref()) {
        return csrf_refused(&state, &realm);
    }
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
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    }
    let mut res = message(
        &state.templates,
        Some(&realm),
        StatusCode::OK,
        "Signed out everywhere",
        "Every session and app sign-in of yours has ended.",
    );
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            SESSION_COOKIE,
            "",
            &cookie_path(&realm),
            secure_cookies(&realm),
            Some(0),
        ),
    );
    res
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
    let (realm, cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let Ok(Form(f)) = form else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Request refused",
            "The form was malformed.",
        );
    };
    if !csrf_ok(&session::session_csrf(&cur.token), f.csrf.as_deref()) {
        return csrf_refused(&state, &realm);
    }
    let cred = f.credential_id.unwrap_or_default();
    let audit_rows =
        [
            AuditDraft::new(now, Some(&name), "user.passkey_removed", &cur.user.username)
                .subject(&cur.user.id)
                .detail(json!({"credential_id": cred})),
        ];
    match state
        .store
        .delete_passkey(&name, &cur.user.id, &cred, &audit_rows)
        .await
    {
        Ok(true) => see_other(&format!("{}/account", realm.issuer)),
        _ => message(
            &state.templates,
            Some(&realm),
            StatusCode::NOT_FOUND,
            "Not found",
            "That passkey is not yours or is already gone.",
        ),
    }
}

/// `POST /realms/{realm}/account/totp`: a new TOTP secret to confirm.
pub async fn totp_start(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let (realm, cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let csrf = session::session_csrf(&cur.token);
    if !csrf_ok(&csrf, form.ok().and_then(|Form(f)| f.csrf).as_deref()) {
        return csrf_refused(&state, &realm);
    }
    let secret = totp::new_secret();
    let Ok(sealed) = state.kek.seal(&totp_aad(&name, &cur.user.id), &secret) else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    };
    let key = format!("{}:totp", cur.session.id_hash);
    if state
        .store
        .put_flow(
            &key,
            &name,
            "totp-reenrol",
            &STANDARD.encode(sealed),
            now + 600,
            now,
        )
        .await
        .is_err()
    {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    }
    let label = realm
        .record
        .display_name
        .clone()
        .unwrap_or_else(|| realm.record.name.clone());
    let ctx = context! { ..realm_context(&realm), ..context! {
        title => "New authenticator app",
        action => format!("{}/account/totp/confirm", realm.issuer),
        csrf => csrf,
        totp_secret => totp::secret_base32(&secret),
        otpauth_url => totp::otpauth_url(&secret, &label, &cur.user.username),
    }};
    render(&state.templates, "totp.html", ctx, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: Option<String>,
    code: Option<String>,
}

/// `POST /realms/{realm}/account/totp/confirm`.
pub async fn totp_confirm(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CodeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let (realm, mut cur) = match signed_in(&state, &name, &headers, now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let Ok(Form(f)) = form else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Request refused",
            "The form was malformed.",
        );
    };
    if !csrf_ok(&session::session_csrf(&cur.token), f.csrf.as_deref()) {
        return csrf_refused(&state, &realm);
    }
    let key = format!("{}:totp", cur.session.id_hash);
    let sealed = state
        .store
        .flow(&key, &name, "totp-reenrol", now)
        .await
        .ok()
        .flatten()
        .and_then(|s| STANDARD.decode(s).ok());
    let secret = sealed
        .as_ref()
        .and_then(|s| state.kek.open(&totp_aad(&name, &cur.user.id), s).ok());
    let (Some(sealed), Some(secret)) = (sealed, secret) else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Expired",
            "Start again from your account page.",
        );
    };
    let Some(step) = totp::matching_step(&secret, &f.code.unwrap_or_default(), now) else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "Not replaced",
            "The code did not match; your old authenticator app still works. Start again from your account page.",
        );
    };
    cur.user.totp_sealed = Some(sealed);
    cur.user.updated_at = now;
    let audit_rows = [
        AuditDraft::new(now, Some(&name), "user.totp_replaced", &cur.user.username)
            .subject(&cur.user.id),
    ];
    if state
        .store
        .update_user(&cur.user, &audit_rows)
        .await
        .is_err()
    {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        );
    }
    let _ = state.store.use_totp_step(&name, &cur.user.id, step).await;
    let _ = state.store.delete_flow(&key).await;
    message(
        &state.templates,
        Some(&realm),
        StatusCode::OK,
        "Authenticator app replaced",
        "Use codes from the new app from now on.",
    )
}
