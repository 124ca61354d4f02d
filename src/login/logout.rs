//! RP-Initiated Logout 1.0: `GET|POST /realms/{realm}/oauth2/logout` (`end_session_endpoint`).
//!
//! - `id_token_hint`: an ID token this realm issued (signature checked against the published keys;
//!   it may have expired). A hint that does not verify, or names another client than `client_id`,
//!   is refused with a page: nothing ends and nothing redirects.
//! - `post_logout_redirect_uri` must equal, byte for byte, one registered for the client (named by
//!   the hint's `aud` or by `client_id`); anything else is refused with a page, never followed.
//! - With a hint naming this browser's session (`sid` and `sub`), the session ends at once. With
//!   no hint, or one for another session, the user confirms on a page first (a cross-site link
//!   alone cannot sign anyone out). Ending the session puts its `sid` in the revocation feed and
//!   writes its audit record in the same transaction; its refresh tokens die with it.
//! - Then: the registered URI with `state`, or the "signed out" page.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use minijinja::context;
use serde_json::{Map, Value, json};

use super::common::{csrf_refused, realm_or_page, see_other, unavailable};
use super::pages_support::{cookie, csrf_ok, message, realm_context, render, secure_page_headers};
use super::session::{self, Current, SESSION_COOKIE, cookie_path, secure_cookies};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oauth::form::{self, Params};
use crate::oidc::RealmPath;
use crate::state::AppState;

/// The longest `state` passed back to the app (it ends up in a `Location` header).
const MAX_STATE_BYTES: usize = 1024;

/// What a logout request asks for, once checked.
struct Request {
    /// The verified hint's claims.
    hint: Option<Map<String, Value>>,
    client_id: Option<String>,
    /// A registered post-logout redirect URI of that client.
    redirect: Option<String>,
    state: Option<String>,
}

pub async fn end_session(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let params = match read_params(&state, &method, &uri, &headers, body).await {
        Some(p) => p,
        None => return bad_request(&state, &realm),
    };
    let Some(req) = check(&state, &realm, &params, now).await else {
        return bad_request(&state, &realm);
    };
    let Some(cur) = session::current(&state, &realm, &headers, now).await else {
        // Nobody is signed in here: there is nothing to end (and no cookie to clear: a cross-site
        // request arrives without it, and must not sign anyone out of this browser).
        return finish(&state, &realm, &req, false).await;
    };
    let same_session = req.hint.as_ref().is_some_and(|h| {
        h.get("sid").and_then(Value::as_str) == Some(cur.session.sid.as_str())
            && h.get("sub").and_then(Value::as_str) == Some(cur.user.id.as_str())
    });
    if same_session {
        if let Err(res) = end(&state, &realm, &cur, req.client_id.as_deref(), now).await {
            return res;
        }
        return finish(&state, &realm, &req, true).await;
    }
    confirmation(&state, &realm, &cur, &req, now).await
}

/// `POST /realms/{realm}/oauth2/logout/confirm`: the confirmation page's answer.
pub async fn confirm(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some(params) = read_params(&state, &Method::POST, &Uri::default(), &headers, body).await
    else {
        return bad_request(&state, &realm);
    };
    // The hidden fields are checked again: a page is no reason to trust what comes back.
    let Some(req) = check(&state, &realm, &params, now).await else {
        return bad_request(&state, &realm);
    };
    let Some(cur) = session::current(&state, &realm, &headers, now).await else {
        return finish(&state, &realm, &req, false).await;
    };
    if !csrf_ok(&session::session_csrf(&cur.token), params.get("csrf")) {
        return csrf_refused(&state, &realm);
    }
    if params.get("decision") != Some("sign_out") {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::OK,
            "still_signed_in",
        );
    }
    if let Err(res) = end(&state, &realm, &cur, req.client_id.as_deref(), now).await {
        return res;
    }
    finish(&state, &realm, &req, true).await
}

