//! Realm signing keys: generation, encryption at rest under the KEK, signing, and JWKS documents.

pub mod cloud;
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
    #[error("key-encryption key: {0}")]
    Secret(#[from] crate::secrets::SecretError),
    #[error(
        "KEK file {path} is missing but the database holds private keys sealed under {ids}; \
         restore the KEK file (a new one would not open them)"
    )]
    Missing { path: String, ids: String },
    #[error(
        "the KEK of {kek} ({found}) is not the one the database's keys are sealed under ({ids})"
    )]
    Mismatch {
        kek: String,
        found: String,
        ids: String,
    },
    #[error(
        "the database holds no data key for {kek}: the keys it holds are sealed under another \
         KEK; move them with `sigil kek rotate --to {kek}` first"
    )]
    NoDataKey { kek: String },
}

/// Opens the configured KEK (`kek_file` or `kek_source`) and the previous KEKs beside it
/// (`kek_previous_files`, `kek_previous_sources`: opened with, never sealed with). Every KEK id
/// the database's keys are sealed under must be in that ring. Returns the ring and whether the
/// KEK was created (a new KEK file, or a new KMS data key, made only when the database holds no
/// sealed key at all).
pub async fn open_configured(
    config: &crate::config::Config,
    store: &dyn Store,
) -> Result<(Arc<dyn KekSource>, bool), KekOpenError> {
    use crate::config::KekSpec;
    if config.kek_previous.is_empty()
        && let KekSpec::File(path) = &config.kek
    {
        return open_file_kek(path, store).await;
    }
    let in_use = store.kek_ids_in_use().await?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let (primary, created): (Box<dyn KekSource>, bool) = match &config.kek {
        KekSpec::AwsKms(key) => {
            let (kek, created) = cloud::open_kms(key, store, in_use.is_empty(), now).await?;
            (Box::new(kek), created)
        }
        other => (open_existing(other, store, now).await?, false),
    };
    let mut previous = Vec::new();
    for spec in &config.kek_previous {
        previous.push(open_existing(spec, store, now).await?);
    }
    let ring = KekRing::new(primary, previous);
    if let Some(id) = in_use.iter().find(|id| !ring.can_open(id)) {
        return Err(KekOpenError::Mismatch {
            kek: config.kek.to_string(),
            found: ring.ids().join(", "),
            ids: id.clone(),
        });
    }
    Ok((Arc::new(ring), created))
}

/// A KEK that must exist already (never created): a previous KEK, or the target of nothing new.
pub async fn open_existing(
    spec: &crate::config::KekSpec,
    store: &dyn Store,
    now: i64,
) -> Result<Box<dyn KekSource>, KekOpenError> {
    use crate::config::KekSpec;
    Ok(match spec {
        KekSpec::File(path) => {
            crate::private_files::warn_if_open_to_others(path, "key-encryption key file");
            Box::new(FileKek::load(path)?)
        }
        KekSpec::AwsKms(key) => Box::new(cloud::open_kms(key, store, false, now).await?.0),
        KekSpec::AwsSecretsManager(id) => Box::new(cloud::load_secret_kek(id).await?),
    })
}

/// The KEK a rotation moves to: a file or secret that exists, or a KMS key (whose data key is
/// generated and stored now if there is none yet).
pub async fn open_rotation_target(
    spec: &crate::config::KekSpec,
    store: &dyn Store,
    now: i64,
) -> Result<Box<dyn KekSource>, KekOpenError> {
    match spec {
        crate::config::KekSpec::AwsKms(key) => {
            Ok(Box::new(cloud::open_kms(key, store, true, now).await?.0))
        }
        other => open_existing(other, store, now).await,
    }
}

/// Opens the file KEK. Creates one only when the file is absent *and* no key in the database is
/// sealed under any KEK, so a wrong path can never silently start a second key hierarchy.
/// Returns the KEK and whether it was created.
pub async fn open_file_kek(
    path: &Path,
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
    if in_use.iter().any(|id| id != kek.id()) {
        return Err(KekOpenError::Mismatch {
            kek: format!("file:{}", path.display()),
            found: kek.id().to_owned(),
            ids: in_use.join(", "),
        });
    }
    Ok((Arc::new(kek), false))
}
