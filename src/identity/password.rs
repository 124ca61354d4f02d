//! Passwords: argon2id at OWASP parameters (m = 19 MiB, t = 2, p = 1), run on a bounded pool so a
//! burst of sign-ins cannot take the machine's memory. A request waits briefly (FIFO) for a slot;
//! each address and each account may have only a fair share of slots and queue places at once,
//! so a flood from a few sources cannot keep a real user out; beyond that, requests are shed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as PHC_B64;
use subtle::ConstantTimeEq;
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

/// How long a sign-in waits for an argon2 slot before it is shed.
pub const QUEUE_WAIT: Duration = Duration::from_secs(3);
/// Requests one address or one account may have running or queued at once.
pub const FAIR_SHARE: u32 = 2;
/// Requests waiting at most, whoever sends them (each holds only a password string).
const MAX_WAITING: usize = 256;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    slots: usize,
    /// argon2's 19 MiB working memory, kept between computations while sign-ins keep coming
    /// (a fresh one costs ~5,000 page faults and zeroing each time) and given back to the system
    /// when the pool goes quiet.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// Requests running or queued per share key (an address, an account). Bounded because
    /// requests are: at most `MAX_WAITING` queued plus the running ones, two keys each.
    shares: Arc<Mutex<HashMap<String, u32>>>,
    /// Requests queued for a slot.
    waiting: Arc<AtomicUsize>,
}

/// Counts a request as queued until it gets a slot, gives up, or is dropped (client gone).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Releases a request's fair-share places when it ends, however it ends.
struct ShareGuard {
    shares: Arc<Mutex<HashMap<String, u32>>>,
    keys: Vec<String>,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut map = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = map.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
    }
}

const M_COST: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;

fn argon() -> Argon2<'static> {
    // The parameters are constants inside argon2's valid ranges.
    let params =
        Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// argon2id of `password` with `salt` into `out`, in `memory` (`M_COST` blocks).
fn compute(password: &[u8], salt: &[u8], out: &mut [u8], memory: &mut [Block]) -> bool {
    argon()
        .hash_password_into_with_memory(password, salt, out, memory)
        .is_ok()
}

