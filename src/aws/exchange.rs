//! The exchange itself, shared by the realm's AWS endpoint and the RFC 8693 token-exchange grant:
//! local checks → challenge → STS → canonical ARN → binding → scopes → token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::{Map, json};

use super::binding::{Decision, decide};
use super::request::{SignedRequest, check};
use super::{arn, sts};
use crate::clients::scope::{self, ScopeError};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::keys::kek::hex;
use crate::oauth::form::Params;
use crate::oauth::outcome::{Granted, Refusal, finish, rate_limited, read_body};
use crate::oauth::token::{AccessSpec, mint_access_token};
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Sigil's subject token type: the subject token is the signed request's JSON.
pub const AWS_SUBJECT_TOKEN_TYPE: &str =
    "urn:sigil:params:oauth:token-type:aws-sts-get-caller-identity";
pub const GRANT_NAME: &str = "aws_sts_get_caller_identity";
pub const CHALLENGE_TTL: i64 = 60;

/// When "challenge store full" was last logged (a log throttle, not application state).
static FULL_LOGGED_AT: AtomicI64 = AtomicI64::new(i64::MIN / 2);

fn client_error(reason: &'static str, description: &'static str) -> Refusal {
    Refusal::new(
        OAuthError::new(ErrorCode::InvalidClient, description),
        reason,
    )
}

/// The whole exchange for one parsed request.
pub async fn exchange(
    state: &AppState,
    realm: &LiveRealm,
    req: &SignedRequest,
    requested_scope: Option<&str>,
    audience: Option<&str>,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let name = &realm.record.name;
    let store_error = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "AWS exchange store error");
        Refusal::new(OAuthError::store_unavailable(), "store_unavailable")
    };
    let settings = state
        .store
        .aws_settings(name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            Refusal::new(
                OAuthError::invalid_request("the AWS exchange is not configured in this realm"),
                "aws_not_configured",
            )
        })?;
    let checked = check(req, &settings, now).map_err(|r| {
        let code = if r.malformed {
            ErrorCode::InvalidRequest
        } else {
            ErrorCode::InvalidClient
        };
        Refusal::new(OAuthError::new(code, r.description), r.reason)
    })?;
    if let Some(challenge) = &checked.challenge {
        let hash = hex(ring::digest::digest(&ring::digest::SHA256, challenge.as_bytes()).as_ref());
        if !state
            .store
            .consume_aws_challenge(name, &hash, now)
            .await
            .map_err(store_error)?
        {
            return Err(client_error(
                "challenge_replayed",
                "the challenge is unknown, expired or already used",
            ));
        }
    }
    let identity = sts::call(&state.sts_http, &checked).await.map_err(|e| {
        let reason = match e {
            sts::StsError::Unreachable => "sts_unreachable",
            sts::StsError::Refused(_) => "sts_refused",
            sts::StsError::Malformed => "sts_malformed",
        };
        client_error(reason, "AWS did not confirm the caller's identity")
    })?;
    let who = arn::canonicalise(&identity.arn)
        .map_err(|_| client_error("unsupported_arn", "the caller's ARN is not supported"))?;
    if who.account != identity.account {
        return Err(client_error(
            "account_mismatch",
            "STS answered inconsistently",
        ));
    }
    let bindings = state.store.aws_bindings(name).await.map_err(store_error)?;
    let binding = match decide(&bindings, &who, audience) {
        Decision::Allow(b) => b,
        Decision::Denied(_) => {
            return Err(
                client_error("denied_by_binding", "this principal may not have a token")
                    .actor(&who.canonical)
                    .authenticated(),
            );
        }
        Decision::NoBinding => {
            return Err(
                client_error("no_binding", "no binding allows this principal")
                    .actor(&who.canonical)
                    .authenticated(),
            );
        }
    };
    let granted = scope::grant(requested_scope, &binding.scopes, &binding.scopes).map_err(|e| {
        let description = match e {
            ScopeError::NotAllowed(_) => "a requested scope is not allowed for this principal",
            _ => "malformed scope",
        };
        Refusal::new(
            OAuthError::new(ErrorCode::InvalidScope, description),
            "invalid_scope",
        )
        .actor(&who.canonical)
        .authenticated()
    })?;
    let ttl = binding
        .access_token_ttl
        .unwrap_or(realm.record.access_token_ttl);
    let mut extra = Map::new();
    extra.insert("aws_user_id".into(), json!(identity.user_id));
    extra.insert("aws_account".into(), json!(identity.account));
    extra.insert("aws_arn".into(), json!(identity.arn));
    let token = mint_access_token(
        &realm.signing,
        AccessSpec {
            issuer: &realm.issuer,
            subject: &who.canonical,
            audience: &binding.audience,
            client_id: &who.canonical,
            scope: &granted,
            ttl,
            now,
            cnf: None,
            extra: Some(&extra),
        },
    )
    .map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        Refusal::new(OAuthError::server_error(), "signing_failed")
    })?;
    let mut detail = Map::new();
    detail.insert("binding".into(), json!(binding.id));
    detail.insert("aws_user_id".into(), json!(identity.user_id));
    detail.insert("aws_arn".into(), json!(identity.arn));
    Ok(Granted {
        cnf: None,
        actor: who.canonical,
        grant_type: GRANT_NAME,
        token,
        scope: granted,
        expires_in: ttl,
        detail,
        token_exchange: true,
        response_extra: Default::default(),
        audited: false,
    })
}

