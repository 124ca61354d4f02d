//! The revocation feed's settled entries, held per realm in memory already serialised, so a page
//! is a copy of bytes and a signature rather than thousands of rows read and encoded again.
//!
//! A snapshot holds every entry with `seq <= upto` that was unexpired when it was built; only
//! entries older than [`SETTLE_SECS`](super::revocation_feed::SETTLE_SECS) go in (a lower
//! sequence number may still commit late on PostgreSQL, exactly the rule of the feed's cursor).
//! Whatever is newer is read from the database per request (the tail, small by construction). The
//! snapshot is refreshed at most once per [`REFRESH_SECS`] by one request while others use the one
//! before; it drops expired entries when it is refreshed, and holds at most [`MAX_ENTRIES`] (past
//! that, the rest comes from the database, as before). Entries that expired since the last
//! refresh (within a second) may still be served: a validator ignores them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::login::RevocationRecord;
use crate::store::{Store, StoreError};

/// How stale a snapshot may be (seconds of the server's clock) before a request refreshes it.
/// Entries not in it yet are read from the database, so this bounds work, not freshness.
pub const REFRESH_SECS: i64 = 1;
/// The most entries held per realm: about 105 bytes each (the JSON and its slot), so at most
/// ~26 MB; 100,000 entries take ~10 MB.
pub const MAX_ENTRIES: usize = 250_000;
/// Rows read from the database per query while filling a snapshot.
const FILL_BATCH: i64 = 50_000;

/// One entry's place in the serialised buffer.
#[derive(Clone, Copy)]
struct Slot {
    seq: i64,
    /// End offset (exclusive, after its comma) in `json`; the entry starts where the previous
    /// one ended.
    end: usize,
    exp: i64,
}

/// Settled entries of one realm, serialised back to back (each a JSON object and a comma).
#[derive(Default)]
pub struct Snapshot {
    /// Every settled entry with a sequence number up to this one is here (or expired).
    pub upto: i64,
    json: String,
    slots: Vec<Slot>,
    min_exp: i64,
}

impl Snapshot {
    fn len(&self) -> usize {
        self.slots.len()
    }

    /// The entries after `after`, at most `limit` of them.
    pub fn range(&self, after: i64, limit: usize) -> std::ops::Range<usize> {
        let from = self.slots.partition_point(|s| s.seq <= after);
        from..self.slots.len().min(from.saturating_add(limit))
    }

    /// The sequence number of the last entry of `r`, if it has any.
    pub fn last_seq(&self, r: &std::ops::Range<usize>) -> Option<i64> {
        (r.start < r.end).then(|| self.slots[r.end - 1].seq)
    }

    /// Whether entries follow `r`.
    pub fn more_after(&self, r: &std::ops::Range<usize>) -> bool {
        r.end < self.slots.len()
    }

    /// Appends the entries of `r` to `out`, comma-separated (one copy: they are stored so).
    pub fn write(&self, r: &std::ops::Range<usize>, out: &mut Vec<u8>) {
        if r.start >= r.end {
            return;
        }
        let start = if r.start == 0 {
            0
        } else {
            self.slots[r.start - 1].end
        };
        // Each entry is stored with the comma that follows it; the last one's is left out.
        out.extend_from_slice(&self.json.as_bytes()[start..self.slots[r.end - 1].end - 1]);
    }

    /// This snapshot without the entries expired at `now`, followed by `more` (sorted, settled,
    /// all after `self.upto`, the last of them `upto` unless the cap stops them earlier).
    fn extended(&self, now: i64, more: &[RevocationRecord], upto: i64) -> Snapshot {
        self.extended_within(now, more, upto, MAX_ENTRIES)
    }

    /// `extended`, holding at most `cap` entries: `upto` then stops at the last entry taken (or
    /// passed over as expired), so what did not fit is read from the database, never skipped.
    fn extended_within(
        &self,
        now: i64,
        more: &[RevocationRecord],
        upto: i64,
        cap: usize,
    ) -> Snapshot {
        let mut next = Snapshot {
            upto: self.upto,
            json: String::with_capacity(self.json.len() + more.len() * 100),
            slots: Vec::with_capacity(self.slots.len() + more.len()),
            min_exp: i64::MAX,
        };
        let mut start = 0;
        for s in &self.slots {
            if s.exp > now {
                next.json.push_str(&self.json[start..s.end]);
                next.push_slot(s.seq, s.exp);
            }
            start = s.end;
        }
        let mut taken_all = true;
        for e in more {
            if e.expires_at > now {
                if next.slots.len() >= cap {
                    taken_all = false;
                    break;
                }
                // Plain strings and integers: serialising cannot fail.
                if let Ok(json) = serde_json::to_string(e) {
                    next.json.push_str(&json);
                    next.json.push(',');
                    next.push_slot(e.seq, e.expires_at);
                }
            }
            next.upto = e.seq;
        }
        if taken_all {
            next.upto = next.upto.max(upto);
        }
        next
    }

    fn push_slot(&mut self, seq: i64, exp: i64) {
        self.slots.push(Slot {
            seq,
            end: self.json.len(),
            exp,
        });
        self.min_exp = self.min_exp.min(exp);
    }
}

struct RealmFeed {
    /// The snapshot and the clock second it was refreshed in (`None`: never filled).
    current: Mutex<(Arc<Snapshot>, Option<i64>)>,
    /// One refresher at a time; the others serve the snapshot they find.
    refreshing: tokio::sync::Mutex<()>,
}

