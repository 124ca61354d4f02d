//! Row hashes: `hash = SHA-256(prev_hash || canonical row)`, hex. The canonical form is a JSON
//! array of the row's fields, so no field boundary is ambiguous. Each chain (`main`, or one per
//! node) links its own rows from the genesis hash; rows of a chain other than `main` put the chain's
//! name first in their canonical form, so a row cannot be moved from one chain to another.

use std::collections::BTreeMap;

use super::AuditRecord;
use crate::keys::kek::hex;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The chain of a single-chain deployment, and of every row written before chains existed.
pub const MAIN_CHAIN: &str = "main";

/// What comes before a row's seq in its canonical form: `[` on `main`, `["<chain>",` elsewhere.
pub fn canonical_prefix(chain: &str) -> String {
    if chain == MAIN_CHAIN {
        "[".to_owned()
    } else {
        format!("[{},", serde_json::Value::from(chain))
    }
}

/// [`row_hash`] of a row on `chain`.
#[allow(clippy::too_many_arguments)]
pub fn chain_row_hash(
    chain: &str,
    prev_hash: &str,
    seq: i64,
    ts: i64,
    realm: Option<&str>,
    kind: &str,
    actor: &str,
    subject: Option<&str>,
    detail: &str,
) -> String {
    if chain == MAIN_CHAIN {
        return row_hash(prev_hash, seq, ts, realm, kind, actor, subject, detail);
    }
    digest(
        prev_hash,
        &(chain, seq, ts, realm, kind, actor, subject, detail),
    )
}

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
    digest(prev_hash, &(seq, ts, realm, kind, actor, subject, detail))
}

/// `SHA-256(prev_hash || canonical)`, hex, where `canonical` is the fields serialised as one
/// compact JSON array (serde writes a tuple as an array: the same bytes as a `json!` array of the
/// same values, written straight into one buffer instead of through a tree of values).
fn digest(prev_hash: &str, fields: &impl serde::Serialize) -> String {
    let mut canonical = Vec::with_capacity(512);
    // Writing strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut canonical, fields);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&canonical);
    hex(ctx.finish().as_ref())
}

/// Outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    Intact { rows: u64, head: String },
    Broken { seq: i64, reason: String },
}

/// Incremental verifier of one chain: feed its rows in `seq` order, page by page.
#[derive(Debug)]
pub struct ChainWalker {
    chain: String,
    expected_seq: i64,
    prev_hash: String,
    rows: u64,
}

impl Default for ChainWalker {
    fn default() -> Self {
        ChainWalker::for_chain(MAIN_CHAIN)
    }
}

impl ChainWalker {
    pub fn for_chain(chain: &str) -> Self {
        ChainWalker {
            chain: chain.to_owned(),
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            rows: 0,
        }
    }

