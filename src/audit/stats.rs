//! Counters of the audit chain's write path, kept by the process: how many batches and records
//! committed, how long a batch took from its first statement to its commit, and how long it
//! waited for the chain's head row (the one lock every writer of a deployment takes in turn).
//! Read by `/metrics` and by `bench/`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct AuditStats {
    batches: AtomicU64,
    records: AtomicU64,
    failed_batches: AtomicU64,
    commit_nanos: AtomicU64,
    head_waits: AtomicU64,
    head_wait_nanos: AtomicU64,
    queued: AtomicI64,
}

/// A point-in-time copy of [`AuditStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AuditSnapshot {
    pub batches: u64,
    pub records: u64,
    pub failed_batches: u64,
    pub commit_seconds: f64,
    pub head_waits: u64,
    pub head_wait_seconds: f64,
    pub queued: i64,
}

/// The process's counters. One chain writer per process, so one set.
pub static STATS: AuditStats = AuditStats {
    batches: AtomicU64::new(0),
    records: AtomicU64::new(0),
    failed_batches: AtomicU64::new(0),
    commit_nanos: AtomicU64::new(0),
    head_waits: AtomicU64::new(0),
    head_wait_nanos: AtomicU64::new(0),
    queued: AtomicI64::new(0),
};

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl AuditStats {
    /// One batch of the group-commit writer finished (committed or not) after `took`.
    pub fn batch(&self, records: usize, took: Duration, committed: bool) {
        if committed {
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.records.fetch_add(records as u64, Ordering::Relaxed);
            self.commit_nanos.fetch_add(nanos(took), Ordering::Relaxed);
        } else {
            self.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A transaction appending to the chain obtained the head row's lock after `waited`.
    pub fn head_wait(&self, waited: Duration) {
        self.head_waits.fetch_add(1, Ordering::Relaxed);
        self.head_wait_nanos
            .fetch_add(nanos(waited), Ordering::Relaxed);
    }

    pub fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dequeued(&self, n: usize) {
        self.queued.fetch_sub(n as i64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> AuditSnapshot {
        AuditSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            commit_seconds: self.commit_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            head_waits: self.head_waits.load(Ordering::Relaxed),
            head_wait_seconds: self.head_wait_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            queued: self.queued.load(Ordering::Relaxed).max(0),
        }
    }
}
