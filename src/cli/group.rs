//! `sigil group`: the groups of a realm and the scopes they grant.

use clap::Subcommand;

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;

use super::{CliError, open_admin_store};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    Create {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The group's name (1-64 of A-Z a-z 0-9 . _ : -).
        #[arg(long)]
        name: String,
        /// Space-separated scopes members may have.
        #[arg(long)]
        scope: String,
    },
    List {
        /// The realm.
        #[arg(long)]
        realm: String,
    },
}

pub(super) async fn run(
    cmd: GroupCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
    match cmd {
        GroupCommand::Create { realm, name, scope } => {
            admin::users::create_group(store.as_ref(), &realm, &name, &scope, now, actor).await?;
            println!("group {name} created");
        }
        GroupCommand::List { realm } => {
            for (name, scopes) in admin::users::groups(store.as_ref(), &realm).await? {
                println!("{name}\t{scopes}");
            }
        }
    }
    Ok(0)
}
