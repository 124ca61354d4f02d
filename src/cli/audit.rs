//! `sigil audit verify`: walk the audit hash chain.

use clap::Subcommand;

use crate::admin;
use crate::audit::VerifyReport;
use crate::config::Config;

use super::{CliError, open_store};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exits 1 and names the first broken row if it is broken.
    Verify,
}

pub(super) async fn run(cmd: AuditCommand, config: Config) -> Result<i32, CliError> {
    let AuditCommand::Verify = cmd;
    let store = open_store(&config).await?;
    // Checkpoint seals are checked when this KEK is at hand (never created here).
    let kek = crate::keys::FileKek::load(&config.kek_file).ok();
    let kek_ref = kek.as_ref().map(|k| k as &dyn crate::keys::KekSource);
    if kek.is_none() {
        eprintln!(
            "note: no KEK at {}: checkpoint seals are not checked",
            config.kek_file.display()
        );
    }
    match admin::audit::verify(store.as_ref(), kek_ref).await? {
        VerifyReport::Intact { rows, head } => {
            println!("audit chain intact: {rows} rows, head {head}");
            Ok(0)
        }
        VerifyReport::Broken { seq, reason } => {
            println!("audit chain BROKEN at row {seq}: {reason}");
            Ok(1)
        }
    }
}