/// Whether `phc` is a hash at Sigil's own parameters (the fast path, in reused memory).
fn own_parameters(phc: &PasswordHash<'_>) -> bool {
    phc.algorithm.as_str() == "argon2id"
        && phc.version == Some(0x13)
        && Params::try_from(phc)
            .is_ok_and(|p| p.m_cost() == M_COST && p.t_cost() == T_COST && p.p_cost() == P_COST)
        && phc.hash.is_some_and(|h| h.len() == OUTPUT_LEN)
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
            slots: concurrency.max(1),
            memory: Arc::new(Mutex::new(Vec::new())),
            shares: Arc::new(Mutex::new(HashMap::new())),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes a place for each of `keys`, or none if one of them has its fair share already.
    fn take_share(&self, keys: &[String]) -> Option<ShareGuard> {
        let mut map = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if keys
            .iter()
            .any(|k| map.get(k).is_some_and(|n| *n >= FAIR_SHARE))
        {
            return None;
        }
        for k in keys {
            *map.entry(k.clone()).or_insert(0) += 1;
        }
        Some(ShareGuard {
            shares: self.shares.clone(),
            keys: keys.to_vec(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        keys: &[String],
        f: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let share = self.take_share(keys).ok_or(PasswordError::Busy)?;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _queued = Waiting(self.waiting.clone());
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
                    return Err(PasswordError::Busy);
                }
                tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| PasswordError::Busy)?
                    .map_err(|_| PasswordError::Internal)?
            }
        };
        let pool = self.memory.clone();
        let permits = self.permits.clone();
        let waiting = self.waiting.clone();
        let slots = self.slots;
        tokio::task::spawn_blocking(move || {
            let taken = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut memory = taken.unwrap_or_else(|| vec![Block::default(); M_COST as usize]);
            let out = f(&mut memory);
            // Kept for the next computation while others run or wait; freed when this was the
            // last, so an idle server holds none of it.
            let busy =
                waiting.load(Ordering::SeqCst) > 0 || permits.available_permits() + 1 < slots;
            if busy {
                pool.lock().unwrap_or_else(|p| p.into_inner()).push(memory);
            } else {
                pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                drop(memory);
            }
            drop(permit);
            drop(share);
            out
        })
        .await
        .map_err(|_| PasswordError::Internal)
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(&[], move |memory| {
            let salt: [u8; 16] = crate::random::random_bytes();
            let mut out = [0u8; OUTPUT_LEN];
            if !compute(password.as_bytes(), &salt, &mut out, memory) {
                return Err(PasswordError::Internal);
            }
            Ok(format!(
                "$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}",
                PHC_B64.encode(salt),
                PHC_B64.encode(out)
            ))
        })
        .await?
    }

    /// Checks `password` against `stored`; with no stored hash, burns the same work and fails.
    /// `share` names who asks (address, account): each gets at most `FAIR_SHARE` places.
    pub async fn verify(
        &self,
        share: &[String],
        stored: Option<String>,
        password: String,
    ) -> Result<bool, PasswordError> {
        self.run(share, move |memory| {
            let (phc, real) = match &stored {
                Some(h) => (h.as_str(), true),
                None => (DUMMY_HASH, false),
            };
            let Ok(parsed) = PasswordHash::new(phc) else {
                return false;
            };
            let matches = if own_parameters(&parsed) {
                let mut salt = [0u8; 64];
                let (Some(s), Some(expected)) = (parsed.salt, parsed.hash) else {
                    return false;
                };
                let Ok(salt) = s.decode_b64(&mut salt) else {
                    return false;
                };
                let mut out = [0u8; OUTPUT_LEN];
                compute(password.as_bytes(), salt, &mut out, memory)
                    && bool::from(out.ct_eq(expected.as_bytes()))
            } else {
                // A hash at other parameters (an older policy): argon2's own path.
                argon()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            };
            matches && real
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
            p.verify(&[], Some(h.clone()), "correct horse battery".into())
                .await
                .expect("v")
        );
        assert!(
            !p.verify(&[], Some(h), "wrong horse battery".into())
                .await
                .expect("v")
        );
        assert!(!p.verify(&[], None, "anything".into()).await.expect("v"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok_and(|h| own_parameters(&h)));
    }

    /// Hashes made in reused memory are standard PHC strings: argon2's own verifier accepts
    /// them, and hashes made by argon2's own hasher (earlier releases, other parameters) verify.
    #[tokio::test]
    async fn hashes_interoperate_with_argon2s_own() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let p = Passwords::new(1);
        let ours = p.hash("correct horse battery".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            argon()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let theirs = argon()
            .hash_password(b"staple battery horse", &salt)
            .expect("hash")
            .to_string();
        assert!(
            p.verify(&[], Some(theirs), "staple battery horse".into())
                .await
                .expect("v")
        );
        let weaker = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8_192, 3, 1, None).expect("params"),
        )
        .hash_password(b"older policy", &salt)
        .expect("hash")
        .to_string();
        assert!(
            p.verify(&[], Some(weaker.clone()), "older policy".into())
                .await
                .expect("v")
        );
        assert!(
            !p.verify(&[], Some(weaker), "older polic".into())
                .await
                .expect("v")
        );
        // Idle again: the working memory went back to the system.
        assert!(p.memory.lock().expect("lock").is_empty());
    }

    /// One address flooding the pool gets its fair share; another address queues behind at most
    /// that share and gets through instead of being shed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_from_one_source_does_not_shed_another() {
        let p = Passwords::new(1);
        let flood: Vec<_> = (0..20)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(
                    async move { p.verify(&["ip:attacker".into()], None, "x".into()).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let user = p
            .verify(&["ip:user".into(), "acct:alice".into()], None, "y".into())
            .await;
        assert!(user.is_ok(), "the real user was shed: {user:?}");
        let mut shed = 0;
        for f in flood {
            if f.await.expect("join").is_err() {
                shed += 1;
            }
        }
        assert!(
            shed >= 20 - FAIR_SHARE as usize,
            "the flood got more than its share"
        );
    }

    #[test]
    fn policy() {
        assert!(policy_error("short").is_some());
        assert!(policy_error("twelve chars").is_none());
    }
}
