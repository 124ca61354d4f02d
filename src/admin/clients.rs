//! Registering and managing service clients. Secrets are generated here, shown once, and stored
//! only as a verifier (see `oauth::secret`).

use serde::Serialize;
use serde_json::json;

use super::{AdminError, check_ttl, invalid};
use crate::audit::AuditDraft;
use crate::clients::CLIENT_CREDENTIALS as GRANT_TYPE;
use crate::clients::auth::{AuthMethod, ClientAuth};
use crate::clients::is_valid_client_id;
use crate::clients::{scope, secret};
use crate::clock::UnixTime;
use crate::store::{ClientRecord, Store};

#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub realm: String,
    pub client_id: String,
    pub scopes: String,
    /// `None`: every allowed scope is a default (a request without `scope` gets them all).
    pub default_scopes: Option<String>,
    pub audience: String,
    pub access_token_ttl: Option<i64>,
    /// Exact redirect URIs; a client with any is a sign-in (authorization code) client.
    pub redirect_uris: Vec<String>,
    /// A public client (mobile app) has no secret.
    pub public: bool,
    /// The app's name on the hosted pages (at most 64 characters).
    pub name: Option<String>,
    /// The app's home page (https, or http on loopback): the pages' "Back to the app".
    pub client_uri: Option<String>,
    /// How the client authenticates (default: a secret) and binds its tokens.
    pub auth: ClientAuth,
    /// May call the introspection endpoint (a resource server).
    pub introspect: bool,
    /// Where users may be sent after signing out through the end-session endpoint (exact URIs).
    pub post_logout_redirect_uris: Vec<String>,
    /// Where the client is told that a session it had tokens in ended (Back-Channel Logout 1.0):
    /// https, or http on a loopback host; no fragment.
    pub backchannel_logout_uri: Option<String>,
    /// The secret to use, given by the operator (`sigil apply`'s `secret_file`), instead of a
    /// generated one: 32 to 512 printable ASCII characters without spaces. It is not shown back.
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub realm: String,
    pub client_id: String,
    pub enabled: bool,
    pub allowed_scopes: Vec<String>,
    pub default_scopes: Vec<String>,
    pub audience: String,
    pub grant_types: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub token_endpoint_auth_methods: Vec<&'static str>,
    /// The authentication settings (public material only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth: Option<serde_json::Value>,
    pub access_token_ttl: Option<i64>,
    pub redirect_uris: Vec<String>,
    pub public: bool,
    /// May call the introspection endpoint.
    pub introspect: bool,
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bumped by every change: the admin API's `ETag` is made from it.
    pub version: i64,
}

/// A redirect URI Sigil accepts: absolute, no fragment; https, or http only on loopback hosts
/// (development), or a private-use scheme with a dot (`com.bank.app:/cb`, RFC 8252 §7.1).
pub fn is_valid_redirect_uri(uri: &str) -> bool {
    // Whitespace or control characters would be percent-encoded by the URL parser, so check the
    // raw text: one value is exactly one URI.
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    if u.fragment().is_some() || uri.len() > 512 {
        return false;
    }
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
        other => other.contains('.'),
    }
}

/// An app's home page: https, or http on a loopback host (development); no credentials in it.
pub fn is_valid_client_uri(uri: &str) -> bool {
    if uri.len() > 512 || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() {
        return false;
    }
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
        _ => false,
    }
}

/// A back-channel logout URI (OpenID Back-Channel Logout 1.0 §2.2): absolute, https (http only
/// on a loopback host), no fragment, no credentials.
pub fn is_valid_backchannel_logout_uri(uri: &str) -> bool {
    is_valid_client_uri(uri) && !uri.contains('#')
}

/// A client with the secret that was just generated for it (shown once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    /// Absent for public clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(flatten)]
    pub client: ClientView,
}

fn normalise_scopes(field: &'static str, text: &str) -> Result<String, AdminError> {
    scope::parse(text)
        .map(|s| s.join(" "))
        .map_err(|e| invalid(field, e.to_string()))
}

