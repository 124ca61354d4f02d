//! Enrolment through an invite link: a passkey, or password + TOTP (with recovery codes). The
//! invite is spent in the same transaction that stores the credentials, so one invite enrols once.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::i18n::tr;
use super::pages_support::{cookie, csrf_ok, lang_for, message, realm_context, render};
use super::session::{self, ENROL_COOKIE, cookie_path, secure_cookies};
use super::totp_view;
use crate::audit::AuditDraft;
use crate::directory::LiveRealm;
use crate::identity::{new_token, password, recovery, token_hash, totp};
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::Enrolment;
use crate::store::login::UserRecord;

/// An enrolment in progress (kind `enrol`, named by the enrolment cookie).
#[derive(Serialize, Deserialize)]
pub(crate) struct EnrolFlow {
    pub user_id: String,
    pub invite_hash: String,
    /// The TOTP secret being set up, sealed under the KEK (base64).
    pub totp_sealed: String,
    pub csrf: String,
    /// The app named by the invite link (`?client_id=`), offered when the set-up is done.
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct EnrolQuery {
    client_id: Option<String>,
}

/// `/enrol/done` for `method`, naming the invite's app if any.
pub(crate) fn done_url(realm: &LiveRealm, method: &str, client_id: Option<&str>) -> String {
    let mut url = format!("{}/enrol/done?method={method}", realm.issuer);
    if let Some(id) = client_id {
        url.push_str("&client_id=");
        url.extend(percent_encoding::utf8_percent_encode(
            id,
            percent_encoding::NON_ALPHANUMERIC,
        ));
    }
    url
}

/// `GET /realms/{realm}/enrol/{token}`: set up password + TOTP from an invite.
pub async fn enrol_form(
    State(state): State<AppState>,
    Path((name, token)): Path<(String, String)>,
    query: Result<Query<EnrolQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let client_id = query
        .map(|Query(q)| q)
        .unwrap_or_default()
        .client_id
        .filter(|id| crate::clients::is_valid_client_id(id));
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let invite_hash = token_hash(&token);
    let invite_gone = |expired: bool| {
        message(
            &state.templates,
            Some(&realm),
            StatusCode::NOT_FOUND,
            if expired {
                "invite_expired"
            } else {
                "invite_used"
            },
        )
    };
    let user_id = match state.store.invite(&invite_hash, &name, now).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            // A spent invite is deleted with the enrolment; an expired one stays until swept.
            let expired = state
                .store
                .invite_expired(&invite_hash, &name, now)
                .await
                .unwrap_or(false);
            return invite_gone(expired);
        }
        Err(_) => return unavailable(&state, Some(&realm)),
    };
    let Some(user) = state.store.user_by_id(&name, &user_id).await.ok().flatten() else {
        return invite_gone(false);
    };
    if refused_reenrolment(&state, &name, &user).await {
        return invite_gone(false);
    }
    let secret = totp::new_secret();
    let Ok(sealed) = state
        .kek
        .seal(&crate::identity::totp::aad(&name, &user_id), &secret)
    else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
    };
    let flow_token = new_token();
    let data = EnrolFlow {
        user_id,
        invite_hash,
        totp_sealed: STANDARD.encode(sealed),
        csrf: new_token(),
        client_id,
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
            "unavailable",
        );
    }
    let mut res = enrol_page(&state, &realm, &user, &data, &secret, None, StatusCode::OK);
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

/// The enrolment page for `flow` (the same TOTP secret each time it is shown), with `error` (a
/// catalogue key) when a submission was refused.
fn enrol_page(
    state: &AppState,
    realm: &LiveRealm,
    user: &UserRecord,
    flow: &EnrolFlow,
    secret: &[u8],
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let label = realm
        .record
        .display_name
        .clone()
        .unwrap_or_else(|| realm.record.name.clone());
    let ctx = context! { ..realm_context(realm), ..totp_view::context(secret, &label, &user.username), ..context! {
        title => "page.enrol",
        action => format!("{}/enrol", realm.issuer),
        passkey_action => format!("{}/enrol/passkey", realm.issuer),
        csrf => flow.csrf.clone(),
        username => user.username.clone(),
        fallback => settings(realm).allow_password_fallback,
        error => error,
    }};
    render(&state.templates, "enrol.html", ctx, status)
}

#[derive(Deserialize, Default)]
pub struct DoneQuery {
    method: Option<String>,
    client_id: Option<String>,
}

