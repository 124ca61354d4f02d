//! The routers: every listener's routes and what each gets (Sigil's own 404, the body limit, the
//! request deadline, the trusted-proxy middleware when configured).

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::oauth::{ErrorCode, OAuthError};
use crate::oidc;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .route(
            "/realms/{realm}/.well-known/openid-configuration",
            get(oidc::discovery::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server/realms/{realm}",
            get(oidc::discovery::openid_configuration),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::JWKS_PATH),
            get(oidc::jwks::jwks),
        )
        .merge(service_routes())
        .route("/static/sigil-webauthn.js", get(webauthn_js))
        .merge(page_routes())
        .merge(bench_ceiling_route())
        .merge(crate::admin_api::router(&state));
    finish_router(routes, state)
}

/// The mutual-TLS listener's routes: the token, revocation, introspection, userinfo and AWS
/// endpoints only (RFC 8705 §5).
/// The hosted pages are never here: a browser asked for a client certificate shows a picker.
pub fn mtls_router(state: AppState) -> Router {
    finish_router(service_routes(), state)
}

/// The endpoints services call, on both listeners: token, revocation, introspection, AWS
/// exchange, userinfo.
fn service_routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("/realms/{{realm}}{}", oidc::TOKEN_PATH),
            post(crate::oauth::token_endpoint::token),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::REVOCATION_PATH),
            post(crate::oauth::revocation::revoke),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::INTROSPECTION_PATH),
            post(crate::oauth::introspection::introspect),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::REVOCATION_FEED_PATH),
            get(crate::oauth::revocation_feed::feed),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::POLICIES_PATH),
            get(crate::oauth::policy_bundle::bundle),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::AWS_EXCHANGE_PATH),
            post(crate::aws::exchange::endpoint),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::AWS_CHALLENGE_PATH),
            post(crate::aws::exchange::challenge),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::USERINFO_PATH),
            get(oidc::userinfo::userinfo).post(oidc::userinfo::userinfo),
        )
}

/// What every listener's router gets: Sigil's own 404, the body limit, the request deadline and
/// (when configured) the trusted-proxy middleware.
fn finish_router(routes: Router<AppState>, state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let body_limit = state.config.max_body_bytes;
    // Timed by route template (matched routes only: a label per route, never per path).
    let routes = routes
        .route_layer(axum::middleware::from_fn(crate::metrics::time_requests))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                request_deadline(timeout, req, next)
            },
        ));
    // The trusted-proxy middleware only where `trusted_proxies` is set (no work per request
    // otherwise).
    let routes = if state.config.trusted_proxies.is_empty() {
        routes
    } else {
        routes.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::forwarded,
        ))
    };
    routes.with_state(state)
}

/// `POST /bench/ceiling/{realm}`, only when `SIGIL_BENCH_CEILING=1` (see `oauth::ceiling`).
fn bench_ceiling_route() -> Router<AppState> {
    if std::env::var("SIGIL_BENCH_CEILING").as_deref() != Ok("1") {
        return Router::new();
    }
    tracing::warn!("SIGIL_BENCH_CEILING=1: the benchmark ceiling route is on (throwaway key)");
    Router::new()
        .route(
            "/bench/ceiling/{realm}",
            post(crate::oauth::ceiling::ceiling),
        )
        .layer(axum::Extension(std::sync::Arc::new(
            crate::oauth::ceiling::ThrowawayKeys::default(),
        )))
}

/// The hosted pages and their JSON calls: only these read the browser's language and time zone
/// (`i18n::preferences`), so the token endpoint's path does none of that work.
fn page_routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("/realms/{{realm}}{}", oidc::END_SESSION_PATH),
            get(crate::login::logout::end_session).post(crate::login::logout::end_session),
        )
        .route(
            &format!("/realms/{{realm}}{}/confirm", oidc::END_SESSION_PATH),
            post(crate::login::logout::confirm),
        )
        .route(
            &format!("/realms/{{realm}}{}", oidc::AUTHORIZE_PATH),
            get(crate::login::authorize::authorize),
        )
        .route(
            "/realms/{realm}/login",
            get(crate::login::sign_in::login_form).post(crate::login::sign_in::login_submit),
        )
        .route(
            "/realms/{realm}/enrol/{token}",
            get(crate::login::enrol::enrol_form),
        )
        .route(
            "/realms/{realm}/enrol",
            post(crate::login::enrol::enrol_submit),
        )
        .route(
            "/realms/{realm}/enrol/done",
            get(crate::login::enrol::enrol_done),
        )
        .route(
            "/realms/{realm}/login/cancel",
            get(crate::login::authorize::cancel),
        )
        .route(
            "/realms/{realm}/account/sign-out",
            post(crate::login::account::sign_out_here),
        )
        .route(
            "/realms/{realm}/enrol/passkey/options",
            post(crate::login::passkeys::enrol_options),
        )
        .route(
            "/realms/{realm}/enrol/passkey",
            post(crate::login::passkeys::enrol_finish),
        )
        .route(
            "/realms/{realm}/login/passkey/options",
            post(crate::login::passkeys::sign_in_options),
        )
        .route(
            "/realms/{realm}/login/passkey",
            post(crate::login::passkeys::sign_in),
        )
        .route(
            "/realms/{realm}/account/passkey/options",
            post(crate::login::passkeys::account_options),
        )
        .route(
            "/realms/{realm}/account/passkey",
            post(crate::login::passkeys::account_finish),
        )
        .route(
            "/realms/{realm}/account/passkeys/remove",
            post(crate::login::account::remove_passkey),
        )
        .route(
            "/realms/{realm}/account/totp",
            post(crate::login::account_totp::totp_start),
        )
        .route(
            "/realms/{realm}/account/totp/confirm",
            post(crate::login::account_totp::totp_confirm),
        )
        .route(
            "/realms/{realm}/account/recovery-codes",
            post(crate::login::account_totp::recovery_codes),
        )
        .route(
            "/realms/{realm}/account/reauth",
            get(crate::login::reauth::reauth_form).post(crate::login::reauth::reauth_submit),
        )
        .route(
            "/realms/{realm}/account/reauth/passkey/options",
            post(crate::login::passkeys::reauth_options),
        )
        .route(
            "/realms/{realm}/account/reauth/passkey",
            post(crate::login::passkeys::reauth_finish),
        )
        .route(
            "/realms/{realm}/consent",
            get(crate::login::consent::consent_form).post(crate::login::consent::consent_submit),
        )
        .route(
            "/realms/{realm}/account",
            get(crate::login::account::account),
        )
        .route(
            "/realms/{realm}/account/sign-out-everywhere",
            post(crate::login::account::sign_out_everywhere),
        )
        .layer(axum::middleware::from_fn(crate::login::i18n::preferences))
}

/// Bounds every request: one not answered within `request_timeout_secs` gets 503
/// `temporarily_unavailable` (with `Retry-After`), which is what an unresponsive database looks
/// like to a client, instead of hanging until the client gives up. The database's own deadlines
/// (`database_connect_timeout_secs`, `database_statement_timeout_ms`) answer sooner.
async fn request_deadline(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(secs = timeout.as_secs(), "request deadline passed");
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the request could not be completed in time; try again",
            )
            .into_response()
        }
    }
}

async fn webauthn_js() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/sigil-webauthn.js"),
    )
        .into_response()
}

async fn not_found() -> Response {
    OAuthError::new(ErrorCode::NotFound, "no such endpoint").into_response()
}