/// Checks a client's description and makes its row, with an empty secret (set by the caller).
fn describe(req: &NewClient, now: UnixTime) -> Result<ClientRecord, AdminError> {
    if !is_valid_client_id(&req.client_id) {
        return Err(invalid("id", "use 1-128 characters of A-Z a-z 0-9 . _ ~ -"));
    }
    let allowed = normalise_scopes("scope", &req.scopes)?;
    let defaults = match &req.default_scopes {
        None => allowed.clone(),
        Some(d) => {
            let d = normalise_scopes("default-scope", d)?;
            if let Some(extra) = d.split(' ').find(|s| !allowed.split(' ').any(|a| a == *s)) {
                return Err(invalid(
                    "default-scope",
                    format!("{extra:?} is not among the allowed scopes"),
                ));
            }
            d
        }
    };
    if req.audience.is_empty()
        || req.audience.len() > 256
        || req.audience.chars().any(char::is_control)
    {
        return Err(invalid("audience", "must be 1-256 printable characters"));
    }
    if let Some(ttl) = req.access_token_ttl {
        check_ttl("token-ttl", ttl)?;
    }
    if let Some(bad) = req
        .post_logout_redirect_uris
        .iter()
        .find(|u| !is_valid_redirect_uri(u))
    {
        return Err(invalid(
            "post-logout-redirect-uri",
            format!(
                "{bad:?} must be https, http on a loopback host, or a private-use scheme, without a fragment"
            ),
        ));
    }
    if let Some(u) = &req.backchannel_logout_uri
        && !is_valid_backchannel_logout_uri(u)
    {
        return Err(invalid(
            "backchannel-logout-uri",
            format!("{u:?} must be an https URL (http only on a loopback host) without a fragment"),
        ));
    }
    if req.backchannel_logout_uri.is_some() && req.redirect_uris.is_empty() {
        return Err(invalid(
            "backchannel-logout-uri",
            "only a sign-in client (with a redirect URI) has sessions to be told about",
        ));
    }
    if let Some(bad) = req.redirect_uris.iter().find(|u| !is_valid_redirect_uri(u)) {
        return Err(invalid(
            "redirect-uri",
            format!(
                "{bad:?} must be https, http on a loopback host, or a private-use scheme, without a fragment"
            ),
        ));
    }
    if let Some(n) = &req.name
        && (n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control))
    {
        return Err(invalid("name", "must be 1-64 printable characters"));
    }
    if let Some(u) = &req.client_uri
        && !is_valid_client_uri(u)
    {
        return Err(invalid(
            "client-uri",
            format!("{u:?} must be an https URL (http only on a loopback host)"),
        ));
    }
    req.auth
        .validate(req.public)
        .map_err(|e| invalid("auth", e.to_string()))?;
    if req.public && req.introspect {
        return Err(invalid(
            "introspect",
            "a public client cannot introspect (it has no secret to prove who it is)",
        ));
    }
    if req.public && req.redirect_uris.is_empty() {
        return Err(invalid(
            "public",
            "a public client needs at least one redirect URI",
        ));
    }
    let grant_types = if req.redirect_uris.is_empty() {
        GRANT_TYPE.to_owned()
    } else {
        "authorization_code refresh_token".to_owned()
    };
    let record = ClientRecord {
        realm: req.realm.clone(),
        client_id: req.client_id.clone(),
        enabled: true,
        secret_salt: Vec::new(),
        secret_verifier: Vec::new(),
        allowed_scopes: allowed,
        default_scopes: defaults,
        audience: req.audience.clone(),
        grant_types,
        access_token_ttl: req.access_token_ttl,
        created_at: now,
        updated_at: now,
        redirect_uris: serde_json::to_string(&req.redirect_uris).unwrap_or_else(|_| "[]".into()),
        public_client: req.public,
        client_name: req.name.clone(),
        // Stored as the URL parser writes it (quotes and the like percent-encoded).
        client_uri: req
            .client_uri
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.to_string()),
        auth_config: req.auth.to_stored(),
        may_introspect: req.introspect,
        post_logout_redirect_uris: serde_json::to_string(&req.post_logout_redirect_uris)
            .unwrap_or_else(|_| "[]".into()),
        backchannel_logout_uri: req.backchannel_logout_uri.clone(),
        version: super::first_version(),
        parsed_auth: Default::default(),
    };
    Ok(record)
}

