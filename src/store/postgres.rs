//! The production store: any number of Sigil nodes share one PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};

use super::{DbOptions, StoreError};
use crate::audit::AuditDraft;
use crate::audit::stats::STATS;

/// The advisory lock key that serialises migrations across every process on one database
/// ("SIGILMIG" in ASCII). Advisory locks are scoped to the database, so databases on one server
/// do not contend.
const MIGRATION_LOCK_KEY: i64 = 0x5349_4749_4C4D_4947;
/// How long a process waits for another one's migration to finish.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(50);

pub struct PgStore {
    pub(crate) pool: Pool<Postgres>,
    /// The audit chain this store appends to.
    chain: String,
    /// The pool's options, for connections made with a new URL.
    db: DbOptions,
}

impl PgStore {
    /// Serialises the transactions that write a realm's revocation feed entries, from before
    /// they take sequence numbers until they commit, so the realm's entries commit in sequence
    /// order: a validator's cursor can never pass an entry that commits later, however long its
    /// transaction runs. Taken first in the transaction, before any row lock, so it cannot
    /// deadlock with them. Low-rate writers only (sign-outs, disables, revocations).
    pub(crate) async fn lock_revocations(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        realm: &str,
    ) -> Result<(), super::StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(1936157036, hashtext($1))")
            .bind(realm)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Serialises changes of a realm's attribute declarations (`exclusive`) against writes of
    /// its users' attributes (shared), so no user write uses declarations a change replaced.
    pub(crate) async fn lock_attributes(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        realm: &str,
        exclusive: bool,
    ) -> Result<(), super::StoreError> {
        let sql = if exclusive {
            "SELECT pg_advisory_xact_lock(1936157037, hashtext($1))"
        } else {
            "SELECT pg_advisory_xact_lock_shared(1936157037, hashtext($1))"
        };
        sqlx::query(sql).bind(realm).execute(&mut **tx).await?;
        Ok(())
    }

    /// Appends `drafts` inside the caller's transaction (the head row stays locked until it
    /// commits).
    pub(crate) async fn append_in_tx(
        chain: &str,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        drafts: &[AuditDraft],
    ) -> Result<Vec<i64>, StoreError> {
        append_statement(&mut **tx, chain, drafts).await
    }

    /// One batch of the audit writer: a single statement, its own transaction, one round trip.
    /// The statement reads the head itself, so the head this connection last wrote is not used.
    pub(crate) async fn append_batch(
        chain: &str,
        conn: &mut sqlx::pool::PoolConnection<Postgres>,
        drafts: &[AuditDraft],
        _last_head: &mut Option<(i64, String)>,
    ) -> Result<Vec<i64>, StoreError> {
        append_statement(&mut **conn, chain, drafts).await
    }

    fn connect_options(url: &str, db: &DbOptions) -> Result<PgConnectOptions, StoreError> {
        let ms = db.statement_timeout.as_millis().to_string();
        Ok(PgConnectOptions::from_str(url)?.options([
            ("statement_timeout", ms.as_str()),
            ("idle_in_transaction_session_timeout", ms.as_str()),
        ]))
    }

    /// See `Store::scrub`: PostgreSQL keeps old row versions until VACUUM reclaims them (a
    /// dump never shows them); the operator's VACUUM is what removes them.
    async fn scrub_wal(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// See `Store::use_database_url`.
    async fn use_url(&self, url: &str) -> Result<(), StoreError> {
        use sqlx::{ConnectOptions, Connection};
        let options = Self::connect_options(url, &self.db)?;
        let conn = tokio::time::timeout(self.db.connect_timeout, options.connect())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
            .map_err(StoreError::Database)?;
        let _ = conn.close().await;
        self.pool.set_connect_options(options);
        Ok(())
    }

    pub async fn connect(url: &str, db: &DbOptions) -> Result<PgStore, StoreError> {
        let options = Self::connect_options(url, db)?;
        let pool = PgPoolOptions::new()
            .max_connections(db.pool_size)
            .acquire_timeout(db.connect_timeout)
            .connect_with(options)
            .await?;
        Ok(PgStore {
            pool,
            chain: db.audit_chain.clone(),
            db: db.clone(),
        })
    }

    /// Migrates on one dedicated connection holding a session advisory lock, so processes that
    /// start together migrate one at a time (the later ones find nothing left to do).
    async fn migrate_locked(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let attempts = MIGRATION_LOCK_WAIT.as_millis() / MIGRATION_LOCK_POLL.as_millis();
        let mut locked = false;
        for _ in 0..attempts {
            locked = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            if locked {
                break;
            }
            tokio::time::sleep(MIGRATION_LOCK_POLL).await;
        }
        if !locked {
            return Err(StoreError::LockTimeout {
                lock: format!("pg_advisory_lock({MIGRATION_LOCK_KEY})"),
                secs: MIGRATION_LOCK_WAIT.as_secs(),
            });
        }
        // A migration may rebuild an index over a large table: no statement deadline while it
        // runs (RESET returns the connection to the pool's configured one).
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut *conn)
            .await?;
        // `run_direct` is sqlx's own way round `run(&mut conn)` not being `Send` inside an async
        // trait ("implementation of `Acquire` is not general enough").
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run_direct(None, &mut *conn, false)
            .await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *conn)
            .await;
        let unlocked = match unlocked {
            Ok(_) => {
                sqlx::query("RESET statement_timeout")
                    .execute(&mut *conn)
                    .await
            }
            e => e,
        };
        if migrated.is_err() || unlocked.is_err() {
            // A failed migration can leave session locks behind (sqlx's own among them): close
            // this connection rather than return it to the pool.
            let _ = conn.close().await;
        }
        migrated?;
        unlocked?;
        Ok(())
    }
}

