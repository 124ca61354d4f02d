//! `sigil export` and `sigil apply -f FILE [--dry-run]`: realms, sign-in policies, groups and
//! clients as a TOML file kept in Git (see `admin::declarative`).

use std::path::PathBuf;

use super::{CliError, base_url, open_admin_store};
use crate::admin::declarative::{self, Document};
use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::open_configured;

/// Prints the database as the file `apply` reads.
pub(super) async fn export(mut config: Config) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
    let doc = declarative::export(store.as_ref(), config.admin_realm.as_deref()).await?;
    print!("{}", to_toml(&doc)?);
    Ok(0)
}

/// The document as TOML: through JSON without nulls (TOML has no null).
pub fn to_toml(doc: &Document) -> Result<String, CliError> {
    fn strip(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, strip(v)))
                    .collect(),
            ),
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(strip).collect())
            }
            other => other,
        }
    }
    let v = strip(serde_json::to_value(doc).map_err(|e| CliError::Other(e.to_string()))?);
    toml::to_string(&v).map_err(|e| CliError::Other(format!("cannot write TOML: {e}")))
}

pub(super) async fn apply(
    mut config: Config,
    file: PathBuf,
    dry_run: bool,
    now: UnixTime,
) -> Result<i32, CliError> {
    let doc = declarative::read_file(&file).map_err(CliError::Other)?;
    let store = open_admin_store(&mut config).await?;
    // Opened only to write (a dry run must not create a KEK file).
    let mut kek = None;
    // Every created client's secret, across rounds: each is shown once, here.
    let mut secrets = std::collections::BTreeMap::new();
    let mut done = 0;
    // Another apply (or a node's apply_on_start) running at the same time may make a step first:
    // the step then fails with a conflict, and planning again finds it done.
    let mut round = 0;
    loop {
        round += 1;
        let steps =
            match declarative::plan(store.as_ref(), &doc, config.admin_realm.as_deref()).await? {
                Ok(steps) => steps,
                Err(conflicts) => {
                    for c in &conflicts {
                        eprintln!("conflict: {c}");
                    }
                    eprintln!("nothing was applied ({} conflicts)", conflicts.len());
                    return Ok(1);
                }
            };
        if steps.is_empty() {
            if done == 0 {
                println!("no changes: the database matches {}", file.display());
                return Ok(0);
            }
            // An earlier round made changes, and another apply made the rest.
            break;
        }
        for s in &steps {
            println!("{s}");
        }
        let problems = declarative::check(&steps, config.jwks_max_age_secs as i64, now);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("invalid: {p}");
            }
            eprintln!("nothing was applied ({} invalid)", problems.len());
            return Ok(1);
        }
        if dry_run {
            println!("(dry run: nothing was applied)");
            return Ok(0);
        }
        let kek = match &kek {
            Some(k) => std::sync::Arc::clone(k),
            None => {
                let opened = open_configured(&config, store.as_ref()).await?.0;
                kek = Some(opened.clone());
                opened
            }
        };
        let applied = declarative::apply(
            store.as_ref(),
            kek.as_ref(),
            &base_url(&config),
            config.jwks_max_age_secs as i64,
            steps,
            now,
            "apply",
        )
        .await?;
        done += applied.steps.len();
        secrets.extend(applied.secrets);
        match applied.failed {
            None => break,
            Some(crate::admin::AdminError::Conflict(what)) if round < 5 => {
                println!("({what} was made meanwhile by someone else: planning again)");
            }
            Some(e) => {
                show_secrets(&secrets);
                eprintln!("sigil: {e}");
                eprintln!("stopped after {done} changes: the rest was not applied");
                return Ok(1);
            }
        }
    }
    println!("applied {done} changes");
    show_secrets(&secrets);
    Ok(0)
}

/// The secrets of the clients `apply` created, shown this once (as for `client create`).
fn show_secrets(secrets: &std::collections::BTreeMap<String, String>) {
    if !secrets.is_empty() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "client_secrets": secrets }))
                .unwrap_or_default()
        );
    }
}
