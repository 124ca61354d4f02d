//! Group commit: requests queue their audit records; one task writes whatever has queued in one
//! transaction and then answers every waiter, so a response leaves only after its record is durable
//! while the database sees one commit per batch instead of one per token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::AuditDraft;
use super::stats::STATS;
use crate::store::{AuditSession, SingleUse, Store, StoreError};

#[derive(Debug, thiserror::Error)]
#[error("the audit log could not be written")]
pub struct AuditUnavailable;

enum Job {
    Record {
        draft: AuditDraft,
        done: oneshot::Sender<Result<i64, AuditUnavailable>>,
    },
    /// A single-use key (a client assertion's or DPoP proof's `jti`), claimed on the writer's
    /// connection: on SQLite a second writing connection would queue for the one write lock,
    /// in the database's busy-wait sleeps.
    Claim {
        claim: SingleUse,
        done: oneshot::Sender<Result<bool, AuditUnavailable>>,
    },
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    deadline: Duration,
}

impl AuditWriter {
    /// Whether the writer can take records now: its task is running and its queue is less than
    /// three-quarters full. The error says what is wrong (for `/readyz`).
    pub fn health(&self) -> Result<(), String> {
        if self.tx.is_closed() {
            return Err("the audit writer has stopped".into());
        }
        let (max, free) = (self.tx.max_capacity(), self.tx.capacity());
        if free < max / 4 {
            return Err(format!(
                "the audit writer is backed up: {} of {max} queue slots in use",
                max - free
            ));
        }
        Ok(())
    }

    /// Starts the writer task. `batch_max` bounds one transaction; the queue holds a few batches
    /// so a stalled database pushes back on callers instead of growing memory. A batch not
    /// committed within `deadline` fails: its callers answer 503 rather than wait on a database
    /// that does not answer.
    pub fn spawn(store: Arc<dyn Store>, batch_max: usize, deadline: Duration) -> AuditWriter {
        let (tx, rx) = mpsc::channel(batch_max * 8);
        tokio::spawn(run(store, rx, batch_max, deadline));
        AuditWriter { tx, deadline }
    }

    /// Appends one record and waits until it is committed; returns its sequence number. Gives up
    /// after the writer's deadline counted from now (a queue behind a stalled batch does not add
    /// up): the record may still commit after that, so an abandoned token is recorded as issued
    /// though it never left, never the other way round.
    pub async fn record(&self, draft: AuditDraft) -> Result<i64, AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        let committed = async {
            STATS.enqueued();
            if self.tx.send(Job::Record { draft, done }).await.is_err() {
                STATS.dequeued(1);
                return Err(AuditUnavailable);
            }
            wait.await.map_err(|_| AuditUnavailable)?
        };
        tokio::time::timeout(self.deadline, committed)
            .await
            .map_err(|_| AuditUnavailable)?
    }
}

impl AuditWriter {
    /// Claims `claim.key` until its expiry: `Ok(true)` the first time on any node, `Ok(false)` for
    /// a replay. Claims queued together commit together (one transaction, before the batch's
    /// records); the answer comes once that transaction is durable.
    pub async fn claim(&self, claim: SingleUse) -> Result<bool, AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        let answered = async {
            self.tx
                .send(Job::Claim { claim, done })
                .await
                .map_err(|_| AuditUnavailable)?;
            wait.await.map_err(|_| AuditUnavailable)?
        };
        tokio::time::timeout(self.deadline, answered)
            .await
            .map_err(|_| AuditUnavailable)?
    }
}

/// A key's `max_exp` is kept rounded up to this many seconds, so the store raises it about once a
/// minute per key instead of on every batch. Rounding up only keeps a retired key published longer.
const MAX_EXP_GRANULE: i64 = 60;

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    batch_max: usize,
    deadline: Duration,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(batch_max);
    // The writer's own connection, opened on first use and again after a failure.
    let mut session: Option<Box<dyn AuditSession>> = None;
    // (realm, kid) -> the max_exp this node last committed.
    let mut written: HashMap<(String, String), i64> = HashMap::new();
    loop {
        if rx.recv_many(&mut jobs, batch_max).await == 0 {
            return; // every sender is gone: the server is shutting down
        }
        // Let the requests that are runnable right now (signed, about to queue their record) run
        // first and join this batch: one pass of the scheduler, no timer, so an idle node adds no
        // latency while a busy one writes fewer, larger batches.
        if jobs.len() < batch_max {
            tokio::task::yield_now().await;
            while jobs.len() < batch_max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut claims: Vec<SingleUse> = Vec::new();
        let mut claimers = Vec::new();
        let mut drafts: Vec<AuditDraft> = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            match job {
                Job::Record { draft, done } => {
                    drafts.push(draft);
                    waiters.push(done);
                }
                Job::Claim { claim, done } => {
                    claims.push(claim);
                    claimers.push(done);
                }
            }
        }
        STATS.dequeued(drafts.len());
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
        let started = Instant::now();
        // The claims of this batch and its records commit in one transaction.
        let appended =
            match tokio::time::timeout(deadline, append(&store, &mut session, &claims, &drafts))
                .await
            {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
            };
        if appended.is_err()
            && let Some(s) = session.take()
        {
            s.discard();
        }
        STATS.batch(drafts.len(), started.elapsed(), appended.is_ok());
        match appended {
            Ok((won, seqs)) => {
                for (done, w) in claimers.into_iter().zip(won) {
                    let _ = done.send(Ok(w));
                }
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
                tracing::error!(error = %e, batch = drafts.len(), claims = claimers.len(), "audit append failed");
                for done in claimers {
                    let _ = done.send(Err(AuditUnavailable));
                }
                for done in waiters {
                    let _ = done.send(Err(AuditUnavailable));
                }
            }
        }
    }
}

/// Appends one batch on the writer's connection, opening it first if there is none.
async fn append(
    store: &Arc<dyn Store>,
    session: &mut Option<Box<dyn AuditSession>>,
    claims: &[SingleUse],
    drafts: &[AuditDraft],
) -> Result<(Vec<bool>, Vec<i64>), StoreError> {
    let conn = match session {
        Some(conn) => conn,
        None => session.insert(store.audit_session().await?),
    };
    conn.claim_and_append(claims, drafts).await
}
