//! `sigil user`: the users of a realm (create, enable/disable, attributes, groups, invites).

use clap::{Args, Subcommand};

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;

use super::{CliError, base_url, open_store, print_json};

#[derive(Debug, Args)]
pub struct UserRef {
    #[arg(long)]
    pub realm: String,
    #[arg(long)]
    pub username: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (prints JSON).
    Create {
        #[command(flatten)]
        user: UserRef,
        /// key=value (repeatable).
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    Show {
        #[command(flatten)]
        user: UserRef,
    },
    Disable {
        #[command(flatten)]
        user: UserRef,
    },
    Enable {
        #[command(flatten)]
        user: UserRef,
    },
    /// key=value (repeatable); an empty value removes the attribute.
    SetAttr {
        #[command(flatten)]
        user: UserRef,
        #[arg(long = "attr", required = true)]
        attrs: Vec<String>,
    },
    AddGroup {
        #[command(flatten)]
        user: UserRef,
        #[arg(long)]
        group: String,
    },
    RemoveGroup {
        #[command(flatten)]
        user: UserRef,
        #[arg(long)]
        group: String,
    },
    /// Print a single-use, expiring enrolment link.
    Invite {
        #[command(flatten)]
        user: UserRef,
        /// Seconds the link stays valid (default 24 h).
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// End every session and refresh token of the user at once.
    SignOutEverywhere {
        #[command(flatten)]
        user: UserRef,
    },
}

pub(super) async fn run(
    cmd: UserCommand,
    config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_store(&config).await?;
    let s = store.as_ref();
    let base = base_url(&config);
    let attrs = |v: Vec<String>| -> Result<Vec<(String, String)>, CliError> {
        v.iter()
            .map(|kv| admin::users::parse_attr(kv).map_err(CliError::from))
            .collect()
    };
    match cmd {
        UserCommand::Create {
            user,
            attrs: a,
            groups,
        } => {
            let a = attrs(a)?;
            print_json(
                &admin::users::create(s, &user.realm, &user.username, &a, &groups, now, actor)
                    .await?,
            );
        }
        UserCommand::Show { user } => {
            print_json(&admin::users::show(s, &user.realm, &user.username).await?)
        }
        UserCommand::Disable { user } => {
            admin::users::set_enabled(s, &user.realm, &user.username, false, now, actor).await?;
            println!(
                "disabled {} (sessions and refresh tokens ended)",
                user.username
            );
        }
        UserCommand::Enable { user } => {
            admin::users::set_enabled(s, &user.realm, &user.username, true, now, actor).await?;
            println!("enabled {}", user.username);
        }
        UserCommand::SetAttr { user, attrs: a } => {
            let a = attrs(a)?;
            print_json(
                &admin::users::set_attrs(s, &user.realm, &user.username, &a, now, actor).await?,
            );
        }
        UserCommand::AddGroup { user, group } => {
            admin::users::add_group(s, &user.realm, &user.username, &group, now, actor).await?;
            println!("{} is in {group}", user.username);
        }
        UserCommand::RemoveGroup { user, group } => {
            admin::users::remove_group(s, &user.realm, &user.username, &group, now, actor).await?;
            println!("{} left {group}", user.username);
        }
        UserCommand::Invite { user, ttl } => {
            println!(
                "{}",
                admin::users::invite(s, &base, &user.realm, &user.username, ttl, now, actor)
                    .await?
            );
        }
        UserCommand::SignOutEverywhere { user } => {
            let n = admin::users::sign_out_everywhere(s, &user.realm, &user.username, now, actor)
                .await?;
            println!("ended {n} sessions and refresh tokens of {}", user.username);
        }
    }
    Ok(0)
}
