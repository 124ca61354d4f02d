//! Row hashes: `hash = SHA-256(prev_hash || canonical row)`, hex. The canonical form is a JSON
//! array of the row's fields, so no field boundary is ambiguous.

use super::AuditRecord;
use crate::keys::kek::hex;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    prev_hash: &str,
    seq: i64,
    ts: i64,
    realm: Option<&str>,
    kind: &str,
    actor: &str,
    subject: Option<&str>,
    detail: &str,
) -> String {
    let canonical = serde_json::json!([seq, ts, realm, kind, actor, subject, detail]).to_string();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(canonical.as_bytes());
    hex(ctx.finish().as_ref())
}

/// Outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    Intact { rows: u64, head: String },
    Broken { seq: i64, reason: String },
}

/// Incremental verifier: feed rows in `seq` order, page by page.
#[derive(Debug)]
pub struct ChainWalker {
    expected_seq: i64,
    prev_hash: String,
    rows: u64,
}

impl Default for ChainWalker {
    fn default() -> Self {
        ChainWalker {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            rows: 0,
        }
    }
}

impl ChainWalker {
    /// Checks one row; `Err((seq, reason))` names the first broken one.
    pub fn step(&mut self, r: &AuditRecord) -> Result<(), (i64, String)> {
        if r.seq != self.expected_seq {
            return Err((
                r.seq,
                format!(
                    "expected seq {}, found {} (a row is missing)",
                    self.expected_seq, r.seq
                ),
            ));
        }
        if r.prev_hash != self.prev_hash {
            return Err((r.seq, "prev_hash does not match the previous row".into()));
        }
        let want = row_hash(
            &r.prev_hash,
            r.seq,
            r.ts,
            r.realm.as_deref(),
            &r.kind,
            &r.actor,
            r.subject.as_deref(),
            &r.detail,
        );
        if want != r.hash {
            return Err((r.seq, "content does not match its hash".into()));
        }
        self.prev_hash = r.hash.clone();
        self.expected_seq += 1;
        self.rows += 1;
        Ok(())
    }

    /// The `seq` of the last row walked (0 before any).
    pub fn last_seq(&self) -> i64 {
        self.expected_seq - 1
    }

    /// Checks the stored chain head (`audit_head`: seq and hash) against the last row walked. The
    /// head is what appenders chain onto, so a head that is missing, behind, ahead of the rows or
    /// holding another hash is a broken chain: an edit there hides deleted tail rows or lets
    /// appends start a fork.
    pub fn check_head(&self, head: Option<(i64, &str)>) -> Result<(), (i64, String)> {
        let last = self.last_seq();
        match head {
            None => Err((last, "the audit_head row is missing".into())),
            Some((seq, _)) if seq > last => Err((
                last + 1,
                format!(
                    "audit_head names row {seq} but the log ends at row {last} (rows at the end are missing)"
                ),
            )),
            Some((seq, _)) if seq < last => Err((
                last,
                format!("audit_head names row {seq} but the log goes on to row {last}"),
            )),
            Some((_, hash)) if hash != self.prev_hash => {
                Err((last, format!("audit_head's hash does not match row {last}")))
            }
            Some(_) => Ok(()),
        }
    }

    pub fn finish(self) -> VerifyReport {
        VerifyReport::Intact {
            rows: self.rows,
            head: self.prev_hash,
        }
    }
}

/// Verifies a whole chain held in memory (tests; the CLI pages through [`ChainWalker`]).
pub fn verify_chain<'a>(rows: impl IntoIterator<Item = &'a AuditRecord>) -> VerifyReport {
    let mut w = ChainWalker::default();
    for r in rows {
        if let Err((seq, reason)) = w.step(r) {
            return VerifyReport::Broken { seq, reason };
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let detail = format!(r#"{{"n":{seq}}}"#);
                let hash = row_hash(&prev, seq, 100 + seq, Some("r"), "k", "a", None, &detail);
                let rec = AuditRecord {
                    seq,
                    ts: 100 + seq,
                    realm: Some("r".into()),
                    kind: "k".into(),
                    actor: "a".into(),
                    subject: None,
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                rec
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert!(matches!(
            verify_chain(&chain(5)),
            VerifyReport::Intact { rows: 5, .. }
        ));
    }

    #[test]
    fn the_head_must_name_the_last_row() {
        let c = chain(3);
        let mut w = ChainWalker::default();
        for r in &c {
            w.step(r).expect("intact");
        }
        let last = c[2].hash.as_str();
        assert!(w.check_head(Some((3, last))).is_ok());
        assert_eq!(w.check_head(None).map_err(|e| e.0), Err(3));
        assert_eq!(w.check_head(Some((4, last))).map_err(|e| e.0), Err(4));
        assert_eq!(w.check_head(Some((2, &c[1].hash))).map_err(|e| e.0), Err(3));
        assert_eq!(w.check_head(Some((3, &c[1].hash))).map_err(|e| e.0), Err(3));
        // An empty log matches the genesis head.
        assert!(
            ChainWalker::default()
                .check_head(Some((0, GENESIS_HASH)))
                .is_ok()
        );
    }

    #[test]
    fn edited_missing_or_reordered_rows_are_named() {
        let mut c = chain(5);
        c[2].actor = "mallory".into();
        assert!(matches!(
            verify_chain(&c),
            VerifyReport::Broken { seq: 3, .. }
        ));
        let mut c = chain(5);
        c.remove(1);
        assert!(matches!(
            verify_chain(&c),
            VerifyReport::Broken { seq: 3, .. }
        ));
        let mut c = chain(5);
        // Recomputing the edited row's own hash still breaks the link to the next row.
        c[1].detail = "{}".into();
        c[1].hash = row_hash(&c[1].prev_hash, 2, c[1].ts, Some("r"), "k", "a", None, "{}");
        assert!(matches!(
            verify_chain(&c),
            VerifyReport::Broken { seq: 3, .. }
        ));
    }
}
