//! `sigil change`: four-eyes requests (list, show, approve, reject), and the gate every dangerous
//! CLI command passes first.

use clap::Subcommand;

use crate::admin;
use crate::admin::changes::{Change, Gate};
use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::open_configured;
use crate::store::Store;

use super::{CliError, open_admin_store, print_json};

#[derive(Debug, Subcommand)]
pub enum ChangeCommand {
    /// The change requests, newest first (JSON).
    List,
    Show {
        /// The request's id (chg-...).
        id: String,
    },
    /// Approve and apply a request (another admin than the one who asked; pass --operator).
    Approve {
        /// The request's id (chg-...).
        id: String,
    },
    /// Reject a request (or withdraw one's own).
    Reject {
        /// The request's id (chg-...).
        id: String,
    },
}

pub(super) async fn run(
    cmd: ChangeCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    if actor == "cli" && matches!(cmd, ChangeCommand::Approve { .. }) {
        return Err(CliError::Other(
            "name yourself with --operator NAME (or SIGIL_OPERATOR) to approve a change".into(),
        ));
    }
    let store = open_admin_store(&mut config).await?;
    let s = store.as_ref();
    match cmd {
        ChangeCommand::List => print_json(&admin::changes::list(s, now).await?),
        ChangeCommand::Show { id } => print_json(&admin::changes::show(s, &id, now).await?),
        ChangeCommand::Approve { id } => {
            let (kek, _) = open_configured(&config, s).await?;
            let (view, outcome) = admin::changes::approve(s, kek.as_ref(), &id, actor, now).await?;
            print_json(&serde_json::json!({"change": view, "outcome": outcome}));
            if view.state != "applied" {
                return Ok(1);
            }
        }
        ChangeCommand::Reject { id } => {
            print_json(&admin::changes::reject(s, &id, actor, now).await?)
        }
    }
    Ok(0)
}

/// Lets a dangerous change through, or files it as a request (printed, with what to do next).
/// Returns true when the caller may apply it now.
pub(super) async fn gate(
    store: &dyn Store,
    config: &Config,
    change: &Change,
    actor: &str,
    now: UnixTime,
) -> Result<bool, CliError> {
    let needed =
        admin::changes::needs_approval(store, config.admin_realm.as_deref(), change).await?;
    if needed && actor == "cli" {
        return Err(CliError::Other(
            "this change needs a second admin's approval: name yourself with --operator NAME \
             (or SIGIL_OPERATOR) to file the request"
                .into(),
        ));
    }
    match admin::changes::gate(store, config.admin_realm.as_deref(), change, actor, now).await? {
        Gate::Proceed => Ok(true),
        Gate::Requested(view) => {
            print_json(&serde_json::json!({"change_request": view}));
            eprintln!(
                "this change needs a second admin's approval: it was filed as {id}; another admin \
                 runs `sigil --operator NAME change approve {id}` before it expires",
                id = view.id
            );
            Ok(false)
        }
    }
}
