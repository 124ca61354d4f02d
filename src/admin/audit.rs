//! Walking the audit chain from the database, page by page, and checking its stored head.

use super::AdminError;
use crate::audit::VerifyReport;
use crate::audit::chain::ChainWalker;
use crate::store::Store;

pub async fn verify(store: &dyn Store) -> Result<VerifyReport, AdminError> {
    let mut walker = ChainWalker::default();
    loop {
        loop {
            let page = store.audit_page(walker.last_seq(), 5_000).await?;
            if page.is_empty() {
                break;
            }
            for row in &page {
                if let Err((seq, reason)) = walker.step(row) {
                    return Ok(VerifyReport::Broken { seq, reason });
                }
            }
        }
        // Read after the walk: appends commit their rows and the head together, so an honest
        // head is at or past the last row read. Past it means rows arrived meanwhile: walk those.
        let head = store.audit_head().await?;
        if head
            .as_ref()
            .is_some_and(|(seq, _)| *seq > walker.last_seq())
            && !store.audit_page(walker.last_seq(), 1).await?.is_empty()
        {
            continue;
        }
        return Ok(
            match walker.check_head(head.as_ref().map(|(seq, hash)| (*seq, hash.as_str()))) {
                Ok(()) => walker.finish(),
                Err((seq, reason)) => VerifyReport::Broken { seq, reason },
            },
        );
    }
}