fn parse_signed(json: &[u8]) -> Result<SignedRequest, Refusal> {
    serde_json::from_slice(json).map_err(|_| {
        Refusal::new(
            OAuthError::invalid_request("the signed request must be {method, url, headers, body}"),
            "malformed_signed_request",
        )
    })
}

/// RFC 8693 at the token endpoint: `subject_token_type` = Sigil's URN, `subject_token` = JSON.
pub async fn from_token_request(
    state: &AppState,
    realm: &LiveRealm,
    params: &Params,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    if params.get("subject_token_type") != Some(AWS_SUBJECT_TOKEN_TYPE) {
        return Err(Refusal::new(
            OAuthError::invalid_request(
                "subject_token_type must be urn:sigil:params:oauth:token-type:aws-sts-get-caller-identity",
            ),
            "unsupported_subject_token_type",
        ));
    }
    let token = params.get("subject_token").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("subject_token is required"),
            "missing_subject_token",
        )
    })?;
    let req = parse_signed(token.as_bytes())?;
    exchange(
        state,
        realm,
        &req,
        params.get("scope"),
        params.get("audience"),
        now,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ExchangeQuery {
    scope: Option<String>,
    audience: Option<String>,
}

async fn live_realm(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<std::sync::Arc<LiveRealm>, Response> {
    match state.directory.realm(name, now).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response()),
        Err(e) => {
            tracing::error!(error = %e, realm = %name, "realm unavailable");
            Err(OAuthError::store_unavailable().into_response())
        }
    }
}

/// `POST /realms/{realm}/aws/token`: the signed request as the JSON body; `scope` and
/// `audience` as optional query parameters.
pub async fn endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    crate::oidc::RealmPath(realm): crate::oidc::RealmPath,
    query: Result<Query<ExchangeQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let live = match live_realm(&state, &realm, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(res) = rate_limited(&state, peer, now) {
        return res;
    }
    let outcome = async {
        let Ok(Query(q)) = query else {
            return Err(Refusal::new(
                OAuthError::invalid_request("malformed query"),
                "malformed_query",
            ));
        };
        let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
        let req = parse_signed(&bytes)?;
        exchange(
            &state,
            &live,
            &req,
            q.scope.as_deref(),
            q.audience.as_deref(),
            now,
        )
        .await
    }
    .await;
    finish(&state, &live, outcome, peer, now).await
}

/// `POST /realms/{realm}/aws/challenge`: a single-use challenge, valid for a minute, to be sent
/// (and signed) as `X-Sigil-Challenge`. Anonymous, and each one is a row: an address gets
/// `aws_challenges_per_minute_per_ip` a minute (then 429), a realm holds at most
/// `aws_max_live_challenges` unexpired ones (then 503 until some expire).
pub async fn challenge(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    crate::oidc::RealmPath(realm): crate::oidc::RealmPath,
) -> Response {
    let now = state.clock.now();
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    // Before any work, database reads included.
    if let Some(ip) = peer
        && state.aws_challenges.is_blocked(ip, now)
    {
        crate::metrics::rate_limited("aws_challenges_per_ip");
        return OAuthError::new(ErrorCode::RateLimited, "too many challenges; retry later")
            .into_response();
    }
    let live = match live_realm(&state, &realm, now).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    match state.store.aws_settings(&live.record.name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return OAuthError::invalid_request("the AWS exchange is not configured in this realm")
                .into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "challenge store error");
            return OAuthError::store_unavailable().into_response();
        }
    }
    // Every challenge asked for counts, stored or not.
    if let Some(ip) = peer
        && state.aws_challenges.record_failure(ip, now)
    {
        // Tallied: one row per address and period, however many requests are refused.
        tracing::warn!(%ip, realm = %live.record.name, "AWS challenge limit reached");
        state.refusals.add(
            crate::audit::tally::Refused {
                realm: Some(&live.record.name),
                kind: "aws.challenge_rate_limited",
                address: ip.to_string(),
                reason: "limit_reached",
                actor: "(address)",
            },
            now,
        );
    }
    let nonce = B64.encode(crate::random::random_bytes::<32>());
    let hash = hex(ring::digest::digest(&ring::digest::SHA256, nonce.as_bytes()).as_ref());
    match state
        .store
        .create_aws_challenge(
            &live.record.name,
            &hash,
            now + CHALLENGE_TTL,
            now,
            i64::from(state.config.aws_max_live_challenges),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // Logged at most once a minute: the refusals themselves may come by the thousand.
            let last = FULL_LOGGED_AT.load(Ordering::Relaxed);
            if now >= last + 60
                && FULL_LOGGED_AT
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    realm = %live.record.name,
                    max = state.config.aws_max_live_challenges,
                    "AWS challenge store full; refusing new challenges until some expire"
                );
            }
            let mut res = OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many challenges outstanding; retry later",
            )
            .into_response();
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(CHALLENGE_TTL),
            );
            return res;
        }
        Err(e) => {
            tracing::error!(error = %e, "challenge store error");
            return OAuthError::store_unavailable().into_response();
        }
    }
    let mut res =
        axum::Json(json!({"challenge": nonce, "expires_in": CHALLENGE_TTL})).into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}
