//! axum/tower integration: a layer that authenticates the access token (401 `invalid_token`) and
//! optionally requires scopes (403 `insufficient_scope`, `error_code: INSUFFICIENT_SCOPE`), and a
//! `Claims` extractor for handlers behind it. A request with no credentials gets a bare challenge
//! (RFC 6750 §3.1: no error code). `WWW-Authenticate` only ever carries fixed text and configured
//! values, escaped as quoted strings: nothing from the token reaches the header.
//!
//! Sender-constrained tokens ([`Validator::validate_request`]): a token sent as
//! `Authorization: DPoP` is checked with the request's `DPoP` header; its errors answer with a
//! `DPoP` challenge (`error="invalid_dpop_proof"` or `"invalid_token"`, and `algs`). A token
//! bound to a client certificate is checked against:
//! - the [`ClientCertificate`] extension the server's own TLS acceptor inserted for the
//!   connection, or
//! - when the request's peer (the `ConnectInfo<SocketAddr>` extension, from
//!   `into_make_service_with_connect_info::<SocketAddr>()`) is inside a range given to
//!   [`crate::ValidatorBuilder::trusted_proxies`], the certificate that proxy forwards in its
//!   header, and then only that (the TLS certificate is the proxy's own).
//!
//! The URI a DPoP proof must name (`htu`) is the configured
//! [`crate::ValidatorBuilder::public_base_url`] followed by the request's path (before any
//! nesting stripped a prefix). Without one it is `scheme://Host/path`: the scheme from the request
//! URI (HTTP/2), else `https` when the connection inserted [`ServedOverTls`] or a
//! [`ClientCertificate`], else `http`; the host from the URI's authority or the `Host` header. Set
//! the base URL whenever a proxy sits in front.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::dpop::DpopError;
use crate::jwk::SUPPORTED_ALGS;
use crate::validator::{Scheme, split_authorization};
use crate::{Claims, ClientCertificate, Error, ErrorKind, RequestCredentials, StepUp, Validator};

/// A marker extension: this request's connection is TLS, so without a configured public base
/// URL the DPoP `htu` is `https://...`. Insert it per connection like [`ClientCertificate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedOverTls;

impl Validator {
    /// A layer that lets through only requests with a valid access token.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer {
            validator: self.clone(),
            scopes: Arc::from(Vec::new()),
            step_up: None,
            policy: None,
        }
    }

    /// A layer that also requires the realm's policies to allow `action` on `resource` for the
    /// token's principal (see [`crate::policy`]; the bundle comes from
    /// [`crate::ValidatorBuilder::policy_bundle`]), with no document: for routes that act on no
    /// single record, or where the record is checked in the handler with
    /// [`Validator::authorize`]. A denied request gets 403 `error_code: POLICY_DENIED`.
    pub fn require_policy(&self, action: &str, resource: &str) -> AuthLayer {
        self.layer().require_policy(action, resource)
    }

    /// A layer that requires a user's sign-in of one of the authentication context classes
    /// `acr_values` (RFC 9470); add [`AuthLayer::max_age`] to demand a recent one too. A token
    /// that falls short gets 401 `insufficient_user_authentication` with `acr_values` (and
    /// `max_age`) in the challenge.
    pub fn require_acr<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        acr_values: I,
    ) -> AuthLayer {
        self.layer().require_acr(acr_values)
    }

    /// A layer that also requires each of `scopes`.
    pub fn require_scopes<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        scopes: I,
    ) -> AuthLayer {
        AuthLayer {
            validator: self.clone(),
            scopes: scopes
                .into_iter()
                .map(Into::into)
                .collect::<Vec<_>>()
                .into(),
            step_up: None,
            policy: None,
        }
    }

    pub fn require_scope(&self, scope: &str) -> AuthLayer {
        self.require_scopes([scope])
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    validator: Validator,
    scopes: Arc<[String]>,
    step_up: Option<Arc<StepUp>>,
    policy: Option<Arc<(String, String)>>,
}

impl AuthLayer {
    /// Also requires the realm's policies to allow `action` on `resource` (no document).
    pub fn require_policy(mut self, action: &str, resource: &str) -> Self {
        self.policy = Some(Arc::new((action.to_owned(), resource.to_owned())));
        self
    }

