//! axum/tower integration: a layer that authenticates the bearer token (401 `invalid_token`) and
//! optionally requires scopes (403 `insufficient_scope`, `error_code: INSUFFICIENT_SCOPE`), and a
//! `Claims` extractor for handlers behind it. A request with no credentials gets a bare challenge
//! (RFC 6750 §3.1: no error code). `WWW-Authenticate` only ever carries fixed text and configured
//! values, escaped as quoted strings: nothing from the token reaches the header.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::{Claims, Error, ErrorKind, Validator};

impl Validator {
    /// A layer that lets through only requests with a valid access token.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer {
            validator: self.clone(),
            scopes: Arc::from(Vec::new()),
        }
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
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            validator: self.validator.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    validator: Validator,
    scopes: Arc<[String]>,
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

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        let scopes = self.scopes.clone();
        Box::pin(async move {
            let token = match presented(req.headers()) {
                Presented::Nothing => return Ok(token_required(validator.realm())),
                Presented::Malformed => return Ok(unauthorized("malformed bearer credentials")),
                Presented::Bearer(token) => token,
            };
            let claims = match validator.validate(token).await {
                Ok(c) => c,
                Err(e) => return Ok(rejection(&e)),
            };
            if scopes.iter().any(|s| !claims.has_scope(s)) {
                let e: Error = ErrorKind::InsufficientScope(scopes.to_vec()).into();
                return Ok(rejection(&e));
            }
            req.extensions_mut().insert(claims);
            inner.call(req).await
        })
    }
}

/// The token of an `Authorization: Bearer` header (exactly one such header).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    match presented(headers) {
        Presented::Bearer(token) => Some(token),
        Presented::Nothing | Presented::Malformed => None,
    }
}

/// What a request offers as credentials.
enum Presented<'a> {
    /// No `Authorization` header, or another scheme (`Basic`...): no attempt at a bearer token.
    Nothing,
    /// A bearer attempt that cannot be read: repeated headers, no token, not ASCII.
    Malformed,
    Bearer(&'a str),
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
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Nothing;
    }
    match token.trim() {
        "" => Presented::Malformed,
        token => Presented::Bearer(token),
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
fn token_required(realm: &str) -> Response {
    let body = serde_json::json!({
        "error_code": "TOKEN_REQUIRED",
        "error_description": "a bearer token is required",
    });
    with_challenge(
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
        &format!(r#"Bearer realm="{}""#, quoted(realm)),
    )
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
        // The key source failing is our problem, not the caller's token; still 401 so that no
        // request passes, with a description that does not say more than needed.
        _ => unauthorized(e.description()),
    }
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