/// `GET /realms/{realm}/enrol/done`: the last step of an enrolment, with the ways forward.
pub async fn enrol_done(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    query: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let method = if q.method.as_deref() == Some("passkey") {
        "passkey"
    } else {
        "password"
    };
    let mut links = Vec::new();
    if let Some((href, app)) =
        super::account::back_to_app(&state, &realm, q.client_id.as_deref(), now).await
    {
        links.push(super::account::app_link(
            &realm,
            href,
            "common.continue_to_app",
            &app,
            "continue-to-app",
        ));
    }
    // The account page needs a sign-in: offered only to a browser that has one.
    if session::current(&state, &realm, &headers, now)
        .await
        .is_some()
    {
        links.extend(super::account::account_links(&realm));
    }
    let ctx = context! { ..realm_context(&realm), ..context! {
        title => "page.enrol_done",
        method => method,
        links => links,
    }};
    render(&state.templates, "done.html", ctx, StatusCode::OK)
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
            "enrol_expired",
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
            "csrf",
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
    let Some(user) = state
        .store
        .user_by_id(&name, &flow.user_id)
        .await
        .ok()
        .flatten()
    else {
        return gone();
    };
    if refused_reenrolment(&state, &name, &user).await {
        return gone();
    }
    let pw = f.password.unwrap_or_default();
    let Ok(sealed) = STANDARD.decode(&flow.totp_sealed) else {
        return gone();
    };
    let Ok(secret) = state
        .kek
        .open(&crate::identity::totp::aad(&name, &user.id), &sealed)
    else {
        return gone();
    };
    // A refused submission shows the same page again (same secret, same enrolment) with why.
    let again = |error: &str| {
        enrol_page(
            &state,
            &realm,
            &user,
            &flow,
            &secret,
            Some(error),
            StatusCode::BAD_REQUEST,
        )
    };
    if pw.len() > password::MAX_LEN {
        return again("error.long_password");
    }
    if password::policy_error(&pw).is_some() {
        return again("error.weak_password");
    }
    let Some(step) = totp::matching_step(&secret, &f.code.unwrap_or_default(), now) else {
        return again("error.code_mismatch");
    };
    let Ok(hash) = state.passwords.hash(pw).await else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
        );
    };
    let codes = recovery::generate();
    let enrolment = Enrolment::PasswordTotp {
        password_hash: hash,
        totp_sealed: sealed,
        totp_step: step,
        recovery_hashes: codes.iter().map(|c| recovery::hash(c)).collect(),
    };
    let audit_rows = [
        AuditDraft::new(now, Some(&name), "user.enrolled", &user.username)
            .subject(&user.id)
            .detail(serde_json::json!({"methods": ["password", "totp"]})),
    ];
    // Spending the invite and storing the credentials are one transaction: of two concurrent
    // enrolments through one invite exactly one stores anything; in a realm that requires
    // approval, of enrolments through several invites only the first (`first_only`).
    let first_only = first_enrolment_only(&state, &name).await;
    match state
        .store
        .enrol(
            &flow.invite_hash,
            &name,
            &user.id,
            &enrolment,
            first_only,
            now,
            &audit_rows,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return gone(),
        Err(e) => {
            tracing::error!(error = %e, "enrolment store failed");
            return message(
                &state.templates,
                Some(&realm),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            );
        }
    }
    let _ = state.store.delete_flow(&flow_hash).await;
    let ctx = recovery_context(
        &realm,
        &codes,
        &done_url(&realm, "password", flow.client_id.as_deref()),
    );
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

/// The recovery codes page's values: the codes, a `.txt` to download, where "Continue" goes.
pub(crate) fn recovery_context(
    realm: &LiveRealm,
    codes: &[String],
    continue_url: &str,
) -> minijinja::Value {
    let lang = lang_for(Some(realm));
    let realm_name = realm
        .record
        .display_name
        .clone()
        .unwrap_or_else(|| realm.record.name.clone());
    let mut text = tr(lang, "recovery.file_heading", &[("realm", &realm_name)]);
    text.push_str("\n\n");
    for c in codes {
        text.push_str(c);
        text.push('\n');
    }
    let file_name = format!("recovery-codes-{}.txt", realm.record.name);
    context! { ..realm_context(realm), ..context! {
        title => "page.recovery",
        codes => codes,
        file_name => file_name,
        download_href => format!(
            "data:text/plain;charset=utf-8,{}",
            percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC)
        ),
        // A GET form drops its action's query: the parameters go in hidden fields.
        continue_url => continue_url.split('?').next().unwrap_or(continue_url),
        continue_params => url::Url::parse(continue_url)
            .map(|u| {
                u.query_pairs()
                    .map(|(k, v)| context! { name => k.into_owned(), value => v.into_owned() })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    }}
}

/// Four-eyes: in a realm that requires approval an invite does not replace a user's existing
/// sign-in factors (see `admin::changes::reenrolment_refused`). Fails closed.
pub(crate) async fn refused_reenrolment(
    state: &AppState,
    realm: &str,
    user: &crate::store::login::UserRecord,
) -> bool {
    crate::admin::changes::reenrolment_refused(
        state.store.as_ref(),
        state.config.admin_realm.as_deref(),
        realm,
        user,
    )
    .await
    .unwrap_or(true)
}

/// Whether the realm requires approval, so that an enrolment stores factors only for a user who
/// has none (checked again inside the enrolment's transaction). Fails closed.
pub(crate) async fn first_enrolment_only(state: &AppState, realm: &str) -> bool {
    crate::admin::changes::guard(
        state.store.as_ref(),
        state.config.admin_realm.as_deref(),
        realm,
    )
    .await
    .map(|g| g.require_approval)
    .unwrap_or(true)
}