    /// Also requires a sign-in of one of `acr_values` (RFC 9470).
    pub fn require_acr<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        acr_values: I,
    ) -> Self {
        let max_age = self.step_up.as_ref().and_then(|s| s.max_age_secs());
        let mut demand = StepUp::acr(acr_values);
        if let Some(age) = max_age {
            demand = demand.max_age(std::time::Duration::from_secs(age));
        }
        self.step_up = Some(Arc::new(demand));
        self
    }

    /// Also requires the sign-in to be at most `age` old (the token's `auth_time`, RFC 9470).
    pub fn max_age(mut self, age: std::time::Duration) -> Self {
        let demand = self
            .step_up
            .as_deref()
            .cloned()
            .unwrap_or_default()
            .max_age(age);
        self.step_up = Some(Arc::new(demand));
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            validator: self.validator.clone(),
            scopes: self.scopes.clone(),
            step_up: self.step_up.clone(),
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    validator: Validator,
    scopes: Arc<[String]>,
    step_up: Option<Arc<StepUp>>,
    policy: Option<Arc<(String, String)>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request> for AuthService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        let scopes = self.scopes.clone();
        let step_up = self.step_up.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let scheme = match presented(req.headers()) {
                Presented::Nothing => return Ok(token_required(&validator)),
                Presented::Malformed => return Ok(unauthorized("malformed bearer credentials")),
                Presented::Token(scheme, _) => scheme,
            };
            // The body is not `Sync`: only the head is borrowed across the validation.
            let (mut parts, body) = req.into_parts();
            let claims = match authenticate(&validator, &parts, scheme).await {
                Ok(c) => c,
                Err(e) => return Ok(rejection_for(scheme, &e)),
            };
            if scopes.iter().any(|s| !claims.has_scope(s)) {
                let e: Error = ErrorKind::InsufficientScope(scopes.to_vec()).into();
                crate::observe::refusal(&e);
                return Ok(rejection_for(scheme, &e));
            }
            if let Some(demand) = &step_up
                && let Err(e) = validator.check_step_up(&claims, demand)
            {
                crate::observe::refusal(&e);
                return Ok(rejection_for(scheme, &e));
            }
            if let Some(rule) = &policy {
                let (action, resource) = &**rule;
                let decision =
                    validator.authorize(&claims, action, resource, &serde_json::Value::Null);
                if !decision.is_allowed() {
                    crate::observe::refusal(&ErrorKind::PolicyDenied.into());
                    tracing::info!(action = %action, resource = %resource, sub = %claims.sub,
                        policy = ?decision.policy(), "denied by policy");
                    return Ok(policy_denied(&decision, false));
                }
            }
            parts.extensions.insert(claims);
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// Collects the request's credentials and validates them.
async fn authenticate(validator: &Validator, req: &Parts, scheme: Scheme) -> Result<Claims, Error> {
    let headers = &req.headers;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut dpop_proofs = Vec::new();
    for v in headers.get_all("dpop") {
        let proof = v
            .to_str()
            .map_err(|_| ErrorKind::DpopProof(DpopError::Malformed))?;
        dpop_proofs.push(proof);
    }
    // Only a DPoP proof is checked against the request's URI: a bearer request (no proof) does
    // not pay for building it.
    let uri = if scheme == Scheme::DPoP || !dpop_proofs.is_empty() {
        request_uri(validator, req)
    } else {
        String::new()
    };
    let cert = client_certificate(validator, req);
    let mut creds = RequestCredentials::new(req.method.as_str(), &uri);
    creds.authorization = authorization;
    creds.dpop_proofs = dpop_proofs;
    creds.client_certificate = cert.as_deref().map(Vec::as_slice);
    validator.validate_request(&creds).await
}

/// The absolute URI the client addressed (see the module documentation).
fn request_uri(validator: &Validator, req: &Parts) -> String {
    let path = req
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.path())
        .unwrap_or_else(|| req.uri.path());
    if let Some(base) = validator.public_base_url() {
        return format!("{base}{path}");
    }
    let ext = &req.extensions;
    let tls = ext.get::<ServedOverTls>().is_some() || ext.get::<ClientCertificate>().is_some();
    let scheme = req
        .uri
        .scheme_str()
        .unwrap_or(if tls { "https" } else { "http" });
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    format!("{scheme}://{host}{path}")
}

