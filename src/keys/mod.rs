//! Realm signing keys: generation, encryption at rest under the KEK, signing, and JWKS documents.

pub mod jwk;
pub mod kek;
pub mod rotation;
pub mod signing;

pub use jwk::Jwks;
pub use kek::{FileKek, KekRing, KekSource};
pub use signing::{Alg, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key-encryption key: {0}")]
    Kek(String),
    #[error(
        "private key of {kid} cannot be decrypted with the configured KEK ({kek_id}); it was sealed under KEK {sealed_under}"
    )]
    WrongKek {
        kid: String,
        kek_id: String,
        sealed_under: String,
    },
    #[error("private key of {0} failed to decrypt (tampered or wrong KEK)")]
    Unseal(String),
    #[error("malformed key material: {0}")]
    Malformed(String),
    #[error("signing failed")]
    Sign,
}

use std::path::Path;
use std::sync::Arc;

use crate::store::{Store, StoreError};

/// The additional data a sealed private key is bound to.
pub fn key_aad(realm: &str, kid: &str) -> Vec<u8> {
    format!("sigil-key/{realm}/{kid}").into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum KekOpenError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "KEK file {path} is missing but the database holds private keys sealed under {ids}; \
         restore the KEK file (a new one would not open them)"
    )]
    Missing { path: String, ids: String },
    #[error(
        "the KEK in {path} ({found}) is not the one the database's keys are sealed under ({ids})"
    )]
    Mismatch {
        path: String,
        found: String,
        ids: String,
    },
}

/// Opens the file KEK and the previous KEKs beside it (`kek_previous_files`, which it can still
/// open with but never seals with). Every KEK id the database's keys are sealed under must be in
/// that ring. Returns the ring and whether the KEK file was created.
pub async fn open_kek_ring(
    path: &Path,
    previous: &[std::path::PathBuf],
    store: &dyn Store,
) -> Result<(Arc<dyn KekSource>, bool), KekOpenError> {
    let (primary, created) = open_file_kek_alone(path, previous.is_empty(), store).await?;
    if previous.is_empty() {
        return Ok((primary, created));
    }
    let primary = FileKek::load(path)?;
    let mut older = Vec::new();
    for p in previous {
        crate::private_files::warn_if_open_to_others(p, "previous key-encryption key file");
        older.push(FileKek::load(p)?);
    }
    let ring = KekRing::new(primary, older);
    let in_use = store.kek_ids_in_use().await?;
    if let Some(id) = in_use.iter().find(|id| !ring.can_open(id)) {
        return Err(KekOpenError::Mismatch {
            path: path.display().to_string(),
            found: ring.ids().join(", "),
            ids: id.clone(),
        });
    }
    Ok((Arc::new(ring), created))
}

/// Opens the file KEK. Creates one only when the file is absent *and* no key in the database is
/// sealed under any KEK, so a wrong path can never silently start a second key hierarchy.
/// Returns the KEK and whether it was created.
pub async fn open_file_kek(
    path: &Path,
    store: &dyn Store,
) -> Result<(Arc<dyn KekSource>, bool), KekOpenError> {
    open_file_kek_alone(path, true, store).await
}

/// `check`: refuse keys sealed under another KEK (a ring checks against all of its KEKs itself).
async fn open_file_kek_alone(
    path: &Path,
    check: bool,
    store: &dyn Store,
) -> Result<(Arc<dyn KekSource>, bool), KekOpenError> {
    let in_use = store.kek_ids_in_use().await?;
    if !path.exists() {
        if !in_use.is_empty() {
            return Err(KekOpenError::Missing {
                path: path.display().to_string(),
                ids: in_use.join(", "),
            });
        }
        // Another process starting at the same moment may create it first: then use theirs.
        let (kek, created) = FileKek::create_or_load(path)?;
        return Ok((Arc::new(kek), created));
    }
    crate::private_files::warn_if_open_to_others(path, "key-encryption key file");
    let kek = FileKek::load(path)?;
    if check && in_use.iter().any(|id| id != kek.id()) {
        return Err(KekOpenError::Mismatch {
            path: path.display().to_string(),
            found: kek.id().to_owned(),
            ids: in_use.join(", "),
        });
    }
    Ok((Arc::new(kek), false))
}
