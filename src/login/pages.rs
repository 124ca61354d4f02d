//! The hosted pages of a sign-in: `/authorize` and the sign-in form (password + TOTP fallback).
//! Errors are pages; nothing redirects to a `redirect_uri` before it has been matched exactly
//! against the client's. Enrolment is in `enrol`, the account page in `account`, the app
//! confirmation in `consent`.

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::flow::{self, ACR_PASSWORD_OTP, AuthorizeQuery, CodeData, PendingAuthz};
use super::pages_support::{cookie, csrf_ok, message, realm_context, render};
use super::session::{self, SESSION_COOKIE, cookie_path, secure_cookies};
use super::settings::LoginSettings;
use super::{new_token, pending, recovery, token_hash, totp};
use crate::audit::AuditDraft;
use crate::audit::tally::Refused;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::{SessionRecord, UserRecord};

pub(crate) fn unavailable(state: &AppState, realm: Option<&LiveRealm>) -> Response {
    message(
        &state.templates,
        realm,
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "Sign-in is unavailable; try again shortly.",
    )
}

/// The realm of a page, with a usable sign-in policy, or the page to show instead.
pub(crate) async fn realm_or_page(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<std::sync::Arc<LiveRealm>, Response> {
    match state.directory.realm(name, now).await {
        // A stored policy that cannot be read refuses sign-in (fail closed); logged by the
        // directory when it loads the realm.
        Ok(Some(r)) if r.login().is_none() => Err(unavailable(state, Some(&r))),
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
            Err(unavailable(state, None))
        }
    }
}

/// The policy of a realm `realm_or_page` returned (which refuses realms whose stored policy is
/// unusable). Should another caller ever pass such a realm, it gets the closed policy (no password
/// fallback, nothing remembered), never the defaults.
pub(crate) fn settings(realm: &LiveRealm) -> &LoginSettings {
    static CLOSED: std::sync::OnceLock<LoginSettings> = std::sync::OnceLock::new();
    realm.login().unwrap_or_else(|| {
        CLOSED.get_or_init(|| LoginSettings {
            allow_password_fallback: false,
            remember_consent: false,
            ..LoginSettings::default()
        })
    })
}

pub(crate) fn csrf_refused(state: &AppState, realm: &LiveRealm) -> Response {
    message(
        &state.templates,
        Some(realm),
        StatusCode::FORBIDDEN,
        "Request refused",
        "The form could not be verified. Go back and try again.",
    )
}

pub(crate) fn too_many(state: &AppState, realm: &LiveRealm) -> Response {
    message(
        &state.templates,
        Some(realm),
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "Too many attempts. Wait a minute and try again.",
    )
}

pub(crate) fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    super::pages_support::secure_page_headers(res.headers_mut());
    res
}

pub(crate) fn peer_ip(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    peer.map(|Extension(ConnectInfo(a))| a.ip())
}

