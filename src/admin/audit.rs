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

/// What checking the anchors found: how many held, or the first that does not.
#[derive(Debug, PartialEq, Eq)]
pub enum AnchorReport {
    /// Every anchor's heads are rows of the log (`unsealed`: sealed by another KEK, so their seal
    /// was not checked).
    Held {
        anchors: usize,
        unsealed: usize,
    },
    Broken {
        line: usize,
        reason: String,
    },
}

/// Checks anchors (the lines of an `audit_anchor_file`) against the log: each line's seal, with
/// `kek`, and that every head it names is the row at that `seq` in that chain, with that hash. A
/// log cut back behind an anchor (rows and heads together, triggers dropped) names no such row.
pub async fn verify_anchors(
    store: &dyn Store,
    kek: Option<&dyn KekSource>,
    text: &str,
) -> Result<AnchorReport, AdminError> {
    use std::collections::HashMap;
    // (chain, seq) -> (hash, first line naming it)
    let mut wanted: HashMap<(String, i64), (String, usize)> = HashMap::new();
    let (mut anchors, mut unsealed) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let claims = match checkpoint::claims(line, kek) {
            Ok(c) => c,
            Err(e) => {
                return Ok(AnchorReport::Broken {
                    line: n,
                    reason: format!("not an anchor: {e}"),
                });
            }
        };
        match claims.sealed {
            Some(true) => {}
            Some(false) => {
                return Ok(AnchorReport::Broken {
                    line: n,
                    reason: "its seal does not hold (edited, or not made with this KEK)".into(),
                });
            }
            None => unsealed += 1,
        }
        anchors += 1;
        for h in claims.heads {
            wanted.entry((h.chain, h.seq)).or_insert((h.hash, n));
        }
    }
    let mut found: std::collections::HashSet<(String, i64)> = Default::default();
    let mut after = 0;
    while found.len() < wanted.len() {
        let page = store.audit_page(after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            let key = (row.chain, row.seq);
            if let Some((hash, line)) = wanted.get(&key) {
                if *hash != row.hash {
                    return Ok(AnchorReport::Broken {
                        line: *line,
                        reason: format!(
                            "row {} of chain {} is not the row it names (rewritten)",
                            key.1, key.0
                        ),
                    });
                }
                found.insert(key);
            }
        }
        after += PAGE;
    }
    // The earliest anchor that names a row no longer there.
    if let Some(((chain, seq), (_, line))) = wanted
        .iter()
        .filter(|(k, _)| !found.contains(*k))
        .min_by_key(|(_, (_, line))| *line)
    {
        return Ok(AnchorReport::Broken {
            line: *line,
            reason: format!(
                "chain {chain} has no row {seq}: the log was cut back behind this anchor"
            ),
        });
    }
    Ok(AnchorReport::Held { anchors, unsealed })
}