impl RealmFeed {
    /// The snapshot held now, and whether it is fresh at `now` (refreshed under
    /// [`REFRESH_SECS`] ago); `None` for the second if it was never filled.
    fn current(&self, now: i64) -> (Arc<Snapshot>, Option<i64>, bool) {
        let (snap, at) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let fresh = at.is_some_and(|t| now >= t && now - t < REFRESH_SECS);
        (snap, at, fresh)
    }
}

/// Every realm's snapshot.
#[derive(Default)]
pub struct FeedSnapshots {
    realms: Mutex<HashMap<String, Arc<RealmFeed>>>,
}

impl FeedSnapshots {
    /// The realm's snapshot, refreshed first if it is older than [`REFRESH_SECS`] and no other
    /// request is refreshing it. `settled`: entries created at or before it are settled.
    pub async fn get(
        &self,
        store: &dyn Store,
        realm: &str,
        now: i64,
        settled: i64,
    ) -> Result<Arc<Snapshot>, StoreError> {
        let feed = {
            let mut map = self.realms.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(realm.to_owned())
                .or_insert_with(|| {
                    Arc::new(RealmFeed {
                        current: Mutex::new((Arc::default(), None)),
                        refreshing: tokio::sync::Mutex::new(()),
                    })
                })
                .clone()
        };
        let (snap, at, fresh) = feed.current(now);
        if fresh {
            return Ok(snap);
        }
        // The first fill waits for whoever does it; later refreshes never make anyone wait.
        let _gate = if at.is_none() {
            feed.refreshing.lock().await
        } else {
            match feed.refreshing.try_lock() {
                Ok(g) => g,
                Err(_) => return Ok(snap),
            }
        };
        // Whoever held the gate before may have refreshed it.
        let (snap, _, fresh) = feed.current(now);
        if fresh {
            return Ok(snap);
        }
        let mut upto = snap.upto;
        let mut more = Vec::new();
        while snap.len() + more.len() < MAX_ENTRIES {
            let rows = store
                .revocations_after(realm, upto, now, FILL_BATCH)
                .await?;
            let full = rows.len() as i64 == FILL_BATCH;
            let before = more.len();
            more.extend(rows.into_iter().take_while(|e| e.created_at <= settled));
            let Some(last) = more.last() else { break };
            upto = last.seq;
            if !full || more.len() - before < FILL_BATCH as usize {
                break;
            }
        }
        let next = if more.is_empty() && snap.min_exp > now {
            snap
        } else {
            Arc::new(snap.extended(now, &more, upto))
        };
        *feed.current.lock().unwrap_or_else(|p| p.into_inner()) = (next.clone(), Some(now));
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, exp: i64) -> RevocationRecord {
        RevocationRecord {
            seq,
            kind: "jti".into(),
            value: format!("v{seq}"),
            not_before: 1,
            created_at: 1,
            expires_at: exp,
        }
    }

    fn page(s: &Snapshot, after: i64, limit: usize) -> (Vec<i64>, Option<i64>) {
        let r = s.range(after, limit);
        let mut out = b"[".to_vec();
        s.write(&r, &mut out);
        out.push(b']');
        let last = s.last_seq(&r);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("json");
        (
            v.iter().map(|e| e["seq"].as_i64().expect("seq")).collect(),
            last,
        )
    }

    #[test]
    fn pages_are_the_entries_after_the_cursor_in_order() {
        let s = Snapshot::default().extended(10, &[entry(2, 20), entry(5, 20), entry(9, 20)], 9);
        assert_eq!(page(&s, 0, 10), (vec![2, 5, 9], Some(9)));
        assert_eq!(page(&s, 2, 1), (vec![5], Some(5)));
        assert_eq!(page(&s, 5, 10), (vec![9], Some(9)));
        assert_eq!(page(&s, 9, 10), (vec![], None));
        assert_eq!(s.upto, 9);
        assert!(s.more_after(&s.range(2, 1)));
        assert!(!s.more_after(&s.range(2, 2)));
    }

    #[test]
    fn what_does_not_fit_under_the_cap_is_left_after_upto() {
        let s = Snapshot::default().extended_within(10, &[entry(1, 20), entry(2, 20)], 2, 3);
        let more = [entry(3, 5), entry(4, 20), entry(5, 20), entry(6, 20)];
        let s = s.extended_within(10, &more, 6, 3);
        // 1, 2 and 4 fit (3 had expired); 5 and 6 are after `upto`, for the database.
        assert_eq!(page(&s, 0, 10), (vec![1, 2, 4], Some(4)));
        assert_eq!(s.upto, 4);
        let s = s.extended_within(10, &[], s.upto, 3);
        assert_eq!(s.upto, 4, "nothing new read: the cursor stays");
    }

    #[test]
    fn a_refresh_drops_what_expired_and_keeps_the_rest_intact() {
        let s = Snapshot::default().extended(10, &[entry(1, 15), entry(2, 30), entry(3, 11)], 3);
        let s = s.extended(12, &[entry(4, 40), entry(5, 12)], 5);
        assert_eq!(page(&s, 0, 10), (vec![1, 2, 4], Some(4)));
        let s = s.extended(20, &[], 5);
        assert_eq!(page(&s, 0, 10), (vec![2, 4], Some(4)));
        let mut out = Vec::new();
        s.write(&s.range(0, 10), &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains(r#""value":"v2""#) && !text.contains("created_at"));
    }
}
