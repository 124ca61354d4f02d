//! Administrative operations on realms, clients and the audit log. The CLI calls these today; the
//! admin REST API will call the same functions. Every change is audited in its own transaction.

pub mod audit;
pub mod aws;
pub mod changes;
pub mod clients;
pub mod declarative;
pub mod keys;
pub mod policies;
pub mod realms;
pub mod users;

use crate::keys::KeyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// A change named a version of the resource that is no longer the current one.
    #[error("{0} was changed since it was read")]
    Stale(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// How many times [`settled`] tries a write again.
const SETTLE_ATTEMPTS: usize = 32;

/// Runs `attempt`, which reads and then writes (the store holding the write to what was read),
/// again while it fails because what it read changed meanwhile (`lost`). Each lost attempt is
/// another admin's change that went through, so this ends; past the budget the error is the
/// answer.
pub(crate) async fn settled<T, E, F>(
    mut attempt: impl FnMut() -> F,
    lost: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..SETTLE_ATTEMPTS {
        match attempt().await {
            Err(e) if lost(&e) => {}
            other => return other,
        }
    }
    attempt().await
}

impl From<crate::identity::pii::PiiError> for AdminError {
    fn from(e: crate::identity::pii::PiiError) -> Self {
        match e {
            crate::identity::pii::PiiError::Store(e) => e.into(),
            crate::identity::pii::PiiError::Key(e) => AdminError::Key(e),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AdminError::Conflict(what),
            StoreError::NotFound(what) => AdminError::NotFound(what),
            StoreError::Changed(what) => AdminError::Conflict(format!("{what} changed meanwhile")),
            other => AdminError::Store(other),
        }
    }
}

/// The first version of a client or user: random, not 1, so an ETag read before a delete never
/// matches what is created again under the same name.
pub(crate) fn first_version() -> i64 {
    i64::from(u32::from_be_bytes(crate::random::random_bytes::<4>()) >> 1) + 1
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::Invalid {
        field,
        message: message.into(),
    }
}

/// Token lifetimes an operator may configure: 1 minute to 24 hours.
pub(crate) fn check_ttl(field: &'static str, ttl: i64) -> Result<i64, AdminError> {
    if (60..=86_400).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(invalid(
            field,
            format!("{ttl} is outside 60..=86400 seconds"),
        ))
    }
}
