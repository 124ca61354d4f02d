//! The production store: any number of Sigil nodes share one PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};

use super::{DbOptions, StoreError};

/// The advisory lock key that serialises migrations across every process on one database
/// ("SIGILMIG" in ASCII). Advisory locks are scoped to the database, so databases on one server
/// do not contend.
const MIGRATION_LOCK_KEY: i64 = 0x5349_4749_4C4D_4947;
/// How long a process waits for another one's migration to finish.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(50);

pub struct PgStore {
    pub(crate) pool: Pool<Postgres>,
}

impl PgStore {
    pub async fn connect(url: &str, db: &DbOptions) -> Result<PgStore, StoreError> {
        let ms = db.statement_timeout.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)?.options([
            ("statement_timeout", ms.as_str()),
            ("idle_in_transaction_session_timeout", ms.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(db.pool_size)
            .acquire_timeout(db.connect_timeout)
            .connect_with(options)
            .await?;
        Ok(PgStore { pool })
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
