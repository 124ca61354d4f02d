//! `sigil admin`: the first admin client, and the admin API's OpenAPI document.

use clap::Subcommand;
use serde_json::json;

use super::{CliError, base_url, open_store, print_json};
use crate::admin::{self, AdminError};
use crate::admin_api::auth::{ADMIN_AUDIENCE, SCOPE_ADMIN, SCOPE_READ};
use crate::clock::UnixTime;
use crate::config::Config;
use crate::directory::issuer_for;
use crate::keys::open_configured;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create the admin realm (if it does not exist) and a first admin client in it, with
    /// `sigil:admin` and `sigil:read`; prints its secret once. Then set `admin_realm`.
    Bootstrap {
        /// The admin realm (default: admin_realm from the configuration, else `admin`).
        #[arg(long)]
        realm: Option<String>,
        /// The admin client's id.
        #[arg(long, default_value = "sigil-admin")]
        client_id: String,
    },
    /// Print the admin API's OpenAPI 3.1 document (as served at /admin/openapi.json).
    Openapi,
}

pub(super) async fn run(
    cmd: AdminCommand,
    config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    match cmd {
        AdminCommand::Openapi => {
            println!("{}", crate::admin_api::openapi_json());
            Ok(0)
        }
        AdminCommand::Bootstrap { realm, client_id } => {
            let realm = realm
                .or_else(|| config.admin_realm.clone())
                .unwrap_or_else(|| "admin".to_owned());
            let store = open_store(&config).await?;
            let base = base_url(&config);
            if store.realm(&realm).await?.is_none() {
                let (kek, created) = open_configured(&config, store.as_ref()).await?;
                if created && !matches!(config.kek, crate::config::KekSpec::AwsKms(_)) {
                    eprintln!(
                        "warning: created a new key-encryption key at {}; production must provide its own",
                        config.kek
                    );
                }
                let req = admin::realms::NewRealm {
                    name: realm.clone(),
                    alg: crate::keys::Alg::ES256,
                    access_token_ttl: 900,
                    display_name: Some("Sigil administration".into()),
                    rotation_period_secs: admin::realms::DEFAULT_ROTATION_PERIOD,
                    prepublish_secs: admin::realms::DEFAULT_PREPUBLISH,
                    jwks_max_age_secs: config.jwks_max_age_secs as i64,
                };
                admin::realms::create(store.as_ref(), kek.as_ref(), &base, req, now, actor).await?;
                // Four-eyes from the start: the admin realm's dangerous changes need a second
                // admin (lowering this is itself a request).
                let guard = crate::store::RealmGuard {
                    require_approval: true,
                    protected: true,
                };
                admin::changes::set_guard(store.as_ref(), &realm, guard, now, actor).await?;
            }
            // Until a node records its configured admin realm (at its start), the CLI holds this
            // realm's changes as the admin realm's (see `open_admin_store`); a node's record is
            // not replaced from here.
            admin::changes::record_admin_realm(store.as_ref(), &realm, false, now, actor).await?;
            let req = admin::clients::NewClient {
                realm: realm.clone(),
                client_id: client_id.clone(),
                scopes: format!("{SCOPE_ADMIN} {SCOPE_READ}"),
                audience: ADMIN_AUDIENCE.to_owned(),
                ..Default::default()
            };
            let made = match admin::clients::create(store.as_ref(), req, now, actor).await {
                Err(AdminError::Conflict(_)) => {
                    return Err(CliError::Other(format!(
                        "client {client_id} already exists in realm {realm}; \
                         use `sigil client rotate-secret --realm {realm} --id {client_id}` for a new secret"
                    )));
                }
                other => other?,
            };
            let issuer = issuer_for(&base, &realm);
            print_json(&json!({
                "admin_realm": realm,
                "client_id": client_id,
                "client_secret": made.client_secret,
                "token_endpoint": format!("{issuer}/oauth2/token"),
                "scope": format!("{SCOPE_ADMIN} {SCOPE_READ}"),
            }));
            if config.admin_realm.as_deref() != Some(realm.as_str()) {
                eprintln!(
                    "now set admin_realm = \"{realm}\" (or SIGIL_ADMIN_REALM={realm}) and restart sigil serve"
                );
            }
            Ok(0)
        }
    }
}