/// The request's parameters: the query string (GET) or a form body (POST), by the token
/// endpoint's rules (no repeats, bounded).
async fn read_params(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Option<Params> {
    if method == Method::GET {
        return form::parse_query(uri.query()).ok();
    }
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .ok()?;
    form::parse(headers, &bytes).ok()
}

/// Checks the hint, the client and the redirect URI; `None` refuses the request.
async fn check(
    state: &AppState,
    realm: &LiveRealm,
    params: &Params,
    now: UnixTime,
) -> Option<Request> {
    let hint = match params.get("id_token_hint") {
        Some(h) => Some(verify_id_token_hint(realm, h)?),
        None => None,
    };
    let hinted_client = hint
        .as_ref()
        .and_then(|h| h.get("aud"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let client_id = match (hinted_client, params.get("client_id")) {
        (Some(a), Some(b)) if a != b => return None,
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_owned),
    };
    let redirect = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let id = client_id.as_deref()?;
            let client = state
                .directory
                .client(&realm.record.name, id, now)
                .await
                .ok()??;
            if !client.enabled || !client.post_logout_redirect_uris().iter().any(|r| r == uri) {
                return None;
            }
            Some(uri.to_owned())
        }
    };
    let state_param = params.get("state");
    if state_param.is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        return None;
    }
    Some(Request {
        hint,
        client_id,
        redirect,
        state: state_param.map(str::to_owned),
    })
}

/// An ID token of this realm: a published key's signature (algorithm from the key), `typ: JWT`,
/// this issuer, `token_use: id`, an `aud`. Expiry is not checked (a hint may be old).
fn verify_id_token_hint(realm: &LiveRealm, token: &str) -> Option<Map<String, Value>> {
    let claims = crate::oidc::userinfo::verify_signed_by_realm(realm, token, "JWT", "id")?;
    claims
        .get("aud")
        .and_then(Value::as_str)
        .is_some()
        .then_some(claims)
}

/// Ends `cur`'s session (the feed entry and the audit record with it).
async fn end(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    client_id: Option<&str>,
    now: UnixTime,
) -> Result<(), Response> {
    let name = &realm.record.name;
    let audit = [
        AuditDraft::new(now, Some(name), "user.signed_out", &cur.user.username)
            .subject(&cur.user.id)
            .detail(json!({"sid": cur.session.sid, "via": "end_session", "client_id": client_id})),
    ];
    match state
        .store
        .end_session(&cur.session.id_hash, name, now, &audit)
        .await
    {
        Ok(ended) => {
            if ended {
                state.logout_outbox.wake();
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "ending a session failed");
            Err(unavailable(state, Some(realm)))
        }
    }
}

/// After the session (if any) ended: the registered URI with `state`, else the "signed out" page.
/// The session cookie is cleared only when this request ended the session it names.
async fn finish(state: &AppState, realm: &LiveRealm, req: &Request, ended: bool) -> Response {
    let mut res = match &req.redirect {
        Some(uri) => {
            let mut to = url::Url::parse(uri).ok();
            if let (Some(u), Some(s)) = (&mut to, &req.state) {
                u.query_pairs_mut().append_pair("state", s);
            }
            match to {
                Some(u) => see_other(u.as_str()),
                None => return bad_request(state, realm),
            }
        }
        None => message(&state.templates, Some(realm), StatusCode::OK, "signed_out"),
    };
    if !ended {
        return res;
    }
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

/// "Sign out of {realm}?" for a request without a hint for this session.
async fn confirmation(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    req: &Request,
    now: UnixTime,
) -> Response {
    let app = match &req.client_id {
        Some(id) => state
            .directory
            .client(&realm.record.name, id, now)
            .await
            .ok()
            .flatten()
            .map(|c| c.display_name().to_owned()),
        None => None,
    };
    let ctx = context! { ..realm_context(realm), ..context! {
        title => "page.logout",
        action => format!("{}/oauth2/logout/confirm", realm.issuer),
        csrf => session::session_csrf(&cur.token),
        username => cur.user.username.clone(),
        app => app,
        client_id => req.client_id.clone(),
        post_logout_redirect_uri => req.redirect.clone(),
        state => req.state.clone(),
    }};
    let mut res = render(&state.templates, "logout.html", ctx, StatusCode::OK);
    secure_page_headers(res.headers_mut());
    // The confirmed form is answered with a redirect to the app: the page's CSP must let the
    // form go there (browsers apply form-action to the redirect too).
    if let Some(uri) = &req.redirect {
        super::pending::allow_redirect_to(&mut res, uri);
    }
    res
}

fn bad_request(state: &AppState, realm: &LiveRealm) -> Response {
    message(
        &state.templates,
        Some(realm),
        StatusCode::BAD_REQUEST,
        "logout_bad_request",
    )
}
