//! The append-only, hash-chained audit log: what an event is, how a row's hash is computed, the
//! group-commit writer the token endpoint waits on, and the chain verifier.

pub mod bench;
pub mod chain;
pub mod checkpoint;
pub mod stats;
pub mod tally;
pub mod writer;

pub use chain::{GENESIS_HASH, MAIN_CHAIN, VerifyReport, chain_row_hash, row_hash, verify_chain};
pub use tally::RefusalTally;
pub use writer::AuditWriter;

use serde_json::Value;

use crate::clock::UnixTime;

/// An event before it has a place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub ts: UnixTime,
    pub realm: Option<String>,
    /// Dotted event name: `token.issued`, `token.refused`, `client.created`, ...
    pub kind: &'static str,
    /// Who caused it: a client id, `cli`, `system`.
    pub actor: String,
    /// What it is about (a client id, a kid); `None` where nothing is.
    pub subject: Option<String>,
    /// Event details. Never a secret: callers put ids, scopes and reasons here, nothing presented.
    pub detail: Value,
    /// For a token: the signing key's kid and the token's `exp`. The same transaction raises that
    /// key's `max_exp`, which is how long a retired key must stay published.
    pub signed_with: Option<(String, i64)>,
}

impl AuditDraft {
    pub fn new(ts: UnixTime, realm: Option<&str>, kind: &'static str, actor: &str) -> Self {
        AuditDraft {
            ts,
            realm: realm.map(str::to_owned),
            kind,
            actor: actor.to_owned(),
            subject: None,
            detail: Value::Object(Default::default()),
            signed_with: None,
        }
    }

    pub fn signed_with(mut self, kid: &str, exp: i64) -> Self {
        self.signed_with = Some((kid.to_owned(), exp));
        self
    }

    pub fn subject(mut self, subject: &str) -> Self {
        self.subject = Some(subject.to_owned());
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A committed row as read back from the database (and as the admin API pages it: `detail` is the
/// JSON text the hash covers).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// The chain the row belongs to (`main` unless nodes write chains of their own).
    pub chain: String,
    pub seq: i64,
    pub ts: i64,
    pub realm: Option<String>,
    pub kind: String,
    pub actor: String,
    pub subject: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}
