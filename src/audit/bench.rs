//! `sigil bench-chain`: how far one audit chain goes. `writers` tasks, each standing in for one
//! node's group-commit writer, append batches of `batch` token-sized records to the same chain as
//! fast as the database lets them, for `seconds`. Every batch takes the chain's head row and holds
//! it until its commit is durable; when writers spend most of a batch waiting for it, more writers
//! (nodes) add no throughput. For `bench/`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::AuditDraft;
use super::stats::STATS;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy)]
pub struct ChainBench {
    pub records_per_sec: f64,
    pub batches_per_sec: f64,
    /// Mean time from a batch's first statement to its durable commit.
    pub batch_ms: f64,
    /// Mean time a batch waited for the head row.
    pub head_wait_ms: f64,
    /// Share of a batch's time spent waiting for the head row: near 1, the head row (not the
    /// database or this machine) is what every writer waits on.
    pub wait_share: f64,
}

fn drafts(writer: usize, batch: usize, now: i64) -> Vec<AuditDraft> {
    (0..batch)
        .map(|i| {
            // The shape and size of a client_credentials token's record.
            AuditDraft::new(now, Some("bench"), "token.issued", "bench-client")
                .subject("bench-client")
                .detail(json!({
                    "grant_type": "client_credentials",
                    "jti": format!("w{writer}-{i:06}-bench-jti-0123456789"),
                    "scope": "tx:post:ach balances:read",
                    "exp": now + 3600,
                    "kid": "bench-kid-0123456789abcdefghijklmnopqrstuvwxyz",
                    "aud": "ledger",
                }))
        })
        .collect()
}

pub async fn bench_chain(
    store: Arc<dyn Store>,
    writers: usize,
    batch: usize,
    seconds: u64,
    now: i64,
) -> Result<ChainBench, StoreError> {
    // Each writer on a connection of its own, as each node's writer is; warmed up with one batch
    // (statements prepared).
    let mut sessions = Vec::new();
    for w in 0..writers {
        let mut session = store.audit_session().await?;
        session.append(&drafts(w, batch, now)).await?;
        sessions.push(session);
    }
    let before = STATS.snapshot();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (w, mut session) in sessions.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut batches, mut spent) = (0u64, Duration::ZERO);
            while Instant::now() < until {
                let records = drafts(w, batch, now);
                let t = Instant::now();
                session.append(&records).await?;
                spent += t.elapsed();
                batches += 1;
            }
            Ok::<_, StoreError>((batches, spent))
        }));
    }
    let (mut batches, mut spent) = (0u64, Duration::ZERO);
    for t in tasks {
        let (b, s) = t
            .await
            .map_err(|e| StoreError::Conflict(format!("bench writer: {e}")))??;
        batches += b;
        spent += s;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = STATS.snapshot();
    let waited = after.head_wait_seconds - before.head_wait_seconds;
    let b = batches.max(1) as f64;
    Ok(ChainBench {
        records_per_sec: (batches as f64) * batch as f64 / wall,
        batches_per_sec: batches as f64 / wall,
        batch_ms: spent.as_secs_f64() * 1000.0 / b,
        head_wait_ms: waited * 1000.0 / b,
        wait_share: if spent.is_zero() {
            0.0
        } else {
            (waited / spent.as_secs_f64()).min(1.0)
        },
    })
}
