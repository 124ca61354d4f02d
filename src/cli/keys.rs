//! `sigil key` (a realm's signing keys: list, rotate, revoke) and `sigil kek` (re-encrypt every
//! private key under a new key-encryption key).

use std::path::PathBuf;

use clap::Subcommand;

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::{Alg, open_configured};

use super::{CliError, base_url, open_admin_store, print_json};

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
    /// Re-encrypt every signing key, every user's TOTP secret and every realm's PII key under a
    /// new KEK, in one transaction (values already under it are skipped: run it again to finish). Run it with the
    /// node's ring configured (kek_file or kek_source, and the previous ones); then every node must
    /// run with the new KEK as its kek_file or kek_source (README: "Keys and rotation").
    Rotate {
        /// The new KEK as a file (32 random bytes, base64, mode 0600).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "to",
            required_unless_present = "to"
        )]
        new_kek: Option<PathBuf>,
        /// The new KEK as a source: file:PATH (an existing file: 32 random bytes, base64, mode
        /// 0600), aws-kms:KEY_ID_OR_ARN (a data key is generated and stored wrapped) or
        /// aws-secretsmanager:SECRET_ID_OR_ARN.
        #[arg(long, value_name = "SOURCE")]
        to: Option<String>,
    },
}

pub(super) async fn run(
    cmd: KeyCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
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
            let (kek, _) = open_configured(&config, store.as_ref()).await?;
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
            let change = crate::admin::changes::Change::KeyRevoke {
                realm: realm.clone(),
                kid: kid.clone(),
            };
            if !super::change::gate(store.as_ref(), &config, &change, actor, now).await? {
                return Ok(0);
            }
            let (kek, _) = open_configured(&config, store.as_ref()).await?;
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
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let KekCommand::Rotate { new_kek, to } = cmd;
    let target = match (new_kek, to) {
        (Some(path), _) => crate::config::KekSpec::File(path),
        (None, Some(text)) => crate::config::KekSpec::parse("--to", &text)?,
        (None, None) => unreachable_target()?,
    };
    // A file KEK by its absolute path: a request may be approved from another directory.
    let target = match target {
        crate::config::KekSpec::File(p) => crate::config::KekSpec::File(
            std::path::absolute(&p)
                .map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?,
        ),
        other => other,
    };
    let store = open_admin_store(&mut config).await?;
    let change = crate::admin::changes::Change::KekRotate {
        to: target.to_string(),
    };
    if !super::change::gate(store.as_ref(), &config, &change, actor, now).await? {
        return Ok(0);
    }
    let (old, _) = open_configured(&config, store.as_ref()).await?;
    let new = crate::keys::open_rotation_target(&target, store.as_ref(), now).await?;
    let (keys, totps) =
        admin::keys::rotate_kek(store.as_ref(), old.as_ref(), new.as_ref(), actor, now).await?;
    let setting = match &target {
        crate::config::KekSpec::File(p) => format!("kek_file = {:?}", p.display().to_string()),
        other => format!("kek_source = {:?}", other.to_string()),
    };
    println!(
        "re-encrypted {keys} signing keys and {totps} TOTP secrets under {} ({target}); every node \
         must now run with {setting} (the old KEK may stay in kek_previous_files or \
         kek_previous_sources until every node does)",
        new.id(),
    );
    Ok(0)
}

/// clap requires `--new-kek` or `--to`; this only keeps the match total.
fn unreachable_target() -> Result<crate::config::KekSpec, CliError> {
    Err(CliError::Other("give --new-kek FILE or --to SOURCE".into()))
}
