//! axum/tower integration: a layer that authenticates the bearer token (401 `invalid_token`) and
//! optionally requires scopes (403 `insufficient_scope`, `error_code: INSUFFICIENT_SCOPE`), and a
//! `Claims` extractor for handlers behind it.

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
            let Some(token) = bearer_token(req.headers()) else {
                return Ok(unauthorized("missing or malformed bearer token"));
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
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(description: &str) -> Response {
    let challenge = format!(r#"Bearer error="invalid_token", error_description="{description}""#);
    let body = serde_json::json!({
        "error": "invalid_token",
        "error_code": "INVALID_TOKEN",
        "error_description": description,
    });
    let mut res = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// RFC 6750 §3 response for a validation error.
pub fn rejection(e: &Error) -> Response {
    match e.kind() {
        ErrorKind::InsufficientScope(scopes) => {
            let scope = scopes.join(" ");
            let challenge = format!(r#"Bearer error="insufficient_scope", scope="{scope}""#);
            let body = serde_json::json!({
                "error": "insufficient_scope",
                "error_code": "INSUFFICIENT_SCOPE",
                "scope": scope,
            });
            let mut res = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            res
        }
        // The key source failing is our problem, not the caller's token; still 401 so that no
        // request passes, with a description that does not say more than needed.
        _ => unauthorized(&e.to_string()),
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
