//! Passkey registration while enrolling through an invite.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::RegisterPublicKeyCredential;

use crate::login::pages_support::{cookie, csrf_ok};
use crate::login::session::{ENROL_COOKIE, cookie_path, secure_cookies};
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::Enrolment;

#[allow(unused_imports)]
use super::account::*;
#[allow(unused_imports)]
use super::sign_in::*;
use super::*;

/// `POST /realms/{realm}/enrol/passkey/options`.
pub async fn enrol_options(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    body: Result<axum::Json<CsrfBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // A malformed body is this handler's own refusal, not the framework's plain-text one.
    let body = body.ok();
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
    pub(super) csrf: String,
    pub(super) credential: RegisterPublicKeyCredential,
    #[serde(default)]
    pub(super) name: Option<String>,
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
    let user = state
        .store
        .user_by_id(&name, &flow.user_id)
        .await
        .ok()
        .flatten();
    let refused = match &user {
        Some(u) => crate::login::enrol::refused_reenrolment(&state, &name, u).await,
        None => true,
    };
    if refused {
        return json_error(StatusCode::FORBIDDEN, "already enrolled");
    }
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
    let first_only = crate::login::enrol::first_enrolment_only(&state, &name).await;
    match state
        .store
        .enrol(
            &flow.invite_hash,
            &name,
            &flow.user_id,
            &Enrolment::Passkey(record),
            first_only,
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
    let mut res = ok_json(json!({
        "done": true,
        "redirect": crate::login::enrol::done_url(&realm, "passkey", flow.client_id.as_deref()),
    }));
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
