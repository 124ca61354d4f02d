//! `sigil aws` (a realm's STS settings and principal bindings) and `sigil token aws` (a
//! workload's side: sign GetCallerIdentity, exchange it for an access token).

use clap::Subcommand;

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;

use super::{CliError, open_store, print_json};

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Enable the exchange in a realm: which STS endpoint, which server ID.
    Configure {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// An explicit STS endpoint (http(s)://host[:port]/); default: the real STS hosts of the
        /// partitions.
        #[arg(long)]
        sts_endpoint: Option<String>,
        /// AWS partitions whose STS hosts are allowed (repeatable; default aws).
        #[arg(long = "partition")]
        partitions: Vec<String>,
        /// The value workloads must send, signed, in X-Sigil-Server-ID.
        #[arg(long)]
        server_id: String,
        /// Require a single-use challenge from the challenge endpoint in every request.
        #[arg(long)]
        require_challenge: bool,
    },
    /// Map IAM principals (exact ARN or */? glob, and/or account id) to scopes and an audience.
    Bind {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// A name for the binding (default: a random `b-...`).
        #[arg(long)]
        id: Option<String>,
        /// An IAM principal ARN, or a pattern with * and ? (assumed-role sessions match their role).
        #[arg(long)]
        principal: Option<String>,
        /// An AWS account id (12 digits): any principal of it.
        #[arg(long)]
        account: Option<String>,
        /// The scopes its tokens carry, space-separated.
        #[arg(long)]
        scope: Option<String>,
        /// The `aud` of its tokens.
        #[arg(long)]
        audience: Option<String>,
        /// Token lifetime in seconds (default: the realm's).
        #[arg(long)]
        token_ttl: Option<i64>,
        /// A DENY binding: a match refuses the principal whatever ALLOWs say.
        #[arg(long)]
        deny: bool,
    },
    /// List a realm's bindings as JSON.
    Bindings {
        /// The realm.
        #[arg(long)]
        realm: String,
    },
    Unbind {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The binding's name.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign STS GetCallerIdentity with the AWS credentials in the environment (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), exchange it at ISSUER, print the access token.
    Aws {
        /// The realm's issuer URL (https://.../realms/NAME).
        #[arg(long)]
        issuer: String,
        /// The scopes to ask for, space-separated.
        #[arg(long)]
        scope: Option<String>,
        /// The audience to ask for.
        #[arg(long)]
        audience: Option<String>,
        /// Region whose STS endpoint to sign for (default AWS_REGION, else us-east-1).
        #[arg(long)]
        region: Option<String>,
        /// Sign for this STS URL instead of https://sts.{region}.amazonaws.com/.
        #[arg(long)]
        sts_url: Option<String>,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    cmd: AwsCommand,
    config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_store(&config).await?;
    let s = store.as_ref();
    match cmd {
        AwsCommand::Configure {
            realm,
            sts_endpoint,
            partitions,
            server_id,
            require_challenge,
        } => {
            let rec = admin::aws::configure(
                s,
                admin::aws::Configure {
                    realm,
                    sts_endpoint,
                    partitions,
                    server_id,
                    require_challenge,
                },
                now,
                actor,
            )
            .await?;
            println!(
                "AWS exchange configured for realm {} (server ID {})",
                rec.realm, rec.server_id
            );
        }
        AwsCommand::Bind {
            realm,
            id,
            principal,
            account,
            scope,
            audience,
            token_ttl,
            deny,
        } => {
            let b = admin::aws::bind(
                s,
                admin::aws::Bind {
                    realm,
                    id,
                    principal,
                    account,
                    deny,
                    scopes: scope,
                    audience,
                    access_token_ttl: token_ttl,
                },
                now,
                actor,
            )
            .await?;
            print_json(&b);
        }
        AwsCommand::Bindings { realm } => print_json(&admin::aws::bindings(s, &realm).await?),
        AwsCommand::Unbind { realm, id } => {
            admin::aws::unbind(s, &realm, &id, now, actor).await?;
            println!("removed binding {id}");
        }
    }
    Ok(0)
}

pub(super) async fn token(cmd: TokenCommand, now: UnixTime) -> Result<i32, CliError> {
    let TokenCommand::Aws {
        issuer,
        scope,
        audience,
        region,
        sts_url,
        json,
    } = cmd;
    let region = region
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let sts_url = sts_url.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com/"));
    let body = crate::aws::client::fetch_token(
        &issuer,
        &region,
        &sts_url,
        scope.as_deref(),
        audience.as_deref(),
        now,
    )
    .await
    .map_err(CliError::Other)?;
    if json {
        print_json(&body);
    } else {
        println!("{}", body["access_token"].as_str().unwrap_or_default());
    }
    Ok(0)
}