/// One audit record of something a known user did (written at once, never aggregated).
pub(crate) async fn audit(
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

/// An anonymous refusal on a page: counted toward the address's limit and tallied into the
/// audit log (one row per address and reason per period, not one per request).
pub(crate) fn refused_anonymous(
    state: &AppState,
    realm: &LiveRealm,
    ip: Option<IpAddr>,
    reason: &str,
    now: UnixTime,
) {
    if let Some(ip) = ip {
        state.login_ip_failures.record_failure(ip, now);
    }
    state.refusals.add(
        Refused {
            realm: Some(&realm.record.name),
            kind: "login.refused",
            address: crate::oauth::outcome::address(ip),
            reason,
            actor: "(browser)",
        },
        now,
    );
}

pub(crate) fn ip_blocked(state: &AppState, ip: Option<IpAddr>, now: UnixTime) -> bool {
    ip.is_some_and(|ip| state.login_ip_failures.is_blocked(ip, now))
}

/// `GET /realms/{realm}/oauth2/authorize`. Writes nothing to the database: the pending request
/// goes into a sealed cookie, and a refusal is only counted.
pub async fn authorize(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    query: Result<Query<AuthorizeQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
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
    let Ok(Query(q)) = query else {
        refused_anonymous(&state, &realm, ip, "malformed_request", now);
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
            match state.directory.client(&name, id, now).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "client lookup failed");
                    return unavailable(&state, Some(&realm));
                }
            }
        }
        _ => None,
    };
    let pending = match flow::validate(&q, client.as_deref(), new_token(), now) {
        Err(why) => {
            let reason = match why {
                flow::Untrusted::UnknownClient => "unknown_client",
                flow::Untrusted::BadRedirectUri => "bad_redirect_uri",
            };
            refused_anonymous(&state, &realm, ip, reason, now);
            return message(
                &state.templates,
                Some(&realm),
                StatusCode::BAD_REQUEST,
                "Invalid sign-in request",
                "The application's sign-in link is not valid. Return to the application and try again.",
            );
        }
        Ok(Err((uri, e))) => {
            return redirect_error(&realm, &uri, q.state.as_deref(), e.error, e.description);
        }
        Ok(Ok(p)) => p,
    };
    let usable = if pending.force_login {
        None
    } else {
        session::current(&state, &realm, &headers, now)
            .await
            .filter(|cur| {
                pending
                    .max_age
                    .is_none_or(|m| now - cur.session.auth_time <= m)
                    && (!pending.require_passkey || session::has_passkey_auth(&cur.session))
            })
    };
    let Some(cur) = usable else {
        if pending.no_prompt {
            return redirect_to_client_error(
                &realm,
                &pending,
                "login_required",
                "the user must sign in",
            );
        }
        return with_pending(&state, &realm, &pending, format!("{}/login", realm.issuer));
    };
    match super::consent::needed(&state, &realm, &pending, &cur.user.id).await {
        Err(()) => unavailable(&state, Some(&realm)),
        Ok(false) => issue_code(&state, &realm, &pending, &cur.session, now).await,
        Ok(true) if pending.no_prompt => redirect_to_client_error(
            &realm,
            &pending,
            "interaction_required",
            "the user must confirm this application",
        ),
        Ok(true) => with_pending(
            &state,
            &realm,
            &pending,
            format!("{}/consent", realm.issuer),
        ),
    }
}

/// A 303 to a Sigil page, with the pending request sealed into the flow cookie.
fn with_pending(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    location: String,
) -> Response {
    let Some(c) = pending::seal(state, realm, pending) else {
        return redirect_to_client_error(
            realm,
            pending,
            "invalid_request",
            "the authorization request is too large",
        );
    };
    let mut res = see_other(&location);
    res.headers_mut().append(header::SET_COOKIE, c);
    res
}

fn redirect_error(
    realm: &LiveRealm,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", &realm.issuer));
    see_other(&flow::redirect_with(redirect_uri, &params))
}

/// An error for the client (its redirect URI was already matched), ending the pending request.
pub(crate) fn redirect_to_client_error(
    realm: &LiveRealm,
    pending: &PendingAuthz,
    error: &str,
    description: &str,
) -> Response {
    let mut res = redirect_error(
        realm,
        &pending.redirect_uri,
        pending.state.as_deref(),
        error,
        description,
    );
    res.headers_mut()
        .append(header::SET_COOKIE, pending::clear(realm));
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
        return unavailable(state, Some(realm));
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = pending.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", &realm.issuer));
    let mut res = see_other(&flow::redirect_with(&pending.redirect_uri, &params));
    res.headers_mut()
        .append(header::SET_COOKIE, pending::clear(realm));
    res
}

pub(crate) fn pending_flow(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    now: UnixTime,
) -> Option<(String, PendingAuthz)> {
    pending::read(state, realm, headers, now)
}

pub(crate) fn expired(state: &AppState, realm: &LiveRealm) -> Response {
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
    let ctx = context! { ..realm_context(realm), ..context! {
        title => "Sign in",
        action => format!("{}/login", realm.issuer),
        csrf => pending.csrf.clone(),
        app => pending.client_id.clone(),
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

/// Why a password + code sign-in failed (for the audit log; the user sees one generic message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FallbackFailure {
    Busy,
    UnknownUser,
    BadPassword,
    BadCode,
    BadRecoveryCode,
    Disabled,
}

impl FallbackFailure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            FallbackFailure::Busy => "busy",
            FallbackFailure::UnknownUser => "unknown_user",
            FallbackFailure::BadPassword => "bad_password",
            FallbackFailure::BadCode => "bad_or_replayed_code",
            FallbackFailure::BadRecoveryCode => "bad_recovery_code",
            FallbackFailure::Disabled => "user_disabled",
        }
    }
}

