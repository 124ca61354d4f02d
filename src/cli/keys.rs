//! `sigil key` (a realm's signing keys: list, rotate, revoke) and `sigil kek` (re-encrypt every
//! private key under a new key-encryption key).

use std::path::PathBuf;

use clap::Subcommand;

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::{Alg, open_kek_ring};

use super::{CliError, base_url, open_store, print_json};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Every key of the realm with its state and dates.
    List {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the next key sign now (or a fresh key, if none is published yet).
    Rotate {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// Switch the realm to this algorithm from this key on.
        #[arg(long)]
        alg: Option<Alg>,
    },
    /// Emergency: remove a key from JWKS at once and destroy its private half.
    Revoke {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The key's id (`kid`, as in the JWKS).
        #[arg(long)]
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Re-encrypt every signing key and every user's TOTP secret under the KEK in FILE, in one
    /// transaction (keys already under it are skipped: run it again to finish). Run it with the
    /// node's ring configured (kek_file and kek_previous_files); then every node must run with FILE
    /// as kek_file (docs/operations.md has the rolling procedure).
    Rotate {
        /// The new KEK (32 random bytes, base64, mode 0600).
        #[arg(long, value_name = "FILE")]
        new_kek: PathBuf,
    },
}

pub(super) async fn run(
    cmd: KeyCommand,
    config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_store(&config).await?;
    let base = base_url(&config);
    match cmd {
        KeyCommand::List { realm, json } => {
            let r = admin::realms::show(store.as_ref(), &base, &realm).await?;
            if json {
                print_json(&r.keys);
            } else {
                for k in r.keys {
                    println!(
                        "{}\t{}\t{}\tcreated {}\tactivated {}\tretired {}\tmax_exp {}",
                        k.kid,
                        k.alg,
                        k.state,
                        k.created_at,
                        k.activated_at.map_or("-".into(), |t| t.to_string()),
                        k.retired_at.map_or("-".into(), |t| t.to_string()),
                        k.max_exp
                    );
                }
            }
        }
        KeyCommand::Rotate { realm, alg } => {
            let (kek, _) =
                open_kek_ring(&config.kek_file, &config.kek_previous_files, store.as_ref()).await?;
            let kid = crate::keys::rotation::rotate_now(
                store.as_ref(),
                kek.as_ref(),
                &realm,
                alg,
                actor,
                now,
            )
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
            println!("{kid} now signs for realm {realm}");
        }
        KeyCommand::Revoke { realm, kid } => {
            let (kek, _) =
                open_kek_ring(&config.kek_file, &config.kek_previous_files, store.as_ref()).await?;
            crate::keys::rotation::revoke(store.as_ref(), kek.as_ref(), &realm, &kid, actor, now)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            println!(
                "revoked {kid}: it has left the JWKS; validators drop it at their next JWKS \
                 fetch (at most jwks_max_age_secs = {} s, or at once on Validator::refresh)",
                config.jwks_max_age_secs
            );
        }
    }
    Ok(0)
}

pub(super) async fn run_kek(
    cmd: KekCommand,
    config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let KekCommand::Rotate { new_kek } = cmd;
    let store = open_store(&config).await?;
    let (old, _) =
        open_kek_ring(&config.kek_file, &config.kek_previous_files, store.as_ref()).await?;
    let new = crate::keys::FileKek::load(&new_kek)?;
    let (keys, totps) =
        admin::keys::rotate_kek(store.as_ref(), old.as_ref(), &new, actor, now).await?;
    println!(
        "re-encrypted {keys} signing keys and {totps} TOTP secrets under {}; every node must now run with {} \
         as kek_file (the old KEK may stay in kek_previous_files until every node does)",
        crate::keys::KekSource::id(&new),
        new_kek.display()
    );
    Ok(0)
}
