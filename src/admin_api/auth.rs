//! Who may call the admin API: a bearer (or DPoP-bound) access token of the admin realm
//! (`admin_realm`), audience `sigil-admin`, checked by the bundled validator crate exactly as a
//! resource server checks Sigil's tokens (signature, `iss`, `aud`, `exp`, `typ`, binding), with
//! the realm's key set handed over in-process. Then, as for introspection, the token must still
//! stand: not revoked, its client enabled and not disabled since, its user and session live.
//!
//! Scopes: `sigil:admin` may do everything; `sigil:admin:{realm}` may read and change that realm
//! only (never the admin realm itself: a client made there could be given `sigil:admin`);
//! `sigil:read` may read everything.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, json};
use sigil_validator::{JwksFetch, JwksSource, RequestCredentials, Validator};
use tokio::sync::OnceCell;

use super::ApiError;
use crate::clock::Clock;
use crate::directory::{Directory, issuer_for};
use crate::state::AppState;

/// The audience of tokens for the admin API.
pub const ADMIN_AUDIENCE: &str = "sigil-admin";
pub const SCOPE_ADMIN: &str = "sigil:admin";
pub const SCOPE_READ: &str = "sigil:read";

/// The admin realm's validator, built on the first request (the realm may be created after the
/// server starts) and kept.
pub struct AdminGuard {
    realm: String,
    validator: OnceCell<Validator>,
}

impl AdminGuard {
    pub fn new(realm: String) -> AdminGuard {
        AdminGuard {
            realm,
            validator: OnceCell::new(),
        }
    }
}

/// The admin realm's public keys, straight from the directory (no HTTP request to ourselves).
struct OwnKeys {
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
    realm: String,
}

impl JwksSource for OwnKeys {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = JwksFetch> + Send + '_>> {
        Box::pin(async move {
            match self.directory.realm(&self.realm, self.clock.now()).await {
                Ok(Some(live)) => Ok((live.jwks.body.to_vec(), Some(60))),
                Ok(None) => Err(format!("the admin realm {} does not exist", self.realm)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// The authenticated caller, for the handlers.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Written into the audit log as the actor of every change.
    pub actor: String,
    scopes: HashSet<String>,
    admin_realm: String,
}

impl Caller {
    fn global_admin(&self) -> bool {
        self.scopes.contains(SCOPE_ADMIN)
    }

    fn realm_admin(&self, realm: &str) -> bool {
        self.global_admin()
            || (realm != self.admin_realm
                && self.scopes.contains(&format!("{SCOPE_ADMIN}:{realm}")))
    }

    pub fn may_read(&self, realm: &str) -> bool {
        self.scopes.contains(SCOPE_READ) || self.realm_admin(realm)
    }

    pub fn read(&self, realm: &str) -> Result<(), ApiError> {
        if self.may_read(realm) {
            Ok(())
        } else if realm == self.admin_realm {
            Err(ApiError::InsufficientScope(format!(
                "{SCOPE_READ} or {SCOPE_ADMIN}"
            )))
        } else {
            Err(ApiError::InsufficientScope(format!(
                "{SCOPE_READ} or {SCOPE_ADMIN}:{realm}"
            )))
        }
    }

    pub fn write(&self, realm: &str) -> Result<(), ApiError> {
        if self.realm_admin(realm) {
            Ok(())
        } else if realm == self.admin_realm {
            Err(ApiError::InsufficientScope(SCOPE_ADMIN.to_owned()))
        } else {
            Err(ApiError::InsufficientScope(format!(
                "{SCOPE_ADMIN}:{realm}"
            )))
        }
    }

    pub fn read_all(&self) -> Result<(), ApiError> {
        if self.scopes.contains(SCOPE_READ) || self.global_admin() {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope(SCOPE_READ.to_owned()))
        }
    }

    pub fn write_all(&self) -> Result<(), ApiError> {
        if self.global_admin() {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope(SCOPE_ADMIN.to_owned()))
        }
    }
}

/// The middleware in front of every admin route but the OpenAPI document.
pub async fn authenticate(
    State(state): State<AppState>,
    axum::Extension(guard): axum::Extension<Arc<AdminGuard>>,
    req: Request,
    next: Next,
) -> Response {
    // The body is not `Sync`: only the head is borrowed across the checks.
    let (mut parts, body) = req.into_parts();
    match caller(&state, &guard, &parts).await {
        Ok(c) => {
            parts.extensions.insert(c);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

async fn caller(state: &AppState, guard: &AdminGuard, req: &Parts) -> Result<Caller, ApiError> {
    let headers = &req.headers;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| malformed()))
        .transpose()?;
    if authorization.is_none() {
        return Err(ApiError::Unauthorized("", "an access token is required"));
    }
    let validator = guard
        .validator
        .get_or_try_init(|| build_validator(state, &guard.realm))
        .await
        .map_err(|e| {
            tracing::error!(realm = %guard.realm, error = %e, "admin API: no validator for the admin realm");
            ApiError::Unavailable("the admin realm's keys are not available")
        })?;
    let uri = format!("{}{}", state.directory.base_url(), req.uri.path());
    let mut creds = RequestCredentials::new(req.method.as_str(), &uri);
    creds.authorization = authorization;
    for v in headers.get_all("dpop") {
        creds.dpop_proofs.push(v.to_str().map_err(|_| malformed())?);
    }
    let claims = validator.validate_request(&creds).await.map_err(|e| {
        tracing::info!(error = %e, "admin API: token refused");
        ApiError::Unauthorized("invalid_token", e.description())
    })?;
    // Still standing: the same rules introspection applies.
    let now = state.clock.now();
    let live = state
        .directory
        .realm(&guard.realm, now)
        .await
        .ok()
        .flatten()
        .ok_or(ApiError::Unavailable("the admin realm is not available"))?;
    let mut map = Map::new();
    map.insert("sub".into(), json!(claims.sub));
    map.insert("jti".into(), json!(claims.jti));
    map.insert("iat".into(), json!(claims.iat));
    map.insert("client_id".into(), json!(claims.client_id));
    if let Some(sid) = claims.extra.get("sid") {
        map.insert("sid".into(), sid.clone());
    }
    let standing = crate::oauth::introspection::access_token_live(state, &live, &map, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: token state unavailable");
            ApiError::Unavailable("the database did not answer; try again")
        })?;
    if !standing {
        return Err(ApiError::Unauthorized(
            "invalid_token",
            "the token was revoked, or its client, user or session ended",
        ));
    }
    let client = claims.client_id.clone().unwrap_or_default();
    let user = map.contains_key("sid");
    let actor = if user {
        format!("user:{}@{} via {client}", claims.sub, guard.realm)
    } else {
        format!("client:{client}@{}", guard.realm)
    };
    let mut scopes: HashSet<String> = claims.scopes().map(str::to_owned).collect();
    if !user {
        // A client's token reaches no further than the client may now: narrowing an admin
        // client's scopes (or moving it to another audience) holds at once for tokens it already
        // has, as disabling it does.
        let record = state
            .directory
            .client(&guard.realm, &client, now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "admin API: client unavailable");
                ApiError::Unavailable("the database did not answer; try again")
            })?;
        match record {
            Some(c) if c.audience == ADMIN_AUDIENCE => {
                let allowed: HashSet<&str> = c.allowed_scopes.split(' ').collect();
                scopes.retain(|s| allowed.contains(s.as_str()));
            }
            _ => scopes.clear(),
        }
    }
    Ok(Caller {
        actor,
        scopes,
        admin_realm: guard.realm.clone(),
    })
}

