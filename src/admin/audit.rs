//! Walking every audit chain from the database, page by page, checking their stored heads and the
//! checkpoints that bind them.

use super::AdminError;
use crate::audit::VerifyReport;
use crate::audit::chain::{ChainSet, GENESIS_HASH};
use crate::audit::checkpoint;
use crate::keys::KekSource;
use crate::store::Store;

const PAGE: i64 = 5_000;

/// Verifies every chain. With `kek`, each checkpoint's seal is checked too (a checkpoint sealed by
/// another KEK is only checked against the rows).
pub async fn verify(
    store: &dyn Store,
    kek: Option<&dyn KekSource>,
) -> Result<VerifyReport, AdminError> {
    let mut set = ChainSet::default();
    let mut checkpoints: Vec<(String, i64, String)> = Vec::new();
    let mut after = 0;
    // Rows walked when the heads were last read: another pass only while passes find rows.
    let mut walked = u64::MAX;
    loop {
        loop {
            let page = store.audit_page(after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for row in &page {
                if let Err((seq, reason)) = set.step(row) {
                    return Ok(VerifyReport::Broken { seq, reason });
                }
                if row.kind == checkpoint::KIND {
                    checkpoints.push((row.chain.clone(), row.seq, row.detail.clone()));
                }
            }
            after += PAGE;
        }
        // Read after the walk: appends commit their rows and head together, so an honest head is
        // at or past the last row read. Past it means rows arrived meanwhile: walk those too
        // (from the earliest chain that moved; rows already walked are skipped).
        let heads = store.audit_heads().await?;
        let behind = heads
            .iter()
            .filter(|(chain, seq, _)| *seq > set.last_seq(chain))
            .map(|(chain, _, _)| set.last_seq(chain))
            .min();
        if let Some(from) = behind
            && (walked == u64::MAX || set.rows() > walked)
        {
            walked = set.rows();
            after = (from / PAGE) * PAGE;
            continue;
        }
        if let Err((seq, reason)) = set.check_heads(&heads) {
            return Ok(VerifyReport::Broken { seq, reason });
        }
        break;
    }
    for (chain, seq, detail) in &checkpoints {
        let at = |reason: String| VerifyReport::Broken {
            seq: *seq,
            reason: format!("chain {chain}: checkpoint: {reason}"),
        };
        let claims = match checkpoint::claims(detail, kek) {
            Ok(c) => c,
            Err(e) => return Ok(at(e)),
        };
        if claims.sealed == Some(false) {
            return Ok(at(
                "its seal does not hold (not written with this KEK)".into()
            ));
        }
        for head in &claims.heads {
            if head.seq == 0 {
                if head.hash != GENESIS_HASH {
                    return Ok(at(format!(
                        "names a chain {} at 0 that is not at genesis",
                        head.chain
                    )));
                }
                continue;
            }
            if head.seq > set.last_seq(&head.chain) {
                return Ok(at(format!(
                    "names row {} of chain {}, which ends at {} (rows are missing)",
                    head.seq,
                    head.chain,
                    set.last_seq(&head.chain)
                )));
            }
            let rows = store.audit_page(head.seq - 1, 1).await?;
            match rows.iter().find(|r| r.chain == head.chain) {
                Some(r) if r.hash == head.hash => {}
                _ => {
                    return Ok(at(format!(
                        "names row {} of chain {} with another hash than the log's",
                        head.seq, head.chain
                    )));
                }
            }
        }
    }
    Ok(set.finish())
}
