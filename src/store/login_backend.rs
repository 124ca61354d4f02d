//! The SQL of `LoginStore`, shared by both backends like `backend.rs`.

macro_rules! impl_login_store {
    ($ty:ident, $db:ident) => {
        impl $ty {
            /// The realm's `pii_high` attribute names, read inside `tx` after its lock.
            async fn pii_names_in_tx(
                tx: &mut sqlx::Transaction<'_, $db>,
                realm: &str,
            ) -> Result<std::collections::BTreeSet<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT name FROM realm_attributes WHERE realm = $1 AND classification = 'pii_high'",
                )
                .bind(realm).fetch_all(&mut **tx).await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            /// Sets (`Some`) or removes (`None`) one encrypted attribute of a user.
            async fn put_pii_in_tx(
                tx: &mut sqlx::Transaction<'_, $db>,
                realm: &str,
                user_id: &str,
                name: &str,
                value: Option<&str>,
                pii: Option<&dyn $crate::store::PiiSealer>,
            ) -> Result<(), $crate::store::StoreError> {
                let Some(value) = value else {
                    sqlx::query("DELETE FROM user_pii WHERE realm = $1 AND user_id = $2 AND name = $3")
                        .bind(realm).bind(user_id).bind(name).execute(&mut **tx).await?;
                    return Ok(());
                };
                let pii = pii.ok_or_else(|| $crate::store::StoreError::Conflict(format!(
                    "attribute {name} became pii_high in realm {realm} meanwhile: try again"
                )))?;
                let (sealed, index) = pii.seal(realm, user_id, name, value)?;
                sqlx::query(
                    "INSERT INTO user_pii (realm, user_id, name, sealed, blind_index) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (realm, user_id, name) DO UPDATE SET sealed = excluded.sealed, blind_index = excluded.blind_index",
                )
                .bind(realm).bind(user_id).bind(name).bind(&sealed).bind(&index)
                .execute(&mut **tx).await?;
                Ok(())
            }

            /// Moves every plain value of `names` in the realm's users into `user_pii`.
            async fn sweep_pii_in_tx(
                tx: &mut sqlx::Transaction<'_, $db>,
                realm: &str,
                names: &std::collections::BTreeSet<String>,
                pii: Option<&dyn $crate::store::PiiSealer>,
            ) -> Result<usize, $crate::store::StoreError> {
                if names.is_empty() {
                    return Ok(0);
                }
                let users: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id, attributes FROM users WHERE realm = $1 ORDER BY id",
                )
                .bind(realm).fetch_all(&mut **tx).await?;
                let mut moved = 0;
                for (id, attrs) in users {
                    let mut map: std::collections::BTreeMap<String, String> =
                        serde_json::from_str(&attrs).unwrap_or_default();
                    let take: Vec<String> = map.keys().filter(|k| names.contains(*k)).cloned().collect();
                    if take.is_empty() {
                        continue;
                    }
                    for name in take {
                        let value = map.remove(&name).unwrap_or_default();
                        Self::put_pii_in_tx(tx, realm, &id, &name, Some(&value), pii).await?;
                        moved += 1;
                    }
                    let json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
                    sqlx::query("UPDATE users SET attributes = $1 WHERE realm = $2 AND id = $3")
                        .bind(&json).bind(realm).bind(&id).execute(&mut **tx).await?;
                }
                Ok(moved)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::login::LoginStore for $ty {
            async fn create_group(&self, g: &$crate::store::login::GroupRecord, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query("INSERT INTO groups (realm, name, scopes) VALUES ($1, $2, $3)")
                    .bind(&g.realm).bind(&g.name).bind(&g.scopes)
                    .execute(&mut *tx).await
                    .map_err(|e| $crate::store::map_unique(e, || format!("group {} in realm {}", g.name, g.realm)))?;
                tx.commit().await?;
                Ok(())
            }

            async fn realm_attributes(&self, realm: &str) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT name, classification FROM realm_attributes WHERE realm = $1 ORDER BY name")
                    .bind(realm).fetch_all(&self.pool).await?)
            }

            async fn attributes_holding_pii(&self, realm: &str) -> Result<Vec<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT DISTINCT name FROM user_pii WHERE realm = $1 ORDER BY name")
                    .bind(realm).fetch_all(&self.pool).await?)
            }

            async fn set_realm_attributes(&self, realm: &str, declarations: &[(String, String)], pii: Option<&dyn $crate::store::PiiSealer>, audit: $crate::store::Audited<'_>) -> Result<usize, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                Self::lock_attributes(&mut tx, realm, true).await?;
                let names: std::collections::BTreeSet<String> = declarations
                    .iter()
                    .filter(|(_, c)| c == "pii_high")
                    .map(|(n, _)| n.clone())
                    .collect();
                // Encrypted values are never turned back into plain ones here.
                let held: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT name FROM user_pii WHERE realm = $1 ORDER BY name")
                    .bind(realm).fetch_all(&mut *tx).await?;
                if let Some((n,)) = held.iter().find(|(n,)| !names.contains(n)) {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "attribute {n} of realm {realm} holds encrypted values: it stays pii_high"
                    )));
                }
                sqlx::query("DELETE FROM realm_attributes WHERE realm = $1").bind(realm).execute(&mut *tx).await?;
                for (n, c) in declarations {
                    sqlx::query("INSERT INTO realm_attributes (realm, name, classification) VALUES ($1, $2, $3)")
                        .bind(realm).bind(n).bind(c).execute(&mut *tx).await
                        .map_err(|e| $crate::store::map_unique(e, || format!("realm {realm}")))?;
                }
                let moved = Self::sweep_pii_in_tx(&mut tx, realm, &names, pii).await?;
                tx.commit().await?;
                Ok(moved)
            }

            async fn migrate_pii(&self, realm: &str, pii: &dyn $crate::store::PiiSealer) -> Result<usize, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_attributes(&mut tx, realm, true).await?;
                let names = Self::pii_names_in_tx(&mut tx, realm).await?;
                let moved = Self::sweep_pii_in_tx(&mut tx, realm, &names, Some(pii)).await?;
                tx.commit().await?;
                Ok(moved)
            }

            async fn realm_pii_key(&self, realm: &str) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
                let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT sealed FROM realm_pii_keys WHERE realm = $1")
                    .bind(realm).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| r.0))
            }

            async fn insert_realm_pii_key(&self, realm: &str, sealed: &[u8], now: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO realm_pii_keys (realm, sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT (realm) DO NOTHING")
                    .bind(realm).bind(sealed).bind(now).execute(&self.pool).await
                    .map_err(|e| $crate::store::map_unique(e, || format!("realm {realm}")))?;
                Ok(())
            }

            async fn realm_pii_keys(&self) -> Result<Vec<(String, Vec<u8>)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT realm, sealed FROM realm_pii_keys ORDER BY realm")
                    .fetch_all(&self.pool).await?)
            }

            async fn user_pii(&self, realm: &str, user_id: &str) -> Result<Vec<(String, Vec<u8>)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT name, sealed FROM user_pii WHERE realm = $1 AND user_id = $2 ORDER BY name")
                    .bind(realm).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn users_by_pii_index(&self, realm: &str, name: &str, index: &str) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT user_id FROM user_pii WHERE realm = $1 AND name = $2 AND blind_index = $3 ORDER BY user_id",
                )
                .bind(realm).bind(name).bind(index).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn set_group_scopes(&self, realm: &str, name: &str, scopes: &str, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query("UPDATE groups SET scopes = $1 WHERE realm = $2 AND name = $3")
                    .bind(scopes).bind(realm).bind(name)
                    .execute(&mut *tx).await?.rows_affected() == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn delete_group(&self, realm: &str, name: &str, keep_policies: bool, removing: &[String], audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query("DELETE FROM user_groups WHERE realm = $1 AND grp = $2")
                    .bind(realm).bind(name).execute(&mut *tx).await?;
                let done = sqlx::query("DELETE FROM groups WHERE realm = $1 AND name = $2")
                    .bind(realm).bind(name)
                    .execute(&mut *tx).await?.rows_affected() == 1;
                if done {
                    Self::drop_principal_policies(&mut tx, realm, "group", name, keep_policies, removing).await?;
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn groups(&self, realm: &str) -> Result<Vec<$crate::store::login::GroupRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT realm, name, scopes FROM groups WHERE realm = $1 ORDER BY name")
                    .bind(realm).fetch_all(&self.pool).await?)
            }

            async fn create_user(&self, u: &$crate::store::login::UserRecord, groups: &[String], pii: Option<&dyn $crate::store::PiiSealer>, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                Self::lock_attributes(&mut tx, &u.realm, false).await?;
                // pii_high values go to their own rows, sealed; the rest stay in the JSON.
                let names = Self::pii_names_in_tx(&mut tx, &u.realm).await?;
                let mut plain: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&u.attributes).unwrap_or_default();
                let secret: Vec<(String, String)> = plain
                    .iter()
                    .filter(|(k, _)| names.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, _) in &secret {
                    plain.remove(k);
                }
                let attributes = serde_json::to_string(&plain).unwrap_or_else(|_| "{}".into());
                let u = &$crate::store::login::UserRecord { attributes, ..u.clone() };
                sqlx::query(
                    "INSERT INTO users (realm, id, username, enabled, attributes, password_hash, totp_sealed, \
                     totp_last_step, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&u.realm).bind(&u.id).bind(&u.username).bind(u.enabled).bind(&u.attributes)
                .bind(&u.password_hash).bind(&u.totp_sealed).bind(u.totp_last_step).bind(u.created_at).bind(u.updated_at)
                .bind(u.version)
                .execute(&mut *tx).await
                .map_err(|e| $crate::store::map_unique(e, || format!("user {} in realm {}", u.username, u.realm)))?;
                for g in groups {
                    sqlx::query("INSERT INTO user_groups (realm, user_id, grp) VALUES ($1, $2, $3)")
                        .bind(&u.realm).bind(&u.id).bind(g)
                        .execute(&mut *tx).await
                        .map_err(|e| $crate::store::map_unique(e, || format!("group {g} in realm {}", u.realm)))?;
                }
                for (k, v) in &secret {
                    Self::put_pii_in_tx(&mut tx, &u.realm, &u.id, k, Some(v), pii).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn user_by_name(&self, realm: &str, username: &str) -> Result<Option<$crate::store::login::UserRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, id, username, enabled, attributes, password_hash, totp_sealed, totp_last_step, \
                     created_at, updated_at, version FROM users WHERE realm = $1 AND username = $2",
                ).bind(realm).bind(username).fetch_optional(&self.pool).await?)
            }

            async fn users_page(&self, realm: &str, after: &str, limit: i64) -> Result<Vec<$crate::store::login::UserRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, id, username, enabled, attributes, password_hash, totp_sealed, totp_last_step, \
                     created_at, updated_at, version FROM users WHERE realm = $1 AND username > $2 \
                     ORDER BY username LIMIT $3",
                ).bind(realm).bind(after).bind(limit).fetch_all(&self.pool).await?)
            }

            async fn user_by_id(&self, realm: &str, id: &str) -> Result<Option<$crate::store::login::UserRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, id, username, enabled, attributes, password_hash, totp_sealed, totp_last_step, \
                     created_at, updated_at, version FROM users WHERE realm = $1 AND id = $2",
                ).bind(realm).bind(id).fetch_optional(&self.pool).await?)
            }

            async fn set_user_enabled(&self, realm: &str, user_id: &str, expected: Option<i64>, enabled: bool, now: i64, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                if !enabled {
                    Self::lock_revocations(&mut tx, realm).await?;
                }
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE users SET enabled = $1, updated_at = $2, version = version + 1 \
                     WHERE realm = $3 AND id = $4 AND ($5 IS NULL OR version = $5)",
                )
                    .bind(enabled).bind(now).bind(realm).bind(user_id).bind(expected)
                    .execute(&mut *tx).await?.rows_affected() == 1;
                if !done {
                    return Ok(false);
                }
                if !enabled {
                    Self::end_everything_in_tx(&mut tx, realm, user_id, None, now).await?;
                    // Every token of the user issued until now stops at the validators, with or
                    // without a session.
                    sqlx::query(
                        "INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at) \
                         VALUES ($1, 'sub', $2, $3, $3, $4)",
                    ).bind(realm).bind(user_id).bind(now).bind(now + $crate::store::REVOCATION_HORIZON_SECS)
                    .execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            #[allow(clippy::too_many_arguments)]
            async fn update_user_attributes(&self, realm: &str, user_id: &str, expected: Option<i64>, changes: &[(String, String)], pii: Option<&dyn $crate::store::PiiSealer>, now: i64, audit: $crate::store::Audited<'_>) -> Result<Option<String>, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                // Take the row's lock first (SQLite already holds the write lock), then read.
                if sqlx::query(
                    "UPDATE users SET updated_at = $1, version = version + 1 \
                     WHERE realm = $2 AND id = $3 AND ($4 IS NULL OR version = $4)",
                )
                    .bind(now).bind(realm).bind(user_id).bind(expected)
                    .execute(&mut *tx).await?.rows_affected() != 1
                {
                    return Ok(None);
                }
                let (attrs,): (String,) = sqlx::query_as("SELECT attributes FROM users WHERE realm = $1 AND id = $2")
                    .bind(realm).bind(user_id).fetch_one(&mut *tx).await?;
                Self::lock_attributes(&mut tx, realm, false).await?;
                let names = Self::pii_names_in_tx(&mut tx, realm).await?;
                let mut map: std::collections::BTreeMap<String, String> = serde_json::from_str(&attrs).unwrap_or_default();
                for (k, v) in changes {
                    if names.contains(k) {
                        map.remove(k);
                        let value = (!v.is_empty()).then_some(v.as_str());
                        Self::put_pii_in_tx(&mut tx, realm, user_id, k, value, pii).await?;
                    } else if v.is_empty() {
                        map.remove(k);
                    } else {
                        map.insert(k.clone(), v.clone());
                    }
                }
                let json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
                sqlx::query("UPDATE users SET attributes = $1 WHERE realm = $2 AND id = $3")
                    .bind(&json).bind(realm).bind(user_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(json))
            }

            #[allow(clippy::too_many_arguments)]
            async fn enrol(&self, invite_hash: &str, realm: &str, user_id: &str, enrolment: &$crate::store::login::Enrolment, first_only: bool, now: i64, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let spent = sqlx::query(
                    "DELETE FROM invites WHERE token_hash = $1 AND realm = $2 AND user_id = $3 AND expires_at > $4",
                ).bind(invite_hash).bind(realm).bind(user_id).bind(now)
                .execute(&mut *tx).await?.rows_affected() == 1;
                if !spent {
                    return Ok(false); // rolled back: another enrolment spent it first
                }
                if first_only {
                    // The user's row locked first (concurrent enrolments through other invites
                    // wait here), then read afresh: only a user with no factor yet is enrolled.
                    sqlx::query("UPDATE users SET updated_at = $1 WHERE realm = $2 AND id = $3")
                        .bind(now).bind(realm).bind(user_id).execute(&mut *tx).await?;
                    let (factors,): (i64,) = sqlx::query_as(
                        "SELECT (SELECT COUNT(*) FROM passkeys WHERE realm = $1 AND user_id = $2) \
                         + (SELECT COUNT(*) FROM users WHERE realm = $1 AND id = $2 \
                            AND (password_hash IS NOT NULL OR totp_sealed IS NOT NULL))",
                    ).bind(realm).bind(user_id).fetch_one(&mut *tx).await?;
                    if factors > 0 {
                        return Ok(false); // rolled back: enrolled meanwhile through another invite
                    }
                }
                match enrolment {
                    $crate::store::login::Enrolment::Passkey(p) => Self::insert_passkey(&mut tx, p).await?,
                    $crate::store::login::Enrolment::PasswordTotp { password_hash, totp_sealed, totp_step, recovery_hashes } => {
                        sqlx::query(
                            "UPDATE users SET password_hash = $1, totp_sealed = $2, totp_last_step = $3, updated_at = $4 \
                             WHERE realm = $5 AND id = $6",
                        ).bind(password_hash).bind(totp_sealed).bind(totp_step).bind(now).bind(realm).bind(user_id)
                        .execute(&mut *tx).await?;
                        Self::replace_recovery_in_tx(&mut tx, realm, user_id, recovery_hashes).await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn change_credentials(&self, realm: &str, user_id: &str, keep_session: &str, change: &$crate::store::login::CredentialChange, now: i64, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::login::CredentialChange as C;
                let mut tx = self.pool.begin().await?;
                Self::lock_revocations(&mut tx, realm).await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let changed = match change {
                    C::AddPasskey(p) => {
                        Self::insert_passkey(&mut tx, p).await?;
                        true
                    }
                    C::RemovePasskey { credential_id } => sqlx::query(
                        "DELETE FROM passkeys WHERE realm = $1 AND user_id = $2 AND credential_id = $3",
                    ).bind(realm).bind(user_id).bind(credential_id)
                    .execute(&mut *tx).await?.rows_affected() == 1,
                    C::ReplaceTotp { sealed, step } => sqlx::query(
                        "UPDATE users SET totp_sealed = $1, totp_last_step = $2, updated_at = $3 WHERE realm = $4 AND id = $5",
                    ).bind(sealed).bind(step).bind(now).bind(realm).bind(user_id)
                    .execute(&mut *tx).await?.rows_affected() == 1,
                    C::ReplaceRecoveryCodes { hashes } => {
                        Self::replace_recovery_in_tx(&mut tx, realm, user_id, hashes).await?;
                        true
                    }
                    C::RemoveSecondFactors => {
                        sqlx::query("DELETE FROM passkeys WHERE realm = $1 AND user_id = $2")
                            .bind(realm).bind(user_id).execute(&mut *tx).await?;
                        Self::replace_recovery_in_tx(&mut tx, realm, user_id, &[]).await?;
                        sqlx::query(
                            "UPDATE users SET totp_sealed = NULL, totp_last_step = 0, updated_at = $1 WHERE realm = $2 AND id = $3",
                        ).bind(now).bind(realm).bind(user_id)
                        .execute(&mut *tx).await?.rows_affected() == 1
                    }
                };
                if !changed {
                    return Ok(false);
                }
                Self::end_everything_in_tx(&mut tx, realm, user_id, Some(keep_session), now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn has_recovery_code(&self, realm: &str, user_id: &str, hash: &str) -> Result<bool, $crate::store::StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT code_hash FROM recovery_codes WHERE realm = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                ).bind(realm).bind(user_id).bind(hash).fetch_optional(&self.pool).await?;
                Ok(row.is_some())
            }

            async fn add_user_group(&self, realm: &str, user_id: &str, group: &str, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query("INSERT INTO user_groups (realm, user_id, grp) VALUES ($1, $2, $3)")
                    .bind(realm).bind(user_id).bind(group)
                    .execute(&mut *tx).await
                    .map_err(|e| $crate::store::map_unique(e, || format!("group {group} membership")))?;
                tx.commit().await?;
                Ok(())
            }

            async fn remove_user_group(&self, realm: &str, user_id: &str, group: &str, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query("DELETE FROM user_groups WHERE realm = $1 AND user_id = $2 AND grp = $3")
                    .bind(realm).bind(user_id).bind(group)
                    .execute(&mut *tx).await?.rows_affected() == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn user_groups(&self, realm: &str, user_id: &str) -> Result<Vec<$crate::store::login::GroupRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT g.realm, g.name, g.scopes FROM user_groups ug JOIN groups g \
                     ON g.realm = ug.realm AND g.name = ug.grp WHERE ug.realm = $1 AND ug.user_id = $2 ORDER BY g.name",
                ).bind(realm).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn use_totp_step(&self, realm: &str, user_id: &str, step: i64) -> Result<bool, $crate::store::StoreError> {
                Ok(sqlx::query("UPDATE users SET totp_last_step = $1 WHERE realm = $2 AND id = $3 AND totp_last_step < $1")
                    .bind(step).bind(realm).bind(user_id)
                    .execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn replace_recovery_codes(&self, realm: &str, user_id: &str, hashes: &[String], audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query("DELETE FROM recovery_codes WHERE realm = $1 AND user_id = $2")
                    .bind(realm).bind(user_id).execute(&mut *tx).await?;
                for h in hashes {
                    sqlx::query("INSERT INTO recovery_codes (realm, user_id, code_hash) VALUES ($1, $2, $3)")
                        .bind(realm).bind(user_id).bind(h).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn use_recovery_code(&self, realm: &str, user_id: &str, hash: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                Ok(sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1 WHERE realm = $2 AND user_id = $3 AND code_hash = $4 \
                     AND used_at IS NULL",
                ).bind(now).bind(realm).bind(user_id).bind(hash)
                .execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn add_passkey(&self, p: &$crate::store::login::PasskeyRecord, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                Self::insert_passkey(&mut tx, p).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn passkeys(&self, realm: &str, user_id: &str) -> Result<Vec<$crate::store::login::PasskeyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, user_id, credential_id, name, passkey, created_at, last_used_at FROM passkeys \
                     WHERE realm = $1 AND user_id = $2 ORDER BY created_at",
                ).bind(realm).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn passkey(&self, realm: &str, credential_id: &str) -> Result<Option<$crate::store::login::PasskeyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT realm, user_id, credential_id, name, passkey, created_at, last_used_at FROM passkeys \
                     WHERE realm = $1 AND credential_id = $2",
                ).bind(realm).bind(credential_id).fetch_optional(&self.pool).await?)
            }

            async fn update_passkey(&self, realm: &str, credential_id: &str, passkey: &str, now: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE realm = $3 AND credential_id = $4")
                    .bind(passkey).bind(now).bind(realm).bind(credential_id)
                    .execute(&self.pool).await?;
                Ok(())
            }

            async fn delete_passkey(&self, realm: &str, user_id: &str, credential_id: &str, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query("DELETE FROM passkeys WHERE realm = $1 AND user_id = $2 AND credential_id = $3")
                    .bind(realm).bind(user_id).bind(credential_id)
                    .execute(&mut *tx).await?.rows_affected() == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn create_invite(&self, token_hash: &str, realm: &str, user_id: &str, expires_at: i64, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query("INSERT INTO invites (token_hash, realm, user_id, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(token_hash).bind(realm).bind(user_id).bind(expires_at)
                    .execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn invite(&self, token_hash: &str, realm: &str, now: i64) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT user_id FROM invites WHERE token_hash = $1 AND realm = $2 AND expires_at > $3",
                ).bind(token_hash).bind(realm).bind(now).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| r.0))
            }

            async fn invite_expired(&self, token_hash: &str, realm: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT expires_at FROM invites WHERE token_hash = $1 AND realm = $2 AND expires_at <= $3",
                ).bind(token_hash).bind(realm).bind(now).fetch_optional(&self.pool).await?;
                Ok(row.is_some())
            }

            async fn put_flow(&self, id_hash: &str, realm: &str, kind: &str, data: &str, expires_at: i64, _now: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO flows (id_hash, realm, kind, data, expires_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id_hash) DO UPDATE SET realm = excluded.realm, kind = excluded.kind, \
                     data = excluded.data, expires_at = excluded.expires_at",
                )
                .bind(id_hash).bind(realm).bind(kind).bind(data).bind(expires_at)
                .execute(&self.pool).await?;
                Ok(())
            }

            async fn flow(&self, id_hash: &str, realm: &str, kind: &str, now: i64) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT data FROM flows WHERE id_hash = $1 AND realm = $2 AND kind = $3 AND expires_at > $4",
                ).bind(id_hash).bind(realm).bind(kind).bind(now).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| r.0))
            }

            async fn delete_flow(&self, id_hash: &str) -> Result<bool, $crate::store::StoreError> {
                Ok(sqlx::query("DELETE FROM flows WHERE id_hash = $1").bind(id_hash)
                    .execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn take_flow(&self, id_hash: &str, realm: &str, kind: &str, now: i64) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String, i64)> = sqlx::query_as(
                    "DELETE FROM flows WHERE id_hash = $1 AND realm = $2 AND kind = $3 RETURNING data, expires_at",
                ).bind(id_hash).bind(realm).bind(kind).fetch_optional(&self.pool).await?;
                Ok(row.filter(|(_, exp)| *exp > now).map(|(d, _)| d))
            }

            async fn purge_expired(&self, now: i64, limit: i64) -> Result<u64, $crate::store::StoreError> {
                let mut n = 0;
                for (table, key) in [
                    ("flows", "id_hash"),
                    ("auth_codes", "code_hash"),
                    ("refresh_tokens", "token_hash"),
                    ("invites", "token_hash"),
                    ("revocations", "seq"),
                ] {
                    // Each table in its own short transaction, bounded by `limit`, so the audit
                    // writer never waits long behind housekeeping.
                    n += sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE expires_at < $1 LIMIT $2)"
                    )))
                    .bind(now).bind(limit).execute(&self.pool).await?.rows_affected();
                }
                n += sqlx::query(
                    "DELETE FROM aws_challenges WHERE nonce_hash IN \
                     (SELECT nonce_hash FROM aws_challenges WHERE expires_at < $1 LIMIT $2)",
                ).bind(now).bind(limit).execute(&self.pool).await?.rows_affected();
                Ok(n)
            }

            async fn open_session(&self, s: &$crate::store::login::SessionRecord, extras: &$crate::store::login::SessionExtras, now: i64, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                if let Some((key, expires_at)) = &extras.claim {
                    let claimed = sqlx::query(
                        "INSERT INTO flows (id_hash, realm, kind, data, expires_at) VALUES ($1, $2, 'claimed', '', $3) \
                         ON CONFLICT (id_hash) DO NOTHING",
                    ).bind(key).bind(&s.realm).bind(expires_at)
                    .execute(&mut *tx).await?.rows_affected() == 1;
                    if !claimed {
                        return Ok(false);
                    }
                }
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query(
                    "INSERT INTO sessions (id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                ).bind(&s.id_hash).bind(&s.realm).bind(&s.user_id).bind(&s.sid).bind(s.created_at)
                .bind(s.last_seen).bind(s.auth_time).bind(&s.amr).bind(&s.acr)
                .execute(&mut *tx).await?;
                if let Some((credential_id, passkey)) = &extras.passkey {
                    sqlx::query("UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE realm = $3 AND credential_id = $4")
                        .bind(passkey).bind(now).bind(&s.realm).bind(credential_id)
                        .execute(&mut *tx).await?;
                }
                if let Some((code_hash, data, family, expires_at)) = &extras.code {
                    sqlx::query("INSERT INTO auth_codes (code_hash, realm, data, family, expires_at) VALUES ($1, $2, $3, $4, $5)")
                        .bind(code_hash).bind(&s.realm).bind(data).bind(family).bind(expires_at)
                        .execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn session(&self, id_hash: &str, realm: &str) -> Result<Option<$crate::store::login::SessionRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr FROM sessions \
                     WHERE id_hash = $1 AND realm = $2",
                ).bind(id_hash).bind(realm).fetch_optional(&self.pool).await?)
            }

            async fn session_by_sid(&self, realm: &str, sid: &str) -> Result<Option<$crate::store::login::SessionRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr FROM sessions \
                     WHERE realm = $1 AND sid = $2",
                ).bind(realm).bind(sid).fetch_optional(&self.pool).await?)
            }

            async fn reauthenticate_session(&self, id_hash: &str, now: i64, amr: &str, acr: &str, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let done = sqlx::query(
                    "UPDATE sessions SET auth_time = $1, last_seen = $1, amr = $2, acr = $3 WHERE id_hash = $4",
                ).bind(now).bind(amr).bind(acr).bind(id_hash)
                .execute(&mut *tx).await?.rows_affected() == 1;
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id_hash = $2")
                    .bind(now).bind(id_hash).execute(&self.pool).await?;
                Ok(())
            }

            async fn sessions_of(&self, realm: &str, user_id: &str) -> Result<Vec<$crate::store::login::SessionRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr FROM sessions \
                     WHERE realm = $1 AND user_id = $2 ORDER BY created_at",
                ).bind(realm).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn lapsed_sessions(&self, realm: &str, idle_before: i64, created_before: i64, limit: i64) -> Result<Vec<$crate::store::login::SessionRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr FROM sessions \
                     WHERE realm = $1 AND (last_seen < $2 OR created_at < $3) LIMIT $4",
                ).bind(realm).bind(idle_before).bind(created_before).bind(limit).fetch_all(&self.pool).await?)
            }

            async fn end_session(&self, id_hash: &str, realm: &str, now: i64, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_revocations(&mut tx, realm).await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let ended: Vec<(String, String)> = sqlx::query_as(
                    "DELETE FROM sessions WHERE id_hash = $1 AND realm = $2 RETURNING sid, user_id",
                ).bind(id_hash).bind(realm).fetch_all(&mut *tx).await?;
                if ended.is_empty() {
                    return Ok(false);
                }
                Self::after_sessions_ended(&mut tx, realm, &ended, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn sign_out_everywhere(&self, realm: &str, user_id: &str, now: i64, audit: $crate::store::Audited<'_>) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_revocations(&mut tx, realm).await?;
                // The audit head first, as in every transaction (one lock order: head, then rows).
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let n = Self::end_everything_in_tx(&mut tx, realm, user_id, None, now).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn put_code(&self, code_hash: &str, realm: &str, data: &str, family: &str, expires_at: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO auth_codes (code_hash, realm, data, family, expires_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(code_hash).bind(realm).bind(data).bind(family).bind(expires_at)
                    .execute(&self.pool).await?;
                Ok(())
            }

            async fn code(&self, code_hash: &str, realm: &str) -> Result<Option<$crate::store::login::CodeRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT data, family, expires_at, used_at FROM auth_codes WHERE code_hash = $1 AND realm = $2",
                ).bind(code_hash).bind(realm).fetch_optional(&self.pool).await?)
            }

            async fn consume_code(&self, code_hash: &str, realm: &str, now: i64, refresh: &$crate::store::login::RefreshRecord, sid: &str, audit: $crate::store::Audited<'_>) -> Result<$crate::store::login::CodeSpend, $crate::store::StoreError> {
                use $crate::store::login::CodeSpend;
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let fresh = sqlx::query(
                    "UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND realm = $3 AND used_at IS NULL \
                     AND expires_at > $1",
                ).bind(now).bind(code_hash).bind(realm).execute(&mut *tx).await?.rows_affected() == 1;
                if !fresh {
                    return Ok(CodeSpend::Spent);
                }
                // Lock the session row (PostgreSQL: an ending session's DELETE waits for this
                // transaction, then sees the client below), or learn that it already ended.
                let live = sqlx::query("UPDATE sessions SET last_seen = last_seen WHERE realm = $1 AND sid = $2")
                    .bind(realm).bind(sid).execute(&mut *tx).await?.rows_affected() == 1;
                if !live {
                    return Ok(CodeSpend::SessionEnded);
                }
                sqlx::query(
                    "INSERT INTO session_clients (realm, sid, client_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (realm, sid, client_id) DO NOTHING",
                ).bind(realm).bind(sid).bind(&refresh.client_id).bind(now).execute(&mut *tx).await?;
                Self::insert_refresh(&mut tx, refresh).await?;
                tx.commit().await?;
                Ok(CodeSpend::Issued)
            }

            async fn rotate_refresh(&self, token_hash: &str, realm: &str, now: i64, next: &$crate::store::login::RefreshRecord, sid: &str, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let fresh = sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND realm = $3 AND used_at IS NULL \
                     AND revoked_at IS NULL AND expires_at > $1",
                ).bind(now).bind(token_hash).bind(realm).execute(&mut *tx).await?.rows_affected() == 1;
                if !fresh {
                    return Ok(false);
                }
                Self::insert_refresh(&mut tx, next).await?;
                sqlx::query("UPDATE sessions SET last_seen = $1 WHERE realm = $2 AND sid = $3 AND last_seen < $1")
                    .bind(now).bind(realm).bind(sid).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn revoke_family(&self, family: &str, session: Option<(&str, &str)>, now: i64, audit: $crate::store::Audited<'_>) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                if let Some((realm, _)) = session {
                    Self::lock_revocations(&mut tx, realm).await?;
                }
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                if let Some((realm, sid)) = session {
                    let ended: Vec<(String, String)> = sqlx::query_as(
                        "DELETE FROM sessions WHERE realm = $1 AND sid = $2 RETURNING sid, user_id",
                    ).bind(realm).bind(sid).fetch_all(&mut *tx).await?;
                    Self::after_sessions_ended(&mut tx, realm, &ended, now).await?;
                }
                let n = sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
                    .bind(now).bind(family).execute(&mut *tx).await?.rows_affected();
                sqlx::query("UPDATE auth_codes SET used_at = COALESCE(used_at, $1) WHERE family = $2")
                    .bind(now).bind(family).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn claim_logouts(&self, owner: &str, now: i64, lease_secs: i64, limit: i64) -> Result<Vec<$crate::store::login::LogoutDelivery>, $crate::store::StoreError> {
                // A read first: an idle outbox costs no write lock.
                let due: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM logout_outbox WHERE next_attempt_at <= $1 AND lease_until <= $1 LIMIT 1",
                ).bind(now).fetch_optional(&self.pool).await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                // The conditions are repeated on the row itself: PostgreSQL re-checks them after
                // waiting for another node's claim of the same row, which then no longer matches.
                Ok(sqlx::query_as(
                    "UPDATE logout_outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM logout_outbox WHERE next_attempt_at <= $3 AND lease_until <= $3 \
                     ORDER BY next_attempt_at, id LIMIT $4) AND next_attempt_at <= $3 AND lease_until <= $3 \
                     RETURNING id, realm, client_id, uri, sid, sub, created_at, attempts",
                ).bind(owner).bind(now + lease_secs).bind(now).bind(limit).fetch_all(&self.pool).await?)
            }

            async fn defer_logout(&self, id: i64, owner: &str, next_attempt_at: i64) -> Result<bool, $crate::store::StoreError> {
                Ok(sqlx::query(
                    "UPDATE logout_outbox SET next_attempt_at = $1, lease_owner = '', lease_until = 0, \
                     attempts = attempts - 1 WHERE id = $2 AND lease_owner = $3",
                ).bind(next_attempt_at).bind(id).bind(owner).execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn settle_logout(&self, id: i64, owner: &str, next_attempt_at: Option<i64>, audit: $crate::store::Audited<'_>) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let held = match next_attempt_at {
                    None => sqlx::query("DELETE FROM logout_outbox WHERE id = $1 AND lease_owner = $2")
                        .bind(id).bind(owner).execute(&mut *tx).await?.rows_affected() == 1,
                    Some(at) => sqlx::query(
                        "UPDATE logout_outbox SET next_attempt_at = $1, lease_owner = '', lease_until = 0 \
                         WHERE id = $2 AND lease_owner = $3",
                    ).bind(at).bind(id).bind(owner).execute(&mut *tx).await?.rows_affected() == 1,
                };
                if !held {
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn refresh_token(&self, token_hash: &str, realm: &str) -> Result<Option<$crate::store::login::RefreshRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT token_hash, realm, family, user_id, client_id, data, expires_at, used_at, revoked_at \
                     FROM refresh_tokens WHERE token_hash = $1 AND realm = $2",
                ).bind(token_hash).bind(realm).fetch_optional(&self.pool).await?)
            }

            async fn revoke_access_token(&self, jti_hash: &str, jti: &str, realm: &str, exp: i64, now: i64, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_revocations(&mut tx, realm).await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                let first = sqlx::query(
                    "INSERT INTO flows (id_hash, realm, kind, data, expires_at) VALUES ($1, $2, 'revoked_at', '', $3) \
                     ON CONFLICT (id_hash) DO NOTHING",
                ).bind(jti_hash).bind(realm).bind(exp).execute(&mut *tx).await?.rows_affected() == 1;
                if first {
                    sqlx::query(
                        "INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at) \
                         VALUES ($1, 'jti', $2, $3, $3, $4)",
                    ).bind(realm).bind(jti).bind(now).bind(exp + $crate::store::VALIDATOR_LEEWAY_SECS)
                    .execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn revocations_after(&self, realm: &str, after: i64, now: i64, limit: i64) -> Result<Vec<$crate::store::login::RevocationRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT seq, kind, value, not_before, created_at, expires_at FROM revocations \
                     WHERE realm = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
                ).bind(realm).bind(after).bind(now).bind(limit).fetch_all(&self.pool).await?)
            }

            async fn access_token_revoked(&self, jti_hash: &str, realm: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT expires_at FROM flows WHERE id_hash = $1 AND realm = $2 AND kind = 'revoked_at' AND expires_at > $3",
                ).bind(jti_hash).bind(realm).bind(now).fetch_optional(&self.pool).await?;
                Ok(row.is_some())
            }

            async fn consent(&self, realm: &str, user_id: &str, client_id: &str) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT scope FROM consents WHERE realm = $1 AND user_id = $2 AND client_id = $3",
                ).bind(realm).bind(user_id).bind(client_id).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| r.0))
            }

            async fn put_consent(&self, realm: &str, user_id: &str, client_id: &str, scope: &str, now: i64, audit: $crate::store::Audited<'_>) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_in_tx(&self.chain, &mut tx, audit).await?;
                sqlx::query(
                    "INSERT INTO consents (realm, user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (realm, user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
                ).bind(realm).bind(user_id).bind(client_id).bind(scope).bind(now)
                .execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn user_events(&self, realm: &str, user_id: &str, kinds: &[&str], limit: i64) -> Result<Vec<$crate::audit::AuditRecord>, $crate::store::StoreError> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT chain, seq, ts, realm, kind, actor, subject, detail, prev_hash, hash FROM audit_log WHERE realm = ",
                );
                qb.push_bind(realm).push(" AND subject = ").push_bind(user_id).push(" AND kind IN (");
                let mut sep = qb.separated(", ");
                for k in kinds {
                    sep.push_bind(*k);
                }
                // By time: seqs of different chains (one per node) do not compare.
                qb.push(") ORDER BY ts DESC, seq DESC LIMIT ").push_bind(limit);
                Ok(qb.build_query_as().fetch_all(&self.pool).await?)
            }
        }

        impl $ty {
            async fn insert_passkey(tx: &mut sqlx::Transaction<'_, $db>, p: &$crate::store::login::PasskeyRecord) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO passkeys (realm, user_id, credential_id, name, passkey, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                ).bind(&p.realm).bind(&p.user_id).bind(&p.credential_id).bind(&p.name).bind(&p.passkey)
                .bind(p.created_at).bind(p.last_used_at)
                .execute(&mut **tx).await
                .map_err(|e| $crate::store::map_unique(e, || "passkey".to_owned()))?;
                Ok(())
            }

            async fn insert_refresh(tx: &mut sqlx::Transaction<'_, $db>, r: &$crate::store::login::RefreshRecord) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, realm, family, user_id, client_id, data, expires_at, \
                     used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                ).bind(&r.token_hash).bind(&r.realm).bind(&r.family).bind(&r.user_id).bind(&r.client_id)
                .bind(&r.data).bind(r.expires_at).bind(r.used_at).bind(r.revoked_at)
                .execute(&mut **tx).await?;
                Ok(())
            }

            async fn replace_recovery_in_tx(tx: &mut sqlx::Transaction<'_, $db>, realm: &str, user_id: &str, hashes: &[String]) -> Result<(), $crate::store::StoreError> {
                sqlx::query("DELETE FROM recovery_codes WHERE realm = $1 AND user_id = $2")
                    .bind(realm).bind(user_id).execute(&mut **tx).await?;
                for h in hashes {
                    sqlx::query("INSERT INTO recovery_codes (realm, user_id, code_hash) VALUES ($1, $2, $3)")
                        .bind(realm).bind(user_id).bind(h).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// What follows the deletion of sessions (`sid`, `user_id`), in its transaction: every
            /// ended session's tokens stop at the validators (the revocation feed), and each client
            /// that had tokens in it and registered a back-channel logout URI is told (the outbox).
            /// The sessions are deleted first: on PostgreSQL that waits for a code redemption that
            /// holds the session row, whose client is then seen here.
            async fn after_sessions_ended(tx: &mut sqlx::Transaction<'_, $db>, realm: &str, ended: &[(String, String)], now: i64) -> Result<(), $crate::store::StoreError> {
                // A few statements per 500 sessions, not three per session: a sign-out of
                // thousands of sessions stays short (it holds the realm's revocation lock).
                for chunk in ended.chunks(500) {
                    let horizon = now + $crate::store::REVOCATION_HORIZON_SECS;
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at) ",
                    );
                    qb.push_values(chunk, |mut row, (sid, _)| {
                        row.push_bind(realm).push("'sid'").push_bind(sid).push_bind(now)
                            .push_bind(now).push_bind(horizon);
                    });
                    qb.build().execute(&mut **tx).await?;

                    let mut qb = sqlx::QueryBuilder::<$db>::new("WITH ended (sid, sub) AS (");
                    qb.push_values(chunk, |mut row, (sid, user_id)| {
                        row.push_bind(sid).push_bind(user_id);
                    });
                    qb.push(
                        ") INSERT INTO logout_outbox (realm, client_id, uri, sid, sub, created_at, next_attempt_at) \
                         SELECT sc.realm, sc.client_id, c.backchannel_logout_uri, sc.sid, e.sub, ",
                    );
                    qb.push_bind(now).push(", ").push_bind(now).push(
                        " FROM ended e JOIN session_clients sc ON sc.sid = e.sid \
                         JOIN clients c ON c.realm = sc.realm AND c.client_id = sc.client_id \
                         WHERE sc.realm = ",
                    );
                    qb.push_bind(realm).push(
                        " AND c.backchannel_logout_uri IS NOT NULL ORDER BY sc.sid, sc.client_id",
                    );
                    qb.build().execute(&mut **tx).await?;

                    let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM session_clients WHERE realm = ");
                    qb.push_bind(realm).push(" AND sid IN (");
                    let mut list = qb.separated(", ");
                    for (sid, _) in chunk {
                        list.push_bind(sid);
                    }
                    qb.push(")");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Ends the user's sessions (all, or all but `keep`) and revokes every refresh token;
            /// codes die with their session (redemption checks it).
            async fn end_everything_in_tx(tx: &mut sqlx::Transaction<'_, $db>, realm: &str, user_id: &str, keep: Option<&str>, now: i64) -> Result<u64, $crate::store::StoreError> {
                let ended: Vec<(String, String)> = sqlx::query_as(
                    "DELETE FROM sessions WHERE realm = $1 AND user_id = $2 AND id_hash <> $3 RETURNING sid, user_id",
                ).bind(realm).bind(user_id).bind(keep.unwrap_or("")).fetch_all(&mut **tx).await?;
                let sessions = ended.len() as u64;
                Self::after_sessions_ended(tx, realm, &ended, now).await?;
                let tokens = sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 WHERE realm = $2 AND user_id = $3 AND revoked_at IS NULL",
                ).bind(now).bind(realm).bind(user_id).execute(&mut **tx).await?.rows_affected();
                Ok(sessions + tokens)
            }
        }
    };
}

pub(crate) use impl_login_store;
