//! The app confirmation page: before a code goes to a public (native or browser) app with no
//! other interaction, the user sees which app asks and continues or cancels (RFC 8252 §8.6: a
//! malicious app that claims another's redirect scheme gets nothing silently). `prompt=consent`
//! shows it for any client. A realm may remember a user's "continue" per app.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::authorize::*;
use super::common::*;
use super::pages_support::{csrf_ok, realm_context, render};
use super::{pending, session};
use crate::audit::AuditDraft;
use crate::directory::LiveRealm;
use crate::identity::authorize::PendingAuthz;
use crate::oidc::RealmPath;
use crate::state::AppState;

/// Whether the user must confirm the app before a code is issued. `Err` if the store failed.
pub(crate) async fn needed(
    state: &AppState,
    realm: &LiveRealm,
    pending: &PendingAuthz,
    user_id: &str,
) -> Result<bool, ()> {
    if pending.force_consent {
        return Ok(true);
    }
    if !pending.public_client {
        return Ok(false);
    }
    if !settings(realm).remember_consent {
        return Ok(true);
    }
    match state
        .store
        .consent(&realm.record.name, user_id, &pending.client_id)
        .await
    {
        Ok(Some(granted)) => {
            let had: Vec<&str> = granted.split(' ').collect();
            Ok(!pending.scope.split(' ').all(|s| had.contains(&s)))
        }
        Ok(None) => Ok(true),
        Err(e) => {
            tracing::error!(error = %e, "consent lookup failed");
            Err(())
        }
    }
}

/// `GET /realms/{realm}/consent`.
pub async fn consent_form(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some((_, pending)) = pending_flow(&state, &realm, &headers, now) else {
        return expired(&state, &realm);
    };
    let Some(cur) = session::current(&state, &realm, &headers, now).await else {
        return see_other(&format!("{}/login", realm.issuer));
    };
    let scopes: Vec<&str> = pending.scope.split(' ').filter(|s| !s.is_empty()).collect();
    let ctx = context! { ..realm_context(&realm), ..context! {
        title => "page.consent",
        action => format!("{}/consent", realm.issuer),
        csrf => pending.csrf.clone(),
        app => pending.app_name().to_owned(),
        username => cur.user.username.clone(),
        scopes => scopes,
        can_remember => settings(&realm).remember_consent && pending.public_client,
    }};
    let mut res = render(&state.templates, "consent.html", ctx, StatusCode::OK);
    pending::allow_redirect_to(&mut res, &pending.redirect_uri);
    res
}

#[derive(Deserialize)]
pub struct ConsentForm {
    csrf: Option<String>,
    decision: Option<String>,
    remember: Option<String>,
}

/// `POST /realms/{realm}/consent`: continue (a code) or cancel (`access_denied`).
pub async fn consent_submit(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.clock.now();
    let realm = match realm_or_page(&state, &name, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let ip = peer_ip(peer);
    let Some((_, pending)) = pending_flow(&state, &realm, &headers, now) else {
        refused_anonymous(&state, &realm, ip, "no_pending_request", now);
        return expired(&state, &realm);
    };
    let f = form.ok().map(|Form(f)| f);
    if !csrf_ok(&pending.csrf, f.as_ref().and_then(|f| f.csrf.as_deref())) {
        refused_anonymous(&state, &realm, ip, "csrf", now);
        return csrf_refused(&state, &realm);
    }
    let Some(cur) = session::current(&state, &realm, &headers, now).await else {
        return see_other(&format!("{}/login", realm.issuer));
    };
    let f = f.unwrap_or(ConsentForm {
        csrf: None,
        decision: None,
        remember: None,
    });
    if f.decision.as_deref() != Some("allow") {
        audit(
            &state,
            &realm,
            "login.consent_denied",
            &cur.user.username,
            Some(&cur.user.id),
            json!({"client_id": pending.client_id}),
            now,
        )
        .await;
        return redirect_to_client_error(&realm, &pending, "access_denied", "the user cancelled");
    }
    let remember = f.remember.is_some() && settings(&realm).remember_consent;
    let detail =
        json!({"client_id": pending.client_id, "scope": pending.scope, "remembered": remember});
    if remember {
        let rows = [
            AuditDraft::new(now, Some(&name), "login.consented", &cur.user.username)
                .subject(&cur.user.id)
                .detail(detail),
        ];
        if let Err(e) = state
            .store
            .put_consent(
                &name,
                &cur.user.id,
                &pending.client_id,
                &pending.scope,
                now,
                &rows,
            )
            .await
        {
            tracing::error!(error = %e, "consent store failed");
            return unavailable(&state, Some(&realm));
        }
    } else {
        audit(
            &state,
            &realm,
            "login.consented",
            &cur.user.username,
            Some(&cur.user.id),
            detail,
            now,
        )
        .await;
    }
    // The code's redirect also ends the pending request (clears its cookie).
    issue_code(&state, &realm, &pending, &cur.session, now).await
}
