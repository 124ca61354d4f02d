//! Walking the audit chain from the database, page by page.

use super::AdminError;
use crate::audit::VerifyReport;
use crate::audit::chain::ChainWalker;
use crate::store::Store;

pub async fn verify(store: &dyn Store) -> Result<VerifyReport, AdminError> {
    let mut walker = ChainWalker::default();
    let mut after = 0;
    loop {
        let page = store.audit_page(after, 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(walker.finish());
        };
        after = last.seq;
        for row in &page {
            if let Err((seq, reason)) = walker.step(row) {
                return Ok(VerifyReport::Broken { seq, reason });
            }
        }
    }
}
