//! How every token-issuing endpoint ends: the token is audited (durably) before it is returned;
//! a refusal is audited with its reason (never the presented credential) and answered per RFC 6749.

use std::net::IpAddr;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::token::Minted;
use super::{ErrorCode, OAuthError, client_auth};
use crate::audit::AuditDraft;
use crate::audit::tally::Refused;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;

/// A token ready to be returned.
#[derive(Debug)]
pub struct Granted {
    /// Who got it: a client id or a canonical ARN.
    pub actor: String,
    pub grant_type: &'static str,
    pub token: Minted,
    pub scope: String,
    pub expires_in: i64,
    /// Extra audit details (binding, AWS user id, ...).
    pub detail: Map<String, Value>,
    /// RFC 8693 responses name the issued token type.
    pub token_exchange: bool,
    /// Further response members (`id_token`, `refresh_token`). Never audited.
    pub response_extra: Map<String, Value>,
    /// What the access token is bound to (`token_type` is `DPoP` for a DPoP key).
    pub cnf: Option<super::token::Cnf>,
    /// The `token.issued` record was already committed with the grant's own writes (a rotated
    /// refresh token, a spent code): `finish` must not write it again.
    pub audited: bool,
}

/// Why a request was refused, for the audit log (never shown to the caller).
#[derive(Debug)]
pub struct Refusal {
    pub error: OAuthError,
    pub reason: &'static str,
    pub actor: Option<String>,
    /// The caller proved who it is (a confidential client's credentials, an AWS identity
    /// confirmed by STS): its refusals are audited one by one. Anonymous refusals are counted.
    pub authenticated: bool,
}

impl Refusal {
    pub fn new(error: OAuthError, reason: &'static str) -> Self {
        Refusal {
            error,
            reason,
            actor: None,
            authenticated: false,
        }
    }

    pub fn authenticated(mut self) -> Self {
        self.authenticated = true;
        self
    }

    /// Names the client the request claimed to be (only if it is a well-formed client id).
    pub fn client(mut self, id: &str) -> Self {
        self.actor = Some(if client_auth::is_valid_client_id(id) {
            id.to_owned()
        } else {
            "(malformed)".to_owned()
        });
        self
    }

    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }
}

/// The 429 for an address that has used up its failures this minute (checked before any work).
pub fn rate_limited(state: &AppState, peer: Option<IpAddr>, now: UnixTime) -> Option<Response> {
    let ip = peer?;
    state.failures.is_blocked(ip, now).then(|| {
        crate::metrics::rate_limited("failures_per_ip");
        OAuthError::new(
            ErrorCode::RateLimited,
            "too many failed attempts; retry later",
        )
        .into_response()
    })
}

/// The `token.issued` record of a grant (never the token itself).
pub fn issued_draft(realm: &LiveRealm, g: &Granted, now: UnixTime) -> AuditDraft {
    let mut detail = g.detail.clone();
    detail.insert("grant_type".into(), json!(g.grant_type));
    detail.insert("jti".into(), json!(g.token.jti));
    detail.insert("scope".into(), json!(g.scope));
    detail.insert("exp".into(), json!(g.token.exp));
    detail.insert("kid".into(), json!(realm.signing.kid()));
    if let Some(cnf) = &g.cnf {
        // Thumbprints of public material: what the token is bound to, for investigations.
        detail.insert("cnf".into(), json!(cnf));
    }
    AuditDraft::new(now, Some(&realm.record.name), "token.issued", &g.actor)
        .subject(&g.actor)
        .signed_with(realm.signing.kid(), g.token.exp)
        .detail(Value::Object(detail))
}

pub fn address(peer: Option<IpAddr>) -> String {
    peer.map_or_else(|| "(unknown)".to_owned(), |ip| ip.to_string())
}

pub async fn finish(
    state: &AppState,
    realm: &LiveRealm,
    outcome: Result<Granted, Refusal>,
    peer: Option<IpAddr>,
    now: UnixTime,
) -> Response {
    match outcome {
        Ok(g) => {
            // The token leaves only once its audit record is durable.
            if !g.audited
                && state
                    .audit
                    .record(issued_draft(realm, &g, now))
                    .await
                    .is_err()
            {
                crate::metrics::grant(&realm.record.name, g.grant_type, "unavailable");
                return OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the token could not be recorded; try again",
                )
                .into_response();
            }
            crate::metrics::grant(&realm.record.name, g.grant_type, "issued");
            let mut body = json!({
                "access_token": g.token.jwt,
                "token_type": if g.cnf.as_ref().is_some_and(|c| c.jkt.is_some()) { "DPoP" } else { "Bearer" },
                "expires_in": g.expires_in,
                "scope": g.scope,
            });
            if g.token_exchange {
                body["issued_token_type"] = json!("urn:ietf:params:oauth:token-type:access_token");
            }
            for (k, v) in g.response_extra {
                body[k] = v;
            }
            let mut res = axum::Json(body).into_response();
            let h = res.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err(refusal) => refused(state, realm, refusal, "token.refused", peer, now).await,
    }
}

/// Answers a refusal: audited one by one (as `kind`) when the caller proved who it is, counted
/// per address otherwise. Every refusal, whatever its kind and endpoint (token, revocation,
/// introspection, the feed), counts toward the address's failure limit.
pub async fn refused(
    state: &AppState,
    realm: &LiveRealm,
    refusal: Refusal,
    kind: &'static str,
    peer: Option<IpAddr>,
    now: UnixTime,
) -> Response {
    if let Some(ip) = peer
        && refusal.error.code != ErrorCode::UseDpopNonce
        && state.failures.record_failure(ip, now)
    {
        tracing::warn!(%ip, "failed-request limit reached");
        crate::metrics::rate_limited("failures_per_ip_reached");
        state.refusals.add(
            Refused {
                realm: Some(&realm.record.name),
                kind: "token.rate_limited",
                address: ip.to_string(),
                reason: "limit_reached",
                actor: "(address)",
            },
            now,
        );
    }
    crate::metrics::refusal(&realm.record.name, kind, refusal.reason);
    let actor = refusal.actor.as_deref().unwrap_or("(anonymous)");
    if refusal.authenticated {
        let draft = AuditDraft::new(now, Some(&realm.record.name), kind, actor).detail(json!({
            "error": refusal.error.code.as_str(),
            "reason": refusal.reason,
        }));
        if state.audit.record(draft).await.is_err() {
            tracing::error!(realm = %realm.record.name, "refusal could not be audited");
        }
    } else {
        state.refusals.add(
            Refused {
                realm: Some(&realm.record.name),
                kind,
                address: address(peer),
                reason: refusal.reason,
                actor,
            },
            now,
        );
    }
    refusal.error.into_response()
}

/// Reads a request body up to `limit` bytes; `Err` is the refusal for an oversized body.
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::new(
            OAuthError::new(ErrorCode::TooLarge, "request body too large"),
            "body_too_large",
        ));
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Refusal::new(
            OAuthError::new(ErrorCode::TooLarge, "request body too large or unreadable"),
            "body_unreadable",
        )
    })
}
