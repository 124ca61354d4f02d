//! `/authorize` as a page: the request is checked (`identity::authorize`), then the browser goes
//! to sign-in (the pending request sealed in a cookie) or, with a usable session, back to the
//! client with a code. Errors are pages; nothing redirects to a `redirect_uri` before it has been
//! matched exactly against the client's.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::pages_support::message;
use super::pending;
use super::session::{self};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::authorize::{self as flow, AuthorizeQuery, CodeData, PendingAuthz};
use crate::identity::{new_token, token_hash};
use crate::login::pages_support::message_with;
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::SessionRecord;

use super::common::*;

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
            "bad_request",
        );
    };
    let client = match q.client_id.as_deref() {
        Some(id) if crate::clients::is_valid_client_id(id) => {
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
                "bad_link",
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
                    && (!pending.require_passkey
                        || crate::identity::sessions::has_passkey_auth(&cur.session))
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

/// A new code for `pending` and `session`: the code, and the row that stores it
/// (`SessionExtras::code`: hash, data, family, expiry).
pub(crate) fn new_code(
    pending: &PendingAuthz,
    session: &SessionRecord,
    now: UnixTime,
) -> (String, (String, String, String, i64)) {
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
        dpop_jkt: pending.dpop_jkt.clone(),
    };
    let row = (
        token_hash(&code),
        serde_json::to_string(&data).unwrap_or_default(),
        family,
        now + flow::CODE_TTL,
    );
    (code, row)
}

/// Where the browser goes with `code`: the client's redirect URI with `code`, `state`, `iss`.
pub(crate) fn code_location(realm: &LiveRealm, pending: &PendingAuthz, code: &str) -> String {
    let mut params = vec![("code", code)];
    if let Some(s) = pending.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", &realm.issuer));
    flow::redirect_with(&pending.redirect_uri, &params)
}

/// A code for `pending`, stored and delivered by redirect.
pub(crate) async fn issue_code(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    session: &SessionRecord,
    now: UnixTime,
) -> Response {
    let (code, (hash, data, family, expires_at)) = new_code(pending, session, now);
    if let Err(e) = state
        .store
        .put_code(&hash, &realm.record.name, &data, &family, expires_at)
        .await
    {
        tracing::error!(error = %e, "code store failed");
        return unavailable(state, Some(realm));
    }
    let mut res = see_other(&code_location(realm, pending, &code));
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

/// `GET /realms/{realm}/login/cancel`: the user gives up; the app gets `access_denied` (with its
/// `state` and `iss`), the pending request ends. Only the pending request's own, already matched
/// redirect URI is used, so this is no open redirect.
pub async fn cancel(
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
        Some((_, pending)) => redirect_to_client_error(
            &realm,
            &pending,
            "access_denied",
            "the user cancelled the sign-in",
        ),
        None => expired(&state, &realm),
    }
}

pub(crate) fn expired(state: &AppState, realm: &LiveRealm) -> Response {
    message_with(
        &state.templates,
        Some(realm),
        StatusCode::BAD_REQUEST,
        "expired_request",
        minijinja::context! { minutes => crate::identity::authorize::FLOW_TTL / 60 },
    )
}