pub async fn create(
    store: &dyn Store,
    req: NewClient,
    now: UnixTime,
    actor: &str,
) -> Result<WithSecret, AdminError> {
    let mut record = describe(&req, now)?;
    check_given_secret(&req)?;
    // A public client's verifier matches no secret anyone holds.
    let given = req.secret.is_some();
    let new_secret = match req.secret.as_deref() {
        None => secret::generate(),
        Some(s) => secret::given(s),
    };
    record.secret_salt = new_secret.salt;
    record.secret_verifier = new_secret.verifier;
    if store.realm(&req.realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {}", req.realm)));
    }
    let audit = [
        AuditDraft::new(now, Some(&req.realm), "client.created", actor)
            .subject(&record.client_id)
            .detail(json!({
                "scopes": record.allowed_scopes,
                "default_scopes": record.default_scopes,
                "audience": record.audience,
                "access_token_ttl": record.access_token_ttl,
                "auth": auth_summary(&req.auth, record.public_client),
                "introspect": record.may_introspect,
                "backchannel_logout": record.backchannel_logout_uri.is_some(),
            })),
    ];
    store.create_client(&record, &audit).await?;
    // Only a client that authenticates with a secret is shown one.
    let uses_secret = !record.public_client
        && matches!(
            req.auth.method,
            None | Some(AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost)
        );
    Ok(WithSecret {
        client_secret: (uses_secret && !given).then_some(new_secret.secret),
        client: view(record),
    })
}

/// The checks [`create`] makes before it writes (none needs the database).
pub fn check(req: &NewClient, now: UnixTime) -> Result<(), AdminError> {
    describe(req, now)?;
    check_given_secret(req)
}

fn check_given_secret(req: &NewClient) -> Result<(), AdminError> {
    match req.secret.as_deref() {
        None => Ok(()),
        Some(_) if req.public => Err(invalid("secret", "a public client has no secret")),
        Some(s) if (32..=512).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(())
        }
        Some(_) => Err(invalid(
            "secret",
            "use 32 to 512 printable ASCII characters without spaces",
        )),
    }
}

/// A stored client as the request that would make it again (for a change of some fields).
pub fn as_new(c: &ClientRecord) -> NewClient {
    NewClient {
        realm: c.realm.clone(),
        client_id: c.client_id.clone(),
        scopes: c.allowed_scopes.clone(),
        default_scopes: (c.default_scopes != c.allowed_scopes).then(|| c.default_scopes.clone()),
        audience: c.audience.clone(),
        access_token_ttl: c.access_token_ttl,
        redirect_uris: c.redirect_uris(),
        public: c.public_client,
        name: c.client_name.clone(),
        client_uri: c.client_uri.clone(),
        auth: ClientAuth::parse_stored(c.auth_config.as_deref()).unwrap_or_default(),
        introspect: c.may_introspect,
        post_logout_redirect_uris: c.post_logout_redirect_uris(),
        backchannel_logout_uri: c.backchannel_logout_uri.clone(),
        secret: None,
    }
}

/// Changes a client's description in place: scopes, default scopes, audience, token lifetime,
/// redirect and logout URIs, names, introspection. Its secret, authentication method
/// ([`set_auth`]), state ([`set_enabled`]) and history stay; a client does not change between
/// public and confidential (make another). `req.auth` and `req.secret` are ignored. With
/// `expected`, only while the client is still that version (`If-Match`).
pub async fn update(
    store: &dyn Store,
    req: NewClient,
    expected: Option<i64>,
    now: UnixTime,
    actor: &str,
) -> Result<ClientView, AdminError> {
    let Some(current) = store.client(&req.realm, &req.client_id).await? else {
        return Err(not_found(&req.realm, &req.client_id));
    };
    if current.public_client != req.public {
        return Err(invalid(
            "public",
            "a client does not change between public and confidential: create another",
        ));
    }
    let auth = ClientAuth::parse_stored(current.auth_config.as_deref()).unwrap_or_default();
    let mut record = describe(
        &NewClient {
            auth,
            secret: None,
            ..req
        },
        now,
    )?;
    record.enabled = current.enabled;
    record.created_at = current.created_at;
    let audit = [
        AuditDraft::new(now, Some(&record.realm), "client.updated", actor)
            .subject(&record.client_id)
            .detail(json!({
                "scopes": record.allowed_scopes,
                "default_scopes": record.default_scopes,
                "audience": record.audience,
                "access_token_ttl": record.access_token_ttl,
                "redirect_uris": record.redirect_uris(),
                "introspect": record.may_introspect,
                "backchannel_logout": record.backchannel_logout_uri.is_some(),
            })),
    ];
    if store.update_client(&record, expected, &audit).await? {
        show(store, &record.realm, &record.client_id).await
    } else {
        Err(gone_or_stale(store, &record.realm, &record.client_id).await)
    }
}

