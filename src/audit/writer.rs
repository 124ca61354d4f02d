//! Group commit: requests queue their audit records; one task writes whatever has queued in one
//! transaction and then answers every waiter, so a response leaves only after its record is durable
//! while the database sees one commit per batch instead of one per token.

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

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut jobs: Vec<Job> = Vec::with_capacity(batch_max);
    loop {
        if rx.recv_many(&mut jobs, batch_max).await == 0 {
            return; // every sender is gone: the server is shutting down
        }
        let (drafts, waiters): (Vec<AuditDraft>, Vec<_>) =
            jobs.drain(..).map(|j| (j.draft, j.done)).unzip();
        match store.append_audit(&drafts).await {
            Ok(seqs) => {
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