/// The client certificate of this request: forwarded by a trusted proxy peer, else the one the
/// connection's TLS acceptor saw.
fn client_certificate(validator: &Validator, req: &Parts) -> Option<Arc<Vec<u8>>> {
    if validator.has_trusted_proxies() {
        let peer = req
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some((name, format)) = peer.and_then(|p| validator.forwarded_cert_for(p)) {
            let mut values = req.headers.get_all(name).iter();
            let value = values.next()?;
            if values.next().is_some() {
                return None; // a proxy sets one header; two is a client's addition
            }
            let der = crate::forwarded_cert::parse(value.to_str().ok()?, format)?;
            return Some(Arc::new(der));
        }
    }
    req.extensions
        .get::<ClientCertificate>()
        .map(|c| c.0.clone())
}

/// The token of an `Authorization: Bearer` header (exactly one such header).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    match presented(headers) {
        Presented::Token(Scheme::Bearer, token) => Some(token),
        _ => None,
    }
}

/// What a request offers as credentials.
enum Presented<'a> {
    /// No `Authorization` header, or another scheme (`Basic`...): no attempt at a token.
    Nothing,
    /// A token attempt that cannot be read: repeated headers, no token, not ASCII.
    Malformed,
    Token(Scheme, &'a str),
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Presented::Nothing;
    };
    if all.next().is_some() {
        return Presented::Malformed;
    }
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let scheme = value.split_once(' ').map_or(value, |(s, _)| s);
    if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("dpop") {
        return Presented::Nothing;
    }
    match split_authorization(value) {
        Some((scheme, token)) => Presented::Token(scheme, token),
        None => Presented::Malformed,
    }
}

/// `value` as the content of an RFC 9110 quoted-string: `"` and `\` escaped, anything that
/// cannot appear in one (controls, non-ASCII) dropped.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '\t' | '!'..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

