//! The audit part of the SQL both backends share (see `backend.rs`): the `Store` methods that
//! append to and read the hash chain, and the audit writer's own connection. `#[async_trait]` needs
//! the whole `Store` impl in one block, so this macro writes that block: the other methods come from
//! `impl_store!`, the audit ones are added here.

macro_rules! impl_store_with_audit {
    ($ty:ident, $db:ident; $($methods:tt)*) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
            $($methods)*

            async fn append_audit(
                &self,
                drafts: &[$crate::audit::AuditDraft],
            ) -> Result<Vec<i64>, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let seqs = Self::append_in_tx(&self.chain, &mut tx, drafts).await?;
                tx.commit().await?;
                Ok(seqs)
            }

            async fn audit_session(
                &self,
            ) -> Result<Box<dyn $crate::store::AuditSession>, $crate::store::StoreError> {
                Ok(Box::new(AuditConn(
                    self.pool.acquire().await?,
                    self.chain.clone(),
                    None,
                )))
            }

            async fn audit_page(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::audit::AuditRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT chain, seq, ts, realm, kind, actor, subject, detail, prev_hash, hash \
                     FROM audit_log WHERE seq > $1 AND seq <= $1 + $2 ORDER BY seq, chain",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn audit_heads(
                &self,
            ) -> Result<Vec<(String, i64, String)>, $crate::store::StoreError> {
                Ok(
                    sqlx::query_as("SELECT chain, seq, hash FROM audit_heads ORDER BY chain")
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            fn audit_chain(&self) -> &str {
                &self.chain
            }

            async fn audit_rows_after(
                &self,
                chain: &str,
                seq: i64,
                except_kind: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM audit_log WHERE chain = $1 AND seq > $2 AND kind <> $3 LIMIT 1",
                )
                .bind(chain)
                .bind(seq)
                .bind(except_kind)
                .fetch_optional(&self.pool)
                .await?;
                Ok(found.is_some())
            }
        }

        /// The audit writer's own connection, held from one batch to the next: no pool checkout
        /// (and none of the pool's health pings) on the token path. The third field is the chain
        /// head this connection last wrote, `(seq, hash)`, where the backend uses it.
        pub struct AuditConn(
            sqlx::pool::PoolConnection<$db>,
            String,
            Option<(i64, String)>,
        );

        #[async_trait::async_trait]
        impl $crate::store::AuditSession for AuditConn {
            async fn append(
                &mut self,
                drafts: &[$crate::audit::AuditDraft],
            ) -> Result<Vec<i64>, $crate::store::StoreError> {
                $ty::append_batch(&self.1, &mut self.0, drafts, &mut self.2).await
            }

            async fn claim_and_append(
                &mut self,
                claims: &[$crate::store::SingleUse],
                drafts: &[$crate::audit::AuditDraft],
            ) -> Result<(Vec<bool>, Vec<i64>), $crate::store::StoreError> {
                if claims.is_empty() {
                    let seqs = $ty::append_batch(&self.1, &mut self.0, drafts, &mut self.2).await?;
                    return Ok((Vec::new(), seqs));
                }
                use sqlx::Connection;
                self.2 = None;
                let mut tx = self.0.begin().await?;
                let won = $ty::spend_many_in(&mut tx, claims).await?;
                let seqs = $ty::append_in_tx(&self.1, &mut tx, drafts).await?;
                tx.commit().await?;
                Ok((won, seqs))
            }

            fn discard(self: Box<Self>) {
                // Closed where it stands: after an error or an abandoned statement its state is
                // unknown, and the pool's release ping could wait on a database that is gone.
                drop(self.0.detach());
            }
        }
    };
}

pub(crate) use impl_store_with_audit;
