//! Passwords: argon2id at OWASP parameters (m = 19 MiB, t = 2, p = 1), run on a bounded pool so a
//! burst of sign-ins cannot take the machine's memory; beyond the pool, requests are shed.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("too many sign-ins at once; try again")]
    Busy,
    #[error("password hashing failed")]
    Internal,
}

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 256;

/// A stored hash that matches no password, verified for unknown users so that an unknown
/// username costs the same as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2lnaWwtZHVtbXktc2FsdA$0mCCX8fTm0hZ0VBBmGmNAjwS4pz3L1eGkhA8TqM1vmY";

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

fn argon() -> Argon2<'static> {
    // The parameters are constants inside argon2's valid ranges.
    let params = Params::new(19_456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn policy_error(password: &str) -> Option<&'static str> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        Some("use at least 12 characters")
    } else if password.len() > MAX_LEN {
        Some("use at most 256 bytes")
    } else {
        None
    }
}

impl Passwords {
    /// `concurrency` argon2 computations at a time (each holds ~19 MiB).
    pub fn new(concurrency: usize) -> Self {
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|_| PasswordError::Internal)
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || {
            let salt_bytes: [u8; 16] = crate::oauth::secret::random_bytes();
            let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| PasswordError::Internal)?;
            argon()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|_| PasswordError::Internal)
        })
        .await?
    }

    /// Checks `password` against `stored`; with no stored hash, burns the same work and fails.
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: String,
    ) -> Result<bool, PasswordError> {
        self.run(move || {
            let (phc, real) = match &stored {
                Some(h) => (h.as_str(), true),
                None => (DUMMY_HASH, false),
            };
            let Ok(parsed) = PasswordHash::new(phc) else {
                return false;
            };
            argon()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
                && real
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_the_dummy_matches_nothing() {
        let p = Passwords::new(2);
        let h = p.hash("correct horse battery".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            p.verify(Some(h.clone()), "correct horse battery".into())
                .await
                .expect("v")
        );
        assert!(
            !p.verify(Some(h), "wrong horse battery".into())
                .await
                .expect("v")
        );
        assert!(!p.verify(None, "anything".into()).await.expect("v"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn policy() {
        assert!(policy_error("short").is_some());
        assert!(policy_error("twelve chars").is_none());
    }
}