fn with_challenge(mut res: Response, challenge: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// 401 for a request without credentials: a bare challenge naming the realm, no error code.
/// A validator that requires sender-constrained tokens offers the `DPoP` scheme too.
fn token_required(validator: &Validator) -> Response {
    let realm = quoted(validator.realm());
    let body = serde_json::json!({
        "error_code": "TOKEN_REQUIRED",
        "error_description": "a bearer token is required",
    });
    let mut res = with_challenge(
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
        &format!(r#"Bearer realm="{realm}""#),
    );
    if validator.requires_sender_constrained()
        && let Ok(v) = HeaderValue::from_str(&format!(
            r#"DPoP realm="{realm}", algs="{}""#,
            SUPPORTED_ALGS.join(" ")
        ))
    {
        res.headers_mut().append(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// The response to a refused request, with a challenge of the scheme the token came with.
fn rejection_for(scheme: Scheme, e: &Error) -> Response {
    match scheme {
        Scheme::Bearer => rejection(e),
        Scheme::DPoP => dpop_rejection(e),
    }
}

/// RFC 9449 §7.1 response for a request whose token came with the `DPoP` scheme: 401 with
/// `WWW-Authenticate: DPoP error="invalid_dpop_proof" | "invalid_token" | "use_dpop_nonce",
/// error_description="...", algs="..."`, or 403 `insufficient_scope`. The description is fixed.
pub fn dpop_rejection(e: &Error) -> Response {
    let algs = SUPPORTED_ALGS.join(" ");
    let code = e.rfc6750_code();
    let (status, challenge, body) = match e.kind() {
        ErrorKind::InsufficientUserAuthentication {
            acr_values,
            max_age,
        } => {
            let (params, body) = step_up_challenge(e, acr_values, *max_age);
            (
                StatusCode::UNAUTHORIZED,
                format!(r#"DPoP {params}, algs="{algs}""#),
                body,
            )
        }
        ErrorKind::InsufficientScope(scopes) => {
            let scope = scopes.join(" ");
            (
                StatusCode::FORBIDDEN,
                format!(
                    r#"DPoP error="insufficient_scope", scope="{}", algs="{algs}""#,
                    quoted(&scope)
                ),
                serde_json::json!({
                    "error": "insufficient_scope",
                    "error_code": "INSUFFICIENT_SCOPE",
                    "scope": scope,
                }),
            )
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            format!(
                r#"DPoP error="{code}", error_description="{}", algs="{algs}""#,
                quoted(e.description())
            ),
            serde_json::json!({
                "error": code,
                "error_code": code.to_ascii_uppercase(),
                "error_description": e.description(),
            }),
        ),
    };
    with_challenge((status, axum::Json(body)).into_response(), &challenge)
}

/// 403 for a request the realm's policies do not allow: `error: access_denied`,
/// `error_code: POLICY_DENIED` and one fixed description, `denied by policy`, whatever the
/// reason: a caller learns nothing about the policy set, nor (from a difference between denials)
/// about the record. With `explain` the description says why instead (no policy allows it, a
/// policy denies it, an assertion could not be evaluated, the document is too large, the
/// policies are unavailable) and `policy` names the deciding policy: for development and tests,
/// where that is worth more than the secrecy.
pub fn policy_denied(decision: &crate::policy::Decision, explain: bool) -> Response {
    let mut body = serde_json::json!({
        "error": "access_denied",
        "error_code": "POLICY_DENIED",
        "error_description": "denied by policy",
    });
    if explain {
        if let crate::policy::Decision::Deny { reason, .. } = decision {
            body["error_description"] = serde_json::json!(reason.as_str());
        }
        if let Some(p) = decision.policy() {
            body["policy"] = serde_json::json!(p);
        }
    }
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// 401 `invalid_token` with a fixed description (never text derived from the token).
fn unauthorized(description: &'static str) -> Response {
    let body = serde_json::json!({
        "error": "invalid_token",
        "error_code": "INVALID_TOKEN",
        "error_description": description,
    });
    with_challenge(
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
        &format!(
            r#"Bearer error="invalid_token", error_description="{}""#,
            quoted(description)
        ),
    )
}

/// RFC 6750 §3 response for a validation error.
pub fn rejection(e: &Error) -> Response {
    match e.kind() {
        ErrorKind::InsufficientScope(scopes) => {
            // The scopes are the route's own configuration, not the token's; quoted all the same.
            let scope = scopes.join(" ");
            let body = serde_json::json!({
                "error": "insufficient_scope",
                "error_code": "INSUFFICIENT_SCOPE",
                "scope": scope,
            });
            with_challenge(
                (StatusCode::FORBIDDEN, axum::Json(body)).into_response(),
                &format!(
                    r#"Bearer error="insufficient_scope", scope="{}""#,
                    quoted(&scope)
                ),
            )
        }
        ErrorKind::InsufficientUserAuthentication {
            acr_values,
            max_age,
        } => {
            let (params, body) = step_up_challenge(e, acr_values, *max_age);
            with_challenge(
                (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
                &format!("Bearer {params}"),
            )
        }
        // The key source failing is our problem, not the caller's token; still 401 so that no
        // request passes, with a description that does not say more than needed.
        _ => unauthorized(e.description()),
    }
}

/// RFC 9470 §3: the challenge's auth-params (`error`, `error_description`, `acr_values`,
/// `max_age`: the route's own configuration, quoted all the same) and the JSON body.
fn step_up_challenge(
    e: &Error,
    acr_values: &[String],
    max_age: Option<u64>,
) -> (String, serde_json::Value) {
    let acr = acr_values.join(" ");
    let mut params = format!(
        r#"error="insufficient_user_authentication", error_description="{}""#,
        quoted(e.description())
    );
    let mut body = serde_json::json!({
        "error": "insufficient_user_authentication",
        "error_code": "INSUFFICIENT_USER_AUTHENTICATION",
        "error_description": e.description(),
    });
    if !acr.is_empty() {
        params.push_str(&format!(r#", acr_values="{}""#, quoted(&acr)));
        body["acr_values"] = serde_json::json!(acr);
    }
    if let Some(age) = max_age {
        params.push_str(&format!(r#", max_age="{age}""#));
        body["max_age"] = serde_json::json!(age);
    }
    (params, body)
}

impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .ok_or_else(|| unauthorized("no validated token"))
    }
}