fn malformed() -> ApiError {
    ApiError::Unauthorized("invalid_request", "malformed credentials")
}

async fn build_validator(
    state: &AppState,
    realm: &str,
) -> Result<Validator, sigil_validator::Error> {
    let clock = state.clock.clone();
    let source = OwnKeys {
        directory: state.directory.clone(),
        clock: state.clock.clone(),
        realm: realm.to_owned(),
    };
    Validator::builder(
        issuer_for(state.directory.base_url(), realm),
        ADMIN_AUDIENCE,
    )
    .jwks_source(Arc::new(source))
    .refetch_cooldown(std::time::Duration::from_secs(1))
    // One clock: the tokens were made by this process (or a node of the same deployment).
    .leeway(std::time::Duration::from_secs(5))
    .clock(move || clock.now())
    .build()
    .await
}

/// For tests of the scope rules.
#[cfg(test)]
pub(crate) fn caller_with(scopes: &[&str], admin_realm: &str) -> Caller {
    Caller {
        actor: "test".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        admin_realm: admin_realm.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::caller_with;

    #[test]
    fn scopes_reach_as_far_as_they_say() {
        let global = caller_with(&["sigil:admin"], "admin");
        assert!(global.write("customers").is_ok() && global.write("admin").is_ok());
        assert!(global.write_all().is_ok() && global.read_all().is_ok());

        let one = caller_with(&["sigil:admin:customers"], "admin");
        assert!(one.write("customers").is_ok() && one.read("customers").is_ok());
        assert!(one.write("staff").is_err() && one.read("staff").is_err());
        assert!(one.write_all().is_err() && one.read_all().is_err());

        // A realm scope for the admin realm gives nothing there: a client made in it could be
        // given sigil:admin.
        let sneaky = caller_with(&["sigil:admin:admin"], "admin");
        assert!(sneaky.write("admin").is_err() && sneaky.read("admin").is_err());

        let reader = caller_with(&["sigil:read"], "admin");
        assert!(reader.read("staff").is_ok() && reader.read_all().is_ok());
        assert!(reader.write("staff").is_err() && reader.write_all().is_err());

        let nothing = caller_with(&["tx:post:ach"], "admin");
        assert!(nothing.read("customers").is_err() && nothing.read_all().is_err());
    }
}