/// What the audit log keeps of authentication settings: the method and the public material's
/// identity (subject, thumbprints, JWKS URI, key ids), never more.
fn auth_summary(a: &ClientAuth, public_client: bool) -> serde_json::Value {
    let kids: Vec<String> = a
        .jwks
        .as_ref()
        .map(|j| {
            crate::clients::keys::parse_client_jwks(j)
                .iter()
                .map(|k| k.kid().unwrap_or(k.thumbprint()).to_owned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "methods": a.methods(public_client),
        "tls_subject": a.tls_subject,
        "cert_thumbprints": a.cert_thumbprints,
        "jwks_uri": a.jwks_uri,
        "jwks_keys": kids,
        "bind_tokens": a.bind_tokens,
        "require_dpop": a.require_dpop,
    })
}

/// Switches how a client authenticates (and binds its tokens) without losing it: its id, scopes,
/// redirect URIs and audit history stay. A client moving to a secret method gets a new secret,
/// returned once.
pub async fn set_auth(
    store: &dyn Store,
    realm: &str,
    id: &str,
    expected: Option<i64>,
    auth: ClientAuth,
    now: UnixTime,
    actor: &str,
) -> Result<WithSecret, AdminError> {
    let current = store
        .client(realm, id)
        .await?
        .ok_or_else(|| not_found(realm, id))?;
    if expected.is_some_and(|v| v != current.version) {
        return Err(stale(realm, id));
    }
    auth.validate(current.public_client)
        .map_err(|e| invalid("auth", e.to_string()))?;
    let previous = ClientAuth::parse_stored(current.auth_config.as_deref()).unwrap_or_default();
    let was_secret = matches!(
        previous.method,
        None | Some(AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost)
    ) && !current.public_client;
    let to_secret = matches!(
        auth.method,
        None | Some(AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost)
    ) && !current.public_client;
    let audit = [
        AuditDraft::new(now, Some(realm), "client.auth_changed", actor)
            .subject(id)
            .detail(auth_summary(&auth, current.public_client)),
    ];
    // The decision above was made on `current`: the change applies only to that version.
    let version = Some(current.version);
    if !store
        .set_client_auth(realm, id, version, auth.to_stored().as_deref(), now, &audit)
        .await?
    {
        return Err(gone_or_stale(store, realm, id).await);
    }
    // Crossing between a secret method and another: leaving, the old secret is replaced now and
    // never shown (it must not come back to life if the client ever returns); returning, a new
    // one is made and shown once. Staying on either side keeps the secret as it is.
    if was_secret != to_secret {
        let fresh = secret::generate();
        let audit = [AuditDraft::new(now, Some(realm), "client.secret_rotated", actor).subject(id)];
        store
            .set_client_secret(realm, id, None, &fresh.salt, &fresh.verifier, now, &audit)
            .await?;
        let client = show(store, realm, id).await?;
        return Ok(WithSecret {
            client_secret: to_secret.then_some(fresh.secret),
            client,
        });
    }
    Ok(WithSecret {
        client_secret: None,
        client: show(store, realm, id).await?,
    })
}

pub async fn show(store: &dyn Store, realm: &str, id: &str) -> Result<ClientView, AdminError> {
    store
        .client(realm, id)
        .await?
        .map(view)
        .ok_or_else(|| not_found(realm, id))
}

pub async fn list(store: &dyn Store, realm: &str) -> Result<Vec<ClientView>, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    Ok(store.clients(realm).await?.into_iter().map(view).collect())
}

