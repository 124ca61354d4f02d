//! `sigil client`: register, list, show, delete, re-secret and enable/disable clients.

use clap::{Args, Subcommand};

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;

use super::{CliError, open_admin_store, print_json};

#[derive(Debug, Args)]
pub struct ClientRef {
    /// The client's realm.
    #[arg(long)]
    pub realm: String,
    /// The client id.
    #[arg(long)]
    pub id: String,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ClientCommand {
    /// Register a client; prints its secret once, as JSON.
    Create {
        #[command(flatten)]
        client: ClientRef,
        /// Space-separated scopes the client may request.
        #[arg(long)]
        scope: String,
        /// Scopes granted when a request names none (default: all allowed scopes).
        #[arg(long)]
        default_scope: Option<String>,
        /// The `aud` of the client's tokens.
        #[arg(long)]
        audience: String,
        /// Access token lifetime in seconds (default: the realm's).
        #[arg(long)]
        token_ttl: Option<i64>,
        /// An exact redirect URI (repeatable): makes this a sign-in (authorization code) client.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (mobile app): no secret, PKCE only.
        #[arg(long)]
        public: bool,
        /// The app's name as users see it on the sign-in pages (default: the client id).
        #[arg(long)]
        name: Option<String>,
        /// The app's home page: where the pages' "Back to the app" goes.
        #[arg(long)]
        client_uri: Option<String>,
        #[command(flatten)]
        auth: AuthArgs,
        /// A resource server: may call the introspection endpoint (RFC 7662) and read the
        /// revocation feed (/realms/{realm}/revocations).
        #[arg(long)]
        introspect: bool,
        /// An exact URI users may be sent to after signing out through the end-session
        /// endpoint (repeatable; RP-Initiated Logout).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Where the client is told that a session it had tokens in ended (Back-Channel
        /// Logout 1.0): Sigil POSTs a signed logout token there.
        #[arg(long = "backchannel-logout-uri")]
        backchannel_logout_uri: Option<String>,
        /// Accepted for symmetry; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// Switch how a client authenticates (and binds its tokens), keeping the client. Prints the
    /// client, and a new secret once when it moves to a secret method.
    SetAuth {
        #[command(flatten)]
        client: ClientRef,
        #[command(flatten)]
        auth: AuthArgs,
    },
    List {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    Show {
        #[command(flatten)]
        client: ClientRef,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    Delete {
        #[command(flatten)]
        client: ClientRef,
    },
    /// Replace the secret; the old one stops working at once. Prints the new one as JSON.
    RotateSecret {
        #[command(flatten)]
        client: ClientRef,
        /// Print JSON (with the new secret).
        #[arg(long)]
        json: bool,
    },
    Disable {
        #[command(flatten)]
        client: ClientRef,
    },
    Enable {
        #[command(flatten)]
        client: ClientRef,
    },
}

pub(super) async fn run(
    cmd: ClientCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
    let s = store.as_ref();
    match cmd {
        ClientCommand::Create {
            client,
            scope,
            default_scope,
            audience,
            token_ttl,
            redirect_uris,
            public,
            name,
            client_uri,
            auth,
            introspect,
            post_logout_redirect_uris,
            backchannel_logout_uri,
            json: _,
        } => {
            let auth = auth.into_client_auth(public)?;
            let req = admin::clients::NewClient {
                secret: None,
                realm: client.realm,
                client_id: client.id,
                scopes: scope,
                default_scopes: default_scope,
                audience,
                access_token_ttl: token_ttl,
                redirect_uris,
                public,
                name,
                client_uri,
                auth,
                introspect,
                post_logout_redirect_uris,
                backchannel_logout_uri,
            };
            print_json(&admin::clients::create(s, req, now, actor).await?);
        }
        ClientCommand::List { realm, json } => {
            let clients = admin::clients::list(s, &realm).await?;
            if json {
                print_json(&clients);
            } else {
                for c in clients {
                    let state = if c.enabled { "enabled" } else { "disabled" };
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.client_id,
                        state,
                        c.audience,
                        c.allowed_scopes.join(" ")
                    );
                }
            }
        }
        ClientCommand::Show { client, json } => {
            let c = admin::clients::show(s, &client.realm, &client.id).await?;
            if json {
                print_json(&c);
            } else {
                println!(
                    "client:   {}\nrealm:    {}\nenabled:  {}\naudience: {}\nscopes:   {}\ndefaults: {}",
                    c.client_id,
                    c.realm,
                    c.enabled,
                    c.audience,
                    c.allowed_scopes.join(" "),
                    c.default_scopes.join(" ")
                );
            }
        }
        ClientCommand::SetAuth { client, auth } => {
            if admin::changes::credential_change_needs_approval(
                s,
                config.admin_realm.as_deref(),
                &client.realm,
                &client.id,
            )
            .await?
            {
                return Err(CliError::Other(format!(
                    "realm {} is protected: a client's authentication is not replaced by one \
                     admin (to rotate its secret, `sigil client rotate-secret` files a four-eyes \
                     request; to change the method, lower the guard through a request first)",
                    client.realm
                )));
            }
            if auth.method.is_none() {
                return Err(CliError::Other(
                    "set-auth replaces the client's whole authentication setup: name the method with --auth (client_secret for either secret method)".into(),
                ));
            }
            let c = admin::clients::show(s, &client.realm, &client.id).await?;
            let auth = auth.into_client_auth(c.public)?;
            print_json(
                &admin::clients::set_auth(s, &client.realm, &client.id, None, auth, now, actor)
                    .await?,
            );
        }
        ClientCommand::Delete { client } => {
            let change = admin::changes::Change::ClientDelete {
                realm: client.realm.clone(),
                client_id: client.id.clone(),
            };
            if !super::change::gate(s, &config, &change, actor, now).await? {
                return Ok(0);
            }
            admin::clients::delete(s, &client.realm, &client.id, None, now, actor).await?;
            println!("deleted {}", client.id);
        }
        ClientCommand::RotateSecret { client, json: _ } => {
            let change = admin::changes::Change::ClientRotateSecret {
                realm: client.realm.clone(),
                client_id: client.id.clone(),
            };
            if !super::change::gate(s, &config, &change, actor, now).await? {
                return Ok(0);
            }
            print_json(
                &admin::clients::rotate_secret(s, &client.realm, &client.id, None, now, actor)
                    .await?,
            );
        }
        ClientCommand::Disable { client } => {
            admin::clients::set_enabled(s, &client.realm, &client.id, None, false, now, actor)
                .await?;
            println!("disabled {}", client.id);
        }
        ClientCommand::Enable { client } => {
            admin::clients::set_enabled(s, &client.realm, &client.id, None, true, now, actor)
                .await?;
            println!("enabled {}", client.id);
        }
    }
    Ok(0)
}

/// How a client authenticates, from the command line.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// client_secret (Basic or in the body), client_secret_basic, client_secret_post,
    /// tls_client_auth, self_signed_tls_client_auth, private_key_jwt, or none (public clients).
    /// Default for `create`: client_secret (none for --public).
    #[arg(long = "auth")]
    pub method: Option<String>,
    /// tls_client_auth: the certificate's subject DN (`CN=ach,O=Bank,C=GB`).
    #[arg(long)]
    pub tls_subject_dn: Option<String>,
    /// tls_client_auth: a DNS name in the certificate's subject alternative names.
    #[arg(long)]
    pub tls_san_dns: Option<String>,
    /// tls_client_auth: a URI SAN, e.g. a SPIFFE ID (spiffe://bank.example/ns/payments/sa/ach).
    #[arg(long)]
    pub tls_san_uri: Option<String>,
    /// tls_client_auth: an IP address SAN.
    #[arg(long)]
    pub tls_san_ip: Option<std::net::IpAddr>,
    /// tls_client_auth: an email SAN.
    #[arg(long)]
    pub tls_san_email: Option<String>,
    /// self_signed_tls_client_auth: a PEM certificate the client presents (repeatable, for
    /// rotation).
    #[arg(long = "cert-file")]
    pub cert_files: Vec<std::path::PathBuf>,
    /// private_key_jwt: the client's public keys (a JWKS file).
    #[arg(long)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// private_key_jwt: where the client publishes its JWKS (https; http only on loopback).
    #[arg(long)]
    pub jwks_uri: Option<String>,
    /// Bind the access tokens of a client that authenticated with mTLS to its certificate
    /// (default true).
    #[arg(long)]
    pub bind_tokens: Option<bool>,
    /// Refuse token requests without a DPoP proof (public mobile apps).
    #[arg(long)]
    pub require_dpop: bool,
}

impl AuthArgs {
    pub fn into_client_auth(
        self,
        public: bool,
    ) -> Result<crate::clients::auth::ClientAuth, CliError> {
        use crate::clients::auth::{AuthMethod, ClientAuth, TlsSubject};
        let method = match self.method.as_deref() {
            None | Some("client_secret") => None,
            Some("none") if public => None,
            Some(m) => Some(AuthMethod::parse(m).ok_or_else(|| {
                CliError::Other(format!(
                    "--auth {m:?}: one of client_secret, client_secret_basic, client_secret_post, tls_client_auth, self_signed_tls_client_auth, private_key_jwt, none"
                ))
            })?),
        };
        let subjects: Vec<TlsSubject> = [
            self.tls_subject_dn.map(TlsSubject::Dn),
            self.tls_san_dns.map(TlsSubject::SanDns),
            self.tls_san_uri.map(TlsSubject::SanUri),
            self.tls_san_ip.map(TlsSubject::SanIp),
            self.tls_san_email.map(TlsSubject::SanEmail),
        ]
        .into_iter()
        .flatten()
        .collect();
        if subjects.len() > 1 {
            return Err(CliError::Other(
                "give exactly one of --tls-subject-dn, --tls-san-dns, --tls-san-uri, --tls-san-ip, --tls-san-email (RFC 8705 §2.1.2)".into(),
            ));
        }
        let mut thumbprints = Vec::new();
        for f in &self.cert_files {
            let pem = std::fs::read_to_string(f)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?;
            let certs = crate::clients::mtls::certificates_from_pem(&pem)
                .map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?;
            thumbprints.extend(certs.iter().map(|c| crate::clients::mtls::thumbprint(c)));
        }
        let jwks = match &self.jwks_file {
            None => None,
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| CliError::Other(format!("{}: not JSON: {e}", f.display())))?,
                )
            }
        };
        Ok(ClientAuth {
            method,
            tls_subject: subjects.into_iter().next(),
            cert_thumbprints: thumbprints,
            jwks,
            jwks_uri: self.jwks_uri,
            bind_tokens: self.bind_tokens.unwrap_or(true),
            require_dpop: self.require_dpop,
        })
    }
}
