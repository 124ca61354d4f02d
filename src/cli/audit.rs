//! `sigil audit verify`: walk the audit hash chain.

use clap::Subcommand;

use crate::admin;
use crate::audit::VerifyReport;
use crate::config::Config;

use super::{CliError, open_store};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exits 1 and names the first broken row if it is broken.
    Verify {
        /// Also check the anchors written to `audit_anchor_file`: every head they name must be
        /// in the log (finds a log cut back to an earlier state by someone who dropped the
        /// triggers).
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<std::path::PathBuf>,
    },
    /// Print the log as JSON lines (one row each, in sequence order), for a SIEM.
    Export {
        /// Only rows with a sequence number above this.
        #[arg(long, default_value_t = 0, value_name = "SEQ")]
        after: i64,
    },
}

pub(super) async fn run(cmd: AuditCommand, config: Config) -> Result<i32, CliError> {
    let checkpoints = match cmd {
        AuditCommand::Export { after } => return export(&config, after).await,
        AuditCommand::Verify { checkpoints } => checkpoints,
    };
    let store = open_store(&config).await?;
    // Checkpoint seals are checked when this KEK is at hand (never created here).
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let kek = match crate::keys::open_existing(&config.kek, store.as_ref(), now).await {
        Ok(primary) => {
            let mut previous = Vec::new();
            for spec in &config.kek_previous {
                if let Ok(k) = crate::keys::open_existing(spec, store.as_ref(), now).await {
                    previous.push(k);
                }
            }
            Some(crate::keys::KekRing::new(primary, previous))
        }
        Err(_) => None,
    };
    let kek_ref = kek.as_ref().map(|k| k as &dyn crate::keys::KekSource);
    if kek.is_none() {
        eprintln!(
            "note: the KEK of {} cannot be opened: checkpoint seals are not checked",
            config.kek
        );
    }
    match admin::audit::verify(store.as_ref(), kek_ref).await? {
        VerifyReport::Intact { rows, head } => {
            println!("audit chain intact: {rows} rows, head {head}");
        }
        VerifyReport::Broken { seq, reason } => {
            println!("audit chain BROKEN at row {seq}: {reason}");
            return Ok(1);
        }
    }
    let Some(path) = checkpoints else {
        return Ok(0);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    match admin::audit::verify_anchors(store.as_ref(), kek_ref, &text).await? {
        admin::audit::AnchorReport::Held { anchors, unsealed } => {
            println!("anchors hold: {anchors} in {}", path.display());
            if unsealed > 0 {
                println!("note: {unsealed} sealed by another KEK: their seals were not checked");
            }
            Ok(0)
        }
        admin::audit::AnchorReport::Broken { line, reason } => {
            println!("audit log BROKEN: {}:{line}: {reason}", path.display());
            Ok(1)
        }
    }
}

/// JSON lines of every row after `after`, page by page.
async fn export(config: &Config, mut after: i64) -> Result<i32, CliError> {
    use std::io::Write;
    if after < 0 {
        return Err(CliError::Other("--after must be 0 or more".into()));
    }
    let store = open_store(config).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    const PAGE: i64 = 5_000;
    loop {
        let page = store.audit_page(after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for r in page {
            let line = serde_json::json!({
                "chain": r.chain, "seq": r.seq, "ts": r.ts, "realm": r.realm, "kind": r.kind,
                "actor": r.actor, "subject": r.subject,
                "detail": serde_json::from_str::<serde_json::Value>(&r.detail).unwrap_or(serde_json::Value::String(r.detail)),
                "prev_hash": r.prev_hash, "hash": r.hash,
            });
            writeln!(out, "{line}").map_err(|e| CliError::Other(e.to_string()))?;
        }
        after += PAGE;
    }
    out.flush().map_err(|e| CliError::Other(e.to_string()))?;
    Ok(0)
}
