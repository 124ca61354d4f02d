//! Single-use `jti`s (client assertions, DPoP proofs at the token endpoint), claimed in the
//! database so that every node refuses a replay, and claimed in groups: concurrent requests'
//! claims share one transaction (one durable commit), as the audit writer's records do. A claim
//! is answered once its transaction has committed.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{SingleUse, Store};

/// Most claims in one transaction.
const BATCH_MAX: usize = 256;

struct Job {
    claim: SingleUse,
    done: oneshot::Sender<Result<bool, ()>>,
}

#[derive(Clone)]
pub struct Replay {
    tx: mpsc::Sender<Job>,
    deadline: Duration,
}

impl Replay {
    pub fn spawn(store: std::sync::Arc<dyn Store>, deadline: Duration) -> Replay {
        let (tx, rx) = mpsc::channel(BATCH_MAX * 8);
        tokio::spawn(run(store, rx, deadline));
        Replay { tx, deadline }
    }

    /// Claims `key` until `expires_at`: `Ok(true)` the first time anywhere, `Ok(false)` for a
    /// replay, `Err` when the database did not answer in time (the caller answers 503).
    pub async fn claim(&self, realm: &str, key: String, expires_at: i64) -> Result<bool, ()> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            claim: SingleUse {
                realm: realm.to_owned(),
                key,
                expires_at,
            },
            done,
        };
        let answered = async {
            self.tx.send(job).await.map_err(|_| ())?;
            wait.await.map_err(|_| ())?
        };
        tokio::time::timeout(self.deadline, answered)
            .await
            .map_err(|_| ())?
    }
}

async fn run(store: std::sync::Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, deadline: Duration) {
    let mut jobs: Vec<Job> = Vec::with_capacity(BATCH_MAX);
    loop {
        if rx.recv_many(&mut jobs, BATCH_MAX).await == 0 {
            return;
        }
        // As the audit writer: let the requests runnable now join this batch (no timer).
        if jobs.len() < BATCH_MAX {
            tokio::task::yield_now().await;
            while jobs.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let (claims, waiters): (Vec<SingleUse>, Vec<_>) =
            jobs.drain(..).map(|j| (j.claim, j.done)).unzip();
        match tokio::time::timeout(deadline, store.spend_many(&claims)).await {
            Ok(Ok(won)) => {
                for (done, w) in waiters.into_iter().zip(won) {
                    let _ = done.send(Ok(w));
                }
            }
            outcome => {
                match outcome {
                    Ok(Err(e)) => tracing::error!(error = %e, "single-use claims failed"),
                    _ => tracing::error!("single-use claims: no answer in time"),
                }
                for done in waiters {
                    let _ = done.send(Err(()));
                }
            }
        }
    }
}