pub async fn delete(
    store: &dyn Store,
    realm: &str,
    id: &str,
    expected: Option<i64>,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    // The policies it takes along are named in its audit record: read first, held to by the
    // store (a policy written or deleted for it in between: read again).
    let deleted = super::settled(
        move || async move {
            let policies = store.policy_names_of(realm, "client", id).await?;
            let audit = [AuditDraft::new(now, Some(realm), "client.deleted", actor)
                .subject(id)
                .detail(serde_json::json!({"policies_removed": policies}))];
            store
                .delete_client(realm, id, expected, &policies, now, &audit)
                .await
        },
        |e| matches!(e, crate::store::StoreError::Changed(_)),
    )
    .await?;
    if deleted {
        Ok(())
    } else {
        Err(gone_or_stale(store, realm, id).await)
    }
}

pub async fn rotate_secret(
    store: &dyn Store,
    realm: &str,
    id: &str,
    expected: Option<i64>,
    now: UnixTime,
    actor: &str,
) -> Result<WithSecret, AdminError> {
    let current = show(store, realm, id).await?;
    if current.public {
        return Err(invalid("id", "a public client has no secret to rotate"));
    }
    if !current
        .token_endpoint_auth_methods
        .iter()
        .any(|m| m.starts_with("client_secret"))
    {
        return Err(invalid(
            "id",
            "this client does not authenticate with a secret (switch its method first)",
        ));
    }
    let new_secret = secret::generate();
    let audit = [AuditDraft::new(now, Some(realm), "client.secret_rotated", actor).subject(id)];
    let done = store
        .set_client_secret(
            realm,
            id,
            expected,
            &new_secret.salt,
            &new_secret.verifier,
            now,
            &audit,
        )
        .await?;
    if !done {
        return Err(gone_or_stale(store, realm, id).await);
    }
    let client = show(store, realm, id).await?;
    Ok(WithSecret {
        client_secret: Some(new_secret.secret),
        client,
    })
}

pub async fn set_enabled(
    store: &dyn Store,
    realm: &str,
    id: &str,
    expected: Option<i64>,
    enabled: bool,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let kind = if enabled {
        "client.enabled"
    } else {
        "client.disabled"
    };
    let audit = [AuditDraft::new(now, Some(realm), kind, actor).subject(id)];
    if store
        .set_client_enabled(realm, id, expected, enabled, now, &audit)
        .await?
    {
        Ok(())
    } else {
        Err(gone_or_stale(store, realm, id).await)
    }
}

fn not_found(realm: &str, id: &str) -> AdminError {
    AdminError::NotFound(format!("client {id} in realm {realm}"))
}

fn stale(realm: &str, id: &str) -> AdminError {
    AdminError::Stale(format!("client {id} in realm {realm}"))
}

/// Why a change that names a version matched no row: the client is gone, or it is there in
/// another version (someone changed it since it was read).
async fn gone_or_stale(store: &dyn Store, realm: &str, id: &str) -> AdminError {
    match store.client(realm, id).await {
        Ok(Some(_)) => stale(realm, id),
        Ok(None) => not_found(realm, id),
        Err(e) => e.into(),
    }
}

fn split(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn view(c: ClientRecord) -> ClientView {
    ClientView {
        redirect_uris: c.redirect_uris(),
        post_logout_redirect_uris: c.post_logout_redirect_uris(),
        backchannel_logout_uri: c.backchannel_logout_uri.clone(),
        allowed_scopes: split(&c.allowed_scopes),
        default_scopes: split(&c.default_scopes),
        grant_types: split(&c.grant_types),
        token_endpoint_auth_methods: ClientAuth::parse_stored(c.auth_config.as_deref())
            .map(|a| a.methods(c.public_client))
            .unwrap_or_default(),
        auth: ClientAuth::parse_stored(c.auth_config.as_deref())
            .ok()
            .map(|a| auth_summary(&a, c.public_client)),
        realm: c.realm,
        client_id: c.client_id,
        enabled: c.enabled,
        audience: c.audience,
        access_token_ttl: c.access_token_ttl,
        public: c.public_client,
        introspect: c.may_introspect,
        name: c.client_name.clone(),
        client_uri: c.client_uri.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
        version: c.version,
    }
}