super::backend::impl_store!(PgStore, Postgres);
super::login_backend::impl_login_store!(PgStore, Postgres);

/// Calls `sigil_audit_append` (migrations/postgres/0008_audit_chains.sql), which locks the head,
/// chains and inserts the rows and moves the head server-side: the head row is never held across
/// a network round trip.
async fn append_statement<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    chain: &str,
    drafts: &[AuditDraft],
) -> Result<Vec<i64>, StoreError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let n = drafts.len();
    let (mut ts, mut realms, mut kinds, mut actors, mut subjects, mut details, mut tails) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut latest: Vec<(&str, &str, i64)> = Vec::new();
    for d in drafts {
        let detail = d.detail.to_string();
        tails.push(row_tail(d, &detail));
        ts.push(d.ts);
        realms.push(d.realm.as_deref());
        kinds.push(d.kind);
        actors.push(d.actor.as_str());
        subjects.push(d.subject.as_deref());
        details.push(detail);
        if let (Some(realm), Some((kid, exp))) = (&d.realm, &d.signed_with) {
            match latest.iter_mut().find(|l| l.0 == realm && l.1 == kid) {
                Some(l) => l.2 = l.2.max(*exp),
                None => latest.push((realm, kid, *exp)),
            }
        }
    }
    let key_realms: Vec<&str> = latest.iter().map(|l| l.0).collect();
    let key_kids: Vec<&str> = latest.iter().map(|l| l.1).collect();
    let key_exps: Vec<i64> = latest.iter().map(|l| l.2).collect();
    let (first, waited_us): (i64, i64) = sqlx::query_as(
        "SELECT first_seq, lock_wait_us FROM sigil_audit_append(\
         $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(chain)
    .bind(crate::audit::chain::canonical_prefix(chain))
    .bind(&ts)
    .bind(&realms)
    .bind(&kinds)
    .bind(&actors)
    .bind(&subjects)
    .bind(&details)
    .bind(&tails)
    .bind(&key_realms)
    .bind(&key_kids)
    .bind(&key_exps)
    .fetch_one(ex)
    .await?;
    STATS.head_wait(Duration::from_micros(u64::try_from(waited_us).unwrap_or(0)));
    Ok((0..n as i64).map(|i| first + i).collect())
}

/// A row's canonical JSON after its seq: `row_hash` hashes `[seq,ts,realm,kind,actor,subject,
/// detail]`, compact, and the database writes the `[seq,` in front.
fn row_tail(d: &AuditDraft, detail: &str) -> String {
    let canonical =
        serde_json::json!([0, d.ts, d.realm, d.kind, d.actor, d.subject, detail]).to_string();
    // "[0," is three bytes; what follows is the same for every seq.
    canonical[3..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_after_any_seq_is_the_canonical_row() {
        let d = AuditDraft::new(1_700_000_000, Some("réalm"), "token.issued", "svc \"x\"")
            .detail(serde_json::json!({"jti": "a\u{1}b", "n": 1}));
        let detail = d.detail.to_string();
        let tail = row_tail(&d, &detail);
        for seq in [1_i64, 42, 9_000_000_000] {
            let full = serde_json::json!([seq, d.ts, d.realm, d.kind, d.actor, d.subject, detail])
                .to_string();
            assert_eq!(format!("[{seq},{tail}"), full);
        }
    }
}
