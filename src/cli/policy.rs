//! `sigil policy`: principal policies for resource servers (see `admin::policies`).

use clap::Subcommand;

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;

use super::{CliError, open_admin_store, print_json};

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum PolicyCommand {
    /// Attach a policy to a principal of the realm: ALLOW or DENY `--action`s on `--resource`s
    /// (both with * and ? wildcards), when every `--assert` (CEL over context.auth.claims and
    /// context.document) holds.
    Create {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The policy's name (1-64 of A-Z a-z 0-9 - _ . :), unique in the realm.
        #[arg(long)]
        name: String,
        /// A client acting for itself (client_credentials), by client id.
        #[arg(long, group = "who")]
        client: Option<String>,
        /// A user, by `sub`.
        #[arg(long, group = "who")]
        user: Option<String>,
        /// The users of a group.
        #[arg(long, group = "who")]
        group: Option<String>,
        /// AWS principals from the STS exchange: an IAM ARN or a */? glob over one.
        #[arg(long, group = "who")]
        aws_principal: Option<String>,
        /// Every token of an issuer (its URL).
        #[arg(long, group = "who")]
        issuer: Option<String>,
        /// ALLOW or DENY.
        #[arg(long)]
        effect: String,
        /// An action (`db:Insert`, `db:*`); repeatable.
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// A resource (`financial.ledger.document.*`); repeatable.
        #[arg(long = "resource", required = true)]
        resources: Vec<String>,
        /// A CEL assertion that must hold (`context.document.amount <= 10000`); repeatable.
        #[arg(long = "assert")]
        assertions: Vec<String>,
        /// A note for humans.
        #[arg(long)]
        description: Option<String>,
        /// Replace the policy of this name, if there is one (in one transaction).
        #[arg(long)]
        replace: bool,
    },
    /// List a realm's policies and the bundle version as JSON.
    List {
        /// The realm.
        #[arg(long)]
        realm: String,
    },
    /// Show one policy as JSON.
    Show {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The policy's name.
        #[arg(long)]
        name: String,
    },
    /// Delete a policy.
    Delete {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The policy's name.
        #[arg(long)]
        name: String,
    },
}

pub(super) async fn run(
    cmd: PolicyCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
    let s = store.as_ref();
    match cmd {
        PolicyCommand::Create {
            realm,
            name,
            client,
            user,
            group,
            aws_principal,
            issuer,
            effect,
            actions,
            resources,
            assertions,
            description,
            replace,
        } => {
            let (kind, principal) = [
                ("client", client),
                ("user", user),
                ("group", group),
                ("aws", aws_principal),
                ("issuer", issuer),
            ]
            .into_iter()
            .find_map(|(k, v)| v.map(|v| (k, v)))
            .ok_or_else(|| {
                CliError::Other(
                    "name the principal: --client, --user, --group, --aws-principal or --issuer"
                        .into(),
                )
            })?;
            let req = admin::policies::NewPolicy {
                realm,
                name,
                principal_kind: kind.into(),
                principal,
                effect,
                actions,
                resources,
                assertions,
                description,
            };
            let change = match admin::policies::put_change(s, &req, replace).await? {
                admin::policies::Put::Unchanged(same) => {
                    print_json(&same);
                    return Ok(0);
                }
                admin::policies::Put::Change(change) => change,
            };
            if !super::change::gate(s, &config, &change, actor, now).await? {
                return Ok(0);
            }
            print_json(&admin::policies::create(s, req, replace, now, actor).await?);
        }
        PolicyCommand::List { realm } => {
            let (version, policies) = admin::policies::list(s, &realm).await?;
            print_json(&serde_json::json!({"version": version, "policies": policies}));
        }
        PolicyCommand::Show { realm, name } => {
            print_json(&admin::policies::show(s, &realm, &name).await?);
        }
        PolicyCommand::Delete { realm, name } => {
            let change = admin::policies::delete_change(s, &realm, &name).await?;
            if !super::change::gate(s, &config, &change, actor, now).await? {
                return Ok(0);
            }
            admin::policies::delete(s, &realm, &name, now, actor).await?;
            println!("deleted policy {name}");
        }
    }
    Ok(0)
}
