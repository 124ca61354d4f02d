//! Refusals of anonymous requests (an unknown client at `/authorize`, a malformed grant, a bad
//! CSRF token, a wrong secret for a claimed client id) are counted, not written one by one: every
//! `period` the tally becomes one audit row per (realm, kind, address, reason, claimed actor) with
//! its count. A flood therefore grows the log by at most `MAX_KEYS + 1` rows per period, however
//! fast it comes, while what an authenticated client or a signed-in user does is still written
//! individually by its caller.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use super::AuditDraft;
use crate::clock::UnixTime;

/// Distinct keys kept per period; beyond them, refusals are counted in one overflow row.
pub const MAX_KEYS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    realm: Option<String>,
    kind: &'static str,
    address: String,
    reason: String,
    actor: String,
}

#[derive(Default)]
struct Counts {
    since: Option<UnixTime>,
    by_key: HashMap<Key, u64>,
    overflow: u64,
}

#[derive(Default)]
pub struct RefusalTally {
    counts: Mutex<Counts>,
}

/// One anonymous refusal.
pub struct Refused<'a> {
    pub realm: Option<&'a str>,
    /// The event kind the row will carry (`token.refused`, `login.refused`, ...).
    pub kind: &'static str,
    /// The client address, or `(unknown)`.
    pub address: String,
    pub reason: &'a str,
    /// Who the request claimed to be (a well-formed client id or username), or `(anonymous)`.
    pub actor: &'a str,
}

impl RefusalTally {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, r: Refused<'_>, now: UnixTime) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.since.get_or_insert(now);
        let key = Key {
            realm: r.realm.map(str::to_owned),
            kind: r.kind,
            address: r.address,
            reason: r.reason.chars().take(64).collect(),
            actor: r.actor.chars().take(128).collect(),
        };
        if let Some(n) = c.by_key.get_mut(&key) {
            *n += 1;
        } else if c.by_key.len() < MAX_KEYS {
            c.by_key.insert(key, 1);
        } else {
            c.overflow += 1;
        }
    }

    /// Everything counted since the last drain, as audit drafts (one per key, plus an overflow
    /// row), each with its count and the period it covers.
    pub fn drain(&self, now: UnixTime) -> Vec<AuditDraft> {
        let (since, by_key, overflow) = {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let taken = std::mem::take(&mut *c);
            (taken.since, taken.by_key, taken.overflow)
        };
        let Some(since) = since else {
            return Vec::new();
        };
        let mut rows: Vec<AuditDraft> = by_key
            .into_iter()
            .map(|(k, count)| {
                AuditDraft::new(now, k.realm.as_deref(), k.kind, &k.actor).detail(json!({
                    "reason": k.reason,
                    "address": k.address,
                    "count": count,
                    "from": since,
                    "to": now,
                    "aggregated": true,
                }))
            })
            .collect();
        rows.sort_by(|a, b| a.kind.cmp(b.kind).then(a.actor.cmp(&b.actor)));
        if overflow > 0 {
            rows.push(
                AuditDraft::new(now, None, "refusals.overflow", "(many)").detail(json!({
                    "count": overflow,
                    "from": since,
                    "to": now,
                    "aggregated": true,
                })),
            );
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(address: &str, reason: &'static str) -> Refused<'static> {
        Refused {
            realm: Some("r"),
            kind: "token.refused",
            address: address.to_owned(),
            reason,
            actor: "(anonymous)",
        }
    }

    #[test]
    fn a_flood_becomes_a_bounded_number_of_rows() {
        let t = RefusalTally::new();
        for _ in 0..10_000 {
            t.add(refused("10.0.0.1", "unsupported_grant_type"), 100);
        }
        for i in 0..5_000 {
            t.add(refused(&format!("10.1.{}.{}", i / 256, i % 256), "x"), 101);
        }
        let rows = t.drain(160);
        assert_eq!(rows.len(), MAX_KEYS + 1);
        let total: u64 = rows
            .iter()
            .map(|r| r.detail["count"].as_u64().expect("count"))
            .sum();
        assert_eq!(total, 15_000, "every refusal is counted");
        assert!(t.drain(170).is_empty(), "drained");
    }
}
