//! The client calling revocation (RFC 7009) or introspection (RFC 7662): the realm, the rate
//! limit, the bounded form body and client authentication by the client's registered method,
//! exactly as at the token endpoint (on the mutual-TLS listener too).

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::client_auth::{self, Authenticated};
use super::outcome::{Refusal, rate_limited, read_body, refused};
use super::{ErrorCode, OAuthError, form};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;
use crate::tls::ConnTls;

/// An authenticated caller and what it sent.
pub struct Caller {
    pub realm: std::sync::Arc<LiveRealm>,
    pub client: Authenticated,
    pub params: form::Params,
    pub peer: Option<IpAddr>,
    pub now: UnixTime,
    /// The audit kind of this endpoint's refusals.
    kind: &'static str,
}

impl Caller {
    /// Answers a refusal of this authenticated caller: audited one by one, except for a public
    /// client (which only named itself), counted per address like an anonymous caller.
    pub async fn refuse(&self, state: &AppState, refusal: Refusal) -> Response {
        let client = &self.client.client;
        let refusal = refusal.client(&client.client_id);
        let refusal = if client.public_client {
            refusal
        } else {
            refusal.authenticated()
        };
        refused(state, &self.realm, refusal, self.kind, self.peer, self.now).await
    }

    /// Only a resource server (a confidential client created with `--introspect`) may read token
    /// state; anyone else gets 403 `unauthorized_client`, saying `what` it may not do.
    pub async fn require_resource_server(
        &self,
        state: &AppState,
        what: &'static str,
        reason: &'static str,
    ) -> Result<(), Response> {
        let client = &self.client.client;
        if client.may_introspect && !client.public_client {
            return Ok(());
        }
        let refusal = Refusal::new(OAuthError::new(ErrorCode::NotPermitted, what), reason);
        Err(self.refuse(state, refusal).await)
    }
}

/// [`authenticate`] for a `GET` whose parameters are in the query string, then
/// [`Caller::require_resource_server`]: the revocation feed and the policy bundle.
#[allow(clippy::too_many_arguments)] // the request's parts and the endpoint's refusal words
pub async fn resource_server(
    state: &AppState,
    realm_name: &str,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    headers: &HeaderMap,
    query: Option<&str>,
    kind: &'static str,
    (what, reason): (&'static str, &'static str),
) -> Result<Caller, Response> {
    let c = authenticate(
        state,
        realm_name,
        peer,
        conn,
        headers,
        Input::Query(query),
        kind,
    )
    .await?;
    c.require_resource_server(state, what, reason).await?;
    Ok(c)
}

/// Where the request's parameters are: a form body (`POST`) or the query string (`GET`).
pub enum Input<'a> {
    Body(Body),
    Query(Option<&'a str>),
}

/// Everything up to an authenticated client, or the response that ends the request (refusals
/// audited as `kind` when the client proved who it is, counted per address otherwise).
pub async fn authenticate(
    state: &AppState,
    realm_name: &str,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    headers: &HeaderMap,
    input: Input<'_>,
    kind: &'static str,
) -> Result<Caller, Response> {
    let now = state.clock.now();
    let realm = match state.directory.realm(realm_name, now).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response());
        }
        Err(e) => {
            tracing::error!(error = %e, realm = %realm_name, "realm unavailable");
            return Err(OAuthError::store_unavailable().into_response());
        }
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(res) = rate_limited(state, peer, now) {
        return Err(res);
    }
    let conn = conn.map(|Extension(c)| c);
    let ctx = client_auth::Context {
        cert: conn.as_ref().and_then(|c| c.client_chain.as_ref()),
        // A client assertion's `aud` is the issuer (or the token endpoint, as at the token endpoint).
        token_endpoint: &realm.token_endpoint,
    };
    let outcome = async {
        let params = match input {
            Input::Body(body) => {
                let bytes = read_body(headers, body, state.config.max_body_bytes).await?;
                form::parse(headers, &bytes)
            }
            Input::Query(q) => form::parse_query(q).and_then(|p| {
                // RFC 6749 §2.3.1: client credentials never in the URL (logs keep URLs).
                if p.get("client_secret").is_some() || p.get("client_assertion").is_some() {
                    Err(OAuthError::invalid_request(
                        "client credentials do not belong in the URL",
                    ))
                } else {
                    Ok(p)
                }
            }),
        }
        .map_err(|e| Refusal::new(e, "malformed_request"))?;
        let client = client_auth::from_request(state, &realm, headers, &params, ctx, now).await?;
        Ok::<_, Refusal>((client, params))
    }
    .await;
    match outcome {
        Ok((client, params)) => Ok(Caller {
            realm,
            client,
            params,
            peer,
            now,
            kind,
        }),
        Err(refusal) => Err(refused(state, &realm, refusal, kind, peer, now).await),
    }
}
