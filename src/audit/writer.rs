//! Group commit: requests queue their audit records; one task writes whatever has queued in one
//! transaction and then answers every waiter, so a response leaves only after its record is durable
//! while the database sees one commit per batch instead of one per token.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::AuditDraft;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
#[error("the audit log could not be written")]
pub struct AuditUnavailable;

struct Job {
    draft: AuditDraft,
    done: oneshot::Sender<Result<i64, AuditUnavailable>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
}

impl AuditWriter {
    /// Starts the writer task. `batch_max` bounds one transaction; the queue holds a few batches
    /// so a stalled database pushes back on callers instead of growing memory.
    pub fn spawn(store: Arc<dyn Store>, batch_max: usize) -> AuditWriter {
        let (tx, rx) = mpsc::channel(batch_max * 8);
        tokio::spawn(run(store, rx, batch_max));
        AuditWriter { tx }
    }

    /// Appends one record and waits until it is committed; returns its sequence number.
    pub async fn record(&self, draft: AuditDraft) -> Result<i64, AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { draft, done })
            .await
            .map_err(|_| AuditUnavailable)?;
        wait.await.map_err(|_| AuditUnavailable)?
    }
}

/// A key's `max_exp` is kept rounded up to this many seconds, so the store raises it about once a
/// minute per key instead of on every batch. Rounding up only keeps a retired key published longer.
const MAX_EXP_GRANULE: i64 = 60;

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut jobs: Vec<Job> = Vec::with_capacity(batch_max);
    // (realm, kid) -> the max_exp this node last committed.
    let mut written: HashMap<(String, String), i64> = HashMap::new();
    loop {
        if rx.recv_many(&mut jobs, batch_max).await == 0 {
            return; // every sender is gone: the server is shutting down
        }
        let (mut drafts, waiters): (Vec<AuditDraft>, Vec<_>) =
            jobs.drain(..).map(|j| (j.draft, j.done)).unzip();
        let mut raised: Vec<((String, String), i64)> = Vec::new();
        for d in &mut drafts {
            let (Some(realm), Some((kid, exp))) = (&d.realm, &mut d.signed_with) else {
                continue;
            };
            *exp = exp.div_euclid(MAX_EXP_GRANULE) * MAX_EXP_GRANULE + MAX_EXP_GRANULE;
            let key = (realm.clone(), kid.clone());
            if written.get(&key).is_some_and(|w| *w >= *exp)
                || raised.iter().any(|(k, e)| *k == key && *e >= *exp)
            {
                d.signed_with = None;
            } else {
                raised.push((key, *exp));
            }
        }
        match store.append_audit(&drafts).await {
            Ok(seqs) => {
                if written.len() > 10_000 {
                    written.clear();
                }
                for (key, exp) in raised {
                    let w = written.entry(key).or_insert(exp);
                    *w = (*w).max(exp);
                }
                for (done, seq) in waiters.into_iter().zip(seqs) {
                    let _ = done.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = drafts.len(), "audit append failed");
                for done in waiters {
                    let _ = done.send(Err(AuditUnavailable));
                }
            }
        }
    }
}