    /// Checks one row; `Err((seq, reason))` names the first broken one.
    pub fn step(&mut self, r: &AuditRecord) -> Result<(), (i64, String)> {
        if r.chain != self.chain {
            return Err((
                r.seq,
                format!("row of chain {} in chain {}", r.chain, self.chain),
            ));
        }
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
        let want = chain_row_hash(
            &self.chain,
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

/// Verifies every chain of a deployment from rows fed in any order that keeps each chain's rows
/// in `seq` order (the store pages by seq across chains). A row already walked is skipped, so a
/// page may be read again.
#[derive(Debug, Default)]
pub struct ChainSet {
    walkers: BTreeMap<String, ChainWalker>,
}

impl ChainSet {
    /// Checks one row; `Err((seq, reason))` names the first broken one (the reason names the
    /// chain).
    pub fn step(&mut self, r: &AuditRecord) -> Result<(), (i64, String)> {
        let w = self
            .walkers
            .entry(r.chain.clone())
            .or_insert_with(|| ChainWalker::for_chain(&r.chain));
        if r.seq < w.expected_seq {
            return Ok(());
        }
        w.step(r)
            .map_err(|(seq, reason)| (seq, format!("chain {}: {reason}", r.chain)))
    }

    /// Rows walked so far, over every chain.
    pub fn rows(&self) -> u64 {
        self.walkers.values().map(|w| w.rows).sum()
    }

    /// The last seq walked on `chain` (0 if none).
    pub fn last_seq(&self, chain: &str) -> i64 {
        self.walkers.get(chain).map_or(0, ChainWalker::last_seq)
    }

    /// The hash of the last row walked on `chain` (the genesis hash if none).
    pub fn last_hash(&self, chain: &str) -> &str {
        self.walkers
            .get(chain)
            .map_or(GENESIS_HASH, |w| w.prev_hash.as_str())
    }

    /// Checks every stored head (`audit_heads`: chain, seq, hash) against its chain's rows: a
    /// chain with rows and no head, or a head that is behind, ahead or holds another hash.
    pub fn check_heads(&self, heads: &[(String, i64, String)]) -> Result<(), (i64, String)> {
        for (chain, seq, hash) in heads {
            let w = self
                .walkers
                .get(chain)
                .map_or_else(|| ChainWalker::for_chain(chain), clone_walker);
            w.check_head(Some((*seq, hash)))
                .map_err(|(s, reason)| (s, format!("chain {chain}: {reason}")))?;
        }
        for (chain, w) in &self.walkers {
            if !heads.iter().any(|(c, _, _)| c == chain) {
                return Err((
                    w.last_seq(),
                    format!("chain {chain}: the head row is missing"),
                ));
            }
        }
        Ok(())
    }

    pub fn finish(self) -> VerifyReport {
        let rows = self.walkers.values().map(|w| w.rows).sum();
        let head = match self.walkers.len() {
            0 => GENESIS_HASH.to_owned(),
            1 => self
                .walkers
                .into_values()
                .next()
                .map_or_else(|| GENESIS_HASH.to_owned(), |w| w.prev_hash),
            _ => self
                .walkers
                .iter()
                .map(|(c, w)| format!("{c}={}", w.prev_hash))
                .collect::<Vec<_>>()
                .join(" "),
        };
        VerifyReport::Intact { rows, head }
    }
}

fn clone_walker(w: &ChainWalker) -> ChainWalker {
    ChainWalker {
        chain: w.chain.clone(),
        expected_seq: w.expected_seq,
        prev_hash: w.prev_hash.clone(),
        rows: w.rows,
    }
}

/// Verifies chains held in memory (tests; the CLI pages through [`ChainSet`]).
pub fn verify_chain<'a>(rows: impl IntoIterator<Item = &'a AuditRecord>) -> VerifyReport {
    let mut set = ChainSet::default();
    for r in rows {
        if let Err((seq, reason)) = set.step(r) {
            return VerifyReport::Broken { seq, reason };
        }
    }
    set.finish()
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
                    chain: MAIN_CHAIN.into(),
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

    #[test]
    fn hashes_match_the_canonical_form_of_rows_already_stored() {
        // The canonical form written by earlier releases (a `json!` array): rows stored then must
        // keep verifying, on `main` and on a named chain, with escapes and absent fields.
        let detail = r#"{"jti":"a\"b","scope":"tx:post:ach é"}"#;
        let old_hash = |canonical: serde_json::Value| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(b"ab12");
            ctx.update(canonical.to_string().as_bytes());
            hex(ctx.finish().as_ref())
        };
        let (ts, kind, actor) = (1_700_000_000, "token.issued", "bench");
        for (realm, subject) in [(Some("r"), Some("u\n\"")), (None, None)] {
            assert_eq!(
                row_hash("ab12", 7, ts, realm, kind, actor, subject, detail),
                old_hash(serde_json::json!([
                    7, ts, realm, kind, actor, subject, detail
                ]))
            );
            assert_eq!(
                chain_row_hash("node-2", "ab12", 7, ts, realm, kind, actor, subject, detail),
                old_hash(serde_json::json!([
                    "node-2", 7, ts, realm, kind, actor, subject, detail
                ]))
            );
        }
    }
}