/// Checks password and one-time (or recovery) code. An unknown user, a wrong password and a wrong
/// code do the same work (argon2, then a read-only code check) and get the same answer; the code
/// or recovery code is spent only when the password is right too, so a wrong password never
/// burns the user's second factor.
pub(crate) async fn check_fallback(
    state: &AppState,
    realm: &LiveRealm,
    user: Option<&UserRecord>,
    share: &[String],
    pw: &str,
    code: &str,
    now: UnixTime,
) -> Result<(), FallbackFailure> {
    let name = &realm.record.name;
    let stored = user.and_then(|u| u.password_hash.clone());
    let password_ok = state
        .passwords
        .verify(share, stored, pw.to_owned())
        .await
        .map_err(|_| FallbackFailure::Busy)?;
    let secret = match user.and_then(|u| u.totp_sealed.as_ref().map(|s| (u, s))) {
        Some((u, sealed)) => state.kek.open(&totp_aad(name, &u.id), sealed).ok(),
        None => None,
    };
    let is_totp = code.trim().len() == 6;
    // First, without spending anything: would the code pass?
    let step = if is_totp {
        totp::matching_step(secret.as_deref().unwrap_or(&[0u8; 20]), code, now)
            .filter(|s| secret.is_some() && user.is_some_and(|u| *s > u.totp_last_step))
    } else {
        None
    };
    let recovery_hash = (!is_totp).then(|| recovery::hash(code));
    let code_ok = match (user, step, &recovery_hash) {
        (Some(_), Some(_), _) => true,
        (Some(u), None, Some(h)) => state
            .store
            .has_recovery_code(name, &u.id, h)
            .await
            .unwrap_or(false),
        _ => false,
    };
    let bad_code = if is_totp {
        FallbackFailure::BadCode
    } else {
        FallbackFailure::BadRecoveryCode
    };
    let u = match user {
        None => return Err(FallbackFailure::UnknownUser),
        Some(_) if !password_ok => return Err(FallbackFailure::BadPassword),
        Some(_) if !code_ok => return Err(bad_code),
        Some(u) if !u.enabled => return Err(FallbackFailure::Disabled),
        Some(u) => u,
    };
    // Both factors are right: spend the code, once (a concurrent use of the same code loses).
    let spent = match (step, recovery_hash) {
        (Some(step), _) => state.store.use_totp_step(name, &u.id, step).await,
        (None, Some(h)) => state.store.use_recovery_code(name, &u.id, &h, now).await,
        (None, None) => Ok(false),
    };
    if spent.unwrap_or(false) {
        Ok(())
    } else {
        Err(bad_code)
    }
}

pub fn totp_aad(realm: &str, user_id: &str) -> Vec<u8> {
    format!("sigil-totp/{realm}/{user_id}").into_bytes()
}

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
            Some("This sign-in requires a passkey."),
            StatusCode::FORBIDDEN,
        );
    }
    let username = f.username.unwrap_or_default();
    let account_key = format!("{name}/{username}");
    if state
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
                Some("Sign-in is busy. Try again in a moment."),
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
        None => unavailable(&state, Some(&realm)),
    }
}

/// A finished sign-in: where to send the browser (the client's redirect URI with the code, or
/// the app confirmation page) and the cookies to set.
pub(crate) struct SignedIn {
    pub location: String,
    pub cookies: Vec<HeaderValue>,
}

/// Opens a session for `user` (audited as `login.succeeded`) and issues the code, or, when the
/// request asks the user to confirm the app, sends the browser to that page first. `None` if the
/// session could not be stored.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn complete_sign_in(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
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
    let session_cookie = cookie(
        SESSION_COOKIE,
        &session_token,
        &cookie_path(realm),
        secure_cookies(realm),
        None,
    );
    // The user has just interacted (signed in on a page that names the app); only an explicit
    // `prompt=consent` asks again.
    if pending.force_consent {
        return Some(SignedIn {
            location: format!("{}/consent", realm.issuer),
            cookies: vec![session_cookie],
        });
    }
    let redirect = issue_code(state, realm, pending, &session, now).await;
    let location = redirect
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())?
        .to_owned();
    Some(SignedIn {
        location,
        cookies: vec![session_cookie, pending::clear(realm)],
    })
}
