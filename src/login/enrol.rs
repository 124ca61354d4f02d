//! Enrolment through an invite link: a passkey, or password + TOTP (with recovery codes). The
//! invite is spent in the same transaction that stores the credentials, so one invite enrols once.

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::pages_support::{cookie, csrf_ok, message, realm_context, render};
use super::session::{self, ENROL_COOKIE, cookie_path, secure_cookies};
use crate::audit::AuditDraft;
use crate::identity::{new_token, password, recovery, token_hash, totp};
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::Enrolment;

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
    let Ok(sealed) = state
        .kek
        .seal(&crate::identity::totp::aad(&name, &user_id), &secret)
    else {
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
    let settings = settings(&realm);
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
    let Some(user) = state
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
    let Ok(secret) = state
        .kek
        .open(&crate::identity::totp::aad(&name, &user.id), &sealed)
    else {
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
    // enrolments through one invite exactly one stores anything.
    match state
        .store
        .enrol(
            &flow.invite_hash,
            &name,
            &user.id,
            &enrolment,
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
                "Unavailable",
                "Try again shortly.",
            );
        }
    }
    let _ = state.store.delete_flow(&flow_hash).await;
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
