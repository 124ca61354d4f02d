//! `sigil user`: the users of a realm (create, enable/disable, attributes, groups, invites).

use clap::{Args, Subcommand};

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::open_configured;

use super::{CliError, base_url, open_admin_store, print_json};

#[derive(Debug, Args)]
pub struct UserRef {
    /// The user's realm.
    #[arg(long)]
    pub realm: String,
    /// The username.
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
    /// Find the users whose pii_high attribute is exactly a value, through its blind index
    /// (prints JSON; the value itself is never printed back).
    Find {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// NAME=VALUE of a pii_high attribute.
        #[arg(long = "attr")]
        attr: String,
    },
    Disable {
        #[command(flatten)]
        user: UserRef,
    },
    /// Remove the user's passkeys, authenticator app (TOTP) and recovery codes, and end every
    /// session: a staff member who lost their devices enrols again through an invite. A request
    /// for a second admin's approval in a realm that requires it.
    RemoveSecondFactors {
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
        /// An attribute as NAME=VALUE (an empty VALUE removes it); repeat for several.
        #[arg(long = "attr", required = true)]
        attrs: Vec<String>,
    },
    AddGroup {
        #[command(flatten)]
        user: UserRef,
        /// The group.
        #[arg(long)]
        group: String,
    },
    RemoveGroup {
        #[command(flatten)]
        user: UserRef,
        /// The group.
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
        /// The app the user will use: its registered name and home page (`client create
        /// --client-uri`) are offered when the set-up is done ("Continue to {app}").
        #[arg(long)]
        client: Option<String>,
    },
    /// End every session and refresh token of the user at once.
    SignOutEverywhere {
        #[command(flatten)]
        user: UserRef,
    },
}

pub(super) async fn run(
    cmd: UserCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
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
            let (kek, _) = open_configured(&config, s).await?;
            print_json(
                &admin::users::create(
                    s,
                    kek.as_ref(),
                    &user.realm,
                    &user.username,
                    &a,
                    &groups,
                    now,
                    actor,
                )
                .await?,
            );
        }
        UserCommand::Show { user } => {
            print_json(&admin::users::show(s, &user.realm, &user.username).await?)
        }
        UserCommand::Disable { user } => {
            admin::users::set_enabled(s, &user.realm, &user.username, None, false, now, actor)
                .await?;
            println!(
                "disabled {} (sessions and refresh tokens ended)",
                user.username
            );
        }
        UserCommand::RemoveSecondFactors { user } => {
            let change = admin::changes::Change::UserRemoveSecondFactors {
                realm: user.realm.clone(),
                username: user.username.clone(),
            };
            if !super::change::gate(s, &config, &change, actor, now).await? {
                return Ok(0);
            }
            admin::users::remove_second_factors(s, &user.realm, &user.username, now, actor).await?;
            println!(
                "removed {}'s passkeys, authenticator app and recovery codes; every session ended",
                user.username
            );
        }
        UserCommand::Enable { user } => {
            admin::users::set_enabled(s, &user.realm, &user.username, None, true, now, actor)
                .await?;
            println!("enabled {}", user.username);
        }
        UserCommand::SetAttr { user, attrs: a } => {
            let a = attrs(a)?;
            let (kek, _) = open_configured(&config, s).await?;
            print_json(
                &admin::users::set_attrs(
                    s,
                    kek.as_ref(),
                    &user.realm,
                    &user.username,
                    None,
                    &a,
                    now,
                    actor,
                )
                .await?,
            );
        }
        UserCommand::Find { realm, attr } => {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| CliError::Other("--attr takes NAME=VALUE".into()))?;
            let (kek, _) = open_configured(&config, s).await?;
            print_json(
                &admin::users::find_by_attribute(s, kek.as_ref(), &realm, name, value).await?,
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
        UserCommand::Invite { user, ttl, client } => {
            // The app is checked before the invite is written.
            if let Some(id) = &client {
                admin::clients::show(s, &user.realm, id).await?;
            }
            let mut link = admin::users::invite(
                s,
                config.admin_realm.as_deref(),
                &base,
                &user.realm,
                &user.username,
                ttl,
                now,
                actor,
            )
            .await?;
            if let Some(id) = client {
                link.push_str(&format!(
                    "?client_id={}",
                    percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
            println!("{link}");
        }
        UserCommand::SignOutEverywhere { user } => {
            let n = admin::users::sign_out_everywhere(s, &user.realm, &user.username, now, actor)
                .await?;
            println!("ended {n} sessions and refresh tokens of {}", user.username);
        }
    }
    Ok(0)
}
