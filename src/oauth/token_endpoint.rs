//! `POST /realms/{realm}/oauth2/token`: parse, dispatch to the grant's module, audit, answer.
//! Every outcome, issued or refused, is in the audit log before the response leaves. The grants
//! (`client_credentials`, `authorization_code`, `refresh_token`, the AWS token exchange) know
//! nothing of this module.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::outcome::{Granted, Refusal, finish, rate_limited, read_body};
use super::token::Cnf;
use super::{
    ErrorCode, OAuthError, authorization_code, client_auth, client_credentials, dpop, form,
    refresh_token,
};
use crate::clients;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::oidc::TOKEN_PATH;
use crate::state::AppState;
use crate::tls::{ConnTls, Listener};

pub async fn token(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    crate::oidc::RealmPath(realm_name): crate::oidc::RealmPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let realm = match state.directory.realm(&realm_name, now).await {
        Ok(Some(r)) => r,
        Ok(None) => return OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response(),
        Err(e) => {
            tracing::error!(error = %e, realm = %realm_name, "realm unavailable");
            return OAuthError::store_unavailable().into_response();
        }
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(res) = rate_limited(&state, peer, now) {
        return res;
    }
    let conn = conn.map(|Extension(c)| c);
    // The URL this request addressed: the mutual-TLS alias or the issuer's own (for DPoP's
    // `htu` and a client assertion's `aud`).
    let endpoint: std::borrow::Cow<'_, str> = match (&conn, &state.mtls_base_url) {
        (Some(c), Some(base)) if c.listener == Listener::MutualTls => {
            format!("{base}/realms/{}{TOKEN_PATH}", realm.record.name).into()
        }
        _ => realm.token_endpoint.as_str().into(),
    };
    let ctx = client_auth::Context {
        cert: conn.as_ref().and_then(|c| c.client_chain.as_ref()),
        token_endpoint: &endpoint,
    };
    let outcome = match read_body(&headers, body, state.config.max_body_bytes).await {
        Ok(bytes) => grant(&state, &realm, &headers, &bytes, ctx, now).await,
        Err(refusal) => Err(refusal),
    };
    let mut res = finish(&state, &realm, outcome, peer, now).await;
    // RFC 9449 §8.2: a client that sends proofs learns the current nonce from every answer.
    if headers.contains_key("dpop")
        && let Some(nonce) = dpop::fresh_nonce(&state, &realm.record.name, now)
        && let Ok(value) = axum::http::HeaderValue::from_str(&nonce)
    {
        res.headers_mut().insert("dpop-nonce", value);
    }
    res
}

async fn grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    body: &[u8],
    ctx: client_auth::Context<'_>,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let params = form::parse(headers, body).map_err(|e| Refusal::new(e, "malformed_request"))?;
    let grant_type = params.get("grant_type").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("grant_type is required"),
            "missing_grant_type",
        )
    })?;
    match grant_type {
        clients::CLIENT_CREDENTIALS => {
            let authed =
                client_auth::from_request(state, realm, headers, &params, ctx, now).await?;
            let cnf = binding(state, realm, headers, &authed, ctx, now)
                .await
                .map_err(|r| r.client(&authed.client.client_id).authenticated())?;
            client_credentials::grant(realm, &authed, &params, cnf.as_ref(), now)
        }
        clients::AUTHORIZATION_CODE | clients::REFRESH_TOKEN => {
            user_grant(state, realm, headers, &params, grant_type, ctx, now).await
        }
        crate::aws::exchange::TOKEN_EXCHANGE => {
            crate::aws::exchange::from_token_request(state, realm, &params, now).await
        }
        _ => Err(Refusal::new(
            OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "supported: client_credentials, authorization_code, refresh_token, token-exchange",
            ),
            "unsupported_grant_type",
        )),
    }
}

/// The grants that carry a signed-in user: the client (confidential, or public with PKCE) must be
/// allowed the grant and the realm must have usable sign-in settings.
async fn user_grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    params: &form::Params,
    grant_type: &str,
    ctx: client_auth::Context<'_>,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let authed = client_auth::from_request(state, realm, headers, params, ctx, now).await?;
    let client = authed.client.clone();
    // A confidential client has proved itself: its refusals are audited one by one. A public
    // client's id is only claimed, so its refusals are counted like any anonymous request's.
    let mark = |r: Refusal| {
        let r = r.client(&client.client_id);
        if client.public_client {
            r
        } else {
            r.authenticated()
        }
    };
    if !client.grant_types.split(' ').any(|g| g == grant_type) {
        return Err(mark(Refusal::new(
            OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use this grant",
            ),
            "grant_not_allowed",
        )));
    }
    let Some(settings) = realm.login() else {
        return Err(mark(Refusal::new(
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "sign-in is unavailable in this realm",
            ),
            "login_settings_unusable",
        )));
    };
    let cnf = binding(state, realm, headers, &authed, ctx, now)
        .await
        .map_err(mark)?;
    let cnf = cnf.as_ref();
    let result = if grant_type == clients::AUTHORIZATION_CODE {
        authorization_code::grant(state, realm, settings, &client, params, cnf, now).await
    } else {
        refresh_token::grant(state, realm, settings, &client, params, cnf, now).await
    };
    result.map_err(mark)
}

/// What the tokens of this request are bound to: the client certificate the client
/// authenticated with (unless its registration says not to bind) and the key of a DPoP proof.
async fn binding(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    authed: &client_auth::Authenticated,
    ctx: client_auth::Context<'_>,
    now: UnixTime,
) -> Result<Option<Cnf>, Refusal> {
    let jkt = dpop::check(state, realm, headers, ctx.token_endpoint, now).await?;
    if jkt.is_none() && authed.auth.auth.require_dpop {
        return Err(Refusal::new(
            OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "this client must send a DPoP proof",
            ),
            "dpop_required",
        ));
    }
    Ok(Cnf {
        x5t_s256: authed.cert_thumbprint.clone(),
        jkt,
    }
    .into_option())
}
