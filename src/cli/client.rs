//! `sigil client`: register, list, show, delete, re-secret and enable/disable clients.

use clap::{Args, Subcommand};

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;

use super::{CliError, open_store, print_json};

#[derive(Debug, Args)]
pub struct ClientRef {
    #[arg(long)]
    pub realm: String,
    #[arg(long)]
    pub id: String,
}

#[derive(Debug, Subcommand)]
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
        /// Accepted for symmetry; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        json: bool,
    },
    Show {
        #[command(flatten)]
        client: ClientRef,
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
    config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_store(&config).await?;
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
            json: _,
        } => {
            let req = admin::clients::NewClient {
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
        ClientCommand::Delete { client } => {
            admin::clients::delete(s, &client.realm, &client.id, now, actor).await?;
            println!("deleted {}", client.id);
        }
        ClientCommand::RotateSecret { client, json: _ } => {
            print_json(
                &admin::clients::rotate_secret(s, &client.realm, &client.id, now, actor).await?,
            );
        }
        ClientCommand::Disable { client } => {
            admin::clients::set_enabled(s, &client.realm, &client.id, false, now, actor).await?;
            println!("disabled {}", client.id);
        }
        ClientCommand::Enable { client } => {
            admin::clients::set_enabled(s, &client.realm, &client.id, true, now, actor).await?;
            println!("enabled {}", client.id);
        }
    }
    Ok(0)
}
