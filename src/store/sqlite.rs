//! The embedded default: one SQLite file in WAL mode, fsync on every commit (`synchronous=FULL`)
//! because a token's response waits for its audit record to be durable.
//!
//! The file holds password hashes and sealed keys: Sigil creates its directory 0700 and the file
//! (with its `-wal`/`-shm` companions) 0600, and warns at start when the file is open to group or
//! others. Processes that start together on one database (a server and a CLI command, say) take
//! turns through an exclusive lock on `{database}.lock` while they create, open and migrate it:
//! switching to WAL needs an exclusive database lock SQLite cannot wait for, and two migrators
//! would both try to create the same tables.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::{AuditRow, StoreError};
use crate::audit::AuditDraft;
use crate::private_files;

/// How long a process waits for another one to finish opening or migrating the database.
const STARTUP_LOCK_WAIT: Duration = Duration::from_secs(120);
const STARTUP_LOCK_POLL: Duration = Duration::from_millis(20);

pub struct SqliteStore {
    pub(crate) pool: Pool<Sqlite>,
    /// The database file, unless the database lives in memory.
    file: Option<PathBuf>,
    /// The audit chain this store appends to.
    chain: String,
}

impl SqliteStore {
    /// See `Store::scrub`: folds the WAL into the database file and truncates it, so old page
    /// images (with values since encrypted) are gone from the WAL too.
    async fn scrub_wal(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See `Store::use_database_url`: a file database has no password to rotate.
    async fn use_url(&self, _url: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing to do: SQLite has one writer at a time, so sequence order is commit order (see
    /// the PostgreSQL store's `lock_revocations`).
    /// SQLite: a no-op; the transaction's first write (its audit record) already took the
    /// database's one write lock.
    pub(crate) async fn lock_attributes(
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        _realm: &str,
        _exclusive: bool,
    ) -> Result<(), super::StoreError> {
        Ok(())
    }

    pub(crate) async fn lock_revocations(
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        _realm: &str,
    ) -> Result<(), super::StoreError> {
        Ok(())
    }

    /// Locks the chain head (the first write of the transaction, so SQLite takes its write
    /// lock here), then appends `drafts` after it.
    pub(crate) async fn append_in_tx(
        chain: &str,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        drafts: &[AuditDraft],
    ) -> Result<Vec<i64>, StoreError> {
        Ok(Self::append_after_locked_head(chain, tx, drafts).await?.0)
    }

    /// [`Self::append_in_tx`], also returning the head it leaves, `(seq, hash)`.
    async fn append_after_locked_head(
        chain: &str,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        drafts: &[AuditDraft],
    ) -> Result<(Vec<i64>, (i64, String)), StoreError> {
        // Lock the head row and read it in one statement: every writer of the chain queues
        // here, so it is timed. A chain's head is created at its genesis on first use.
        let waiting = tokio::time::Instant::now();
        sqlx::query(
            "INSERT INTO audit_heads (chain, seq, hash) VALUES ($1, 0, $2) \
             ON CONFLICT (chain) DO NOTHING",
        )
        .bind(chain)
        .bind(crate::audit::GENESIS_HASH)
        .execute(&mut **tx)
        .await?;
        let head: (i64, String) =
            sqlx::query_as("UPDATE audit_heads SET seq = seq WHERE chain = $1 RETURNING seq, hash")
                .bind(chain)
                .fetch_one(&mut **tx)
                .await?;
        crate::audit::stats::STATS.head_wait(waiting.elapsed());
        if drafts.is_empty() {
            return Ok((Vec::new(), head));
        }
        let batch = Batch::after(chain, head, drafts);
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("");
        batch.push_statements(chain, &mut qb);
        qb.build().execute(&mut **tx).await?;
        Ok((batch.seqs(), batch.head()))
    }

    /// One batch of the audit writer, in a transaction of its own. When `last_head` holds the head
    /// this connection wrote last, the whole transaction is one round trip to SQLite's thread
    /// (`BEGIN IMMEDIATE`, the rows, the head, `COMMIT`): the chain is immutable and contiguous, so
    /// if another process appended since, the first row's `(chain, seq)` is taken and the insert
    /// fails; that transaction is rolled back and the batch appended after the head read under the
    /// write lock, as every writer does.
    pub(crate) async fn append_batch(
        chain: &str,
        conn: &mut sqlx::pool::PoolConnection<Sqlite>,
        drafts: &[AuditDraft],
        last_head: &mut Option<(i64, String)>,
    ) -> Result<Vec<i64>, StoreError> {
        use sqlx::Connection;
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(head) = last_head.take() {
            let batch = Batch::after(chain, head, drafts);
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
            batch.push_statements(chain, &mut qb);
            qb.push("COMMIT;");
            match qb.build().execute(&mut **conn).await {
                Ok(_) => {
                    *last_head = Some(batch.head());
                    return Ok(batch.seqs());
                }
                Err(sqlx::Error::Database(e))
                    if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
                {
                    sqlx::query("ROLLBACK").execute(&mut **conn).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut tx = conn.begin().await?;
        let (seqs, head) = Self::append_after_locked_head(chain, &mut tx, drafts).await?;
        tx.commit().await?;
        *last_head = Some(head);
        Ok(seqs)
    }

    pub async fn connect(url: &str, chain: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Deleted and moved-out content is overwritten, not left in free pages: a value that
            // becomes pii_high leaves no plain copy in the file.
            .pragma("secure_delete", "ON");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let file = (!in_memory).then(|| options.get_filename().to_path_buf());
        let _lock = match &file {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    private_files::create_dir(dir).map_err(|e| file_error(dir, e))?;
                }
                let lock = StartupLock::acquire(path).await?;
                create_private_file(path)?;
                private_files::warn_if_open_to_others(path, "database file");
                Some(lock)
            }
            None => None,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        if let Some(path) = &file {
            restrict_companions(path);
        }
        Ok(SqliteStore {
            pool,
            file,
            chain: chain.to_owned(),
        })
    }

    /// Applies the migrations under the startup lock, so concurrent starts migrate one at a time
    /// (the later ones find nothing left to do).
    async fn migrate_locked(&self) -> Result<(), StoreError> {
        let _lock = match &self.file {
            Some(path) => Some(StartupLock::acquire(path).await?),
            None => None,
        };
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        if let Some(path) = &self.file {
            restrict_companions(path);
        }
        Ok(())
    }
}

fn file_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Creates an empty database file with mode 0600 before SQLite opens it (SQLite would create it
/// 0644 under the usual umask, and gives its `-wal`/`-shm` files the database file's mode).
fn create_private_file(db: &Path) -> Result<(), StoreError> {
    match private_files::create_new_options().open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(file_error(db, e)),
    }
}

/// Takes group and other permissions off the `-wal`, `-shm` and `-journal` files, whoever
/// created them (an older Sigil, the sqlite3 shell).
fn restrict_companions(db: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        if let Err(e) = private_files::restrict(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot restrict the permissions of a database file");
        }
    }
}

/// An exclusive `flock` on `{database}.lock`, released when dropped (or when the process dies).
struct StartupLock {
    _file: std::fs::File,
}

impl StartupLock {
    async fn acquire(db: &Path) -> Result<StartupLock, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = match private_files::create_new_options().open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::OpenOptions::new().write(true).open(&path)
            }
            other => other,
        }
        .map_err(|e| file_error(&path, e))?;
        let attempts = STARTUP_LOCK_WAIT.as_millis() / STARTUP_LOCK_POLL.as_millis();
        for _ in 0..attempts {
            match file.try_lock() {
                Ok(()) => return Ok(StartupLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(STARTUP_LOCK_POLL).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(file_error(&path, e)),
            }
        }
        Err(StoreError::LockTimeout {
            lock: path.display().to_string(),
            secs: STARTUP_LOCK_WAIT.as_secs(),
        })
    }
}

super::backend::impl_store!(SqliteStore, Sqlite);
super::login_backend::impl_login_store!(SqliteStore, Sqlite);

/// A batch of audit records chained after a head: each row's sequence number, detail text and
/// hashes, and the latest token `exp` per signing key.
struct Batch<'a> {
    rows: Vec<AuditRow<'a>>,
    latest: Vec<(&'a str, &'a str, i64)>,
    head: (i64, String),
}

impl<'a> Batch<'a> {
    fn after(chain: &str, head: (i64, String), drafts: &'a [AuditDraft]) -> Batch<'a> {
        let (mut seq, mut prev) = head;
        let mut rows = Vec::with_capacity(drafts.len());
        for d in drafts {
            seq += 1;
            let detail = d.detail.to_string();
            let hash = crate::audit::chain_row_hash(
                chain,
                &prev,
                seq,
                d.ts,
                d.realm.as_deref(),
                d.kind,
                &d.actor,
                d.subject.as_deref(),
                &detail,
            );
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            rows.push((seq, d, detail, prev_hash, hash));
        }
        // Raise each signing key's max_exp to the latest token it signed in this batch.
        let mut latest: Vec<(&str, &str, i64)> = Vec::new();
        for d in drafts {
            if let (Some(realm), Some((kid, exp))) = (&d.realm, &d.signed_with) {
                match latest.iter_mut().find(|l| l.0 == realm && l.1 == kid) {
                    Some(l) => l.2 = l.2.max(*exp),
                    None => latest.push((realm, kid, *exp)),
                }
            }
        }
        Batch {
            rows,
            latest,
            head: (seq, prev),
        }
    }

    fn seqs(&self) -> Vec<i64> {
        self.rows.iter().map(|r| r.0).collect()
    }

    fn head(&self) -> (i64, String) {
        self.head.clone()
    }

    /// The statements that write the rows, raise the keys' `max_exp` and move the head, each
    /// ended by `;`, with anonymous parameters (bound in order across the statements).
    fn push_statements(&self, chain: &str, qb: &mut sqlx::QueryBuilder<Sqlite>) {
        // 100 rows x 10 columns stays far below the bind limit of one statement.
        for chunk in self.rows.chunks(100) {
            qb.push(
                "INSERT INTO audit_log \
                 (chain, seq, ts, realm, kind, actor, subject, detail, prev_hash, hash) ",
            );
            qb.push_values(chunk, |mut b, (seq, d, detail, prev_hash, hash)| {
                b.push_bind(chain)
                    .push_bind(*seq)
                    .push_bind(d.ts)
                    .push_bind(d.realm.as_deref())
                    .push_bind(d.kind)
                    .push_bind(d.actor.as_str())
                    .push_bind(d.subject.as_deref())
                    .push_bind(detail.as_str())
                    .push_bind(prev_hash.as_str())
                    .push_bind(hash.as_str());
            });
            qb.push("; ");
        }
        for (realm, kid, exp) in &self.latest {
            qb.push("UPDATE signing_keys SET max_exp = ")
                .push_bind(*exp)
                .push(" WHERE realm = ")
                .push_bind(*realm)
                .push(" AND kid = ")
                .push_bind(*kid)
                .push(" AND max_exp < ")
                .push_bind(*exp)
                .push("; ");
        }
        qb.push("UPDATE audit_heads SET seq = ")
            .push_bind(self.head.0)
            .push(", hash = ")
            .push_bind(self.head.1.as_str())
            .push(" WHERE chain = ")
            .push_bind(chain)
            .push("; ");
    }
}
