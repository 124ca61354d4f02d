//! The SQL both backends share. The dialects agree on everything used here (`$n` placeholders,
//! integer seconds, blobs), so one macro body serves both pools. The audit methods of `Store` and
//! the audit writer's connection are in `audit_backend.rs`, whose macro writes the `Store` impl
//! block around the methods given here.

macro_rules! impl_store {
    ($ty:ident, $db:ident) => {
        impl $ty {
            async fn insert_key(
                tx: &mut sqlx::Transaction<'_, $db>,
                key: &$crate::store::KeyRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO signing_keys (realm, kid, alg, state, public_jwk, private_sealed, \
                     kek_id, created_at, activated_at, retired_at, max_exp) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&key.realm)
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.state)
                .bind(&key.public_jwk)
                .bind(&key.private_sealed)
                .bind(&key.kek_id)
                .bind(key.created_at)
                .bind(key.activated_at)
                .bind(key.retired_at)
                .bind(key.max_exp)
                .execute(&mut **tx)
                .await
                .map_err(|e| $crate::store::map_unique(e, || format!("key {} in realm {}", key.kid, key.realm)))?;
                Ok(())
            }

            /// Deletes the policies of a principal that is going away (a client or group deleted:
            /// one created later under the same id must not inherit them), raising the version
            /// first: its row lock orders this against a policy being written for the principal
            /// (`put_policy` checks the principal under the same lock), so no policy outlives it.
            /// With `keep`, refuses instead (`Conflict`) if the principal has any; without, the
            /// policies deleted must be exactly `removing` (the names the deletion's audit record
            /// gives, read before this transaction): otherwise `Changed`, and the caller's
            /// transaction is not committed.
            async fn drop_principal_policies(
                tx: &mut sqlx::Transaction<'_, $db>,
                realm: &str,
                kind: &str,
                id: &str,
                keep: bool,
                removing: &[String],
            ) -> Result<(), $crate::store::StoreError> {
                Self::bump_policy_version(tx, realm).await?;
                if keep {
                    let held: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM policies WHERE realm = $1 AND principal_kind = $2 \
                         AND principal = $3",
                    )
                    .bind(realm)
                    .bind(kind)
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
                    if held > 0 {
                        return Err($crate::store::StoreError::Conflict(format!(
                            "{kind} {id} of realm {realm} has {held} policies"
                        )));
                    }
                    return Ok(());
                }
                let mut gone: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM policies WHERE realm = $1 AND principal_kind = $2 AND principal = $3 \
                     RETURNING name",
                )
                .bind(realm)
                .bind(kind)
                .bind(id)
                .fetch_all(&mut **tx)
                .await?;
                gone.sort_unstable();
                let mut told = removing.to_vec();
                told.sort_unstable();
                if gone != told {
                    return Err($crate::store::StoreError::Changed(format!(
                        "the policies of {kind} {id} in realm {realm}"
                    )));
                }
                Ok(())
            }

            /// Raises a realm's policy version inside `tx` (the row lock orders concurrent changes).
            async fn bump_policy_version(
                tx: &mut sqlx::Transaction<'_, $db>,
                realm: &str,
            ) -> Result<i64, $crate::store::StoreError> {
                use sqlx::Row;
                let row = sqlx::query(
                    "INSERT INTO policy_versions (realm, version) VALUES ($1, 1) \
                     ON CONFLICT (realm) DO UPDATE SET version = policy_versions.version + 1 \
                     RETURNING version",
                )
                .bind(realm)
                .fetch_one(&mut **tx)
                .await?;
                Ok(row.try_get("version")?)
            }

            /// A disabled or deleted client: its tokens issued until `now` go into the revocation
            /// feed, and introspection refuses them even if the client comes back.
            async fn revoke_client_tokens_in_tx(
                tx: &mut sqlx::Transaction<'_, $db>,
                realm: &str,
                id: &str,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at) \
                     VALUES ($1, 'client', $2, $3, $3, $4)",
                )
                .bind(realm)
                .bind(id)
                .bind(now)
                .bind(now + $crate::store::REVOCATION_HORIZON_SECS)
                .execute(&mut **tx)
                .await?;
                // Its refresh tokens too: enabling the client again must not revive them.
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 \
                     WHERE realm = $2 AND client_id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(realm)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }

        impl $ty {
            /// Claims single-use keys inside `tx` (see `AuditSession::claim_and_append`). The sign-in flows'
            /// table: its primary key makes the insert the single-use check on every node at
            /// once, and housekeeping purges it by expiry. A key twice in one batch: only its
            /// first claim may win.
            pub(crate) async fn spend_many_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                claims: &[$crate::store::SingleUse],
            ) -> Result<Vec<bool>, $crate::store::StoreError> {
                let mut first: std::collections::HashSet<&str> = std::collections::HashSet::new();
                let unique: Vec<&$crate::store::SingleUse> =
                    claims.iter().filter(|c| first.insert(c.key.as_str())).collect();
                let mut won: std::collections::HashSet<String> = std::collections::HashSet::new();
                for chunk in unique.chunks(100) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO flows (id_hash, realm, kind, data, expires_at) ",
                    );
                    qb.push_values(chunk, |mut b, c| {
                        b.push_bind(c.key.as_str())
                            .push_bind(c.realm.as_str())
                            .push_bind("spent")
                            .push_bind("")
                            .push_bind(c.expires_at);
                    });
                    qb.push(" ON CONFLICT (id_hash) DO NOTHING RETURNING id_hash");
                    let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut **tx).await?;
                    won.extend(rows.into_iter().map(|r| r.0));
                }
                let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
                Ok(claims
                    .iter()
                    .map(|c| seen.insert(c.key.as_str()) && won.contains(&c.key))
                    .collect())
            }
        }

        $crate::store::audit_backend::impl_store_with_audit! {
            $ty, $db;

            fn pool_status(&self) -> $crate::store::PoolStatus {
                $crate::store::PoolStatus {
                    open: self.pool.size(),
                    idle: self.pool.num_idle(),
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                // Each backend serialises concurrent migrators its own way.
                self.migrate_locked().await
            }

            async fn create_realm(
                &self,
                realm: &$crate::store::RealmRecord,
                key: &$crate::store::KeyRecord,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query(
                    "INSERT INTO realms (name, alg, display_name, access_token_ttl, created_at, \
                     rotation_period_secs, prepublish_secs, key_version, login_settings) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
                )
                .bind(&realm.name)
                .bind(&realm.alg)
                .bind(&realm.display_name)
                .bind(realm.access_token_ttl)
                .bind(realm.created_at)
                .bind(realm.rotation_period_secs)
                .bind(realm.prepublish_secs)
                .bind(&realm.login_settings)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::map_unique(e, || format!("realm {}", realm.name)))?;
                Self::insert_key(&mut tx, key).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn realm(
                &self,
                name: &str,
            ) -> Result<Option<$crate::store::RealmRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT name, alg, display_name, access_token_ttl, created_at, \
                     rotation_period_secs, prepublish_secs, key_version, login_settings FROM realms WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn realms(
                &self,
            ) -> Result<Vec<$crate::store::RealmRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT name, alg, display_name, access_token_ttl, created_at, \
                     rotation_period_secs, prepublish_secs, key_version, login_settings FROM realms ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn realm_keys(
                &self,
                realm: &str,
            ) -> Result<Vec<$crate::store::KeyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, kid, alg, state, public_jwk, private_sealed, kek_id, created_at, \
                     activated_at, retired_at, max_exp FROM signing_keys WHERE realm = $1 \
                     ORDER BY created_at, kid",
                )
                .bind(realm)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn apply_key_changes(
                &self,
                realm: &str,
                expected_version: i64,
                changes: &$crate::store::KeyChanges,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let won = sqlx::query(
                    "UPDATE realms SET key_version = key_version + 1, alg = COALESCE($1, alg) \
                     WHERE name = $2 AND key_version = $3",
                )
                .bind(&changes.set_alg)
                .bind(realm)
                .bind(expected_version)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !won {
                    return Ok(false); // dropping the transaction rolls it back
                }
                // Removals first, so a replacement active key never meets the one it replaces
                // in the one-active-key index.
                for kid in &changes.remove {
                    sqlx::query("DELETE FROM signing_keys WHERE realm = $1 AND kid = $2")
                        .bind(realm)
                        .bind(kid)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(kid) = &changes.retire {
                    sqlx::query(
                        "UPDATE signing_keys SET state = 'retired', retired_at = $1 \
                         WHERE realm = $2 AND kid = $3 AND state = 'active'",
                    )
                    .bind(changes.now)
                    .bind(realm)
                    .bind(kid)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(kid) = &changes.activate {
                    sqlx::query(
                        "UPDATE signing_keys SET state = 'active', activated_at = $1 \
                         WHERE realm = $2 AND kid = $3 AND state = 'next'",
                    )
                    .bind(changes.now)
                    .bind(realm)
                    .bind(kid)
                    .execute(&mut *tx)
                    .await?;
                }
                for key in &changes.insert {
                    Self::insert_key(&mut tx, key).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn all_keys(
                &self,
            ) -> Result<Vec<$crate::store::KeyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, kid, alg, state, public_jwk, private_sealed, kek_id, created_at, \
                     activated_at, retired_at, max_exp FROM signing_keys ORDER BY realm, created_at, kid",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn reseal_keys(
                &self,
                keys: &[$crate::store::Resealed],
                totps: &[$crate::store::ResealedTotp],
                pii_keys: &[$crate::store::ResealedPiiKey],
                audit: $crate::store::Audited<'_>,
            ) -> Result<usize, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                for k in keys {
                    sqlx::query(
                        "UPDATE signing_keys SET private_sealed = $1, kek_id = $2 \
                         WHERE realm = $3 AND kid = $4",
                    )
                    .bind(&k.private_sealed)
                    .bind(&k.kek_id)
                    .bind(&k.realm)
                    .bind(&k.kid)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut totp_done = 0;
                for t in totps {
                    totp_done += sqlx::query(
                        "UPDATE users SET totp_sealed = $1 \
                         WHERE realm = $2 AND id = $3 AND totp_sealed = $4",
                    )
                    .bind(&t.new)
                    .bind(&t.realm)
                    .bind(&t.user_id)
                    .bind(&t.old)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize;
                }
                for p in pii_keys {
                    sqlx::query("UPDATE realm_pii_keys SET sealed = $1 WHERE realm = $2 AND sealed = $3")
                        .bind(&p.new)
                        .bind(&p.realm)
                        .bind(&p.old)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(totp_done)
            }

            async fn totp_secrets(
                &self,
            ) -> Result<Vec<(String, String, Vec<u8>)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, id, totp_sealed FROM users WHERE totp_sealed IS NOT NULL \
                     ORDER BY realm, id",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn set_aws_settings(
                &self,
                st: &$crate::store::AwsSettingsRecord,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query("DELETE FROM aws_settings WHERE realm = $1")
                    .bind(&st.realm)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO aws_settings (realm, sts_endpoint, partitions, server_id, \
                     require_challenge, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&st.realm)
                .bind(&st.sts_endpoint)
                .bind(&st.partitions)
                .bind(&st.server_id)
                .bind(st.require_challenge)
                .bind(st.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::map_unique(e, || format!("realm {}", st.realm)))?;
                tx.commit().await?;
                Ok(())
            }

            async fn aws_settings(
                &self,
                realm: &str,
            ) -> Result<Option<$crate::store::AwsSettingsRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, sts_endpoint, partitions, server_id, require_challenge, \
                     updated_at FROM aws_settings WHERE realm = $1",
                )
                .bind(realm)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn delete_aws_settings(
                &self,
                realm: &str,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query("DELETE FROM aws_settings WHERE realm = $1")
                    .bind(realm)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn put_aws_binding(
                &self,
                b: &$crate::store::AwsBindingRecord,
                replace: bool,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                if replace {
                    sqlx::query("DELETE FROM aws_bindings WHERE realm = $1 AND id = $2")
                        .bind(&b.realm)
                        .bind(&b.id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO aws_bindings (realm, id, principal, account, effect, scopes, \
                     audience, access_token_ttl, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&b.realm)
                .bind(&b.id)
                .bind(&b.principal)
                .bind(&b.account)
                .bind(&b.effect)
                .bind(&b.scopes)
                .bind(&b.audience)
                .bind(b.access_token_ttl)
                .bind(b.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::store::map_unique(e, || format!("AWS binding {} in realm {}", b.id, b.realm))
                })?;
                tx.commit().await?;
                Ok(())
            }

            async fn aws_bindings(
                &self,
                realm: &str,
            ) -> Result<Vec<$crate::store::AwsBindingRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, id, principal, account, effect, scopes, audience, \
                     access_token_ttl, created_at FROM aws_bindings WHERE realm = $1 \
                     ORDER BY created_at, id",
                )
                .bind(realm)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_aws_binding(
                &self,
                realm: &str,
                id: &str,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query("DELETE FROM aws_bindings WHERE realm = $1 AND id = $2")
                    .bind(realm)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn put_policy(
                &self,
                p: &$crate::store::PolicyRecord,
                replace: bool,
                audit: $crate::store::Audited<'_>,
            ) -> Result<i64, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                // The audit chain's head first, then the version row, in the order a client's or
                // group's deletion takes them (the other order deadlocks on PostgreSQL).
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                // The version row's lock orders this realm's policy writers, so the limits
                // below are checked against a settled count.
                let version = Self::bump_policy_version(&mut tx, &p.realm).await?;
                // The principal is one of the realm's, checked under that lock: a client or group
                // deleted meanwhile (which takes the lock too) is either seen gone here or takes
                // this policy along.
                if let Some(sql) = $crate::store::principal_count_sql(&p.principal_kind) {
                    let n: i64 = sqlx::query_scalar(sql)
                        .bind(&p.realm)
                        .bind(&p.principal)
                        .fetch_one(&mut *tx)
                        .await?;
                    if n == 0 {
                        return Err($crate::store::StoreError::NotFound(format!(
                            "realm {} has no {} {:?}",
                            p.realm, p.principal_kind, p.principal
                        )));
                    }
                }
                {
                    use sqlx::Row;
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(spec)), 0) AS chars \
                         FROM policies WHERE realm = $1 AND name <> $2",
                    )
                    .bind(&p.realm)
                    .bind(&p.name)
                    .fetch_one(&mut *tx)
                    .await?;
                    let n: i64 = row.try_get("n")?;
                    let chars: i64 = row.try_get("chars")?;
                    let max = sigil_validator::policy::MAX_POLICIES as i64;
                    let max_chars = sigil_validator::policy::MAX_BUNDLE_SPEC_CHARS as i64;
                    if n + 1 > max {
                        return Err($crate::store::StoreError::Full(format!(
                            "realm {} holds {n} policies, the most a bundle may hold is {max}",
                            p.realm
                        )));
                    }
                    if chars + p.spec.chars().count() as i64 > max_chars {
                        return Err($crate::store::StoreError::Full(format!(
                            "realm {}'s policies would pass {max_chars} characters, the most a \
                             bundle may hold",
                            p.realm
                        )));
                    }
                }
                if replace {
                    let gone = sqlx::query("DELETE FROM policies WHERE realm = $1 AND name = $2")
                        .bind(&p.realm)
                        .bind(&p.name)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    // Audited as a replacement: there must have been one to replace.
                    if gone == 0 {
                        return Err($crate::store::StoreError::Conflict(format!(
                            "policy {} in realm {} was deleted meanwhile",
                            p.name, p.realm
                        )));
                    }
                }
                sqlx::query(
                    "INSERT INTO policies (realm, name, principal_kind, principal, effect, spec, \
                     created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&p.realm)
                .bind(&p.name)
                .bind(&p.principal_kind)
                .bind(&p.principal)
                .bind(&p.effect)
                .bind(&p.spec)
                .bind(p.created_at)
                .bind(&p.created_by)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::store::map_unique(e, || format!("policy {} in realm {}", p.name, p.realm))
                })?;
                tx.commit().await?;
                Ok(version)
            }

            async fn policies(
                &self,
                realm: &str,
            ) -> Result<(i64, Vec<$crate::store::PolicyRecord>), $crate::store::StoreError> {
                use sqlx::Row;
                // One statement, one snapshot: the version and the rows it describes.
                let rows = sqlx::query(
                    "SELECT v.version, p.realm, p.name, p.principal_kind, p.principal, p.effect, \
                     p.spec, p.created_at, p.created_by FROM policy_versions v \
                     LEFT JOIN policies p ON p.realm = v.realm WHERE v.realm = $1 ORDER BY p.name",
                )
                .bind(realm)
                .fetch_all(&self.pool)
                .await?;
                let mut version = 0i64;
                let mut out = Vec::new();
                for row in rows {
                    version = row.try_get("version")?;
                    let name: Option<String> = row.try_get("name")?;
                    if name.is_some() {
                        out.push(<$crate::store::PolicyRecord as sqlx::FromRow<_>>::from_row(&row)?);
                    }
                }
                Ok((version, out))
            }

            async fn policy_version(&self, realm: &str) -> Result<i64, $crate::store::StoreError> {
                let v: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM policy_versions WHERE realm = $1")
                        .bind(realm)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(v.unwrap_or(0))
            }

            async fn policy(
                &self,
                realm: &str,
                name: &str,
            ) -> Result<Option<$crate::store::PolicyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, name, principal_kind, principal, effect, spec, created_at, \
                     created_by FROM policies WHERE realm = $1 AND name = $2",
                )
                .bind(realm)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn policy_principal_exists(
                &self,
                realm: &str,
                kind: &str,
                id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let Some(sql) = $crate::store::principal_count_sql(kind) else {
                    return Ok(true);
                };
                let n: i64 = sqlx::query_scalar(sql)
                    .bind(realm)
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn policy_names_of(
                &self,
                realm: &str,
                kind: &str,
                id: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT name FROM policies WHERE realm = $1 AND principal_kind = $2 \
                     AND principal = $3 ORDER BY name",
                )
                .bind(realm)
                .bind(kind)
                .bind(id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_policy(
                &self,
                realm: &str,
                name: &str,
                expected: Option<&str>,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                // The version row before the policy's, in the order every policy writer takes
                // them (the other order deadlocks with `put_policy` on PostgreSQL when the two
                // write different audit chains, so the chain's head does not order them).
                // Nothing deleted: the transaction, raise included, is rolled back.
                Self::bump_policy_version(&mut tx, realm).await?;
                let done = sqlx::query(
                    "DELETE FROM policies WHERE realm = $1 AND name = $2 \
                     AND spec = COALESCE($3, spec)",
                )
                    .bind(realm)
                    .bind(name)
                    .bind(expected)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn create_aws_challenge(
                &self,
                realm: &str,
                nonce_hash: &str,
                expires_at: i64,
                now: i64,
                max_live: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                // Both use an index (0005_challenge_limits): the prune touches only the rows that
                // expired since the last call, the count only this realm's live rows.
                sqlx::query("DELETE FROM aws_challenges WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                let stored = sqlx::query(
                    "INSERT INTO aws_challenges (nonce_hash, realm, expires_at) \
                     SELECT $1, $2, $3 \
                     WHERE (SELECT COUNT(*) FROM aws_challenges \
                            WHERE realm = $4 AND expires_at >= $5) < $6",
                )
                .bind(nonce_hash)
                .bind(realm)
                .bind(expires_at)
                .bind(realm)
                .bind(now)
                .bind(max_live)
                .execute(&self.pool)
                .await?
                .rows_affected()
                    == 1;
                Ok(stored)
            }

            async fn consume_aws_challenge(
                &self,
                realm: &str,
                nonce_hash: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                Ok(sqlx::query(
                    "DELETE FROM aws_challenges WHERE nonce_hash = $1 AND realm = $2 \
                     AND expires_at >= $3",
                )
                .bind(nonce_hash)
                .bind(realm)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected()
                    == 1)
            }

            async fn kek_ids_in_use(&self) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT DISTINCT kek_id FROM signing_keys ORDER BY kek_id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn recorded_admin_realm(
                &self,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT value FROM server_settings WHERE name = 'admin_realm'",
                )
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn record_admin_realm(
                &self,
                realm: &str,
                replace: bool,
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                // Written only when it differs (and, without `replace`, only when there is none):
                // of nodes starting at once with the same setting, one records it (the others'
                // conditional update finds nothing to change).
                let changed = sqlx::query(
                    "INSERT INTO server_settings (name, value, updated_at) \
                     VALUES ('admin_realm', $1, $2) ON CONFLICT (name) DO UPDATE SET \
                     value = excluded.value, updated_at = excluded.updated_at \
                     WHERE server_settings.value <> excluded.value AND $3",
                )
                .bind(realm)
                .bind(now)
                .bind(replace)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if changed {
                    Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn realm_guard(
                &self,
                realm: &str,
            ) -> Result<Option<$crate::store::RealmGuard>, $crate::store::StoreError> {
                let row: Option<(bool, bool)> = sqlx::query_as(
                    "SELECT require_approval, protected FROM realm_guards WHERE realm = $1",
                )
                .bind(realm)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(require_approval, protected)| $crate::store::RealmGuard {
                    require_approval,
                    protected,
                }))
            }

            async fn set_realm_guard(
                &self,
                realm: &str,
                bits: $crate::store::GuardBits,
                defaults: $crate::store::RealmGuard,
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<$crate::store::RealmGuard, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                // One statement: a bit not given keeps the value the row has as it is written,
                // never one read earlier (which could undo another admin's raise).
                let (require_approval, protected): (bool, bool) = sqlx::query_as(
                    "INSERT INTO realm_guards (realm, require_approval, protected, updated_at) \
                     VALUES ($1, COALESCE($2, $4), COALESCE($3, $5), $6) ON CONFLICT (realm) DO \
                     UPDATE SET require_approval = COALESCE($2, realm_guards.require_approval), \
                     protected = COALESCE($3, realm_guards.protected), updated_at = $6 \
                     RETURNING require_approval, protected",
                )
                .bind(realm)
                .bind(bits.require_approval)
                .bind(bits.protected)
                .bind(defaults.require_approval)
                .bind(defaults.protected)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| $crate::store::map_unique(e, || format!("realm {realm}")))?;
                tx.commit().await?;
                Ok($crate::store::RealmGuard {
                    require_approval,
                    protected,
                })
            }

            async fn create_change(
                &self,
                c: &$crate::store::ChangeRecord,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query(
                    "INSERT INTO change_requests (id, realm, kind, params, requested_by, requested_at, \
                     expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
                )
                .bind(&c.id)
                .bind(&c.realm)
                .bind(&c.kind)
                .bind(&c.params)
                .bind(&c.requested_by)
                .bind(c.requested_at)
                .bind(c.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::map_unique(e, || format!("change request {}", c.id)))?;
                tx.commit().await?;
                Ok(())
            }

            async fn change(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::ChangeRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, realm, kind, params, requested_by, requested_at, expires_at, state, \
                     decided_by, decided_at, outcome FROM change_requests WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn changes(
                &self,
                limit: i64,
            ) -> Result<Vec<$crate::store::ChangeRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, realm, kind, params, requested_by, requested_at, expires_at, state, \
                     decided_by, decided_at, outcome FROM change_requests \
                     ORDER BY requested_at DESC, id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn decide_change(
                &self,
                id: &str,
                decider: &str,
                to: &str,
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                // The claim first (SQLite takes its write lock here; PostgreSQL locks the row and
                // re-checks the condition when a concurrent decider committed first).
                let won = sqlx::query(
                    "UPDATE change_requests SET state = $1, decided_by = $2, decided_at = $3 \
                     WHERE id = $4 AND state = 'pending' AND expires_at > $3 \
                     AND ($1 = 'rejected' OR requested_by <> $2)",
                )
                .bind(to)
                .bind(decider)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !won {
                    return Ok(false);
                }
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn finish_change(
                &self,
                id: &str,
                state: &str,
                outcome: &str,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query(
                    "UPDATE change_requests SET state = $1, outcome = $2 WHERE id = $3 AND state = 'applying'",
                )
                .bind(state)
                .bind(outcome)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn wrapped_kek(
                &self,
                source: &str,
            ) -> Result<Option<$crate::store::WrappedKek>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT source, kek_id, wrapped, created_at FROM wrapped_keks WHERE source = $1",
                )
                .bind(source)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn insert_wrapped_kek(
                &self,
                w: &$crate::store::WrappedKek,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO wrapped_keks (source, kek_id, wrapped, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (source) DO NOTHING",
                )
                .bind(&w.source)
                .bind(&w.kek_id)
                .bind(&w.wrapped)
                .bind(w.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn use_database_url(&self, url: &str) -> Result<(), $crate::store::StoreError> {
                self.use_url(url).await
            }

            async fn scrub(&self) -> Result<(), $crate::store::StoreError> {
                self.scrub_wal().await
            }

            async fn update_client(
                &self,
                c: &$crate::store::ClientRecord,
                expected: Option<i64>,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE clients SET allowed_scopes = $1, default_scopes = $2, audience = $3, \
                     grant_types = $4, access_token_ttl = $5, redirect_uris = $6, client_name = $7, \
                     client_uri = $8, may_introspect = $9, post_logout_redirect_uris = $10, \
                     backchannel_logout_uri = $11, updated_at = $12, version = version + 1 \
                     WHERE realm = $13 AND client_id = $14 AND ($15 IS NULL OR version = $15)",
                )
                .bind(&c.allowed_scopes)
                .bind(&c.default_scopes)
                .bind(&c.audience)
                .bind(&c.grant_types)
                .bind(c.access_token_ttl)
                .bind(&c.redirect_uris)
                .bind(&c.client_name)
                .bind(&c.client_uri)
                .bind(c.may_introspect)
                .bind(&c.post_logout_redirect_uris)
                .bind(&c.backchannel_logout_uri)
                .bind(c.updated_at)
                .bind(&c.realm)
                .bind(&c.client_id)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn create_client(
                &self,
                c: &$crate::store::ClientRecord,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query(
                    "INSERT INTO clients (realm, client_id, enabled, secret_salt, secret_verifier, \
                     allowed_scopes, default_scopes, audience, grant_types, access_token_ttl, \
                     created_at, updated_at, redirect_uris, public_client, client_name, client_uri, auth_config, \
                     may_introspect, post_logout_redirect_uris, backchannel_logout_uri, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                )
                .bind(&c.realm)
                .bind(&c.client_id)
                .bind(c.enabled)
                .bind(&c.secret_salt)
                .bind(&c.secret_verifier)
                .bind(&c.allowed_scopes)
                .bind(&c.default_scopes)
                .bind(&c.audience)
                .bind(&c.grant_types)
                .bind(c.access_token_ttl)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(&c.redirect_uris)
                .bind(c.public_client)
                .bind(&c.client_name)
                .bind(&c.client_uri)
                .bind(&c.auth_config)
                .bind(c.may_introspect)
                .bind(&c.post_logout_redirect_uris)
                .bind(&c.backchannel_logout_uri)
                .bind(c.version)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::store::map_unique(e, || format!("client {} in realm {}", c.client_id, c.realm))
                })?;
                tx.commit().await?;
                Ok(())
            }

            async fn client(
                &self,
                realm: &str,
                id: &str,
            ) -> Result<Option<$crate::store::ClientRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, client_id, enabled, secret_salt, secret_verifier, allowed_scopes, \
                     default_scopes, audience, grant_types, access_token_ttl, created_at, updated_at, \
                     redirect_uris, public_client, client_name, client_uri, auth_config, may_introspect, post_logout_redirect_uris, backchannel_logout_uri, version FROM clients WHERE realm = $1 AND client_id = $2",
                )
                .bind(realm)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn clients(
                &self,
                realm: &str,
            ) -> Result<Vec<$crate::store::ClientRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, client_id, enabled, secret_salt, secret_verifier, allowed_scopes, \
                     default_scopes, audience, grant_types, access_token_ttl, created_at, updated_at, \
                     redirect_uris, public_client, client_name, client_uri, auth_config, may_introspect, post_logout_redirect_uris, backchannel_logout_uri, version FROM clients WHERE realm = $1 ORDER BY client_id",
                )
                .bind(realm)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_client(
                &self,
                realm: &str,
                id: &str,
                expected: Option<i64>,
                removing: &[String],
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_revocations(&mut tx, realm).await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "DELETE FROM clients WHERE realm = $1 AND client_id = $2 \
                     AND ($3 IS NULL OR version = $3)",
                )
                    .bind(realm)
                    .bind(id)
                    .bind(expected)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    Self::revoke_client_tokens_in_tx(&mut tx, realm, id, now).await?;
                    Self::drop_principal_policies(&mut tx, realm, "client", id, false, removing)
                        .await?;
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn client_revoked_since(
                &self,
                realm: &str,
                client_id: &str,
                iat: i64,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM revocations WHERE realm = $1 AND kind = 'client' AND value = $2 \
                     AND not_before >= $3 AND expires_at > $4 LIMIT 1",
                )
                .bind(realm)
                .bind(client_id)
                .bind(iat)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(found.is_some())
            }

            #[allow(clippy::too_many_arguments)] // the row, its version, the secret, the audit
            async fn set_client_secret(
                &self,
                realm: &str,
                id: &str,
                expected: Option<i64>,
                salt: &[u8],
                verifier: &[u8],
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE clients SET secret_salt = $1, secret_verifier = $2, updated_at = $3, \
                     version = version + 1 \
                     WHERE realm = $4 AND client_id = $5 AND ($6 IS NULL OR version = $6)",
                )
                .bind(salt)
                .bind(verifier)
                .bind(now)
                .bind(realm)
                .bind(id)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn update_realm(
                &self,
                r: &$crate::store::RealmRecord,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE realms SET access_token_ttl = $1, display_name = $2, \
                     rotation_period_secs = $3, prepublish_secs = $4 WHERE name = $5",
                )
                .bind(r.access_token_ttl)
                .bind(&r.display_name)
                .bind(r.rotation_period_secs)
                .bind(r.prepublish_secs)
                .bind(&r.name)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn set_login_settings(
                &self,
                realm: &str,
                settings: &str,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query("UPDATE realms SET login_settings = $1 WHERE name = $2")
                    .bind(settings)
                    .bind(realm)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn set_client_enabled(
                &self,
                realm: &str,
                id: &str,
                expected: Option<i64>,
                enabled: bool,
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                if !enabled {
                    Self::lock_revocations(&mut tx, realm).await?;
                }
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE clients SET enabled = $1, updated_at = $2, version = version + 1 \
                     WHERE realm = $3 AND client_id = $4 AND ($5 IS NULL OR version = $5)",
                )
                .bind(enabled)
                .bind(now)
                .bind(realm)
                .bind(id)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if done && !enabled {
                    Self::revoke_client_tokens_in_tx(&mut tx, realm, id, now).await?;
                }
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn set_client_auth(
                &self,
                realm: &str,
                id: &str,
                expected: Option<i64>,
                auth_config: Option<&str>,
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE clients SET auth_config = $1, updated_at = $2, version = version + 1 \
                     WHERE realm = $3 AND client_id = $4 AND ($5 IS NULL OR version = $5)",
                )
                .bind(auth_config)
                .bind(now)
                .bind(realm)
                .bind(id)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn realm_mtls(
                &self,
                realm: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT ca_pem FROM realm_mtls WHERE realm = $1")
                        .bind(realm)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|r| r.0))
            }

            async fn set_realm_mtls(
                &self,
                realm: &str,
                ca_pem: Option<&str>,
                now: i64,
                audit: $crate::store::Audited<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                match ca_pem {
                    Some(pem) => {
                        sqlx::query(
                            "INSERT INTO realm_mtls (realm, ca_pem, updated_at) VALUES ($1, $2, $3) \
                             ON CONFLICT (realm) DO UPDATE SET ca_pem = $2, updated_at = $3",
                        )
                        .bind(realm)
                        .bind(pem)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM realm_mtls WHERE realm = $1")
                            .bind(realm)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

        }
    };
}

pub(crate) use impl_store;
