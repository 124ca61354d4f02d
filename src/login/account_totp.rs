//! The account page's authenticator app (set up or replace, confirmed by a code) and new
//! recovery codes.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::common::*;
use super::pages_support::{message, message_with, realm_context, render};
use super::session::{self, Current};
use super::totp_view;
use crate::directory::LiveRealm;
use crate::identity::{recovery, totp};
use crate::oidc::RealmPath;
use crate::state::AppState;
use crate::store::login::CredentialChange;

use super::account::*;

fn totp_key(cur: &Current) -> String {
    format!("{}:totp", cur.session.id_hash)
}

/// `POST /realms/{realm}/account/totp`: a new TOTP secret to confirm.
pub async fn totp_start(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    let (realm, cur) = match fresh_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let secret = totp::new_secret();
    let Ok(sealed) = state
        .kek
        .seal(&crate::identity::totp::aad(&name, &cur.user.id), &secret)
    else {
        return unavailable(&state, Some(&realm));
    };
    // Upserted: starting again replaces a set-up the user abandoned.
    if state
        .store
        .put_flow(
            &totp_key(&cur),
            &name,
            "totp-reenrol",
            &STANDARD.encode(sealed),
            now + 600,
            now,
        )
        .await
        .is_err()
    {
        return unavailable(&state, Some(&realm));
    }
    totp_page(&state, &realm, &cur, &secret, None, StatusCode::OK)
}

/// The set-up page for `secret` (shown again, same secret, when a code was refused).
fn totp_page(
    state: &AppState,
    realm: &LiveRealm,
    cur: &Current,
    secret: &[u8],
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let label = realm
        .record
        .display_name
        .clone()
        .unwrap_or_else(|| realm.record.name.clone());
    let replacing = cur.user.totp_sealed.is_some();
    let ctx = context! { ..realm_context(realm), ..totp_view::context(secret, &label, &cur.user.username), ..context! {
        title => if replacing { "totp.title_replace" } else { "totp.title_setup" },
        replacing => replacing,
        action => format!("{}/account/totp/confirm", realm.issuer),
        account_url => format!("{}/account", realm.issuer),
        csrf => session::session_csrf(&cur.token),
        error => error,
    }};
    render(&state.templates, "totp.html", ctx, status)
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
    let f = form.ok().map(|Form(f)| f);
    let csrf = f.as_ref().and_then(|f| f.csrf.clone());
    let (realm, cur) = match fresh_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let code = f.and_then(|f| f.code).unwrap_or_default();
    let sealed = state
        .store
        .flow(&totp_key(&cur), &name, "totp-reenrol", now)
        .await
        .ok()
        .flatten()
        .and_then(|s| STANDARD.decode(s).ok());
    let secret = sealed.as_ref().and_then(|s| {
        state
            .kek
            .open(&crate::identity::totp::aad(&name, &cur.user.id), s)
            .ok()
    });
    let (Some(sealed), Some(secret)) = (sealed, secret) else {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "totp_expired",
        );
    };
    let Some(step) = totp::matching_step(&secret, &code, now) else {
        return totp_page(
            &state,
            &realm,
            &cur,
            &secret,
            Some("error.code_mismatch"),
            StatusCode::BAD_REQUEST,
        );
    };
    // One winner: a concurrent confirmation of the same set-up finds it gone.
    if state
        .store
        .take_flow(&totp_key(&cur), &name, "totp-reenrol", now)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        return message(
            &state.templates,
            Some(&realm),
            StatusCode::BAD_REQUEST,
            "totp_expired",
        );
    }
    let change = CredentialChange::ReplaceTotp { sealed, step };
    match apply_change(
        &state,
        &realm,
        &cur,
        &change,
        "user.totp_replaced",
        json!({}),
        now,
    )
    .await
    {
        Ok(_) => message_with(
            &state.templates,
            Some(&realm),
            StatusCode::OK,
            if cur.user.totp_sealed.is_some() {
                "totp_replaced"
            } else {
                "totp_set_up"
            },
            context! { links => account_links(&realm) },
        ),
        Err(e) => {
            tracing::error!(error = %e, "TOTP replacement failed");
            unavailable(&state, Some(&realm))
        }
    }
}

/// `POST /realms/{realm}/account/recovery-codes`: new recovery codes (the old ones stop working).
pub async fn recovery_codes(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    let (realm, cur) = match fresh_form(&state, &name, &headers, csrf.as_deref(), now).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let codes = recovery::generate();
    let change = CredentialChange::ReplaceRecoveryCodes {
        hashes: codes.iter().map(|c| recovery::hash(c)).collect(),
    };
    if let Err(e) = apply_change(
        &state,
        &realm,
        &cur,
        &change,
        "user.recovery_codes_replaced",
        json!({"count": codes.len()}),
        now,
    )
    .await
    {
        tracing::error!(error = %e, "recovery code replacement failed");
        return unavailable(&state, Some(&realm));
    }
    let ctx = super::enrol::recovery_context(&realm, &codes, &format!("{}/account", realm.issuer));
    render(&state.templates, "recovery.html", ctx, StatusCode::OK)
}
